//! `Registry<R, I>`: one kind's entries by name and alias, with provenance, conflict rules and
//! "did you mean" resolution errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use swift_plugin_api::records::Record;

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Provenance {
    /// A plugin linked into the `swift` binary.
    Builtin { plugin: String },
    /// A compiled plugin loaded from a file.
    Library { plugin: String, path: PathBuf },
    /// A text-only plugin file (`*.toml` / `*.json`).
    TextFile { path: PathBuf },
}

impl Provenance {
    /// The plugin's name, or the file name of a text plugin.
    pub fn plugin(&self) -> String {
        match self {
            Provenance::Builtin { plugin } | Provenance::Library { plugin, .. } => plugin.clone(),
            Provenance::TextFile { path } => path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Builtin { plugin } => write!(f, "built-in ({plugin})"),
            Provenance::Library { path, .. } | Provenance::TextFile { path } => {
                write!(f, "{}", path.display())
            }
        }
    }
}

/// One registered entry: its record, its behaviour (if the kind has any), and where it came from.
pub struct Entry<R, I> {
    pub record: R,
    pub imp: Option<Arc<I>>,
    pub provenance: Provenance,
}

impl<R: fmt::Debug, I> fmt::Debug for Entry<R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("record", &self.record)
            .field("has_behaviour", &self.imp.is_some())
            .field("provenance", &self.provenance)
            .finish()
    }
}

impl<R: Clone, I> Clone for Entry<R, I> {
    fn clone(&self) -> Self {
        Self {
            record: self.record.clone(),
            imp: self.imp.clone(),
            provenance: self.provenance.clone(),
        }
    }
}

/// A name that is already taken within a kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{name}` from {new} is already registered by {existing}")]
pub struct Conflict {
    pub kind: &'static str,
    pub name: String,
    pub existing: Provenance,
    pub new: Provenance,
}

/// A name that resolves to nothing, with the closest known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
    /// Close names and where each comes from, best first.
    pub suggestions: Vec<(String, Provenance)>,
    pub known: usize,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.kind, self.name)?;
        if self.suggestions.is_empty() {
            write!(f, " ({} registered; `swift list` shows them)", self.known)
        } else {
            write!(f, "; did you mean ")?;
            for (i, (name, prov)) in self.suggestions.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "`{name}` from {prov}")?;
            }
            write!(f, "?")
        }
    }
}

/// The entries of one kind.
pub struct Registry<R, I> {
    entries: BTreeMap<String, Entry<R, I>>,
    /// alias -> canonical name
    aliases: BTreeMap<String, String>,
}

impl<R, I> Default for Registry<R, I> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            aliases: BTreeMap::new(),
        }
    }
}

impl<R: Record, I> Registry<R, I> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The canonical name that `name` (a name or alias) stands for, if any.
    fn canonical<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if self.entries.contains_key(name) {
            Some(name)
        } else {
            self.aliases.get(name).map(String::as_str)
        }
    }

    /// Adds an entry. With `replace` false, a clash of its name or any alias with an existing
    /// name or alias is refused; with `replace` true the clashing entries are removed first.
    pub fn insert(&mut self, entry: Entry<R, I>, replace: bool) -> Result<(), Box<Conflict>> {
        if !replace {
            self.check(&entry)?;
        }
        let names = std::iter::once(entry.record.name())
            .chain(entry.record.aliases().iter().map(String::as_str));
        let clashing: Vec<String> = names
            .filter_map(|n| self.canonical(n).map(str::to_string))
            .collect();
        for canon in clashing {
            self.remove(&canon);
        }
        let name = entry.record.name().to_string();
        for a in entry.record.aliases() {
            self.aliases.insert(a.clone(), name.clone());
        }
        self.entries.insert(name, entry);
        Ok(())
    }

    /// Refuses an entry whose name or any alias is already taken (by a name or an alias).
    pub fn check(&self, entry: &Entry<R, I>) -> Result<(), Box<Conflict>> {
        let names = std::iter::once(entry.record.name())
            .chain(entry.record.aliases().iter().map(String::as_str));
        for n in names {
            if let Some(canon) = self.canonical(n) {
                return Err(Box::new(Conflict {
                    kind: R::KIND,
                    name: n.to_string(),
                    existing: self.entries[canon].provenance.clone(),
                    new: entry.provenance.clone(),
                }));
            }
        }
        Ok(())
    }

    fn remove(&mut self, canon: &str) {
        self.entries.remove(canon);
        self.aliases.retain(|_, target| target != canon);
    }

    /// Looks up a name or alias.
    pub fn get(&self, name: &str) -> Option<&Entry<R, I>> {
        self.canonical(name).and_then(|c| self.entries.get(c))
    }

    /// Looks up a name or alias, or explains what is close.
    pub fn resolve(&self, name: &str) -> Result<&Entry<R, I>, UnknownName> {
        self.get(name).ok_or_else(|| UnknownName {
            kind: R::KIND,
            name: name.to_string(),
            suggestions: self.suggest(name),
            known: self.entries.len(),
        })
    }

    /// Up to three known names close to `name` (by normalised edit distance or shared prefix).
    fn suggest(&self, name: &str) -> Vec<(String, Provenance)> {
        let lower = name.to_lowercase();
        let mut scored: Vec<(f64, String, Provenance)> = self
            .entries
            .iter()
            .map(|(n, e)| (n.as_str(), e))
            .chain(
                self.aliases
                    .iter()
                    .map(|(a, c)| (a.as_str(), &self.entries[c])),
            )
            .filter_map(|(n, e)| {
                let ln = n.to_lowercase();
                let mut score = strsim::normalized_damerau_levenshtein(&lower, &ln);
                if ln.starts_with(&lower) || lower.starts_with(&ln) {
                    score = score.max(0.75);
                }
                (score >= 0.5).then(|| (score, n.to_string(), e.provenance.clone()))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        scored.into_iter().take(3).map(|(_, n, p)| (n, p)).collect()
    }

    /// Every entry, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<R, I>> {
        self.entries.values()
    }

    /// Number of entries (aliases not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swift_plugin_api::TemplateRecord;

    fn entry(name: &str, aliases: &[&str], plugin: &str) -> Entry<TemplateRecord, ()> {
        let mut record = TemplateRecord::new(name, "{{QUERY}}");
        record.aliases = aliases.iter().map(|a| a.to_string()).collect();
        Entry {
            record,
            imp: None,
            provenance: Provenance::Builtin {
                plugin: plugin.into(),
            },
        }
    }

    #[test]
    fn resolves_names_and_aliases() {
        let mut r = Registry::new();
        r.insert(entry("chatml", &["im"], "a"), false).unwrap();
        assert_eq!(r.resolve("chatml").unwrap().record.name, "chatml");
        assert_eq!(r.resolve("im").unwrap().record.name, "chatml");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn second_provider_is_refused_naming_both() {
        let mut r = Registry::new();
        r.insert(entry("chatml", &[], "first"), false).unwrap();
        let err = r.insert(entry("chatml", &[], "second"), false).unwrap_err();
        assert_eq!(
            err.existing,
            Provenance::Builtin {
                plugin: "first".into()
            }
        );
        assert_eq!(
            err.new,
            Provenance::Builtin {
                plugin: "second".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("first") && msg.contains("second"), "{msg}");
        // An alias clashing with a name is a conflict too.
        assert!(r
            .insert(entry("other", &["chatml"], "third"), false)
            .is_err());
        assert_eq!(r.resolve("chatml").unwrap().provenance.plugin(), "first");
    }

    #[test]
    fn override_replaces_the_entry_and_its_aliases() {
        let mut r = Registry::new();
        r.insert(entry("chatml", &["im"], "builtin"), false)
            .unwrap();
        r.insert(entry("chatml", &[], "org"), true).unwrap();
        assert_eq!(r.resolve("chatml").unwrap().provenance.plugin(), "org");
        assert!(r.get("im").is_none(), "the old entry's alias went with it");
    }

    #[test]
    fn unknown_names_suggest_close_ones_with_provenance() {
        let mut r = Registry::new();
        for n in ["chatml", "qwen2_5", "qwen3", "llama3"] {
            r.insert(entry(n, &[], "builtin"), false).unwrap();
        }
        let err = r.resolve("qwen").unwrap_err();
        let names: Vec<_> = err.suggestions.iter().map(|s| s.0.as_str()).collect();
        assert!(
            names.contains(&"qwen3") && names.contains(&"qwen2_5"),
            "{names:?}"
        );
        assert!(err.to_string().contains("built-in (builtin)"), "{err}");
        let err = r.resolve("zzzzzz").unwrap_err();
        assert!(err.suggestions.is_empty());
        assert!(err.to_string().contains("4 registered"), "{err}");
    }
}

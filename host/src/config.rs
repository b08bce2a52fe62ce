//! Layered settings: defaults < `--config FILE` (YAML, TOML or JSON) < `SWIFT_*` environment
//! variables < command-line flags, merged with figment.
//!
//! A command's specification (swift-spec) is parsed by clap, defaults included; [`spec`] then
//! layers the config file and the environment over the defaults and under the flags the user
//! actually gave (clap's value source says which), so an unset flag never hides a value from
//! the file or the environment, and each default is written once, in the flag's definition.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use figment::providers::{Env, Format, Json, Serialized, Toml, Yaml};
use figment::Figment;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use swift_spec::CommandSpec;

/// A command's specification: clap's defaults, under the config file and `SWIFT_*` variables,
/// under the flags given on the command line; with the set of flags the user set (given on the
/// command line, or set elsewhere to a value other than the default) recorded in it.
pub fn spec<T>(matches: &ArgMatches, config_file: Option<&Path>) -> Result<T>
where
    T: Args + FromArgMatches + Serialize + DeserializeOwned + CommandSpec,
{
    let defaults = {
        let m = T::augment_args(clap::Command::new("defaults"))
            .no_binary_name(true)
            .try_get_matches_from(Vec::<String>::new())?;
        serde_json::to_value(T::from_arg_matches(&m)?)?
    };
    let parsed = serde_json::to_value(T::from_arg_matches(matches)?)?;
    let (Value::Object(all), Value::Object(default_map)) = (&parsed, &defaults) else {
        bail!("internal: a specification did not serialise to an object");
    };
    let on_command_line = |k: &str| {
        matches.try_get_raw(k).is_ok() && matches.value_source(k) == Some(ValueSource::CommandLine)
    };
    let given: serde_json::Map<String, Value> = all
        .iter()
        .filter(|(k, _)| on_command_line(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut spec: T = layered(defaults.clone(), config_file, Value::Object(given))?;
    let resolved = serde_json::to_value(&spec)?;
    let set = default_map
        .iter()
        .filter(|(k, v)| on_command_line(k) || resolved.get(k.as_str()) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    spec.given_mut().0 = set;
    Ok(spec)
}

/// Builds `T` from `defaults` (a JSON object), the config file, the environment and `flags`.
pub fn layered<T>(defaults: Value, config_file: Option<&Path>, flags: Value) -> Result<T>
where
    T: DeserializeOwned,
{
    // Only keys that T knows are taken from the environment, so unrelated SWIFT_* variables
    // (SWIFT_RS_CACHE, SWIFT_PLUGIN_PATH, ...) never make a setting fail to parse.
    let known: Vec<String> = match &defaults {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut fig = Figment::from(Serialized::defaults(defaults.clone()));
    if let Some(path) = config_file {
        if !path.is_file() {
            bail!("config file {} does not exist", path.display());
        }
        fig = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => fig.merge(Yaml::file(path)),
            Some("toml") => fig.merge(Toml::file(path)),
            Some("json") => fig.merge(Json::file(path)),
            _ => bail!(
                "config file {}: use a .yaml, .yml, .toml or .json file",
                path.display()
            ),
        };
    }
    let env_keys = known.clone();
    // Named as the setting is (`SWIFT_ADALORA_DELTAT` is `adalora_deltaT`), not lowercased.
    let env = Env::prefixed("SWIFT_")
        .filter_map(move |k| {
            env_keys
                .iter()
                .find(|n| k.as_str().eq_ignore_ascii_case(n))
                .map(|n| n.clone().into())
        })
        .lowercase(false);
    fig = fig.merge(env).merge(Serialized::defaults(flags.clone()));
    let err = match fig.extract() {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    // serde's `flatten` (every specification is flattened from groups) hides which key failed:
    // find it by reading each key alone over the defaults, and name it and where it came from.
    let culprit = known.iter().find_map(|k| {
        let value = fig.find_value(k).ok()?;
        let alone = Figment::from(Serialized::defaults(defaults.clone()))
            .merge(Serialized::default(k, value))
            .extract::<T>();
        alone.err().map(|e| (k, e))
    });
    match culprit {
        Some((k, e)) => {
            let from = if flags.get(k).is_some() {
                "given on the command line".to_string()
            } else if let Some(var) = std::env::vars().map(|(v, _)| v).find(|v| {
                v.strip_prefix("SWIFT_")
                    .is_some_and(|n| n.eq_ignore_ascii_case(k))
            }) {
                format!("from ${var}")
            } else {
                match config_file {
                    Some(p) => format!("from {}", p.display()),
                    None => "as given".to_string(),
                }
            };
            bail!("--{k} ({from}): {}", e.kind)
        }
        None => Err(err).with_context(|| match config_file {
            Some(p) => format!(
                "invalid settings (flags, SWIFT_* variables or {})",
                p.display()
            ),
            None => "invalid settings (flags or SWIFT_* variables)".to_string(),
        }),
    }
}

/// Settings every command shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GlobalSettings {
    /// Plugin directories or files.
    pub plugin_dir: Vec<PathBuf>,
    /// Names allowed to replace registered entries.
    pub plugin_override: Vec<String>,
    /// Log filter (error, warn, info, debug, trace, or an env-filter directive).
    pub log_level: Option<String>,
}

impl GlobalSettings {
    /// Resolves the global settings from the flags that were given.
    pub fn resolve(cli: &crate::cli::GlobalArgs) -> Result<Self> {
        let mut flags = serde_json::Map::new();
        if !cli.plugin_dir.is_empty() {
            flags.insert("plugin_dir".into(), serde_json::to_value(&cli.plugin_dir)?);
        }
        if !cli.plugin_override.is_empty() {
            flags.insert(
                "plugin_override".into(),
                serde_json::to_value(&cli.plugin_override)?,
            );
        }
        if let Some(l) = &cli.log_level {
            flags.insert("log_level".into(), l.clone().into());
        }
        layered(
            serde_json::to_value(Self::default())?,
            cli.config.as_deref(),
            flags.into(),
        )
    }

    /// The plugin settings a command loads with.
    pub fn plugins(&self) -> swift_registry::PluginSettings {
        swift_registry::PluginSettings {
            plugin_dir: self.plugin_dir.clone(),
            plugin_override: self.plugin_override.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct S {
        lora_rank: u32,
        learning_rate: f64,
        model: Option<String>,
    }

    fn defaults() -> Value {
        serde_json::to_value(S::default()).unwrap()
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "lora_rank: 4\nlearning_rate: 0.1\nmodel: from-file\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWIFT_LEARNING_RATE", "0.5");
            jail.set_env("SWIFT_RS_CACHE", "/not/a/setting");
            let s: S = layered(
                defaults(),
                Some(&file),
                serde_json::json!({"model": "from-flag"}),
            )
            .unwrap();
            assert_eq!(
                s,
                S {
                    lora_rank: 4,
                    learning_rate: 0.5,
                    model: Some("from-flag".into())
                }
            );
            let s: S = layered(defaults(), None, serde_json::json!({})).unwrap();
            assert_eq!(
                s,
                S {
                    lora_rank: 0,
                    learning_rate: 0.5,
                    model: None
                }
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn a_variable_reaches_a_setting_with_capitals() {
        // ms-swift's `adalora_deltaT`: figment lowercases variables unless told not to.
        #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        struct T {
            #[serde(rename = "adalora_deltaT")]
            delta_t: Option<u64>,
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWIFT_ADALORA_DELTAT", "3");
            let d = serde_json::to_value(T::default()).unwrap();
            let t: T = layered(d, None, serde_json::json!({})).unwrap();
            assert_eq!(t.delta_t, Some(3));
            Ok(())
        });
    }

    #[test]
    fn a_spec_takes_the_file_over_defaults_and_given_flags_over_the_file() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "lora_rank: 4\nlearning_rate: 0.5\nseed: 7\n").unwrap();
        let args = crate::cli::normalize_args(
            ["swift", "sft", "--learning_rate", "0.25", "--lora-alpha=8"].map(String::from),
        );
        let matches = crate::cli::Cli::command().get_matches_from(args);
        let (_, sub) = matches.subcommand().unwrap();
        let s: swift_spec::TrainSpec = spec(sub, Some(&file)).unwrap();
        assert_eq!(s.tuner.lora_rank, 4, "file over the default 8");
        assert_eq!(s.trainer.seed, 7, "file over the default 42");
        assert_eq!(
            s.trainer.learning_rate,
            Some(0.25),
            "given flag over the file"
        );
        assert_eq!(s.tuner.lora_alpha, 8.0, "given flag over the default");
        assert_eq!(
            s.tuner.lora_dropout, 0.05,
            "the default where nothing else speaks"
        );
        assert_eq!(s.trainer.lr_scheduler_type, "cosine");
        for set in ["lora_rank", "seed", "learning_rate", "lora_alpha"] {
            assert!(s.given.contains(set), "{set} was set");
        }
        assert!(!s.given.contains("lora_dropout"));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let err = layered::<S>(defaults(), Some(&missing), serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let toml = dir.path().join("c.toml");
        std::fs::write(&toml, "lora_rank = \"eight\"\n").unwrap();
        let err = format!(
            "{:#}",
            layered::<S>(defaults(), Some(&toml), serde_json::json!({})).unwrap_err()
        );
        assert!(err.contains("lora_rank") && err.contains("c.toml"), "{err}");
    }
}

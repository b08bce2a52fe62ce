//! What keeps a web UI that starts processes from being used by someone else: the address it
//! binds ([`check_bind`]: loopback, or an API key), every request's `Host` and `Origin` (DNS
//! rebinding, cross-site requests: [`Guard`], 403) and its key (401), and every path a form
//! names ([`Roots`]: resolved, symlinks included, inside `--output_dir` or `--allowed_roots`).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use crate::WebUiError;

/// Whether `name` (an address or host name to bind) is a loopback one.
pub fn is_loopback(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a non-loopback address without an API key (anyone who reaches it could start
/// processes on this machine), and an empty key.
pub fn check_bind(server_name: &str, api_key: Option<&str>) -> Result<(), WebUiError> {
    if api_key.is_some_and(|k| k.trim().is_empty()) {
        return Err(WebUiError::Startup(
            "--api_key is empty: give a key (a long random string)".into(),
        ));
    }
    if !is_loopback(server_name) && api_key.is_none() {
        return Err(WebUiError::Startup(format!(
            "--server_name {server_name} is not a loopback address: the web UI starts processes, \
             so anyone who reaches it needs a key; add --api_key KEY (or serve on 127.0.0.1)"
        )));
    }
    Ok(())
}

/// The cookie that carries the key once `/?api_key=KEY` was opened.
pub const KEY_COOKIE: &str = "swift_webui_key";

/// A request's verdict.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// 403: not addressed to this server, or sent from another site.
    Forbidden(String),
    /// 401: the key is missing or wrong.
    Unauthorized,
}

/// The per-request checks: `Host` and `Origin` name this server, and the key is given.
pub struct Guard {
    server_name: String,
    port: u16,
    api_key: Option<String>,
}

impl Guard {
    pub fn new(server_name: &str, port: u16, api_key: Option<String>) -> Self {
        Self {
            server_name: server_name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            api_key,
        }
    }

    /// Whether `authority` (`host[:port]`, as in `Host`) names this server: its port, and as
    /// host `localhost`, an IP address literal (a rebinding attack needs a domain name) or the
    /// `--server_name` it was started with.
    fn own_authority(&self, authority: &str) -> bool {
        let (host, port) = split_authority(authority);
        let port_ok = port.unwrap_or(80) == self.port;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = host.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok()
            || bare.eq_ignore_ascii_case(&self.server_name);
        port_ok && host_ok
    }

    /// Checks a request's `Host`, `Origin`, and key (from `Authorization: Bearer`, the cookie,
    /// or the `api_key` query parameter).
    pub fn check(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        bearer: Option<&str>,
        cookie: Option<&str>,
        query_key: Option<&str>,
    ) -> Verdict {
        match host {
            Some(h) if self.own_authority(h) => {}
            Some(h) => {
                return Verdict::Forbidden(format!(
                    "Host `{h}` is not this server's: open it by its address (http://{}:{}/)",
                    self.server_name, self.port
                ))
            }
            None => return Verdict::Forbidden("a request without a Host header".into()),
        }
        if let Some(o) = origin {
            let own = o
                .strip_prefix("http://")
                .is_some_and(|a| !a.contains('/') && self.own_authority(a));
            if !own {
                return Verdict::Forbidden(format!(
                    "Origin `{o}` is another site: the web UI answers its own pages only"
                ));
            }
        }
        let Some(key) = &self.api_key else {
            return Verdict::Allow;
        };
        let given = [bearer, cookie, query_key];
        if given.iter().flatten().any(|g| same(g, key)) {
            Verdict::Allow
        } else {
            Verdict::Unauthorized
        }
    }

    pub fn needs_key(&self) -> bool {
        self.api_key.is_some()
    }
}

/// `host[:port]` (IPv6 in brackets) → (host, port).
fn split_authority(a: &str) -> (&str, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (
                &a[..h.len() + 2],
                tail.strip_prefix(':').and_then(|p| p.parse().ok()),
            ),
            None => (a, None),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(p) => (h, Some(p)),
            Err(_) => (a, Some(0)),
        },
        None => (a, None),
    }
}

/// Compares without stopping at the first difference (no timing hint of the key's prefix).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The folders the UI may read and write, resolved once (symlinks included).
#[derive(Debug, Clone)]
pub struct Roots {
    output: PathBuf,
    roots: Vec<PathBuf>,
}

impl Roots {
    /// `output_dir` (created when missing) and the other allowed roots (which must exist).
    pub fn new(output_dir: &Path, allowed: &[PathBuf]) -> Result<Self, WebUiError> {
        std::fs::create_dir_all(output_dir).map_err(|e| {
            WebUiError::Startup(format!(
                "--output_dir {}: cannot create it: {e}",
                output_dir.display()
            ))
        })?;
        let canon = |p: &Path, flag: &str| {
            p.canonicalize()
                .map_err(|e| WebUiError::Startup(format!("{flag} {}: {e}", p.display())))
        };
        let output = canon(output_dir, "--output_dir")?;
        let mut roots = vec![output.clone()];
        for r in allowed {
            let c = canon(r, "--allowed_roots")?;
            if !c.is_dir() {
                return Err(WebUiError::Startup(format!(
                    "--allowed_roots {}: not a folder",
                    r.display()
                )));
            }
            roots.push(c);
        }
        Ok(Self { output, roots })
    }

    /// The resolved `--output_dir`.
    pub fn output(&self) -> &Path {
        &self.output
    }

    pub fn all(&self) -> &[PathBuf] {
        &self.roots
    }

    fn inside(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    fn outside(&self, given: &str) -> String {
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        format!(
            "{given} is outside the allowed roots ({}): restart swift web-ui with --allowed_roots \
             naming its folder",
            roots.join(", ")
        )
    }

    /// An existing file or folder, resolved (symlinks included) and inside a root.
    pub fn existing(&self, given: &str) -> Result<PathBuf, String> {
        if given.trim().is_empty() {
            return Err("an empty path".into());
        }
        let p = Path::new(given);
        let resolved = p
            .canonicalize()
            .map_err(|e| format!("{given} does not exist or cannot be read ({e})"))?;
        if !self.inside(&resolved) {
            return Err(self.outside(given));
        }
        Ok(resolved)
    }

    /// A path that may not exist yet: no `..`, and its nearest existing ancestor, resolved,
    /// inside a root.
    pub fn writable(&self, given: &str) -> Result<PathBuf, String> {
        let p = Path::new(given);
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("{given}: `..` is not allowed in a path"));
        }
        let mut existing = p.to_path_buf();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.file_name(), existing.parent()) {
                (Some(n), Some(parent)) => {
                    rest.push(n.to_os_string());
                    existing = if parent.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        parent.to_path_buf()
                    };
                }
                _ => return Err(self.outside(given)),
            }
        }
        let mut resolved = existing
            .canonicalize()
            .map_err(|e| format!("{given}: {e}"))?;
        for n in rest.iter().rev() {
            resolved.push(n);
        }
        if !self.inside(&resolved) {
            return Err(self.outside(given));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_a_key() {
        assert!(check_bind("127.0.0.1", None).is_ok());
        assert!(check_bind("localhost", None).is_ok());
        assert!(check_bind("::1", None).is_ok());
        let e = check_bind("0.0.0.0", None).unwrap_err().to_string();
        assert!(e.contains("--api_key"), "{e}");
        assert!(check_bind("0.0.0.0", Some("k")).is_ok());
        assert!(check_bind("127.0.0.1", Some(" ")).is_err());
    }

    #[test]
    fn host_origin_and_key_are_checked_in_that_order() {
        let g = Guard::new("127.0.0.1", 7860, Some("sekret".into()));
        let ok = |h, o, b, c, q| g.check(Some(h), o, b, c, q);
        assert_eq!(
            ok("127.0.0.1:7860", None, Some("sekret"), None, None),
            Verdict::Allow
        );
        assert_eq!(
            ok(
                "localhost:7860",
                Some("http://localhost:7860"),
                None,
                Some("sekret"),
                None
            ),
            Verdict::Allow
        );
        assert_eq!(
            ok("127.0.0.1:7860", None, None, None, Some("sekret")),
            Verdict::Allow
        );
        assert_eq!(
            ok("127.0.0.1:7860", None, None, None, None),
            Verdict::Unauthorized
        );
        assert_eq!(
            ok("127.0.0.1:7860", None, Some("sekreT"), None, None),
            Verdict::Unauthorized
        );
        assert!(matches!(
            ok("evil.example:7860", None, Some("sekret"), None, None),
            Verdict::Forbidden(_)
        ));
        assert!(matches!(
            ok("127.0.0.1:7861", None, Some("sekret"), None, None),
            Verdict::Forbidden(_)
        ));
        assert!(matches!(
            ok(
                "127.0.0.1:7860",
                Some("http://evil.example"),
                Some("sekret"),
                None,
                None
            ),
            Verdict::Forbidden(_)
        ));
        assert!(matches!(
            ok("127.0.0.1:7860", Some("null"), Some("sekret"), None, None),
            Verdict::Forbidden(_)
        ));
        assert!(matches!(
            g.check(None, None, Some("sekret"), None, None),
            Verdict::Forbidden(_)
        ));
        let open = Guard::new("127.0.0.1", 80, None);
        assert_eq!(
            open.check(Some("[::1]"), None, None, None, None),
            Verdict::Allow
        );
        assert_eq!(
            open.check(
                Some("localhost"),
                Some("http://127.0.0.1"),
                None,
                None,
                None
            ),
            Verdict::Allow
        );
    }

    #[test]
    fn paths_resolve_inside_the_roots_only() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let data = tmp.path().join("data");
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(data.join("a.jsonl"), "{}").unwrap();
        std::fs::write(other.join("secret.jsonl"), "{}").unwrap();
        std::os::unix::fs::symlink(other.join("secret.jsonl"), data.join("link.jsonl")).unwrap();
        let roots = Roots::new(&out, std::slice::from_ref(&data)).unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        assert!(roots.existing(&s(&data.join("a.jsonl"))).is_ok());
        let e = roots.existing(&s(&other.join("secret.jsonl"))).unwrap_err();
        assert!(e.contains("outside the allowed roots"), "{e}");
        let e = roots.existing(&s(&data.join("link.jsonl"))).unwrap_err();
        assert!(
            e.contains("outside the allowed roots"),
            "a symlink out: {e}"
        );
        let e = roots.existing(&s(&data.join("missing.jsonl"))).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert!(roots.writable(&s(&out.join("new/deeper"))).is_ok());
        assert!(roots.writable(&s(&out.join("../other/x"))).is_err());
        assert!(roots.writable(&s(&other.join("x"))).is_err());
        assert!(Roots::new(&out, &[tmp.path().join("nope")]).is_err());
    }
}

//! The chart library, uPlot (MIT), vendored from npm by `make setup` (`scripts/setup.sh`: `npm
//! pack uplot@VERSION`, the tarball's sha256 checked, its two `dist/` files copied into
//! `$SWIFT_RS_CACHE/webui/`). The server reads them from there, checks their sha256 against the
//! pinned ones, and serves them as `/assets/uPlot.*`; never fetched at run time. When they are
//! missing or differ, the pages say so where the charts would be (and how to fix it).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const UPLOT_VERSION: &str = "1.6.32";
/// `uplot-1.6.32.tgz` as the npm registry serves it (setup.sh checks it).
pub const UPLOT_TARBALL_SHA256: &str =
    "4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d";
pub const UPLOT_JS: (&str, &str) = (
    "uPlot.iife.min.js",
    "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
);
pub const UPLOT_CSS: (&str, &str) = (
    "uPlot.min.css",
    "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
);

/// The vendored files, read and checked once.
pub struct Vendor {
    pub js: Option<Vec<u8>>,
    pub css: Option<Vec<u8>>,
    problem: Option<String>,
}

impl Vendor {
    pub fn find(dir: &Path) -> Self {
        let mut problems = Vec::new();
        let mut read = |(name, sha): (&str, &str)| -> Option<Vec<u8>> {
            let path: PathBuf = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let got = format!("{:x}", Sha256::digest(&bytes));
                    if got == sha {
                        Some(bytes)
                    } else {
                        problems.push(format!(
                            "{} is not uPlot {UPLOT_VERSION} (sha256 {got}, expected {sha})",
                            path.display()
                        ));
                        None
                    }
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    None
                }
            }
        };
        let js = read(UPLOT_JS);
        let css = read(UPLOT_CSS);
        let problem = (!problems.is_empty()).then(|| {
            format!(
                "charts are off: {}; `make setup` installs uPlot {UPLOT_VERSION} there",
                problems.join("; ")
            )
        });
        Self { js, css, problem }
    }

    /// Why the charts cannot be drawn, if they cannot.
    pub fn missing(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_the_pinned_one_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(UPLOT_JS.0), "alert(1)").unwrap();
        let v = Vendor::find(tmp.path());
        assert!(v.js.is_none() && v.css.is_none());
        let why = v.missing().unwrap();
        assert!(
            why.contains("uPlot.iife.min.js is not uPlot 1.6.32"),
            "{why}"
        );
        assert!(why.contains("uPlot.min.css"), "{why}");
        assert!(why.contains("make setup"), "{why}");
    }
}

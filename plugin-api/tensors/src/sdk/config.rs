//! [`Config`]: reading config.json with errors that name the key (and the file, or the nested
//! object, it belongs to).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Error;

/// A config.json object, or a nested one (`rope_scaling`), named by `what` in messages.
#[derive(Debug, Clone)]
pub struct Config {
    v: Value,
    what: String,
}

impl Config {
    /// `v` named `what` in messages (`"config.json"`, `"rope_scaling"`).
    pub fn new(v: Value, what: &str) -> Self {
        Self {
            v,
            what: what.to_string(),
        }
    }

    /// A model's config.json, as `ModelFamily::instantiate` receives it.
    pub fn model(config: &Value) -> Self {
        Self::new(config.clone(), "config.json")
    }

    /// The whole object as a serde struct (`#[serde(default)]` fields for optional keys); the
    /// error names the file and serde's reason (the key and what was wrong).
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_value(self.v.clone()).map_err(|e| Error(format!("{}: {e}", self.what)))
    }

    /// A key's value; `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    /// A nested object (`rope_scaling`), named by its key; `None` when absent or `null`.
    pub fn nested(&self, key: &str) -> Option<Config> {
        self.get(key).map(|v| Config::new(v.clone(), key))
    }

    /// A required positive integer.
    pub fn i64(&self, key: &str) -> Result<i64, Error> {
        self.i64_opt(key)?
            .ok_or_else(|| Error(format!("{} has no `{key}`", self.what)))
    }

    /// A required count that sizes loops or tables (layers, heads): a positive integer at most
    /// `max`, so a damaged config.json is refused instead of asking for unbounded work.
    pub fn count(&self, key: &str, max: i64) -> Result<i64, Error> {
        let n = self.i64(key)?;
        if n > max {
            return Err(Error(format!(
                "{} `{key}` must be between 1 and {max}, got {n}",
                self.what
            )));
        }
        Ok(n)
    }

    /// A positive integer, or `default` when absent.
    pub fn i64_or(&self, key: &str, default: i64) -> Result<i64, Error> {
        Ok(self.i64_opt(key)?.unwrap_or(default))
    }

    /// A positive integer, if present.
    pub fn i64_opt(&self, key: &str) -> Result<Option<i64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_i64().filter(|n| *n > 0).map(Some).ok_or_else(|| {
                Error(format!(
                    "{} `{key}` must be a positive integer, got {v}",
                    self.what
                ))
            }),
        }
    }

    /// A required number.
    pub fn f64(&self, key: &str) -> Result<f64, Error> {
        self.f64_opt(key)?
            .ok_or_else(|| Error(format!("{} has no `{key}`", self.what)))
    }

    /// A number, or `default` when absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, Error> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    /// A number, if present.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error(format!("{} `{key}` must be a number, got {v}", self.what))),
        }
    }

    /// A boolean, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                Error(format!(
                    "{} `{key}` must be true or false, got {v}",
                    self.what
                ))
            }),
        }
    }

    /// A string, if present.
    pub fn str_opt(&self, key: &str) -> Result<Option<String>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| Error(format!("{} `{key}` must be a string, got {v}", self.what))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_are_bounded() {
        let c = Config::new(
            json!({"n": 4, "big": 1_000_000_000_000i64, "neg": -1}),
            "config.json",
        );
        assert_eq!(c.count("n", 8).unwrap(), 4);
        let e = c.count("big", 65536).unwrap_err().0;
        assert!(e.contains("`big` must be between 1 and 65536"), "{e}");
        assert!(c.count("neg", 8).is_err());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let c = Config::model(&json!({"n": 3, "x": "a", "neg": -1, "none": null}));
        assert_eq!(c.i64("n").unwrap(), 3);
        assert_eq!(c.i64_or("none", 7).unwrap(), 7);
        assert_eq!(c.i64("m").unwrap_err().0, "config.json has no `m`");
        assert!(c
            .i64("neg")
            .unwrap_err()
            .0
            .contains("`neg` must be a positive integer"));
        assert!(c.f64("x").unwrap_err().0.contains("`x` must be a number"));
        #[derive(Debug, serde::Deserialize)]
        struct T {
            #[allow(dead_code)]
            n: String,
        }
        let e = c.typed::<T>().unwrap_err().0;
        assert!(e.starts_with("config.json: invalid type"), "{e}");
    }
}

//! Reading config.json values with errors that name the key, and the error type of this crate's
//! forward passes (libtorch errors and context errors both become the message the host shows).

use serde_json::Value;

/// An error message (what crosses the boundary is a string).
#[derive(Debug)]
pub struct Error(pub String);

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error(e.to_string())
    }
}

impl From<String> for Error {
    fn from(e: String) -> Self {
        Error(e)
    }
}

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.0
    }
}

/// A config.json object (or a nested one, named by `what` in messages).
pub struct Cfg {
    v: Value,
    what: String,
}

impl Cfg {
    pub fn new(v: Value, what: &str) -> Self {
        Self {
            v,
            what: what.to_string(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    pub fn i64(&self, key: &str) -> Result<i64, Error> {
        self.i64_opt(key)?
            .ok_or_else(|| Error(format!("{} has no `{key}`", self.what)))
    }

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

    pub fn f64(&self, key: &str) -> Result<f64, Error> {
        self.f64_opt(key)?
            .ok_or_else(|| Error(format!("{} has no `{key}`", self.what)))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, Error> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error(format!("{} `{key}` must be a number, got {v}", self.what))),
        }
    }

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

//! Reading an optimizer's options from the request (every option of its record, by name),
//! refusing a missing or mistyped one by name.

use serde_json::Value;

/// A number option.
pub fn f64_of(options: &Value, name: &str) -> Result<f64, String> {
    options.get(name).and_then(Value::as_f64).ok_or_else(|| {
        format!(
            "option `{name}` must be a number, got {:?}",
            options.get(name)
        )
    })
}

/// A whole-number option of at least `min`.
pub fn int_of(options: &Value, name: &str, min: i64) -> Result<i64, String> {
    let v = options.get(name).and_then(Value::as_i64).ok_or_else(|| {
        format!(
            "option `{name}` must be an integer, got {:?}",
            options.get(name)
        )
    })?;
    if v < min {
        return Err(format!("option `{name}` must be at least {min}, got {v}"));
    }
    Ok(v)
}

/// A boolean option.
pub fn bool_of(options: &Value, name: &str) -> Result<bool, String> {
    options.get(name).and_then(Value::as_bool).ok_or_else(|| {
        format!(
            "option `{name}` must be true or false, got {:?}",
            options.get(name)
        )
    })
}

/// A list of names (null: `default`); one string is split at commas.
pub fn list_of(options: &Value, name: &str, default: &[&str]) -> Result<Vec<String>, String> {
    match options.get(name) {
        None | Some(Value::Null) => Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("option `{name}` holds names, got {v}"))
            })
            .collect(),
        Some(other) => Err(format!(
            "option `{name}` must be a list of names, got {other}"
        )),
    }
}

/// Adam's settings, shared by every built-in optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Adam {
    pub fn from_options(o: &Value) -> Result<Self, String> {
        let a = Self {
            beta1: f64_of(o, "adam_beta1")?,
            beta2: f64_of(o, "adam_beta2")?,
            eps: f64_of(o, "adam_epsilon")?,
            weight_decay: f64_of(o, "weight_decay")?,
        };
        for (n, v) in [("adam_beta1", a.beta1), ("adam_beta2", a.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("option `{n}` must be in [0, 1), got {v}"));
            }
        }
        if a.eps < 0.0 || a.weight_decay < 0.0 {
            return Err("options `adam_epsilon` and `weight_decay` must be at least 0".into());
        }
        Ok(a)
    }
}

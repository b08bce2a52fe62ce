//! The range of every numeric flag, declared once per range as a marker type and named at the
//! flag's field twice over the same marker: clap's `value_parser = range::parse::<T, R>` (the
//! command line) and serde's `deserialize_with = "range::de::<T, R, _>"` (`--config` files,
//! `SWIFT_*` variables, and every layered value, since the host builds a specification through
//! serde). A value outside its range, or not finite, is refused when parsed, with the range in
//! the message. `tests/flags.rs` checks every numeric flag of every command through both paths.

use std::fmt::Display;
use std::str::FromStr;

use serde::{de::Error as _, Deserialize, Deserializer};

/// A numeric type a flag can have.
pub trait Number: Copy + Display + FromStr + for<'de> Deserialize<'de> + 'static {
    /// Whether the type holds integers only.
    const INTEGER: bool;
    /// The type's own bounds (what a range without a bound of its own says).
    const MIN: f64;
    const MAX: f64;
    /// The value as a float, for comparing with the range's bounds.
    fn as_f64(self) -> f64;
}

macro_rules! number {
    ($($t:ty => $int:expr),*) => {$(
        impl Number for $t {
            const INTEGER: bool = $int;
            const MIN: f64 = <$t>::MIN as f64;
            const MAX: f64 = <$t>::MAX as f64;
            fn as_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
number!(f64 => false, f32 => false, usize => true, u64 => true, u32 => true, u16 => true,
    u8 => true, i64 => true, i32 => true);

/// A bound of a range: the value and whether the range includes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub value: f64,
    pub inclusive: bool,
}

/// A range of values a numeric flag accepts (besides being finite and of its type).
pub trait Range {
    const LOW: Option<Bound>;
    const HIGH: Option<Bound>;

    /// The range in words, for the type `T`: `a number > 0`, `an integer ≥ 1`, `a number in
    /// [0, 1)`.
    fn describe<T: Number>() -> String {
        let what = if T::INTEGER {
            "an integer"
        } else {
            "a finite number"
        };
        let fmt = |b: Bound| format!("{}", b.value);
        // An integer type's own bounds where the range has none (the upper one only where it
        // is small enough to matter: u8, u16, u32).
        let low = Self::LOW.or(T::INTEGER.then_some(Bound {
            value: T::MIN,
            inclusive: true,
        }));
        let high = Self::HIGH.or((T::INTEGER && T::MAX <= u32::MAX as f64).then_some(Bound {
            value: T::MAX,
            inclusive: true,
        }));
        match (low, high) {
            (None, None) => what.to_string(),
            (Some(l), None) => {
                format!("{what} {} {}", if l.inclusive { ">=" } else { ">" }, fmt(l))
            }
            (None, Some(h)) => {
                format!("{what} {} {}", if h.inclusive { "<=" } else { "<" }, fmt(h))
            }
            (Some(l), Some(h)) => format!(
                "{what} in {}{}, {}{}",
                if l.inclusive { "[" } else { "(" },
                fmt(l),
                fmt(h),
                if h.inclusive { "]" } else { ")" }
            ),
        }
    }

    /// Whether `v` is finite and inside the range.
    fn contains(v: f64) -> bool {
        let low = Self::LOW.is_none_or(|b| v > b.value || (b.inclusive && v == b.value));
        let high = Self::HIGH.is_none_or(|b| v < b.value || (b.inclusive && v == b.value));
        v.is_finite() && low && high
    }
}

macro_rules! range {
    ($(#[$doc:meta])* $name:ident, $low:expr, $high:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl Range for $name {
            const LOW: Option<Bound> = $low;
            const HIGH: Option<Bound> = $high;
        }
    };
}

const fn incl(value: f64) -> Option<Bound> {
    Some(Bound {
        value,
        inclusive: true,
    })
}

const fn excl(value: f64) -> Option<Bound> {
    Some(Bound {
        value,
        inclusive: false,
    })
}

range!(
    /// Any value of the type (floats: finite).
    Any, None, None
);
range!(
    /// `> 0`.
    Positive, excl(0.0), None
);
range!(
    /// `>= 0`.
    NonNegative, incl(0.0), None
);
range!(
    /// `>= 1`: counts.
    AtLeastOne, incl(1.0), None
);
range!(
    /// `[0, 1)`: dropout, Adam's betas, a held-out share.
    ZeroToBelowOne, incl(0.0), excl(1.0)
);
range!(
    /// `(0, 1)`: an exponential moving average's factor that must both keep and take (AdaLoRA's betas).
    OpenUnit, excl(0.0), excl(1.0)
);
range!(
    /// `[0, 1]`: a share that may be whole.
    ZeroToOne, incl(0.0), incl(1.0)
);
range!(
    /// `(0, 1]`: nucleus sampling's `top_p`.
    AboveZeroToOne, excl(0.0), incl(1.0)
);
range!(
    /// `[0, 0.5)`: label smoothing of a preference loss (0.5 makes the labels meaningless).
    BelowHalf, incl(0.0), excl(0.5)
);
range!(
    /// `[1, 8]`: bits per weight.
    Bits, incl(1.0), incl(8.0)
);

/// The message for a value outside `R`.
fn refusal<T: Number, R: Range>(got: &dyn Display) -> String {
    format!("must be {}, got {got}", R::describe::<T>())
}

/// Checks `v` against `R`.
pub fn check<T: Number, R: Range>(v: T) -> Result<T, String> {
    if R::contains(v.as_f64()) {
        Ok(v)
    } else {
        Err(refusal::<T, R>(&v))
    }
}

/// clap's parser of a flag of type `T` in range `R` (`value_parser = range::parse::<T, R>`).
pub fn parse<T: Number, R: Range>(s: &str) -> Result<T, String> {
    let v: T = s
        .trim()
        .parse()
        .map_err(|_| refusal::<T, R>(&format!("`{s}`")))?;
    check::<T, R>(v)
}

/// serde's reader of a field of type `T` in range `R`
/// (`deserialize_with = "range::de::<T, R, _>"`).
pub fn de<'de, T: Number, R: Range, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let v = T::deserialize(d)
        .map_err(|e| D::Error::custom(format!("{e}: {}", refusal_of::<T, R>())))?;
    check::<T, R>(v).map_err(D::Error::custom)
}

/// serde's reader of an optional field of type `T` in range `R`
/// (`deserialize_with = "range::de_opt::<T, R, _>"`, with `default`).
pub fn de_opt<'de, T: Number, R: Range, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    let v = Option::<T>::deserialize(d)
        .map_err(|e| D::Error::custom(format!("{e}: {}", refusal_of::<T, R>())))?;
    v.map(check::<T, R>).transpose().map_err(D::Error::custom)
}

fn refusal_of<T: Number, R: Range>() -> String {
    format!("must be {}", R::describe::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_accept_their_bounds_as_declared_and_refuse_the_rest() {
        assert!(ZeroToBelowOne::contains(0.0) && !ZeroToBelowOne::contains(1.0));
        assert!(AboveZeroToOne::contains(1.0) && !AboveZeroToOne::contains(0.0));
        assert!(!Positive::contains(0.0) && Positive::contains(1e-12));
        assert!(!Any::contains(f64::NAN) && !Any::contains(f64::INFINITY));
        assert_eq!(
            parse::<f64, Positive>("nan").unwrap_err(),
            "must be a finite number > 0, got NaN"
        );
        assert_eq!(
            parse::<usize, AtLeastOne>("0").unwrap_err(),
            "must be an integer >= 1, got 0"
        );
        assert_eq!(
            parse::<usize, AtLeastOne>("-1").unwrap_err(),
            "must be an integer >= 1, got `-1`"
        );
        assert_eq!(
            parse::<u16, Any>("70000").unwrap_err(),
            "must be an integer in [0, 65535], got `70000`"
        );
        assert_eq!(
            parse::<u64, Any>("-1").unwrap_err(),
            "must be an integer >= 0, got `-1`"
        );
        assert_eq!(
            parse::<f64, ZeroToBelowOne>("1.5").unwrap_err(),
            "must be a finite number in [0, 1), got 1.5"
        );
        assert_eq!(parse::<f64, AboveZeroToOne>(" 0.5 "), Ok(0.5));
        let e = serde_json::from_str::<W>(r#"{"x": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be an integer >= 1"), "{e}");
        let e = serde_json::from_str::<W>(r#"{"x": 0}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be an integer >= 1, got 0"), "{e}");
        let w: W = serde_json::from_str(r#"{"x": 2, "y": null}"#).unwrap();
        assert_eq!((w.x, w.y), (2, None));
        let e = serde_json::from_str::<W>(r#"{"x": 2, "y": 1.0}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("must be a finite number in [0, 1), got 1"),
            "{e}"
        );
    }

    #[derive(Debug, Deserialize)]
    struct W {
        #[serde(deserialize_with = "de::<usize, AtLeastOne, _>")]
        x: usize,
        #[serde(default, deserialize_with = "de_opt::<f64, ZeroToBelowOne, _>")]
        y: Option<f64>,
    }
}

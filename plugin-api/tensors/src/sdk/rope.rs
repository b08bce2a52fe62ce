//! Rotary position embeddings as transformers computes them (float32 frequencies), with the
//! `rope_scaling` types `linear`, `dynamic`, `llama3` and `yarn`, partial rotary (only the first
//! `partial_rotary_factor · head_dim` dimensions of each head rotate, as in GPT-NeoX, Phi and
//! StableLM) and both layouts of the rotated pairs ([`RopeStyle`]).

use super::shape::shape;
use std::sync::OnceLock;

use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::{Config, Error};

/// Which dimensions of a head form the rotated pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RopeStyle {
    /// `(i, i + dim/2)`: transformers' `rotate_half` (Llama, Qwen, Mistral, GPT-NeoX).
    #[default]
    HalfSplit,
    /// `(2i, 2i + 1)`: GPT-J's `rotate_every_two` (and Meta's original Llama code).
    Interleaved,
}

/// How the inverse frequencies are scaled.
#[derive(Debug, Clone, PartialEq)]
enum Scaling {
    None,
    Linear {
        factor: f64,
    },
    Dynamic {
        factor: f64,
        max_positions: f64,
    },
    Llama3 {
        factor: f64,
        low: f64,
        high: f64,
        original: f64,
    },
    Yarn {
        factor: f64,
        original: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention: Option<f64>,
        mscale: f64,
        mscale_all_dim: f64,
        truncate: bool,
    },
}

/// A family's rotary embedding: `rope_theta`, the rotated size, the scaling and the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    theta: f64,
    /// The rotated dimensions of each head (even, at most `head_dim`).
    dim: i64,
    head_dim: i64,
    scaling: Scaling,
    style: RopeStyle,
    /// The CPU inverse frequencies and scale, computed once (every scaling but `dynamic`
    /// depends on the settings alone): a decoding step's `cos_sin` otherwise recomputes them
    /// with five libtorch operations.
    cached: InvFreqCache,
}

/// [`Rope::inv_freq`]'s float32 values and scale on the CPU, once; `None` inside where they
/// could not be read back (then every call computes them).
#[derive(Debug, Clone, Default)]
struct InvFreqCache(OnceLock<Option<(Vec<f32>, f64)>>);

impl PartialEq for InvFreqCache {
    /// A cache of values the rope's settings determine: two ropes are equal by their settings.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Rope {
    /// Reads `rope_theta` (default 10000), `rope_scaling` and `partial_rotary_factor` (default
    /// one) from config.json for heads of `head_dim`, in the half-split layout (which
    /// [`Rope::with_style`] changes).
    pub fn from_config(cfg: &Config, head_dim: i64) -> Result<Self, Error> {
        let fraction = cfg.f64_or("partial_rotary_factor", 1.0)?;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error(format!(
                "partial_rotary_factor must be in (0, 1], got {fraction}"
            )));
        }
        let rope = Self::scaled(cfg, head_dim)?;
        rope.with_rotary_dim((head_dim as f64 * fraction) as i64)
    }

    /// Rotates only the first `dim` dimensions of each head (even, in `2..=head_dim`); the
    /// others pass unchanged. The frequencies are those of a `dim`-sized head.
    pub fn with_rotary_dim(mut self, dim: i64) -> Result<Self, Error> {
        if dim < 2 || dim > self.head_dim || dim % 2 != 0 {
            return Err(Error(format!(
                "the rotary size must be even and in 2..={}, got {dim}",
                self.head_dim
            )));
        }
        self.dim = dim;
        self.cached = InvFreqCache::default();
        Ok(self)
    }

    /// The layout of the rotated pairs.
    pub fn with_style(mut self, style: RopeStyle) -> Self {
        self.style = style;
        self
    }

    /// The rotated dimensions of each head.
    pub fn rotary_dim(&self) -> i64 {
        self.dim
    }

    fn scaled(cfg: &Config, head_dim: i64) -> Result<Self, Error> {
        let theta = cfg.f64_or("rope_theta", 10000.0)?;
        let max_pos = cfg.f64_or("max_position_embeddings", 2048.0)?;
        let scaling = match cfg.get("rope_scaling") {
            None | Some(Value::Null) => Scaling::None,
            Some(v) => {
                let s = Config::new(v.clone(), "rope_scaling");
                let kind = s
                    .str_opt("rope_type")?
                    .or(s.str_opt("type")?)
                    .unwrap_or_else(|| "default".into());
                let factor = || s.f64("factor");
                match kind.as_str() {
                    "default" => Scaling::None,
                    "linear" => Scaling::Linear { factor: factor()? },
                    "dynamic" => Scaling::Dynamic { factor: factor()?, max_positions: max_pos },
                    "llama3" => Scaling::Llama3 {
                        factor: factor()?,
                        low: s.f64("low_freq_factor")?,
                        high: s.f64("high_freq_factor")?,
                        original: s.f64("original_max_position_embeddings")?,
                    },
                    "yarn" => {
                        let original = s.f64_or("original_max_position_embeddings", max_pos)?;
                        let factor = factor()?;
                        Scaling::Yarn {
                            factor,
                            original,
                            beta_fast: s.f64_or("beta_fast", 32.0)?,
                            beta_slow: s.f64_or("beta_slow", 1.0)?,
                            attention: s.f64_opt("attention_factor")?,
                            mscale: s.f64_or("mscale", 0.0)?,
                            mscale_all_dim: s.f64_or("mscale_all_dim", 0.0)?,
                            truncate: s.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                        }
                    }
                    other => {
                        return Err(Error(format!(
                            "rope_scaling type `{other}` is not supported (supported: default, linear, dynamic, llama3, yarn)"
                        )))
                    }
                }
            }
        };
        if head_dim < 2 || head_dim % 2 != 0 {
            return Err(Error(format!(
                "head_dim {head_dim} must be even for rotary embeddings"
            )));
        }
        Ok(Self {
            theta,
            dim: head_dim,
            head_dim,
            scaling,
            style: RopeStyle::HalfSplit,
            cached: InvFreqCache::default(),
        })
    }

    /// `1 / base^(2i/dim)` in float32, as transformers computes it.
    fn base_inv_freq(&self, base: f64, device: Device) -> Result<Tensor, Error> {
        let exp = Tensor::f_arange_start_step(0, self.dim, 2, (Kind::Int64, device))?
            .f_to_kind(Kind::Float)?
            / self.dim as f64;
        Ok(Tensor::f_pow_scalar(base, &exp)?.f_reciprocal()?)
    }

    /// [`Rope::inv_freq`], on the CPU from the values computed at the first call (the same
    /// float32 values: libtorch's own, read back); `dynamic` scaling and other devices compute
    /// them each time.
    fn inv_freq_once(&self, seq_len: f64, device: Device) -> Result<(Tensor, f64), Error> {
        if device != Device::Cpu || matches!(self.scaling, Scaling::Dynamic { .. }) {
            return self.inv_freq(seq_len, device);
        }
        let once = self.cached.0.get_or_init(|| {
            let (inv, scale) = self.inv_freq(seq_len, Device::Cpu).ok()?;
            let values = (inv.kind() == Kind::Float && inv.dim() == 1)
                .then(|| Vec::<f32>::try_from(&inv).ok())??;
            Some((values, scale))
        });
        match once {
            Some((values, scale)) => Ok((Tensor::from_slice(values), *scale)),
            None => self.inv_freq(seq_len, device),
        }
    }

    /// Inverse frequencies and the cos/sin scale for sequences reaching `seq_len` positions.
    fn inv_freq(&self, seq_len: f64, device: Device) -> Result<(Tensor, f64), Error> {
        Ok(match &self.scaling {
            Scaling::None => (self.base_inv_freq(self.theta, device)?, 1.0),
            Scaling::Linear { factor } => (self.base_inv_freq(self.theta, device)? / *factor, 1.0),
            Scaling::Dynamic {
                factor,
                max_positions,
            } => {
                let seq = seq_len.max(*max_positions);
                let d = self.dim as f64;
                let base = self.theta
                    * ((factor * seq / max_positions) - (factor - 1.0)).powf(d / (d - 2.0));
                (self.base_inv_freq(base, device)?, 1.0)
            }
            Scaling::Llama3 {
                factor,
                low,
                high,
                original,
            } => {
                let inv = self.base_inv_freq(self.theta, device)?;
                let low_wavelen = original / low;
                let high_wavelen = original / high;
                let wavelen = inv.f_reciprocal()? * (2.0 * std::f64::consts::PI);
                let scaled = inv.f_where_self(&wavelen.f_le(low_wavelen)?, &(&inv / *factor))?;
                let smooth = (wavelen.f_reciprocal()? * *original - *low) / (high - low);
                let smoothed = (smooth.f_neg()? + 1.0) * &scaled / *factor + &smooth * &scaled;
                let medium = wavelen
                    .f_ge(high_wavelen)?
                    .f_logical_and(&wavelen.f_le(low_wavelen)?)?;
                (smoothed.f_where_self(&medium, &scaled)?, 1.0)
            }
            Scaling::Yarn {
                factor,
                original,
                beta_fast,
                beta_slow,
                attention,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let get_mscale = |scale: f64, m: f64| {
                    if scale <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * scale.ln() + 1.0
                    }
                };
                let attention = match attention {
                    Some(a) => *a,
                    None if *mscale != 0.0 && *mscale_all_dim != 0.0 => {
                        get_mscale(*factor, *mscale) / get_mscale(*factor, *mscale_all_dim)
                    }
                    None => get_mscale(*factor, 1.0),
                };
                let d = self.dim as f64;
                let corr = |rot: f64| {
                    (d * (original / (rot * 2.0 * std::f64::consts::PI)).ln())
                        / (2.0 * self.theta.ln())
                };
                let (mut lo, mut hi) = (corr(*beta_fast), corr(*beta_slow));
                if *truncate {
                    lo = lo.floor();
                    hi = hi.ceil();
                }
                let (lo, mut hi) = (lo.max(0.0), hi.min(d - 1.0));
                if lo == hi {
                    hi += 0.001;
                }
                let half = self.dim / 2;
                let ramp = ((Tensor::f_arange(half, (Kind::Float, device))? - lo) / (hi - lo))
                    .f_clamp(0.0, 1.0)?;
                let extrapolation_factor = ramp.f_neg()? + 1.0;
                let exp = Tensor::f_arange_start_step(0, self.dim, 2, (Kind::Int64, device))?
                    .f_to_kind(Kind::Float)?
                    / d;
                let pos_freqs = Tensor::f_pow_scalar(self.theta, &exp)?;
                let extra = pos_freqs.f_reciprocal()?;
                let inter = (pos_freqs * *factor).f_reciprocal()?;
                let inv =
                    inter * (extrapolation_factor.f_neg()? + 1.0) + extra * &extrapolation_factor;
                (inv, attention)
            }
        })
    }

    /// `cos` and `sin` of shape `[batch, 1, seq, rotary_dim]` for positions `[batch, seq]`, in
    /// `kind`, laid out for this rope's style.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> Result<(Tensor, Tensor), Error> {
        let device = positions.device();
        let seq_len = match self.scaling {
            Scaling::Dynamic { .. } => f64::try_from(positions.f_max()?)? + 1.0,
            _ => 0.0,
        };
        let (inv, scale) = self.inv_freq_once(seq_len, device)?;
        let freqs = positions.f_to_kind(Kind::Float)?.f_unsqueeze(-1)? * inv.f_view([1, 1, -1])?;
        let emb = match self.style {
            RopeStyle::HalfSplit => Tensor::f_cat(&[&freqs, &freqs], -1)?,
            RopeStyle::Interleaved => freqs.f_repeat_interleave_self_int(2, -1, None)?,
        };
        // `· 1.0` leaves every float32 value as it is: skipped (two operations a step).
        let scaled = |t: Tensor| if scale == 1.0 { t } else { t * scale };
        let cos = scaled(emb.f_cos()?).f_to_kind(kind)?.f_unsqueeze(1)?;
        let sin = scaled(emb.f_sin()?).f_to_kind(kind)?.f_unsqueeze(1)?;
        Ok((cos, sin))
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]` by `cos_sin`'s tables:
    /// `x·cos + rotate(x)·sin` on the first `rotary_dim` dimensions, the rest unchanged.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, Error> {
        let d = *shape(x).last().ok_or("rotary embedding of a scalar")?;
        if d != self.head_dim {
            return Err(Error(format!(
                "rotary embedding for heads of {} dimensions applied to {d}",
                self.head_dim
            )));
        }
        // A decoding step: one pass over the values instead of seven libtorch operations.
        let interleaved = self.style == RopeStyle::Interleaved;
        if let Some(y) = super::plain::rope(x, cos, sin, self.dim as usize, interleaved) {
            return Ok(y);
        }
        if self.dim == d {
            return self.rotate(x, cos, sin);
        }
        let rot = self.rotate(&x.f_narrow(-1, 0, self.dim)?, cos, sin)?;
        Ok(Tensor::f_cat(
            &[&rot, &x.f_narrow(-1, self.dim, d - self.dim)?],
            -1,
        )?)
    }

    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, Error> {
        let rotated = match self.style {
            RopeStyle::HalfSplit => {
                let half = self.dim / 2;
                let x1 = x.f_narrow(-1, 0, half)?;
                let x2 = x.f_narrow(-1, half, half)?;
                Tensor::f_cat(&[&x2.f_neg()?, &x1], -1)?
            }
            RopeStyle::Interleaved => {
                // (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
                let even = x.f_slice(-1, 0, None, 2)?;
                let odd = x.f_slice(-1, 1, None, 2)?;
                Tensor::f_stack(&[&odd.f_neg()?, &even], -1)?.f_flatten(-2, -1)?
            }
        };
        Ok(x * cos + rotated * sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rope_scaling type against transformers' `ROPE_INIT_FUNCTIONS` (recorded by
    /// tests/reference/make_tiny_models.py).
    #[test]
    fn inverse_frequencies_match_transformers() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/models/rope_expected.json"
        );
        let cases: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(cases.len() >= 7);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let cfg = Config::new(case["config"].clone(), "config.json");
            let rope = Rope::from_config(&cfg, 64).unwrap();
            let (inv, factor) = rope
                .inv_freq(case["seq_len"].as_f64().unwrap(), Device::Cpu)
                .unwrap();
            let got: Vec<f32> = Vec::<f32>::try_from(&inv).unwrap();
            let want: Vec<f64> = case["inv_freq"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), want.len(), "{name}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-6 * w.abs().max(1e-30),
                    "{name}[{i}]: {g} vs {w}"
                );
            }
            let want_factor = case["attention_factor"].as_f64().unwrap();
            assert!(
                (factor - want_factor).abs() < 1e-9,
                "{name}: attention factor {factor} vs {want_factor}"
            );
        }
    }

    #[test]
    fn tables_from_the_frequencies_kept_equal_freshly_computed_ones_bit_for_bit() {
        let scalings = [
            serde_json::json!({}),
            serde_json::json!({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
            serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}),
            serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                "original_max_position_embeddings": 4096}}),
        ];
        let positions = Tensor::from_slice(&[0i64, 7, 300, 4095]).view([2, 2]);
        for config in scalings {
            let cfg = Config::new(config.clone(), "config.json");
            let rope = Rope::from_config(&cfg, 64).unwrap();
            // The kept frequencies (the first call fills them), against a rope that computes
            // every table afresh.
            let (first, _) = rope.cos_sin(&positions, Kind::Float).unwrap();
            let (cos, sin) = rope.cos_sin(&positions, Kind::Float).unwrap();
            let (inv, scale) = rope.inv_freq(0.0, Device::Cpu).unwrap();
            let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv.view([1, 1, -1]);
            let emb = Tensor::cat(&[&freqs, &freqs], -1);
            let want_cos = (emb.cos() * scale).unsqueeze(1);
            let want_sin = (emb.sin() * scale).unsqueeze(1);
            assert!(cos.equal(&want_cos) && first.equal(&want_cos), "{config}");
            assert!(sin.equal(&want_sin), "{config}");
            // A narrower rotary size after construction computes its own frequencies.
            let narrow = rope.clone().with_rotary_dim(32).unwrap();
            let (c32, _) = narrow.cos_sin(&positions, Kind::Float).unwrap();
            assert_eq!(c32.size(), [2, 1, 2, 32], "{config}");
        }
    }

    #[test]
    fn unknown_scaling_is_refused() {
        let cfg = Config::new(
            serde_json::json!({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}),
            "config.json",
        );
        let err = Rope::from_config(&cfg, 64).unwrap_err().0;
        assert!(err.contains("longrope") && err.contains("yarn"), "{err}");
    }

    /// `x` rotated by hand: pairs `(i, i + dim/2)` or `(2i, 2i+1)` of the first `dim`
    /// dimensions turn by `position · theta^(-2k/dim)` for pair `k`.
    fn by_hand(x: &[f64], pos: f64, theta: f64, dim: usize, interleaved: bool) -> Vec<f64> {
        let mut out = x.to_vec();
        for k in 0..dim / 2 {
            let angle = pos * theta.powf(-2.0 * k as f64 / dim as f64);
            let (a, b) = if interleaved {
                (2 * k, 2 * k + 1)
            } else {
                (k, k + dim / 2)
            };
            out[a] = x[a] * angle.cos() - x[b] * angle.sin();
            out[b] = x[b] * angle.cos() + x[a] * angle.sin();
        }
        out
    }

    #[test]
    fn partial_and_interleaved_rotations_match_the_hand_computed_ones() {
        let x: Vec<f64> = (0..8).map(|i| 0.3 * i as f64 - 1.0).collect();
        let xt = Tensor::from_slice(&x).view([1, 1, 1, 8]);
        let pos = Tensor::from_slice(&[5i64]).view([1, 1]);
        for (factor, style) in [
            (1.0, RopeStyle::HalfSplit),
            (0.5, RopeStyle::HalfSplit),
            (1.0, RopeStyle::Interleaved),
            (0.5, RopeStyle::Interleaved),
        ] {
            let cfg = Config::model(
                &serde_json::json!({"rope_theta": 100.0, "partial_rotary_factor": factor}),
            );
            let rope = Rope::from_config(&cfg, 8).unwrap().with_style(style);
            let (cos, sin) = rope.cos_sin(&pos, Kind::Double).unwrap();
            let got =
                Vec::<f64>::try_from(rope.apply(&xt, &cos, &sin).unwrap().flatten(0, -1)).unwrap();
            let dim = (8.0 * factor) as usize;
            let want = by_hand(&x, 5.0, 100.0, dim, style == RopeStyle::Interleaved);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // The frequencies are float32, as in transformers.
                assert!((g - w).abs() < 1e-5, "{factor} {style:?} [{i}]: {g} vs {w}");
            }
        }
        let bad = Config::model(&serde_json::json!({"partial_rotary_factor": 1.5}));
        assert!(Rope::from_config(&bad, 8).unwrap_err().0.contains("(0, 1]"));
    }
}

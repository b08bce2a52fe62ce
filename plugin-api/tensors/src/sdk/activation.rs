//! [`Activation`]: config.json's `hidden_act` / `activation_function` values, written as
//! transformers' `ACT2FN` computes them.

use tch::Tensor;

use super::Error;

/// An activation function by its transformers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`: `x·σ(x)`.
    Silu,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: the tanh approximation, as transformers'
    /// `NewGELUActivation` writes it.
    GeluTanh,
    /// `quick_gelu`: `x·σ(1.702x)`.
    QuickGelu,
    /// `relu`.
    Relu,
    /// `relu2`: `relu(x)²`.
    Relu2,
}

impl Activation {
    /// The names [`Activation::from_name`] accepts.
    pub const NAMES: &'static [&'static str] = &[
        "silu",
        "swish",
        "gelu",
        "gelu_new",
        "gelu_pytorch_tanh",
        "gelu_fast",
        "quick_gelu",
        "relu",
        "relu2",
    ];

    /// The activation transformers names `name`; an unknown name is refused, listing the known.
    pub fn from_name(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            "relu2" => Activation::Relu2,
            other => {
                return Err(Error(format!(
                    "activation `{other}` is not supported (supported: {})",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    /// `act(gate) · up`, a gated MLP's product (SwiGLU and its kin). The activation stays
    /// libtorch's (a one-pass SiLU with libm's `exp`, an ulp off libtorch's, was tried for
    /// decoding steps and moved a quantized model's greedy near-ties, tests/gguf_decode.rs);
    /// for a decoding step the product is done in place in the activation's fresh output.
    pub fn gated(self, gate: &Tensor, up: &Tensor) -> Result<Tensor, Error> {
        let y = self.apply(gate)?;
        if super::step::mul_into(&y, up) {
            return Ok(y);
        }
        Ok(y * up)
    }

    /// Applies the activation elementwise.
    pub fn apply(self, x: &Tensor) -> Result<Tensor, Error> {
        Ok(match self {
            Activation::Silu => x.f_silu()?,
            Activation::Gelu => x.f_gelu("none")?,
            Activation::GeluTanh => {
                let inner = (x + x.f_pow_tensor_scalar(3.0)? * 0.044715)
                    * (2.0f64 / std::f64::consts::PI).sqrt();
                x * 0.5 * (inner.f_tanh()? + 1.0)
            }
            Activation::QuickGelu => x * (x * 1.702).f_sigmoid()?,
            Activation::Relu => x.f_relu()?,
            Activation::Relu2 => x.f_relu()?.f_square()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_their_formulas() {
        let xs = [-2.0f64, -0.5, 0.0, 0.3, 1.7];
        let t = Tensor::from_slice(&xs);
        let erf = |x: f64| {
            // Abramowitz–Stegun 7.1.26 is too coarse: integrate erf numerically instead.
            let n = 20_000;
            let h = x / n as f64;
            (0..n)
                .map(|i| {
                    let a = i as f64 * h;
                    let b = a + h;
                    let m = (a + b) / 2.0;
                    h / 6.0 * ((-a * a).exp() + 4.0 * (-m * m).exp() + (-b * b).exp())
                })
                .sum::<f64>()
                * 2.0
                / std::f64::consts::PI.sqrt()
        };
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let cases: [(&str, &dyn Fn(f64) -> f64); 6] = [
            ("silu", &|x| x * sig(x)),
            ("gelu", &|x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt()))),
            ("gelu_new", &|x| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            }),
            ("quick_gelu", &|x| x * sig(1.702 * x)),
            ("relu", &|x| x.max(0.0)),
            ("relu2", &|x| x.max(0.0).powi(2)),
        ];
        for (name, f) in cases {
            let got = Vec::<f64>::try_from(Activation::from_name(name).unwrap().apply(&t).unwrap())
                .unwrap();
            for (x, g) in xs.iter().zip(got) {
                assert!(
                    (g - f(*x)).abs() < 1e-9,
                    "{name}({x}) = {g}, want {}",
                    f(*x)
                );
            }
        }
        let e = Activation::from_name("mish").unwrap_err().0;
        assert!(e.contains("`mish`") && e.contains("gelu_new"), "{e}");
    }
}

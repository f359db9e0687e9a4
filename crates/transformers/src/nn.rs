//! The layers the architectures share, as torch and transformers write them: `Linear`,
//! `Embedding`, the RMS norm (plain and Gemma's `1 + weight` form), and the activations of
//! transformers' `ACT2FN`. Each layer loads its weights through a [`VarBuilder`], the one place
//! a weight name is written, and says how an untrained weight is initialised
//! (transformers' `_init_weights`).

use onnx_diagnostic_core::{Result as CoreResult, Tensor, scope};
use tch::Kind;

use crate::{
    error::{Error, Result},
    weights::{Init, VarBuilder},
};

/// `torch.nn.Linear` under its module name: `y = x @ weight.T + bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{name}.weight` `[out, in]` (and `{name}.bias` `[out]` when `bias`) under `vb`:
    /// untrained, the weight is drawn from N(0, `initializer_range`) and the bias is zero.
    ///
    /// # Errors
    /// A missing, misshaped or non-floating weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        in_features: i64,
        out_features: i64,
        bias: bool,
    ) -> Result<Self> {
        let inits = (Init::Normal, bias.then_some(Init::Zeros));
        Self::load_init(vb, name, (in_features, out_features), inits)
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    fn load_init(
        vb: &VarBuilder<'_>,
        name: &str,
        (in_features, out_features): (i64, i64),
        (weight, bias): (Init, Option<Init>),
    ) -> Result<Self> {
        let vb = vb.pp(name);
        Ok(Self {
            name: name.to_owned(),
            weight: vb.get("weight", &[out_features, in_features], weight)?,
            bias: bias
                .map(|init| vb.get("bias", &[out_features], init))
                .transpose()?,
        })
    }

    /// [`Linear::load`] with torch's own initialisation when untrained (U(±1/√in) for weight
    /// and bias, see [`Init::Uniform`]): the layers of a model without `_init_weights`
    /// (diffusers').
    ///
    /// # Errors
    /// A missing, misshaped or non-floating weight.
    pub fn load_torch_default(
        vb: &VarBuilder<'_>,
        name: &str,
        in_features: i64,
        out_features: i64,
        bias: bool,
    ) -> Result<Self> {
        let uniform = Init::Uniform(1.0 / (in_features.max(1) as f64).sqrt());
        Self::load_init(
            vb,
            name,
            (in_features, out_features),
            (uniform, bias.then_some(uniform)),
        )
    }

    /// The projection, recorded under the module name.
    ///
    /// # Errors
    /// Any error of the op.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope(&self.name);
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `torch.nn.Embedding(num, dim, padding_idx)`: untrained, N(0, `initializer_range`) with the
/// padding row at zero, as transformers' `_init_weights` leaves it.
#[derive(Clone, Debug)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    /// Loads `{name}.weight` `[num, dim]` under `vb`. `padding_idx` is the config's
    /// `pad_token_id`; a negative one counts from the end, as torch normalises it.
    ///
    /// # Errors
    /// A missing, misshaped or non-floating weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        num: i64,
        dim: i64,
        padding_idx: Option<i64>,
    ) -> Result<Self> {
        let pad = padding_idx
            .map(|p| if p < 0 { p + num } else { p })
            .filter(|p| (0..num).contains(p));
        let weight = vb
            .pp(name)
            .get("weight", &[num, dim], Init::NormalWithZeroRow(pad))?;
        Ok(Self { weight })
    }

    /// The table `[num, dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The rows of `ids`.
    ///
    /// # Errors
    /// Any error of the op.
    pub fn forward(&self, ids: &Tensor) -> CoreResult<Tensor> {
        Tensor::embedding(&self.weight, ids)
    }
}

/// `LlamaRMSNorm`: `weight * x / sqrt(mean(x^2) + eps)`, the normalisation in float32; with
/// `one_centered` (`GemmaRMSNorm`) `(1 + weight) * ...`, the product also in float32.
/// Untrained, the weight is one (zero when one-centered: the scale is then one as well).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
    one_centered: bool,
}

impl RmsNorm {
    /// Loads `{name}.weight` `[size]` under `vb`.
    ///
    /// # Errors
    /// A missing, misshaped or non-floating weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        size: i64,
        eps: f64,
        one_centered: bool,
    ) -> Result<Self> {
        let init = if one_centered {
            Init::Zeros
        } else {
            Init::Ones
        };
        Ok(Self {
            weight: vb.pp(name).get("weight", &[size], init)?,
            eps,
            one_centered,
        })
    }

    /// The normalisation.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let input_kind = x.kind();
        let h = x.to_kind(Kind::Float)?;
        let variance = h.pow_scalar(2.0)?.mean(&[-1], true)?;
        let h = h.mul(&variance.add_scalar(self.eps)?.rsqrt()?)?;
        if self.one_centered {
            return h
                .mul(&self.weight.to_kind(Kind::Float)?.add_scalar(1.0)?)?
                .to_kind(input_kind);
        }
        self.weight.mul(&h.to_kind(input_kind)?)
    }
}

/// `torch.nn.LayerNorm(size, eps)` with its affine weight and bias (untrained: ones and
/// zeros), computed by torch's kernel in the input's type.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    size: i64,
    eps: f64,
}

impl LayerNorm {
    /// Loads `{name}.weight` and `{name}.bias` `[size]` under `vb`.
    ///
    /// # Errors
    /// A missing, misshaped or non-floating weight.
    pub fn load(vb: &VarBuilder<'_>, name: &str, size: i64, eps: f64) -> Result<Self> {
        let vb = vb.pp(name);
        Ok(Self {
            weight: vb.get("weight", &[size], Init::Ones)?,
            bias: vb.get("bias", &[size], Init::Zeros)?,
            size,
            eps,
        })
    }

    /// The normalisation over the last dim.
    ///
    /// # Errors
    /// Any error of the op.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        x.layer_norm(&[self.size], Some(&self.weight), Some(&self.bias), self.eps)
    }
}

/// An activation of transformers' `ACT2FN`, by its config name (`hidden_act`). Each computes
/// what transformers' class computes: the fused torch kernel where transformers calls one
/// (`gelu`, `gelu_pytorch_tanh`, `silu`, ...), the written-out formula where transformers
/// writes one (`gelu_new`, `gelu_fast`, `quick_gelu`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`, `gelu_python`: the exact (erf) GELU.
    Gelu,
    /// `gelu_10`: the exact GELU clipped to [-10, 10].
    Gelu10,
    /// `gelu_pytorch_tanh`: torch's tanh-approximated GELU kernel.
    GeluPytorchTanh,
    /// `gelu_new`, `gelu_accurate`, `gelu_python_tanh`: `0.5 x (1 + tanh(sqrt(2/pi) (x +
    /// 0.044715 x^3)))` written out.
    GeluNew,
    /// `gelu_fast`: `0.5 x (1 + tanh(x 0.7978845608 (1 + 0.044715 x^2)))`.
    GeluFast,
    /// `quick_gelu`: `x sigmoid(1.702 x)`.
    QuickGelu,
    /// `relu`.
    Relu,
    /// `relu2`: `relu(x)^2`.
    Relu2,
    /// `relu6`: `clamp(x, 0, 6)`.
    Relu6,
    /// `leaky_relu`: slope 0.01 below zero (`nn.LeakyReLU()`'s default).
    LeakyRelu,
    /// `hardswish`: `x relu6(x + 3) / 6`.
    Hardswish,
    /// `silu`, `swish`.
    Silu,
    /// `sigmoid`.
    Sigmoid,
    /// `tanh`.
    Tanh,
    /// `mish`: `x tanh(softplus(x))`.
    Mish,
    /// `sqrtsoftplus`: `sqrt(softplus(x))`.
    SqrtSoftplus,
    /// `linear`: the identity.
    Linear,
}

/// The names of transformers 5.23's `ACT2FN`, in its order.
pub const ACT2FN: &[&str] = &[
    "gelu",
    "gelu_10",
    "gelu_fast",
    "gelu_new",
    "gelu_python",
    "gelu_pytorch_tanh",
    "gelu_python_tanh",
    "gelu_accurate",
    "hardswish",
    "laplace",
    "leaky_relu",
    "linear",
    "mish",
    "quick_gelu",
    "relu",
    "relu2",
    "relu6",
    "sigmoid",
    "silu",
    "sqrtsoftplus",
    "swish",
    "tanh",
    "prelu",
    "xielu",
];

impl Activation {
    /// The activation of a config name.
    ///
    /// # Errors
    /// [`Error::Activation`] naming the model and the name: an `ACT2FN` entry this crate does
    /// not compute (`laplace` needs `erf`, `prelu` and `xielu` have learned parameters no
    /// config-level activation loads), or a name that is not in `ACT2FN` at all.
    pub fn from_name(model: &str, name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" | "gelu_python" => Self::Gelu,
            "gelu_10" => Self::Gelu10,
            "gelu_pytorch_tanh" => Self::GeluPytorchTanh,
            "gelu_new" | "gelu_accurate" | "gelu_python_tanh" => Self::GeluNew,
            "gelu_fast" => Self::GeluFast,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "relu2" => Self::Relu2,
            "relu6" => Self::Relu6,
            "leaky_relu" => Self::LeakyRelu,
            "hardswish" => Self::Hardswish,
            "silu" | "swish" => Self::Silu,
            "sigmoid" => Self::Sigmoid,
            "tanh" => Self::Tanh,
            "mish" => Self::Mish,
            "sqrtsoftplus" => Self::SqrtSoftplus,
            "linear" => Self::Linear,
            other => {
                let message = if ACT2FN.contains(&other) {
                    "is in transformers' ACT2FN but not implemented here (laplace, prelu and \
                     xielu are not)"
                        .to_owned()
                } else {
                    format!(
                        "is not an activation of transformers' ACT2FN ({})",
                        ACT2FN.join(", ")
                    )
                };
                return Err(Error::Activation {
                    model: model.to_owned(),
                    name: other.to_owned(),
                    message,
                });
            }
        })
    }

    /// The activation of `x`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(self, x: &Tensor) -> CoreResult<Tensor> {
        let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
        match self {
            Self::Gelu => x.gelu("none"),
            Self::Gelu10 => x.gelu("none")?.clamp(Some(-10.0), Some(10.0)),
            Self::GeluPytorchTanh => x.gelu("tanh"),
            Self::GeluNew => {
                let inner = x
                    .add(&x.pow_scalar(3.0)?.mul_scalar(0.044715)?)?
                    .mul_scalar(sqrt_2_over_pi)?;
                x.mul_scalar(0.5)?.mul(&inner.tanh()?.add_scalar(1.0)?)
            }
            Self::GeluFast => {
                let inner = x
                    .mul_scalar(0.797_884_560_8)?
                    .mul(&x.mul(x)?.mul_scalar(0.044715)?.add_scalar(1.0)?)?;
                x.mul_scalar(0.5)?.mul(&inner.tanh()?.add_scalar(1.0)?)
            }
            Self::QuickGelu => x.mul(&x.mul_scalar(1.702)?.sigmoid()?),
            Self::Relu => x.relu(),
            Self::Relu2 => {
                let r = x.relu()?;
                r.mul(&r)
            }
            Self::Relu6 => x.clamp(Some(0.0), Some(6.0)),
            Self::LeakyRelu => x.where_cond(&x.gt_scalar(0.0)?, &x.mul_scalar(0.01)?),
            Self::Hardswish => x
                .mul(&x.add_scalar(3.0)?.clamp(Some(0.0), Some(6.0))?)?
                .div_scalar(6.0),
            Self::Silu => x.silu(),
            Self::Sigmoid => x.sigmoid(),
            Self::Tanh => x.tanh(),
            Self::Mish => x.mul(&softplus(x)?.tanh()?),
            Self::SqrtSoftplus => softplus(x)?.sqrt(),
            Self::Linear => Ok(x.clone()),
        }
    }
}

/// torch's `softplus(x)` (beta 1, threshold 20): `x` above 20, `log(1 + exp(x))` down to -5,
/// and below, where `1 + exp(x)` would round away the small term, its series `e - e^2/2 +
/// e^3/3` of `e = exp(x)` (exact to float32 there: the next term is below 1e-9 of the value).
fn softplus(x: &Tensor) -> CoreResult<Tensor> {
    let e = x.exp()?;
    let soft = e.add_scalar(1.0)?.log()?;
    let series = e
        .sub(&e.mul(&e)?.mul_scalar(0.5)?)?
        .add(&e.pow_scalar(3.0)?.div_scalar(3.0)?)?;
    let low = series.where_cond(&x.lt_scalar(-5.0)?, &soft)?;
    x.where_cond(&x.gt_scalar(20.0)?, &low)
}

/// `x` rounded to `kind`, as `torch.tensor(x, dtype=kind)` stores it.
pub(crate) fn round_to(x: f64, kind: Kind) -> f64 {
    match kind {
        Kind::Half => half::f16::from_f64(x).to_f64(),
        Kind::BFloat16 => half::bf16::from_f64(x).to_f64(),
        Kind::Double => x,
        _ => f64::from(x as f32),
    }
}

//! Llama, as transformers 5.23 writes it (`models/llama/modeling_llama.py`): `LlamaRMSNorm`,
//! `LlamaRotaryEmbedding`, `LlamaMLP`, `LlamaAttention` (grouped-query), `LlamaDecoderLayer`,
//! `LlamaModel`, `LlamaForCausalLM`. Eager attention, the causal mask combined with the padding
//! mask as transformers' eager path adds it (0 where allowed, the float minimum elsewhere), an
//! explicit [`DynamicCache`]. Written the natural eager way: making it export-friendly is the
//! patches' job.

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope};
use serde::Deserialize;
use tch::{Device, Kind};

use super::{Linear, activation};
use crate::{
    cache_utils::DynamicCache,
    error::{Error, Result},
    modeling_outputs::CausalLMOutputWithPast,
    weights::Weights,
};

/// The rope parameters: transformers 5 `rope_parameters`, or the legacy `rope_scaling`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RopeParameters {
    /// `default`, `linear`, `llama3`, `dynamic`, `yarn`, `longrope` (`su` is longrope's old
    /// name).
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// Base of the frequencies (transformers 5 keeps it here).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Scaling factor (`linear`, `llama3`, `dynamic`).
    #[serde(default)]
    pub factor: Option<f64>,
    /// `llama3`.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// `llama3`.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// `llama3`, `yarn`, `longrope`.
    #[serde(default)]
    pub original_max_position_embeddings: Option<i64>,
    /// `yarn`, `longrope`: the scale of cos/sin (inferred from `factor` when absent).
    #[serde(default)]
    pub attention_factor: Option<f64>,
    /// `yarn` (default 32).
    #[serde(default)]
    pub beta_fast: Option<f64>,
    /// `yarn` (default 1).
    #[serde(default)]
    pub beta_slow: Option<f64>,
    /// `yarn`.
    #[serde(default)]
    pub mscale: Option<f64>,
    /// `yarn`.
    #[serde(default)]
    pub mscale_all_dim: Option<f64>,
    /// `yarn`: round the correction range (default true).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// `longrope`: per-frequency factors beyond the original length.
    #[serde(default)]
    pub long_factor: Option<Vec<f64>>,
    /// `longrope`: per-frequency factors within the original length.
    #[serde(default)]
    pub short_factor: Option<Vec<f64>>,
}

fn default_theta() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".to_owned()
}
fn default_std() -> f64 {
    0.02
}
fn default_max_pos() -> i64 {
    2048
}

/// `LlamaConfig`, with the names of `config.json`; unknown keys are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Hidden size.
    pub hidden_size: i64,
    /// MLP inner size.
    pub intermediate_size: i64,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (defaults to the query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Head size (defaults to hidden / heads).
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// MLP activation.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest sequence of training.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Rope base (legacy top-level key).
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Rope parameters (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Rope scaling (transformers 4).
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// Biases on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP.
    #[serde(default)]
    pub mlp_bias: bool,
    /// `lm_head` shares the embedding weights.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Standard deviation of untrained weights.
    #[serde(default = "default_std")]
    pub initializer_range: f64,
    /// Attention window (Mistral; Llama ignores it, as transformers does).
    #[serde(default)]
    pub sliding_window: Option<i64>,
    /// Qwen2: whether `sliding_window` applies (to the layers from `max_window_layers` on).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Phi3: the part of the head the rotary embedding applies to (1.0 only, so far).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// The pretraining length (Phi3 keeps it at the top level; `longrope` and `yarn` read it
    /// when their parameters do not give it).
    #[serde(default)]
    pub original_max_position_embeddings: Option<i64>,
    /// The architecture family, from `model_type` (what differs from Llama, see [`Arch`]).
    #[serde(skip)]
    pub arch: Arch,
}

/// The families sharing Llama's decoder, and what each changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    /// `llama`.
    #[default]
    Llama,
    /// `mistral`: the sliding-window mask.
    Mistral,
    /// `qwen2`: biases on q/k/v (not on o).
    Qwen2,
    /// `gemma`: embeddings scaled by `sqrt(hidden_size)`, RMSNorm by `1 + weight`, tanh GELU,
    /// tied embeddings and `head_dim` 256 by default.
    Gemma,
    /// `phi3`: fused `qkv_proj` and `gate_up_proj`, no biases, the sliding-window mask when
    /// `sliding_window` is set.
    Phi3,
}

impl Arch {
    fn from_model_type(model_type: Option<&str>) -> Self {
        match model_type {
            Some("mistral") => Arch::Mistral,
            Some("qwen2") => Arch::Qwen2,
            Some("gemma") => Arch::Gemma,
            Some("phi3") => Arch::Phi3,
            _ => Arch::Llama,
        }
    }

    /// The transformers class of the causal LM.
    pub fn class_name(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Gemma => "GemmaForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
        }
    }
}

impl Config {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] with serde's message.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Parses a `config.json` with the defaults of its `model_type` (transformers' config
    /// classes differ: `GemmaConfig` ties the embeddings and uses `head_dim` 256 unless told
    /// otherwise, and turns `hidden_act="gelu"` into the tanh approximation).
    fn parse(text: &str, path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Config {
            path: path.to_owned(),
            message,
        };
        let mut raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
        let arch = Arch::from_model_type(raw.get("model_type").and_then(|v| v.as_str()));
        if let (Arch::Gemma, Some(obj)) = (arch, raw.as_object_mut()) {
            for (k, v) in [
                ("tie_word_embeddings", serde_json::json!(true)),
                ("head_dim", serde_json::json!(256)),
                ("hidden_act", serde_json::json!("gelu_pytorch_tanh")),
            ] {
                if obj.get(k).is_none_or(serde_json::Value::is_null) {
                    obj.insert(k.to_owned(), v);
                }
            }
            if obj.get("hidden_act").and_then(|v| v.as_str()) == Some("gelu") {
                obj.insert(
                    "hidden_act".to_owned(),
                    serde_json::json!("gelu_pytorch_tanh"),
                );
            }
        }
        let mut cfg: Config = serde_json::from_value(raw).map_err(|e| fail(e.to_string()))?;
        cfg.arch = arch;
        if arch == Arch::Phi3 && cfg.partial_rotary_factor.is_some_and(|f| f != 1.0) {
            return Err(Error::Unsupported {
                model: arch.class_name().to_owned(),
                feature: format!(
                    "partial_rotary_factor={} (rotary embedding on part of the head)",
                    cfg.partial_rotary_factor.unwrap_or(1.0)
                ),
            });
        }
        if arch == Arch::Qwen2 && cfg.use_sliding_window {
            return Err(Error::Unsupported {
                model: arch.class_name().to_owned(),
                feature: "use_sliding_window=true (sliding layers from max_window_layers on)"
                    .to_owned(),
            });
        }
        Ok(cfg)
    }

    /// The sizes the text-generation input sets need.
    pub fn decoder_dims(&self) -> crate::tasks::DecoderDims {
        crate::tasks::DecoderDims {
            vocab_size: self.vocab_size,
            num_layers: self.num_hidden_layers,
            kv_heads: self.kv_heads(),
            head_dim: self.head_size(),
        }
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_size(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The effective rope parameters and base.
    fn rope(&self) -> (RopeParameters, f64) {
        let p = self
            .rope_parameters
            .clone()
            .or_else(|| self.rope_scaling.clone())
            .unwrap_or_default();
        let theta = p.rope_theta.unwrap_or(self.rope_theta);
        (p, theta)
    }
}

const MODEL: &str = "LlamaForCausalLM";

/// `LlamaRMSNorm`: `weight * x / sqrt(mean(x^2) + eps)`, computed in float32
/// (`GemmaRMSNorm`: `(1 + weight) * ...`, the product also in float32).
#[derive(Clone, Debug)]
pub struct LlamaRMSNorm {
    weight: Tensor,
    eps: f64,
    one_centered: bool,
}

impl LlamaRMSNorm {
    fn load(w: &mut Weights, name: &str, size: i64, cfg: &Config) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{name}.weight"), &[size])?,
            eps: cfg.rms_norm_eps,
            one_centered: cfg.arch == Arch::Gemma,
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

/// `LlamaRotaryEmbedding`: cos/sin of `position * inv_freq`, scaled by the rope type.
#[derive(Clone, Debug)]
pub struct LlamaRotaryEmbedding {
    inv_freq: Tensor,
    attention_scaling: f64,
    update: RopeUpdate,
}

/// What `dynamic_rope_update` does before the forward, per rope type.
#[derive(Clone, Debug)]
enum RopeUpdate {
    /// Nothing: the frequencies are fixed.
    None,
    /// `dynamic`: beyond `max_position_embeddings`, the frequencies of a larger base computed
    /// for the current length (transformers' Python `if` on `max(position_ids) + 1`).
    Dynamic {
        factor: f64,
        max_pos: i64,
        dim: i64,
        base: f64,
    },
    /// `longrope`: the long factors when `max(position_ids) + 1` exceeds the original length
    /// (a `torch.where`, as transformers 5 writes it).
    LongRope {
        long_inv_freq: Tensor,
        original: i64,
    },
}

/// `1 / (base^(arange(0, dim, 2) / dim))`, in float32 as transformers computes it.
fn default_inv_freq(base: f64, dim: i64) -> std::result::Result<tch::Tensor, tch::TchError> {
    let exponents = tch::Tensor::f_arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(dim as f64)?;
    tch::Tensor::f_pow_scalar(base, &exponents)?.f_reciprocal()
}

impl LlamaRotaryEmbedding {
    /// The frequencies of the config's rope type (`default`, `linear`, `llama3`, `dynamic`,
    /// `yarn`, `longrope`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for another rope type, [`Error::Config`] for missing parameters.
    pub fn new(cfg: &Config) -> Result<Self> {
        let dim = cfg.head_size();
        let (p, base) = cfg.rope();
        let model = cfg.arch.class_name();
        let tch_err = |e: tch::TchError| Error::Unsupported {
            model: model.to_owned(),
            feature: format!("rope initialisation ({e})"),
        };
        let inv_freq = default_inv_freq(base, dim).map_err(tch_err)?;
        let rope_type = p.rope_type.clone().unwrap_or_else(|| "default".to_owned());
        let original = p
            .original_max_position_embeddings
            .or(cfg.original_max_position_embeddings);
        let need_original = |what: &str| {
            original.ok_or_else(|| Error::Config {
                path: "<config>".into(),
                message: format!("rope_type '{what}' needs original_max_position_embeddings"),
            })
        };
        let mut attention_scaling = 1.0;
        let mut update = RopeUpdate::None;
        let inv_freq = match rope_type.as_str() {
            "default" => inv_freq,
            "linear" => inv_freq
                .f_div_scalar(p.factor.unwrap_or(1.0))
                .map_err(tch_err)?,
            "llama3" => llama3_inv_freq(&inv_freq, &p).map_err(tch_err)?,
            "dynamic" => {
                update = RopeUpdate::Dynamic {
                    factor: p.factor.unwrap_or(1.0),
                    max_pos: cfg.max_position_embeddings,
                    dim,
                    base,
                };
                inv_freq
            }
            "yarn" => {
                let original = need_original("yarn")?;
                let (f, scaling) =
                    yarn_inv_freq(&p, base, dim, cfg.max_position_embeddings, original)
                        .map_err(tch_err)?;
                attention_scaling = scaling;
                f
            }
            "longrope" | "su" => {
                let original = need_original("longrope")?;
                let factors = |v: &Option<Vec<f64>>, which: &str| {
                    v.clone()
                        .filter(|f| f.len() as i64 == dim / 2)
                        .ok_or_else(|| Error::Config {
                            path: "<config>".into(),
                            message: format!(
                                "rope_type 'longrope' needs {which} with {} values",
                                dim / 2
                            ),
                        })
                };
                let (short, long) = (
                    factors(&p.short_factor, "short_factor")?,
                    factors(&p.long_factor, "long_factor")?,
                );
                let factor = p
                    .factor
                    .unwrap_or(cfg.max_position_embeddings as f64 / original as f64);
                attention_scaling = match p.attention_factor {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                let scaled = |f: &[f64]| -> std::result::Result<tch::Tensor, tch::TchError> {
                    let ext = tch::Tensor::from_slice(f).f_to_kind(Kind::Float)?;
                    inv_freq.f_div(&ext)
                };
                update = RopeUpdate::LongRope {
                    long_inv_freq: Tensor::from(scaled(&long).map_err(tch_err)?),
                    original,
                };
                scaled(&short).map_err(tch_err)?
            }
            other => {
                return Err(Error::Unsupported {
                    model: model.to_owned(),
                    feature: format!("rope_type '{other}'"),
                });
            }
        };
        Ok(Self {
            inv_freq: Tensor::from(inv_freq),
            attention_scaling,
            update,
        })
    }

    /// The frequencies for these positions (`dynamic_rope_update`).
    fn frequencies(&self, position_ids: &Tensor) -> CoreResult<Tensor> {
        match &self.update {
            RopeUpdate::None => Ok(self.inv_freq.clone()),
            RopeUpdate::LongRope {
                long_inv_freq,
                original,
            } => {
                let seq_len = position_ids.amax(&[], false)?.add_scalar(1.0)?;
                long_inv_freq.where_cond(&seq_len.gt_scalar(*original as f64)?, &self.inv_freq)
            }
            RopeUpdate::Dynamic {
                factor,
                max_pos,
                dim,
                base,
            } => {
                // transformers: `if seq_len > max_seq_len_cached:` on a tensor, a data-dependent
                // branch (the seeds patch it).
                let seq_len = position_ids.amax(&[], false)?.item_f64()? + 1.0;
                if seq_len <= *max_pos as f64 {
                    return Ok(self.inv_freq.clone());
                }
                let d = *dim as f64;
                let base = base
                    * ((factor * seq_len / *max_pos as f64) - (factor - 1.0)).powf(d / (d - 2.0));
                default_inv_freq(base, *dim)
                    .and_then(|f| f.f_to_device(position_ids.device()))
                    .map(Tensor::from)
                    .map_err(|e| onnx_diagnostic_core::Error::Model {
                        model: MODEL.to_owned(),
                        message: e.to_string(),
                    })
            }
        }
    }

    /// `(cos, sin)` of shape `[batch, seq, head_dim]` for `position_ids` `[batch, seq]`.
    /// Patchable: the seeds' `patched_LlamaRotaryEmbedding.forward` (crates/patch-transformers)
    /// replaces the data-dependent `dynamic` update.
    ///
    /// # Errors
    /// Any error of the ops; [`onnx_diagnostic_core::Error::DataDependent`] during an export
    /// with the `dynamic` rope type (its update reads the largest position).
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(&self, position_ids: &Tensor) -> CoreResult<(Tensor, Tensor)> {
        let _s = scope("rotary_emb");
        let inv_freq = self.frequencies(position_ids)?;
        self.cos_sin(position_ids, &inv_freq)
    }

    /// The frequencies as `model.to(dtype).to(device)` leaves them: transformers keeps
    /// `inv_freq` as a buffer, which the cast rounds to `dtype`, and its forward reads it back
    /// in float32. Only the config's frequencies are rounded; those an update computes stay
    /// float32, as in transformers. Every frequency tensor moves to `device`.
    ///
    /// # Errors
    /// A libtorch error of the casts.
    pub fn with_buffers(mut self, dtype: Kind, device: Device) -> CoreResult<Self> {
        if dtype != Kind::Float {
            self.inv_freq = self.inv_freq.to_kind(dtype)?.to_kind(Kind::Float)?;
        }
        if device != Device::Cpu {
            self.inv_freq = Tensor::from(self.inv_freq.as_tch().to_device(device));
            if let RopeUpdate::LongRope { long_inv_freq, .. } = &mut self.update {
                *long_inv_freq = Tensor::from(long_inv_freq.as_tch().to_device(device));
            }
        }
        Ok(self)
    }

    /// The parameters of the `dynamic` rope update, `(factor, max_position_embeddings,
    /// rotary dim, base)`, when the rope type is `dynamic`.
    pub fn dynamic_parameters(&self) -> Option<(f64, i64, i64, f64)> {
        match &self.update {
            RopeUpdate::Dynamic {
                factor,
                max_pos,
                dim,
                base,
            } => Some((*factor, *max_pos, *dim, *base)),
            _ => None,
        }
    }

    /// The frequencies of the config, before any update.
    pub fn inv_freq(&self) -> &Tensor {
        &self.inv_freq
    }

    /// `(cos, sin)` for `position_ids` and the frequencies `inv_freq`, scaled by the rope's
    /// attention factor.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn cos_sin(
        &self,
        position_ids: &Tensor,
        inv_freq: &Tensor,
    ) -> CoreResult<(Tensor, Tensor)> {
        let pos = position_ids.unsqueeze(-1)?.to_kind(Kind::Float)?;
        let freqs = pos.mul(inv_freq)?;
        let emb = Tensor::cat(&[&freqs, &freqs], -1)?;
        let (cos, sin) = (emb.cos()?, emb.sin()?);
        if self.attention_scaling == 1.0 {
            return Ok((cos, sin));
        }
        Ok((
            cos.mul_scalar(self.attention_scaling)?,
            sin.mul_scalar(self.attention_scaling)?,
        ))
    }
}

/// transformers' `_compute_yarn_parameters`: the blend of interpolated and extrapolated
/// frequencies, and the cos/sin scale.
fn yarn_inv_freq(
    p: &RopeParameters,
    base: f64,
    dim: i64,
    max_pos: i64,
    original: i64,
) -> std::result::Result<(tch::Tensor, f64), tch::TchError> {
    let factor = p.factor.unwrap_or(max_pos as f64 / original as f64);
    let get_mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let attention = match (p.attention_factor, p.mscale, p.mscale_all_dim) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
            get_mscale(factor, m) / get_mscale(factor, all)
        }
        _ => get_mscale(factor, 1.0),
    };
    let beta_fast = p.beta_fast.filter(|b| *b != 0.0).unwrap_or(32.0);
    let beta_slow = p.beta_slow.filter(|b| *b != 0.0).unwrap_or(1.0);
    let d = dim as f64;
    let correction = |rot: f64| {
        (d * (original as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
    };
    let (mut low, mut high) = (correction(beta_fast), correction(beta_slow));
    if p.truncate.unwrap_or(true) {
        low = low.floor();
        high = high.ceil();
    }
    let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
    if low == high {
        high += 0.001;
    }
    let pos_freqs = default_inv_freq(base, dim)?.f_reciprocal()?;
    let extrapolation = pos_freqs.f_reciprocal()?;
    let interpolation = pos_freqs.f_mul_scalar(factor)?.f_reciprocal()?;
    let ramp = tch::Tensor::f_arange(dim / 2, (Kind::Float, Device::Cpu))?
        .f_sub_scalar(low)?
        .f_div_scalar(high - low)?
        .f_clamp(0.0, 1.0)?;
    let extrapolation_factor = ramp.f_rsub_scalar(1.0)?;
    let inv = interpolation
        .f_mul(&extrapolation_factor.f_rsub_scalar(1.0)?)?
        .f_add(&extrapolation.f_mul(&extrapolation_factor)?)?;
    Ok((inv, attention))
}

/// transformers' `_compute_llama3_parameters` applied to the default frequencies.
fn llama3_inv_freq(
    inv_freq: &tch::Tensor,
    p: &RopeParameters,
) -> std::result::Result<tch::Tensor, tch::TchError> {
    let factor = p.factor.unwrap_or(8.0);
    let low = p.low_freq_factor.unwrap_or(1.0);
    let high = p.high_freq_factor.unwrap_or(4.0);
    let old = p.original_max_position_embeddings.unwrap_or(8192) as f64;
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    let wavelen = inv_freq
        .f_reciprocal()?
        .f_mul_scalar(2.0 * std::f64::consts::PI)?;
    let scaled = inv_freq.f_div_scalar(factor)?;
    let llama = scaled.f_where_self(&wavelen.f_gt(low_wavelen)?, inv_freq)?;
    let smooth = wavelen
        .f_reciprocal()?
        .f_mul_scalar(old)?
        .f_sub_scalar(low)?
        .f_div_scalar(high - low)?;
    let smoothed = (smooth
        .f_rsub_scalar(1.0)?
        .f_mul(&llama)?
        .f_div_scalar(factor)?)
    .f_add(&smooth.f_mul(&llama)?)?;
    let medium = wavelen
        .f_lt(high_wavelen)?
        .f_logical_not()?
        .f_logical_and(&wavelen.f_gt(low_wavelen)?.f_logical_not()?)?;
    smoothed.f_where_self(&medium, &llama)
}

/// `torch.finfo(kind).min`: the most negative finite value of a floating type.
fn finfo_min(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        // bfloat16 keeps float32's exponent: its largest value is 0x7f7f.
        Kind::BFloat16 => -f64::from(f32::from_bits(0x7f7f_0000)),
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// `x` rounded to `kind`, as `torch.tensor(x, dtype=kind)` stores it.
fn round_to(x: f64, kind: Kind) -> f64 {
    match kind {
        Kind::Half => half::f16::from_f64(x).to_f64(),
        Kind::BFloat16 => half::bf16::from_f64(x).to_f64(),
        Kind::Double => x,
        _ => f64::from(x as f32),
    }
}

fn rotate_half(x: &Tensor) -> CoreResult<Tensor> {
    let d = x.size(-1)?;
    let half = d.floor_div(2);
    let x1 = x.slice(-1, None, Some(half.clone()), 1)?;
    let x2 = x.slice(-1, Some(half), None, 1)?;
    Tensor::cat(&[&x2.neg()?, &x1], -1)
}

fn apply_rotary_pos_emb(
    q: &Tensor,
    k: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> CoreResult<(Tensor, Tensor)> {
    let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
    let q = q.mul(&cos)?.add(&rotate_half(q)?.mul(&sin)?)?;
    let k = k.mul(&cos)?.add(&rotate_half(k)?.mul(&sin)?)?;
    Ok((q, k))
}

/// `repeat_kv`: `[b, kv_heads, s, d]` → `[b, kv_heads * n_rep, s, d]`.
fn repeat_kv(x: &Tensor, n_rep: i64) -> CoreResult<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let s = x.shape();
    x.unsqueeze(2)?
        .expand(vec![
            s[0].clone(),
            s[1].clone(),
            SymInt::new(n_rep),
            s[2].clone(),
            s[3].clone(),
        ])?
        .reshape(vec![
            s[0].clone(),
            &s[1] * n_rep,
            s[2].clone(),
            s[3].clone(),
        ])
}

/// `LlamaMLP`: `down(act(gate(x)) * up(x))`.
#[derive(Clone, Debug)]
pub struct LlamaMLP {
    /// `gate_proj` and `up_proj`, or Phi3's fused `gate_up_proj`.
    gate_up: Projections,
    down_proj: Linear,
    act: String,
}

/// Projections stored separately (`q_proj`, `k_proj`, `v_proj`) or fused into one matrix whose
/// output is split along the last dim (Phi3's `qkv_proj`, `gate_up_proj`).
#[derive(Clone, Debug)]
enum Projections {
    Separate(Vec<Linear>),
    Fused(Linear, Vec<i64>),
}

impl Projections {
    fn forward(&self, x: &Tensor) -> CoreResult<Vec<Tensor>> {
        match self {
            Projections::Separate(ps) => ps.iter().map(|p| p.forward(x)).collect(),
            Projections::Fused(p, sizes) => {
                let y = p.forward(x)?;
                let mut start = 0;
                let mut out = Vec::with_capacity(sizes.len());
                for n in sizes {
                    out.push(y.narrow(-1, start, *n)?);
                    start += n;
                }
                Ok(out)
            }
        }
    }

    fn named_parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        match self {
            Projections::Separate(ps) => {
                for p in ps {
                    p.named_parameters(prefix, out);
                }
            }
            Projections::Fused(p, _) => p.named_parameters(prefix, out),
        }
    }
}

impl LlamaMLP {
    fn load(w: &mut Weights, p: &str, cfg: &Config) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let gate_up = if cfg.arch == Arch::Phi3 {
            Projections::Fused(
                Linear::load(w, p, "gate_up_proj", h, 2 * i, false)?,
                vec![i, i],
            )
        } else {
            Projections::Separate(vec![
                Linear::load(w, p, "gate_proj", h, i, b)?,
                Linear::load(w, p, "up_proj", h, i, b)?,
            ])
        };
        Ok(Self {
            gate_up,
            down_proj: Linear::load(w, p, "down_proj", i, h, b)?,
            act: cfg.hidden_act.clone(),
        })
    }

    /// The MLP.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        let gu = self.gate_up.forward(x)?;
        let gate = activation(&self.act, &gu[0])?;
        self.down_proj.forward(&gate.mul(&gu[1])?)
    }
}

/// `LlamaAttention`: grouped-query attention with rotary embeddings and a KV cache.
#[derive(Clone, Debug)]
pub struct LlamaAttention {
    /// `q_proj`, `k_proj`, `v_proj`, or Phi3's fused `qkv_proj`.
    qkv: Projections,
    o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    layer: usize,
}

impl LlamaAttention {
    fn load(w: &mut Weights, p: &str, cfg: &Config, layer: usize) -> Result<Self> {
        let (h, d, b) = (cfg.hidden_size, cfg.head_size(), cfg.attention_bias);
        let (nq, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        // Qwen2: biases on q, k and v always, never on o.
        let (bqkv, bo) = if cfg.arch == Arch::Qwen2 {
            (true, false)
        } else {
            (b, b)
        };
        let qkv = if cfg.arch == Arch::Phi3 {
            Projections::Fused(
                Linear::load(w, p, "qkv_proj", h, (nq + 2 * nkv) * d, false)?,
                vec![nq * d, nkv * d, nkv * d],
            )
        } else {
            Projections::Separate(vec![
                Linear::load(w, p, "q_proj", h, nq * d, bqkv)?,
                Linear::load(w, p, "k_proj", h, nkv * d, bqkv)?,
                Linear::load(w, p, "v_proj", h, nkv * d, bqkv)?,
            ])
        };
        Ok(Self {
            qkv,
            o_proj: Linear::load(w, p, "o_proj", nq * d, h, bo)?,
            heads: nq,
            kv_heads: nkv,
            head_dim: d,
            layer,
        })
    }

    /// Attention over the cached and new positions; the cache is updated in place.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        x: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let _s = scope("self_attn");
        let (b, s) = (x.size(0)?, x.size(1)?);
        let split = |t: Tensor, heads: i64| -> CoreResult<Tensor> {
            t.view(vec![
                b.clone(),
                s.clone(),
                SymInt::new(heads),
                SymInt::new(self.head_dim),
            ])?
            .transpose(1, 2)
        };
        let mut qkv = self.qkv.forward(x)?.into_iter();
        let mut next = || {
            qkv.next()
                .ok_or_else(|| onnx_diagnostic_core::Error::Model {
                    model: MODEL.to_owned(),
                    message: "the q/k/v projections gave fewer than three tensors".to_owned(),
                })
        };
        let q = split(next()?, self.heads)?;
        let k = split(next()?, self.kv_heads)?;
        let v = split(next()?, self.kv_heads)?;
        let (q, k) = apply_rotary_pos_emb(&q, &k, &cos_sin.0, &cos_sin.1)?;
        let (k, v) = cache.update(&k, &v, self.layer).map_err(|e| match e {
            Error::Core(c) => c,
            other => onnx_diagnostic_core::Error::Model {
                model: MODEL.to_owned(),
                message: other.to_string(),
            },
        })?;
        let n_rep = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(&k, n_rep)?, repeat_kv(&v, n_rep)?);
        let scaling = (self.head_dim as f64).powf(-0.5);
        let weights = q
            .matmul(&k.transpose(2, 3)?)?
            .mul_scalar(scaling)?
            .add(mask)?;
        // transformers: `softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)`.
        let weights = weights
            .to_kind(Kind::Float)?
            .softmax(-1)?
            .to_kind(q.kind())?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.contiguous()?;
        let out = out.reshape(vec![b, s, SymInt::new(-1)])?;
        self.o_proj.forward(&out)
    }
}

/// `LlamaDecoderLayer`: pre-norm attention and MLP with residuals.
#[derive(Clone, Debug)]
pub struct LlamaDecoderLayer {
    input_layernorm: LlamaRMSNorm,
    self_attn: LlamaAttention,
    post_attention_layernorm: LlamaRMSNorm,
    mlp: LlamaMLP,
}

/// `LlamaModel`: embeddings, decoder layers, final norm.
#[derive(Clone, Debug)]
pub struct LlamaModel {
    embed_tokens: Tensor,
    layers: Vec<LlamaDecoderLayer>,
    norm: LlamaRMSNorm,
    rotary_emb: LlamaRotaryEmbedding,
    params: Vec<(String, Tensor)>,
    /// Gemma's embedding scale, `sqrt(hidden_size)`.
    embed_scale: Option<f64>,
    /// Positions further back than this are masked (Mistral's sliding window).
    pub(crate) sliding_window: Option<i64>,
}

impl LlamaModel {
    fn load(w: &mut Weights, cfg: &Config) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(LlamaDecoderLayer {
                input_layernorm: LlamaRMSNorm::load(
                    w,
                    &format!("{p}.input_layernorm"),
                    cfg.hidden_size,
                    cfg,
                )?,
                self_attn: LlamaAttention::load(w, &format!("{p}.self_attn"), cfg, i)?,
                post_attention_layernorm: LlamaRMSNorm::load(
                    w,
                    &format!("{p}.post_attention_layernorm"),
                    cfg.hidden_size,
                    cfg,
                )?,
                mlp: LlamaMLP::load(w, &format!("{p}.mlp"), cfg)?,
            });
        }
        let model = Self {
            embed_tokens: w.get(
                "model.embed_tokens.weight",
                &[cfg.vocab_size, cfg.hidden_size],
            )?,
            norm: LlamaRMSNorm::load(w, "model.norm", cfg.hidden_size, cfg)?,
            embed_scale: (cfg.arch == Arch::Gemma).then(|| (cfg.hidden_size as f64).sqrt()),
            rotary_emb: LlamaRotaryEmbedding::new(cfg)?.with_buffers(w.dtype(), w.device())?,
            layers,
            params: Vec::new(),
            sliding_window: None,
        };
        Ok(model.with_params())
    }

    fn with_params(mut self) -> Self {
        let mut out = vec![(
            "model.embed_tokens.weight".to_owned(),
            self.embed_tokens.clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                l.input_layernorm.weight.clone(),
            ));
            l.self_attn
                .qkv
                .named_parameters(&format!("{p}.self_attn"), &mut out);
            l.self_attn
                .o_proj
                .named_parameters(&format!("{p}.self_attn"), &mut out);
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.post_attention_layernorm.weight.clone(),
            ));
            l.mlp
                .gate_up
                .named_parameters(&format!("{p}.mlp"), &mut out);
            l.mlp
                .down_proj
                .named_parameters(&format!("{p}.mlp"), &mut out);
        }
        out.push(("model.norm.weight".to_owned(), self.norm.weight.clone()));
        self.params = out;
        self
    }

    /// The mask transformers' eager attention adds: `[batch or 1, 1, seq, past + seq]`, 0 where
    /// a position may attend (causal, within the sliding window if any, and not padding), the
    /// minimum of `kind` (the hidden states' type, `torch.finfo(dtype).min`) elsewhere.
    fn causal_mask(
        &self,
        attention_mask: Option<&Tensor>,
        cache_position: &Tensor,
        total: &SymInt,
        kind: Kind,
    ) -> CoreResult<Tensor> {
        let device = cache_position.device();
        let kv = Tensor::arange(0, total.clone(), 1, Kind::Int64, device)?.unsqueeze(0)?;
        let q = cache_position.unsqueeze(1)?;
        let mut allowed = kv.le(&q)?;
        if let Some(window) = self.sliding_window {
            // transformers' sliding_window_overlay: kv_idx > q_idx - sliding_window.
            allowed = allowed.logical_and(&kv.gt(&q.sub_scalar(window)?)?)?;
        }
        let mut allowed = allowed.unsqueeze(0)?.unsqueeze(0)?;
        if let Some(m) = attention_mask {
            let pad = m.to_kind(Kind::Bool)?.unsqueeze(1)?.unsqueeze(1)?;
            allowed = allowed.logical_and(&pad)?;
        }
        allowed
            .logical_not()?
            .to_kind(kind)?
            .mul_scalar(finfo_min(kind))
    }

    /// The hidden states of the last layer; `cache` grows by the new positions.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let _s = scope("model");
        let mut h = {
            let _e = scope("embed_tokens");
            let h = Tensor::embedding(&self.embed_tokens, input_ids)?;
            match self.embed_scale {
                // transformers multiplies by a tensor of the hidden states' type holding
                // sqrt(hidden_size).
                Some(scale) => h.mul_scalar(round_to(scale, h.kind()))?,
                None => h,
            }
        };
        let past = cache
            .get_seq_length()
            .map_err(|e| onnx_diagnostic_core::Error::Model {
                model: MODEL.to_owned(),
                message: e.to_string(),
            })?;
        let total = &past + &input_ids.size(1)?;
        let cache_position =
            Tensor::arange(past, total.clone(), 1, Kind::Int64, input_ids.device())?;
        let position_ids = match position_ids {
            Some(p) => p.clone(),
            None => cache_position.unsqueeze(0)?,
        };
        let mask = self.causal_mask(attention_mask, &cache_position, &total, h.kind())?;
        // transformers' rotary forward ends with `cos.to(x.dtype), sin.to(x.dtype)`.
        let (cos, sin) = self.rotary_emb.forward(&position_ids)?;
        let cos_sin = (cos.to_kind(h.kind())?, sin.to_kind(h.kind())?);
        for (i, layer) in self.layers.iter().enumerate() {
            let _l = scope(&format!("layers.{i}"));
            let residual = h.clone();
            let x = {
                let _n = scope("input_layernorm");
                layer.input_layernorm.forward(&h)?
            };
            h = residual.add(&layer.self_attn.forward(&x, &cos_sin, &mask, cache)?)?;
            let residual = h.clone();
            let x = {
                let _n = scope("post_attention_layernorm");
                layer.post_attention_layernorm.forward(&h)?
            };
            h = residual.add(&layer.mlp.forward(&x)?)?;
        }
        let _n = scope("norm");
        self.norm.forward(&h)
    }
}

/// `LlamaForCausalLM`: [`LlamaModel`] and the language-model head.
#[derive(Clone, Debug)]
pub struct LlamaForCausalLM {
    /// The configuration.
    pub config: Config,
    model: LlamaModel,
    lm_head: Tensor,
}

impl LlamaForCausalLM {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// [`Error::Weight`] for a missing or misshaped weight, [`Error::Unsupported`] for a rope
    /// type not implemented yet.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let mut model = LlamaModel::load(weights, &config)?;
        if matches!(config.arch, Arch::Mistral | Arch::Phi3) {
            model.sliding_window = config.sliding_window;
        }
        let lm_head = if config.tie_word_embeddings && !weights.contains("lm_head.weight") {
            model.embed_tokens.clone()
        } else {
            weights.get("lm_head.weight", &[config.vocab_size, config.hidden_size])?
        };
        Ok(Self {
            config,
            model,
            lm_head,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors).
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and [`LlamaForCausalLM::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, config.arch.class_name())?;
        Self::new(config, &mut weights)
    }

    /// Logits `[batch, seq, vocab]` and the grown cache.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
    ) -> CoreResult<(Tensor, DynamicCache)> {
        let mut cache = cache.unwrap_or_default();
        let h = self
            .model
            .forward(input_ids, attention_mask, position_ids, &mut cache)?;
        let _s = scope("lm_head");
        Ok((h.linear(&self.lm_head, None)?, cache))
    }
}

impl Module for LlamaForCausalLM {
    fn class_name(&self) -> String {
        MODEL.to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        [
            "input_ids",
            "attention_mask",
            "position_ids",
            "past_key_values",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = self.model.params.clone();
        if !(self.config.tie_word_embeddings
            && self.lm_head.as_tch().data_ptr() == self.model.embed_tokens.as_tch().data_ptr())
        {
            out.push(("lm_head.weight".to_owned(), self.lm_head.clone()));
        }
        out
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![(
            "model.rotary_emb.inv_freq".to_owned(),
            self.model.rotary_emb.inv_freq.clone(),
        )]
    }

    /// `CausalLMOutputWithPast` with `logits` and `past_key_values` (a `DynamicCache`).
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let cache =
            DynamicCache::from_value(inputs.get("past_key_values")).map_err(|e| match e {
                Error::Core(c) => c,
                other => onnx_diagnostic_core::Error::Model {
                    model: MODEL.to_owned(),
                    message: other.to_string(),
                },
            })?;
        let (logits, cache) = self.forward_with_cache(
            inputs.tensor("input_ids")?,
            inputs.opt_tensor("attention_mask")?,
            inputs.opt_tensor("position_ids")?,
            cache,
        )?;
        Ok(Value::custom(CausalLMOutputWithPast {
            logits: Some(Value::Tensor(logits)),
            past_key_values: Some(Value::custom(cache)),
            ..CausalLMOutputWithPast::default()
        }))
    }
}

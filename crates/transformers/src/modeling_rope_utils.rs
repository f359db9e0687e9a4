//! Rope parameters and frequencies, as transformers 5.23's `modeling_rope_utils` computes them:
//! `default`, `linear`, `llama3`, `dynamic`, `yarn`, `longrope` (`su` is its old name).
//!
//! Configs name the parameters in three ways, all accepted: transformers 5 writes
//! `rope_parameters` (with `rope_theta` inside, and, for configs converted from an older one,
//! both `rope_type` and the legacy `type`, as Phi-3.5's hub config and `save_pretrained` of a
//! longrope Phi-3 do); transformers 4 wrote `rope_scaling` with `type` or `rope_type`. When
//! both type keys are present `rope_type` wins, as transformers' standardisation reads it.

use serde::Deserialize;
use tch::{Device, Kind};

use onnx_diagnostic_core::Tensor;

use crate::error::{Error, Result};

/// The rope parameters: transformers 5 `rope_parameters`, or the legacy `rope_scaling`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RopeParameters {
    /// `default`, `linear`, `llama3`, `dynamic`, `yarn`, `longrope`.
    #[serde(default)]
    pub rope_type: Option<String>,
    /// The legacy name of `rope_type` (`rope_scaling.type`); `rope_type` wins when both are set.
    #[serde(default, rename = "type")]
    pub legacy_type: Option<String>,
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
    /// The part of the head the rotary embedding applies to (transformers 5 keeps it here).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

impl RopeParameters {
    /// The rope type: `rope_type`, else `type`, else `default`.
    pub fn kind(&self) -> &str {
        self.rope_type
            .as_deref()
            .or(self.legacy_type.as_deref())
            .unwrap_or("default")
    }
}

/// What the frequencies of a model depend on besides its rope parameters.
#[derive(Clone, Debug)]
pub(crate) struct RopeSettings<'a> {
    /// The model class, for errors.
    pub(crate) model: &'a str,
    /// The rotary dimension (the head size times the partial rotary factor).
    pub(crate) dim: i64,
    /// The base (`rope_theta`).
    pub(crate) base: f64,
    /// `max_position_embeddings`.
    pub(crate) max_position_embeddings: i64,
    /// The top-level `original_max_position_embeddings` (Phi-3 keeps it there).
    pub(crate) original_max_position_embeddings: Option<i64>,
}

/// What `dynamic_rope_update` does before the forward, per rope type.
#[derive(Clone, Debug)]
pub(crate) enum RopeUpdate {
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

/// The frequencies of a rope type, their cos/sin scale and their update.
#[derive(Debug)]
pub(crate) struct Rope {
    pub(crate) inv_freq: tch::Tensor,
    pub(crate) attention_scaling: f64,
    pub(crate) update: RopeUpdate,
}

/// `1 / (base^(arange(0, dim, 2) / dim))`, in float32 as transformers computes it.
pub(crate) fn default_inv_freq(
    base: f64,
    dim: i64,
) -> std::result::Result<tch::Tensor, tch::TchError> {
    let exponents = tch::Tensor::f_arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(dim as f64)?;
    tch::Tensor::f_pow_scalar(base, &exponents)?.f_reciprocal()
}

/// The frequencies of `p` (`ROPE_INIT_FUNCTIONS[rope_type]`).
///
/// # Errors
/// [`Error::Unsupported`] for another rope type, [`Error::ConfigField`] for missing or
/// inconsistent parameters.
pub(crate) fn compute(p: &RopeParameters, s: &RopeSettings<'_>) -> Result<Rope> {
    let (dim, base, model) = (s.dim, s.base, s.model);
    let tch_err = |e: tch::TchError| Error::Unsupported {
        model: model.to_owned(),
        feature: format!("rope initialisation ({e})"),
    };
    let field = |field: &str, message: String| Error::ConfigField {
        model: model.to_owned(),
        field: field.to_owned(),
        message,
    };
    let inv_freq = default_inv_freq(base, dim).map_err(tch_err)?;
    let original = p
        .original_max_position_embeddings
        .or(s.original_max_position_embeddings);
    let need_original = |what: &str| {
        original.ok_or_else(|| {
            field(
                "original_max_position_embeddings",
                format!("rope_type '{what}' needs it"),
            )
        })
    };
    let mut attention_scaling = 1.0;
    let mut update = RopeUpdate::None;
    let inv_freq = match p.kind() {
        "default" => inv_freq,
        "linear" => inv_freq
            .f_div_scalar(p.factor.unwrap_or(1.0))
            .map_err(tch_err)?,
        "llama3" => llama3_inv_freq(&inv_freq, p).map_err(tch_err)?,
        "dynamic" => {
            update = RopeUpdate::Dynamic {
                factor: p.factor.unwrap_or(1.0),
                max_pos: s.max_position_embeddings,
                dim,
                base,
            };
            inv_freq
        }
        "yarn" => {
            let original = need_original("yarn")?;
            let (f, scaling) = yarn_inv_freq(p, base, dim, s.max_position_embeddings, original)
                .map_err(tch_err)?;
            attention_scaling = scaling;
            f
        }
        "longrope" | "su" => {
            let original = need_original("longrope")?;
            let factors = |v: &Option<Vec<f64>>, which: &str| {
                v.clone()
                    .filter(|f| f.len() as i64 == dim / 2)
                    .ok_or_else(|| {
                        field(
                            &format!("rope_parameters.{which}"),
                            format!("rope_type 'longrope' needs {} values", dim / 2),
                        )
                    })
            };
            let (short, long) = (
                factors(&p.short_factor, "short_factor")?,
                factors(&p.long_factor, "long_factor")?,
            );
            let factor = p
                .factor
                .unwrap_or(s.max_position_embeddings as f64 / original as f64);
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
    Ok(Rope {
        inv_freq,
        attention_scaling,
        update,
    })
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

//! `LlamaRotaryEmbedding`: the frequencies of [`crate::modeling_rope_utils`], their update
//! per rope type (`dynamic_rope_update`), and cos/sin.

use onnx_diagnostic_core::{Result as CoreResult, Tensor, scope};
use tch::{Device, Kind};

use super::Config;
use crate::{
    error::Result,
    modeling_rope_utils::{self, RopeParameters, RopeSettings, RopeUpdate, default_inv_freq},
};

/// `LlamaRotaryEmbedding`: cos/sin of `position * inv_freq`, scaled by the rope type.
#[derive(Clone, Debug)]
pub struct LlamaRotaryEmbedding {
    inv_freq: Tensor,
    attention_scaling: f64,
    update: RopeUpdate,
    model: &'static str,
}

impl LlamaRotaryEmbedding {
    /// The frequencies of the config's rope type (see [`crate::modeling_rope_utils`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for another rope type, [`Error::ConfigField`] for missing
    /// parameters.
    pub fn new(cfg: &Config) -> Result<Self> {
        let (p, base) = cfg.rope();
        Self::from_rope(
            &p,
            &RopeSettings {
                model: cfg.arch.class_name(),
                dim: cfg.rotary_dim(),
                base,
                max_position_embeddings: cfg.max_position_embeddings,
                original_max_position_embeddings: cfg.original_max_position_embeddings,
            },
        )
    }

    /// The frequencies of rope parameters `p` for a model described by `s` (the rotary
    /// embedding of the architectures that share this struct with their own config).
    ///
    /// # Errors
    /// As [`LlamaRotaryEmbedding::new`].
    pub(crate) fn from_rope(p: &RopeParameters, s: &RopeSettings<'static>) -> Result<Self> {
        let rope = modeling_rope_utils::compute(p, s)?;
        Ok(Self {
            inv_freq: Tensor::from(rope.inv_freq),
            attention_scaling: rope.attention_scaling,
            update: rope.update,
            model: s.model,
        })
    }

    /// The frequencies for these positions (`dynamic_rope_update`): the config's, longrope's
    /// short or long ones (a `where` on `max(position_ids) + 1`), or, for `dynamic`, those of
    /// a base grown for the length (a data-dependent branch).
    ///
    /// # Errors
    /// Any error of the ops; [`onnx_diagnostic_core::Error::DataDependent`] during an export
    /// with the `dynamic` rope type.
    pub fn frequencies(&self, position_ids: &Tensor) -> CoreResult<Tensor> {
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
                        model: self.model.to_owned(),
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
            self.inv_freq = self.inv_freq.to_device(device)?;
            if let RopeUpdate::LongRope { long_inv_freq, .. } = &mut self.update {
                *long_inv_freq = long_inv_freq.to_device(device)?;
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

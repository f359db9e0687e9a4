//! The timestep embedding of diffusers' `models/embeddings.py`: `get_timestep_embedding`,
//! `Timesteps` (no weights) and `TimestepEmbedding` (two linear layers around an activation).

use onnx_diagnostic_core::{Result as CoreResult, Tensor, scope};
use onnx_diagnostic_transformers::{
    Result,
    nn::{Activation, Linear},
    weights::VarBuilder,
};
use tch::Kind;

/// `get_timestep_embedding(timesteps, dim, flip_sin_to_cos, downscale_freq_shift)`: the
/// sinusoidal embedding `[N, dim]` of 1-D `timesteps`, in float32, with diffusers' order of
/// operations (`-ln(10000) * arange(half)`, divided by `half - shift`, `exp`, times the
/// timesteps; `sin` then `cos`, swapped when `flip_sin_to_cos`; an odd `dim` padded by one
/// zero column).
///
/// # Errors
/// Any error of the ops.
pub fn get_timestep_embedding(
    timesteps: &Tensor,
    embedding_dim: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
) -> CoreResult<Tensor> {
    let half = embedding_dim / 2;
    let exponent = Tensor::arange(0, half, 1, Kind::Float, timesteps.device())?
        .mul_scalar(-(10000f64.ln()))?
        .div_scalar(half as f64 - downscale_freq_shift)?;
    let freqs = exponent.exp()?;
    let emb = timesteps
        .unsqueeze(1)?
        .to_kind(Kind::Float)?
        .mul(&freqs.unsqueeze(0)?)?;
    let mut emb = Tensor::cat(&[&emb.sin()?, &emb.cos()?], -1)?;
    if flip_sin_to_cos {
        let parts = emb.chunk(2, -1)?;
        emb = Tensor::cat(&[&parts[1], &parts[0]], -1)?;
    }
    if embedding_dim % 2 == 1 {
        emb = emb.pad(&[0, 1, 0, 0], 0.0)?;
    }
    Ok(emb)
}

/// `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)`.
#[derive(Clone, Debug)]
pub struct Timesteps {
    num_channels: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
}

impl Timesteps {
    /// The projection of `num_channels` channels.
    pub fn new(num_channels: i64, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
        }
    }

    /// [`get_timestep_embedding`] of 1-D `timesteps`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, timesteps: &Tensor) -> CoreResult<Tensor> {
        get_timestep_embedding(
            timesteps,
            self.num_channels,
            self.flip_sin_to_cos,
            self.downscale_freq_shift,
        )
    }
}

/// `TimestepEmbedding(in_channels, time_embed_dim, act_fn, post_act_fn)`: `linear_1`,
/// the activation, `linear_2`, the optional post-activation.
#[derive(Clone, Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    act: Activation,
    linear_2: Linear,
    post_act: Option<Activation>,
}

impl TimestepEmbedding {
    /// Loads `linear_1` and `linear_2` under `vb`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        (in_channels, time_embed_dim): (i64, i64),
        act: Activation,
        post_act: Option<Activation>,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load_torch_default(
                vb,
                "linear_1",
                in_channels,
                time_embed_dim,
                true,
            )?,
            act,
            linear_2: Linear::load_torch_default(
                vb,
                "linear_2",
                time_embed_dim,
                time_embed_dim,
                true,
            )?,
            post_act,
        })
    }

    /// The embedding of the projected timesteps.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, sample: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("time_embedding");
        let h = self.act.forward(&self.linear_1.forward(sample)?)?;
        let h = self.linear_2.forward(&h)?;
        match self.post_act {
            Some(a) => a.forward(&h),
            None => Ok(h),
        }
    }
}

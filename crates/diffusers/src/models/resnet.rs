//! `ResnetBlock2D` of diffusers' `models/resnet.py`: GroupNorm, activation, 3×3 convolution,
//! the time embedding added (`default`) or applied as scale and shift (`scale_shift`), a
//! second GroupNorm/activation/convolution, and the residual (through a 1×1 convolution when
//! the channels change) divided by `output_scale_factor`.

use onnx_diagnostic_core::{Result as CoreResult, Tensor, scope};
use onnx_diagnostic_transformers::{Result, nn::Activation, nn::Linear, weights::VarBuilder};

use crate::nn::{Conv2d, GroupNorm};

/// How a resnet block applies the time embedding (`resnet_time_scale_shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeEmbeddingNorm {
    /// `default`: added to the hidden states before `norm2`.
    Default,
    /// `scale_shift`: `norm2(h) * (1 + scale) + shift`.
    ScaleShift,
}

/// The settings every resnet block of a UNet shares.
#[derive(Clone, Copy, Debug)]
pub struct ResnetSettings {
    /// `temb_channels`.
    pub temb_channels: i64,
    /// `resnet_eps` (the config's `norm_eps`).
    pub eps: f64,
    /// `resnet_groups` (`norm_num_groups`).
    pub groups: i64,
    /// `non_linearity` (`act_fn`).
    pub act: Activation,
    /// `time_embedding_norm` (`resnet_time_scale_shift`).
    pub time_embedding_norm: TimeEmbeddingNorm,
    /// `skip_time_act` (`resnet_skip_time_act`).
    pub skip_time_act: bool,
    /// `output_scale_factor` (`resnet_out_scale_factor`, the mid block's
    /// `mid_block_scale_factor`).
    pub output_scale_factor: f64,
}

/// `ResnetBlock2D`.
#[derive(Clone, Debug)]
pub struct ResnetBlock2D {
    name: String,
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    settings: ResnetSettings,
}

impl ResnetBlock2D {
    /// Loads the block `name` (`resnets.0`) under `vb`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        (in_channels, out_channels): (i64, i64),
        settings: ResnetSettings,
    ) -> Result<Self> {
        let vb = vb.pp(name);
        let s = settings;
        let proj = match s.time_embedding_norm {
            TimeEmbeddingNorm::Default => out_channels,
            TimeEmbeddingNorm::ScaleShift => 2 * out_channels,
        };
        Ok(Self {
            name: name.to_owned(),
            norm1: GroupNorm::load(&vb, "norm1", s.groups, in_channels, s.eps)?,
            conv1: Conv2d::load(&vb, "conv1", (in_channels, out_channels), 3, (1, 1), true)?,
            time_emb_proj: Linear::load_torch_default(
                &vb,
                "time_emb_proj",
                s.temb_channels,
                proj,
                true,
            )?,
            norm2: GroupNorm::load(&vb, "norm2", s.groups, out_channels, s.eps)?,
            conv2: Conv2d::load(&vb, "conv2", (out_channels, out_channels), 3, (1, 1), true)?,
            conv_shortcut: if in_channels == out_channels {
                None
            } else {
                Some(Conv2d::load(
                    &vb,
                    "conv_shortcut",
                    (in_channels, out_channels),
                    1,
                    (1, 0),
                    true,
                )?)
            },
            settings,
        })
    }

    /// The block on `input` `[batch, in, h, w]` and the time embedding `temb` `[batch, temb]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, input: &Tensor, temb: &Tensor) -> CoreResult<Tensor> {
        let _s = scope(&self.name);
        let act = self.settings.act;
        let h = act.forward(&self.norm1.forward(input)?)?;
        let h = self.conv1.forward(&h)?;
        let temb = if self.settings.skip_time_act {
            temb.clone()
        } else {
            act.forward(temb)?
        };
        let temb = self
            .time_emb_proj
            .forward(&temb)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let h = match self.settings.time_embedding_norm {
            TimeEmbeddingNorm::Default => self.norm2.forward(&h.add(&temb)?)?,
            TimeEmbeddingNorm::ScaleShift => {
                let st = temb.chunk(2, 1)?;
                self.norm2
                    .forward(&h)?
                    .mul(&st[0].add_scalar(1.0)?)?
                    .add(&st[1])?
            }
        };
        let h = self.conv2.forward(&act.forward(&h)?)?;
        let input = match &self.conv_shortcut {
            Some(c) => c.forward(input)?,
            None => input.clone(),
        };
        input.add(&h)?.div_scalar(self.settings.output_scale_factor)
    }
}

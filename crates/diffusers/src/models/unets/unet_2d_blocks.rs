//! The UNet blocks of diffusers' `models/unets/unet_2d_blocks.py`: `DownBlock2D`,
//! `CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn`, `UpBlock2D`, `CrossAttnUpBlock2D`
//! (built by `get_down_block` / `get_mid_block` / `get_up_block`: the `UNetRes` prefix is
//! dropped from a type name as diffusers drops it).

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use onnx_diagnostic_transformers::{Result, weights::VarBuilder};

use crate::models::{
    resnet::{ResnetBlock2D, ResnetSettings},
    sampling::{Downsample2D, Upsample2D},
    transformer_2d::{Transformer2DDims, Transformer2DModel},
};

/// What the cross-attention layers of a block share.
#[derive(Clone, Copy, Debug)]
pub struct CrossAttnSettings {
    /// `num_attention_heads` (the config's `attention_head_dim`, see the UNet's doc).
    pub heads: i64,
    /// `transformer_layers_per_block`.
    pub layers: usize,
    /// `cross_attention_dim`.
    pub cross_attention_dim: i64,
    /// `use_linear_projection`.
    pub use_linear_projection: bool,
    /// `only_cross_attention`.
    pub only_cross_attention: bool,
}

/// The sizes of one block.
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    /// `in_channels`.
    pub in_channels: i64,
    /// `out_channels`.
    pub out_channels: i64,
    /// `prev_output_channel` (up blocks).
    pub prev_output_channel: i64,
    /// `num_layers`.
    pub num_layers: usize,
    /// `add_downsample` / `add_upsample`.
    pub add_sampler: bool,
    /// `downsample_padding`.
    pub downsample_padding: i64,
}

fn transformer(
    vb: &VarBuilder<'_>,
    k: usize,
    channels: i64,
    r: &ResnetSettings,
    x: &CrossAttnSettings,
) -> Result<Transformer2DModel> {
    Transformer2DModel::load(
        vb,
        &format!("attentions.{k}"),
        Transformer2DDims {
            in_channels: channels,
            heads: x.heads,
            head_dim: channels / x.heads,
            num_layers: x.layers,
            cross_attention_dim: x.cross_attention_dim,
            groups: r.groups,
            use_linear_projection: x.use_linear_projection,
            only_cross_attention: x.only_cross_attention,
        },
    )
}

/// The `num_layers` resnets of a block (`resnets.{k}`, of `input(k)` channels to
/// `out_channels`) and, for a cross-attention block, a transformer after each.
fn layers(
    vb: &VarBuilder<'_>,
    d: &BlockDims,
    input: impl Fn(usize) -> i64,
    r: ResnetSettings,
    cross: Option<CrossAttnSettings>,
) -> Result<(Vec<ResnetBlock2D>, Vec<Transformer2DModel>)> {
    let mut resnets = Vec::new();
    let mut attentions = Vec::new();
    for k in 0..d.num_layers {
        resnets.push(ResnetBlock2D::load(
            vb,
            &format!("resnets.{k}"),
            (input(k), d.out_channels),
            r,
        )?);
        if let Some(x) = &cross {
            attentions.push(transformer(vb, k, d.out_channels, &r, x)?);
        }
    }
    Ok((resnets, attentions))
}

/// A down block: `DownBlock2D` (no attentions) or `CrossAttnDownBlock2D`.
#[derive(Clone, Debug)]
pub struct DownBlock {
    name: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// Loads `name` (`down_blocks.0`) under `vb`; `cross` for `CrossAttnDownBlock2D`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        d: BlockDims,
        r: ResnetSettings,
        cross: Option<CrossAttnSettings>,
    ) -> Result<Self> {
        let vb = vb.pp(name);
        let input = |k: usize| {
            if k == 0 {
                d.in_channels
            } else {
                d.out_channels
            }
        };
        let (resnets, attentions) = layers(&vb, &d, input, r, cross)?;
        let downsampler = if d.add_sampler {
            Some(Downsample2D::load(
                &vb,
                "downsamplers.0",
                (d.out_channels, d.out_channels),
                d.downsample_padding,
            )?)
        } else {
            None
        };
        Ok(Self {
            name: name.to_owned(),
            resnets,
            attentions,
            downsampler,
        })
    }

    /// The block: its output and the states it hands to the up blocks (one per layer, and the
    /// downsampled one).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        temb: &Tensor,
        encoder: &Tensor,
    ) -> CoreResult<(Tensor, Vec<Tensor>)> {
        let _s = scope(&self.name);
        let mut h = hidden_states.clone();
        let mut states = Vec::new();
        for (k, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, temb)?;
            if let Some(attn) = self.attentions.get(k) {
                h = attn.forward(&h, encoder)?;
            }
            states.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            states.push(h.clone());
        }
        Ok((h, states))
    }
}

/// `UNetMidBlock2DCrossAttn` (one layer): a resnet, then (attention, resnet) pairs.
#[derive(Clone, Debug)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    /// Loads `mid_block` under `vb`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        channels: i64,
        r: ResnetSettings,
        x: CrossAttnSettings,
    ) -> Result<Self> {
        let vb = vb.pp("mid_block");
        let c = (channels, channels);
        Ok(Self {
            resnets: vec![
                ResnetBlock2D::load(&vb, "resnets.0", c, r)?,
                ResnetBlock2D::load(&vb, "resnets.1", c, r)?,
            ],
            attentions: vec![transformer(&vb, 0, channels, &r, &x)?],
        })
    }

    /// The block.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        temb: &Tensor,
        encoder: &Tensor,
    ) -> CoreResult<Tensor> {
        let _s = scope("mid_block");
        let mut h = self.resnets[0].forward(hidden_states, temb)?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = attn.forward(&h, encoder)?;
            h = resnet.forward(&h, temb)?;
        }
        Ok(h)
    }
}

/// An up block: `UpBlock2D` (no attentions) or `CrossAttnUpBlock2D`.
#[derive(Clone, Debug)]
pub struct UpBlock {
    name: String,
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// Loads `name` (`up_blocks.0`) under `vb`; `cross` for `CrossAttnUpBlock2D`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        d: BlockDims,
        r: ResnetSettings,
        cross: Option<CrossAttnSettings>,
    ) -> Result<Self> {
        let vb = vb.pp(name);
        // Each resnet takes the previous output and one skip state (the block's input width
        // for the last one).
        let input = |k: usize| {
            let skip = if k + 1 == d.num_layers {
                d.in_channels
            } else {
                d.out_channels
            };
            let previous = if k == 0 {
                d.prev_output_channel
            } else {
                d.out_channels
            };
            previous + skip
        };
        let (resnets, attentions) = layers(&vb, &d, input, r, cross)?;
        let upsampler = if d.add_sampler {
            Some(Upsample2D::load(
                &vb,
                "upsamplers.0",
                d.out_channels,
                d.out_channels,
            )?)
        } else {
            None
        };
        Ok(Self {
            name: name.to_owned(),
            resnets,
            attentions,
            upsampler,
        })
    }

    /// How many skip states the block takes (one per resnet).
    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    /// The block on `hidden_states` and the skip states `res` (the last one first), upsampled
    /// to `upsample_size` when given.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        res: &[Tensor],
        temb: &Tensor,
        encoder: &Tensor,
        upsample_size: Option<&[SymInt; 2]>,
    ) -> CoreResult<Tensor> {
        let _s = scope(&self.name);
        let mut h = hidden_states.clone();
        for (k, resnet) in self.resnets.iter().enumerate() {
            let skip = &res[res.len() - 1 - k];
            h = Tensor::cat(&[&h, skip], 1)?;
            h = resnet.forward(&h, temb)?;
            if let Some(attn) = self.attentions.get(k) {
                h = attn.forward(&h, encoder)?;
            }
        }
        match &self.upsampler {
            Some(u) => u.forward(&h, upsample_size),
            None => Ok(h),
        }
    }
}

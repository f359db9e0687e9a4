//! `Transformer2DModel` of diffusers' `models/transformers/transformer_2d.py` on continuous
//! inputs (the UNets' spatial transformer): GroupNorm (eps 1e-6), `proj_in` (a 1×1
//! convolution, or a linear layer with `use_linear_projection`), the image as a sequence of
//! `height * width` tokens through `BasicTransformerBlock`s, `proj_out`, and the residual.

use onnx_diagnostic_core::{Result as CoreResult, Tensor, scope};
use onnx_diagnostic_transformers::{Result, nn::Linear, weights::VarBuilder};

use crate::{
    models::attention::{BasicTransformerBlock, BlockDims},
    nn::{Conv2d, GroupNorm},
};

/// `proj_in` / `proj_out`: a 1×1 convolution or a linear layer.
#[derive(Clone, Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn load(vb: &VarBuilder<'_>, name: &str, (i, o): (i64, i64), linear: bool) -> Result<Self> {
        Ok(if linear {
            Self::Linear(Linear::load_torch_default(vb, name, i, o, true)?)
        } else {
            Self::Conv(Conv2d::load(vb, name, (i, o), 1, (1, 0), true)?)
        })
    }
}

/// `Transformer2DModel(num_attention_heads, attention_head_dim, in_channels, num_layers,
/// cross_attention_dim, norm_num_groups, use_linear_projection, only_cross_attention)`.
#[derive(Clone, Debug)]
pub struct Transformer2DModel {
    name: String,
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
    inner_dim: i64,
}

/// The sizes of a [`Transformer2DModel`].
#[derive(Clone, Copy, Debug)]
pub struct Transformer2DDims {
    /// `in_channels` (and out channels).
    pub in_channels: i64,
    /// `num_attention_heads`.
    pub heads: i64,
    /// `attention_head_dim`.
    pub head_dim: i64,
    /// `num_layers` (`transformer_layers_per_block`).
    pub num_layers: usize,
    /// `cross_attention_dim`.
    pub cross_attention_dim: i64,
    /// `norm_num_groups`.
    pub groups: i64,
    /// `use_linear_projection`.
    pub use_linear_projection: bool,
    /// `only_cross_attention`.
    pub only_cross_attention: bool,
}

impl Transformer2DModel {
    /// Loads `name` (`attentions.0`) under `vb`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, name: &str, d: Transformer2DDims) -> Result<Self> {
        let vb = vb.pp(name);
        let inner = d.heads * d.head_dim;
        let linear = d.use_linear_projection;
        let blocks = (0..d.num_layers)
            .map(|k| {
                BasicTransformerBlock::load(
                    &vb,
                    &format!("transformer_blocks.{k}"),
                    BlockDims {
                        dim: inner,
                        heads: d.heads,
                        head_dim: d.head_dim,
                        cross_attention_dim: d.cross_attention_dim,
                        only_cross_attention: d.only_cross_attention,
                        eps: 1e-5,
                    },
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            name: name.to_owned(),
            norm: GroupNorm::load(&vb, "norm", d.groups, d.in_channels, 1e-6)?,
            proj_in: Projection::load(&vb, "proj_in", (d.in_channels, inner), linear)?,
            blocks,
            proj_out: Projection::load(&vb, "proj_out", (inner, d.in_channels), linear)?,
            inner_dim: inner,
        })
    }

    /// The model on `hidden_states` `[batch, channels, height, width]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, hidden_states: &Tensor, encoder: &Tensor) -> CoreResult<Tensor> {
        let _s = scope(&self.name);
        let shape = hidden_states.shape();
        let (batch, height, width) = (shape[0].clone(), shape[2].clone(), shape[3].clone());
        let tokens = vec![batch.clone(), &height * &width, self.inner_dim.into()];
        let n = self.norm.forward(hidden_states)?;
        let mut h = match &self.proj_in {
            Projection::Conv(c) => c.forward(&n)?.permute(&[0, 2, 3, 1])?.reshape(tokens)?,
            Projection::Linear(l) => l.forward(&n.permute(&[0, 2, 3, 1])?.reshape(tokens)?)?,
        };
        for block in &self.blocks {
            h = block.forward(&h, encoder)?;
        }
        let image = vec![batch, height, width, self.inner_dim.into()];
        let out = match &self.proj_out {
            Projection::Conv(c) => {
                c.forward(&h.reshape(image)?.permute(&[0, 3, 1, 2])?.contiguous()?)?
            }
            Projection::Linear(l) => l
                .forward(&h)?
                .reshape(image)?
                .permute(&[0, 3, 1, 2])?
                .contiguous()?,
        };
        out.add(hidden_states)
    }
}

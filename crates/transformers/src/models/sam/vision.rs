//! SAM's image encoder, as transformers 5.23 writes it (`models/sam/modeling_sam.py`,
//! `SamVisionEncoder`, config `SamVisionConfig`): a ViT over `patch_size` patches with an
//! absolute position embedding, layers attending within windows of `window_size` patches (the
//! grid padded to a multiple of it) except the `global_attn_indexes` layers, each attention
//! with decomposed relative positions (`rel_pos_h`, `rel_pos_w`), and the neck (1x1 conv,
//! channel LayerNorm, 3x3 conv, channel LayerNorm) to `output_channels`.
//!
//! Weights: `patch_embed.projection`, `pos_embed`, `layers.{i}.{layer_norm1,attn.qkv,
//! attn.proj,attn.rel_pos_h,attn.rel_pos_w,layer_norm2,mlp.lin1,mlp.lin2}`,
//! `neck.{conv1,layer_norm1,conv2,layer_norm2}`, under `vision_encoder.`.
//!
//! Decisions: the image must be `image_size` square (transformers raises otherwise; the
//! processor resizes and pads to it), so every spatial size is static and only the batch is
//! dynamic. `get_rel_pos` interpolates the table to `2 * size - 1` rows, which it already has
//! (its shape comes from the same config): the interpolation is the identity and is not
//! written; the table is gathered at `q - k + size - 1`, computed once when the model is built.

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use serde::Deserialize;
use tch::Kind;

use crate::{
    error::{Error, Result},
    nn::{Activation, LayerNorm, Linear},
    weights::{Init, VarBuilder},
};

/// The class named in errors.
const MODEL: &str = "SamVisionModel";

/// `SamVisionConfig` (the defaults of transformers 5.23's dataclass).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct SamVisionConfig {
    /// Width of the encoder.
    pub hidden_size: i64,
    /// Channels of the neck's output.
    pub output_channels: i64,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// Image channels.
    pub num_channels: i64,
    /// Side of the square image, in pixels.
    pub image_size: i64,
    /// Side of a patch, in pixels.
    pub patch_size: i64,
    /// MLP activation.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Biases on the qkv projection.
    pub qkv_bias: bool,
    /// MLP width as a multiple of `hidden_size` when `mlp_dim` is not given.
    pub mlp_ratio: f64,
    /// MLP width.
    pub mlp_dim: Option<i64>,
    /// Whether the absolute position embedding exists.
    pub use_abs_pos: bool,
    /// Whether the attention adds relative positions.
    pub use_rel_pos: bool,
    /// Side of an attention window, in patches (0: global everywhere).
    pub window_size: i64,
    /// The layers attending over the whole grid.
    pub global_attn_indexes: Vec<usize>,
    /// Random features of the prompt's positional embedding (`SamPositionalEmbedding`), half
    /// its width.
    pub num_pos_feats: i64,
}

impl Default for SamVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            output_channels: 256,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 1024,
            patch_size: 16,
            hidden_act: "gelu".to_owned(),
            layer_norm_eps: 1e-6,
            qkv_bias: true,
            mlp_ratio: 4.0,
            mlp_dim: None,
            use_abs_pos: true,
            use_rel_pos: true,
            window_size: 14,
            global_attn_indexes: vec![2, 5, 8, 11],
            num_pos_feats: 128,
        }
    }
}

impl SamVisionConfig {
    /// Patches along a side.
    pub fn grid(&self) -> i64 {
        self.image_size / self.patch_size
    }

    /// `scale` (`hidden_size // 2`): the std of the untrained positional features.
    pub fn scale(&self) -> i64 {
        self.hidden_size / 2
    }

    /// The MLP width (`mlp_dim`, else `hidden_size * mlp_ratio`).
    pub fn mlp_width(&self) -> i64 {
        self.mlp_dim
            .unwrap_or((self.hidden_size as f64 * self.mlp_ratio) as i64)
    }

    /// Checks the sizes, naming the field under `prefix`.
    ///
    /// # Errors
    /// [`Error::ConfigField`] for a size out of range or a width the heads do not divide.
    pub(crate) fn validate(&self, model: &str, prefix: &str) -> Result<()> {
        let field = |name: &str, message: String| Error::ConfigField {
            model: model.to_owned(),
            field: format!("{prefix}{name}"),
            message,
        };
        crate::error::check_sizes(
            model,
            prefix,
            &[
                ("hidden_size", self.hidden_size),
                ("output_channels", self.output_channels),
                ("num_attention_heads", self.num_attention_heads),
                ("num_channels", self.num_channels),
                ("patch_size", self.patch_size),
                ("mlp_dim", self.mlp_width()),
                ("num_pos_feats", self.num_pos_feats),
            ],
            (self.hidden_size, self.num_attention_heads),
        )?;
        if self.image_size < self.patch_size {
            return Err(field(
                "image_size",
                format!(
                    "{}: smaller than patch_size {}",
                    self.image_size, self.patch_size
                ),
            ));
        }
        if self.window_size < 0 {
            return Err(field(
                "window_size",
                format!("{}: must be 0 or more", self.window_size),
            ));
        }
        Activation::from_name(model, &self.hidden_act)
            .map_err(|e| field("hidden_act", e.to_string()))?;
        Ok(())
    }
}

/// `(q - k) + size - 1` for `q, k < size`: the rows of a relative position table (`[size *
/// size]`, int64).
fn relative_index(size: i64) -> Tensor {
    let v: Vec<i64> = (0..size)
        .flat_map(|q| (0..size).map(move |k| q - k + size - 1))
        .collect();
    Tensor::from(tch::Tensor::from_slice(&v))
}

/// `SamVisionAttention`: multi-head attention with decomposed relative positions.
#[derive(Clone, Debug)]
pub struct SamVisionAttention {
    qkv: Linear,
    proj: Linear,
    /// `rel_pos_h`, `rel_pos_w` `[2 * size - 1, head_dim]` and the gather index.
    rel_pos: Option<(Tensor, Tensor, Tensor)>,
    heads: i64,
    head_dim: i64,
    /// The side of the (square) input, in patches.
    size: i64,
}

impl SamVisionAttention {
    fn load(vb: &VarBuilder<'_>, c: &SamVisionConfig, size: i64) -> Result<Self> {
        let h = c.hidden_size;
        let head_dim = h / c.num_attention_heads;
        let rel_pos = if c.use_rel_pos {
            Some((
                vb.get("rel_pos_h", &[2 * size - 1, head_dim], Init::Zeros)?,
                vb.get("rel_pos_w", &[2 * size - 1, head_dim], Init::Zeros)?,
                relative_index(size),
            ))
        } else {
            None
        };
        Ok(Self {
            qkv: Linear::load(vb, "qkv", h, 3 * h, c.qkv_bias)?,
            proj: Linear::load(vb, "proj", h, h, true)?,
            rel_pos,
            heads: c.num_attention_heads,
            head_dim,
            size,
        })
    }

    /// `[n, size, size, hidden]` → the same.
    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("attn");
        let (n, s, d) = (x.size(0)?, self.size, self.head_dim);
        let st = |v: i64| SymInt::new(v);
        let qkv = self
            .qkv
            .forward(x)?
            .reshape(vec![n.clone(), st(s * s), st(3), st(self.heads), st(d)])?
            .permute(&[2, 0, 3, 1, 4])?
            .reshape(vec![st(3), &n * self.heads, st(s * s), st(d)])?;
        let (q, k, v) = (qkv.select(0, 0)?, qkv.select(0, 1)?, qkv.select(0, 2)?);
        let scale = (d as f64).powf(-0.5);
        let mut weights = q.mul_scalar(scale)?.matmul(&k.transpose(-2, -1)?)?;
        if let Some((rh, rw, index)) = &self.rel_pos {
            let nh = &n * self.heads;
            // R[q, k, :] = table[q - k + s - 1]: [s, s, d].
            let table = |t: &Tensor| t.index_select(0, index)?.reshape(vec![st(s), st(s), st(d)]);
            let (rh, rw) = (table(rh)?, table(rw)?);
            let q4 = q.reshape(vec![nh.clone(), st(s), st(s), st(d)])?;
            // einsum("bhwc,hkc->bhwk"): per row h, [b*w, c] @ [c, k].
            let rel_h = q4
                .permute(&[1, 0, 2, 3])?
                .reshape(vec![st(s), &nh * s, st(d)])?
                .matmul(&rh.transpose(1, 2)?)?
                .reshape(vec![st(s), nh.clone(), st(s), st(s)])?
                .permute(&[1, 0, 2, 3])?;
            // einsum("bhwc,wkc->bhwk"): per column w, [b*h, c] @ [c, k].
            let rel_w = q4
                .permute(&[2, 0, 1, 3])?
                .reshape(vec![st(s), &nh * s, st(d)])?
                .matmul(&rw.transpose(1, 2)?)?
                .reshape(vec![st(s), nh.clone(), st(s), st(s)])?
                .permute(&[1, 2, 0, 3])?;
            let rel = rel_h
                .unsqueeze(-1)?
                .add(&rel_w.unsqueeze(-2)?)?
                .reshape(vec![nh, st(s * s), st(s * s)])?;
            weights = weights.add(&rel)?;
        }
        let probs = weights
            .to_kind(Kind::Float)?
            .softmax(-1)?
            .to_kind(q.kind())?;
        let out = probs
            .matmul(&v)?
            .reshape(vec![n.clone(), st(self.heads), st(s), st(s), st(d)])?
            .permute(&[0, 2, 3, 1, 4])?
            .reshape(vec![n, st(s), st(s), st(self.heads * d)])?;
        self.proj.forward(&out)
    }
}

/// `SamMLPBlock`: `lin2(act(lin1(x)))` (the image encoder's and the two-way transformer's).
#[derive(Clone, Debug)]
pub(crate) struct SamMLPBlock {
    lin1: Linear,
    lin2: Linear,
    act: Activation,
}

impl SamMLPBlock {
    /// `lin1` `hidden → mlp_dim`, `lin2` back, `hidden_act` between.
    pub(crate) fn load(vb: &VarBuilder<'_>, (h, m): (i64, i64), hidden_act: &str) -> Result<Self> {
        Ok(Self {
            lin1: Linear::load(vb, "lin1", h, m, true)?,
            lin2: Linear::load(vb, "lin2", m, h, true)?,
            act: Activation::from_name(MODEL, hidden_act)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        self.lin2
            .forward(&self.act.forward(&self.lin1.forward(x)?)?)
    }
}

/// `SamVisionLayer`: pre-norm (windowed) attention and MLP with residuals.
#[derive(Clone, Debug)]
pub struct SamVisionLayer {
    layer_norm1: LayerNorm,
    attn: SamVisionAttention,
    layer_norm2: LayerNorm,
    mlp: SamMLPBlock,
    /// The window side, 0 for a global layer.
    window: i64,
    grid: i64,
}

impl SamVisionLayer {
    fn load(vb: &VarBuilder<'_>, c: &SamVisionConfig, window: i64) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        let size = if window == 0 { c.grid() } else { window };
        Ok(Self {
            layer_norm1: LayerNorm::load(vb, "layer_norm1", h, eps)?,
            attn: SamVisionAttention::load(&vb.pp("attn"), c, size)?,
            layer_norm2: LayerNorm::load(vb, "layer_norm2", h, eps)?,
            mlp: SamMLPBlock::load(&vb.pp("mlp"), (h, c.mlp_width()), &c.hidden_act)?,
            window,
            grid: c.grid(),
        })
    }

    /// `window_partition`: `[b, g, g, c]` padded to a multiple of the window, as
    /// `[b * windows, w, w, c]`.
    fn partition(&self, x: &Tensor) -> CoreResult<Tensor> {
        let (w, g) = (self.window, self.grid);
        let pad = (w - g % w) % w;
        let x = if pad > 0 {
            x.pad(&[0, 0, 0, pad, 0, pad], 0.0)?
        } else {
            x.clone()
        };
        let (b, n, c) = (x.size(0)?, (g + pad) / w, x.size(3)?);
        let st = |v: i64| SymInt::new(v);
        x.reshape(vec![b.clone(), st(n), st(w), st(n), st(w), c.clone()])?
            .permute(&[0, 1, 3, 2, 4, 5])?
            .contiguous()?
            .reshape(vec![&b * (n * n), st(w), st(w), c])
    }

    /// `window_unpartition`: back to `[b, g, g, c]`, the padding dropped.
    fn unpartition(&self, x: &Tensor, b: SymInt) -> CoreResult<Tensor> {
        let (w, g) = (self.window, self.grid);
        let padded = g + (w - g % w) % w;
        let (n, c) = (padded / w, x.size(3)?);
        let st = |v: i64| SymInt::new(v);
        let x = x
            .reshape(vec![b.clone(), st(n), st(n), st(w), st(w), c.clone()])?
            .permute(&[0, 1, 3, 2, 4, 5])?
            .contiguous()?
            .reshape(vec![b, st(padded), st(padded), c])?;
        if padded == g {
            return Ok(x);
        }
        x.narrow(1, st(0), st(g))?
            .narrow(2, st(0), st(g))?
            .contiguous()
    }

    fn forward(&self, h: &Tensor) -> CoreResult<Tensor> {
        let x = {
            let _n = scope("layer_norm1");
            self.layer_norm1.forward(h)?
        };
        let x = if self.window > 0 {
            let b = x.size(0)?;
            let windows = self.partition(&x)?;
            self.unpartition(&self.attn.forward(&windows)?, b)?
        } else {
            self.attn.forward(&x)?
        };
        let h = h.add(&x)?;
        let x = {
            let _n = scope("layer_norm2");
            self.layer_norm2.forward(&h)?
        };
        h.add(&self.mlp.forward(&x)?)
    }
}

/// `SamLayerNorm` with `data_format="channels_first"`: the LayerNorm over the channels of
/// `[b, c, h, w]`.
#[derive(Clone, Debug)]
pub struct SamChannelLayerNorm(LayerNorm);

impl SamChannelLayerNorm {
    pub(crate) fn load(vb: &VarBuilder<'_>, name: &str, size: i64, eps: f64) -> Result<Self> {
        Ok(Self(LayerNorm::load(vb, name, size, eps)?))
    }

    /// The normalisation of `[b, c, h, w]` over `c`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        self.0
            .forward(&x.permute(&[0, 2, 3, 1])?)?
            .permute(&[0, 3, 1, 2])
    }
}

/// `SamVisionEncoder` (the module of `SamVisionModel.vision_encoder` and
/// `SamModel.vision_encoder`).
#[derive(Clone, Debug)]
pub struct SamVisionEncoder {
    projection: (Tensor, Tensor),
    pos_embed: Option<Tensor>,
    layers: Vec<SamVisionLayer>,
    neck_conv1: Tensor,
    neck_norm1: SamChannelLayerNorm,
    neck_conv2: Tensor,
    neck_norm2: SamChannelLayerNorm,
    config: SamVisionConfig,
}

impl SamVisionEncoder {
    /// Reads the encoder under `vb` (`vision_encoder`).
    ///
    /// # Errors
    /// A missing or misshaped weight; an activation transformers does not have.
    pub fn load(vb: &VarBuilder<'_>, c: &SamVisionConfig) -> Result<Self> {
        let (h, p, g, o) = (c.hidden_size, c.patch_size, c.grid(), c.output_channels);
        let pe = vb.pp("patch_embed.projection");
        let projection = (
            pe.get("weight", &[h, c.num_channels, p, p], Init::Normal)?,
            pe.get("bias", &[h], Init::Zeros)?,
        );
        let pos_embed = if c.use_abs_pos {
            Some(vb.get("pos_embed", &[1, g, g, h], Init::Zeros)?)
        } else {
            None
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let window = if c.global_attn_indexes.contains(&i) {
                    0
                } else {
                    c.window_size
                };
                SamVisionLayer::load(&vb.pp(format!("layers.{i}")), c, window)
            })
            .collect::<Result<_>>()?;
        let neck = vb.pp("neck");
        Ok(Self {
            projection,
            pos_embed,
            layers,
            neck_conv1: neck
                .pp("conv1")
                .get("weight", &[o, h, 1, 1], Init::Normal)?,
            neck_norm1: SamChannelLayerNorm::load(&neck, "layer_norm1", o, 1e-6)?,
            neck_conv2: neck
                .pp("conv2")
                .get("weight", &[o, o, 3, 3], Init::Normal)?,
            neck_norm2: SamChannelLayerNorm::load(&neck, "layer_norm2", o, 1e-6)?,
            config: c.clone(),
        })
    }

    /// The image embeddings `[batch, output_channels, grid, grid]` of `pixel_values`
    /// `[batch, C, image_size, image_size]`.
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::Model`] for an image of another size or channel count;
    /// any error of the ops.
    pub fn forward(&self, pixel_values: &Tensor) -> CoreResult<Tensor> {
        let c = &self.config;
        let shape = pixel_values.concrete_shape();
        if shape.len() != 4
            || shape[1] != c.num_channels
            || shape[2] != c.image_size
            || shape[3] != c.image_size
        {
            return Err(onnx_diagnostic_core::Error::Model {
                model: MODEL.to_owned(),
                message: format!(
                    "pixel_values has shape {shape:?}: it must be [batch, {}, {s}, {s}] \
                     (image_size {s}; the processor resizes and pads every image to it)",
                    c.num_channels,
                    s = c.image_size
                ),
            });
        }
        let p = c.patch_size;
        let mut h = {
            let _s = scope("patch_embed");
            pixel_values
                .to_kind(self.projection.0.kind())?
                .conv2d(
                    &self.projection.0,
                    Some(&self.projection.1),
                    [p, p],
                    [0, 0],
                    [1, 1],
                    1,
                )?
                .permute(&[0, 2, 3, 1])?
        };
        if let Some(pe) = &self.pos_embed {
            h = h.add(pe)?;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let _l = scope(&format!("layers.{i}"));
            h = layer.forward(&h)?;
        }
        let _n = scope("neck");
        let x = h.permute(&[0, 3, 1, 2])?;
        let x = x.conv2d(&self.neck_conv1, None, [1, 1], [0, 0], [1, 1], 1)?;
        let x = self.neck_norm1.forward(&x)?;
        let x = x.conv2d(&self.neck_conv2, None, [1, 1], [1, 1], [1, 1], 1)?;
        self.neck_norm2.forward(&x)
    }
}

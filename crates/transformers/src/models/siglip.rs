//! SigLIP's vision tower, as transformers 5.23 writes it (`models/siglip/modeling_siglip.py`,
//! `SiglipVisionModel`, config `SiglipVisionConfig`, `model_type` `siglip_vision_model`): the
//! vision encoder of Gemma3 ([`crate::models::gemma3`]).
//!
//! - `SiglipVisionEmbeddings`: a `Conv2d` of kernel and stride `patch_size` over the image,
//!   flattened to `[batch, patches, hidden]`, plus one learned position embedding per patch;
//! - `SiglipEncoderLayer` × `num_hidden_layers`: LayerNorm, multi-head attention (biases,
//!   scale `head_dim ** -0.5`, no mask), residual, LayerNorm, MLP (`fc1`, `hidden_act`,
//!   `fc2`), residual;
//! - `post_layernorm`.
//!
//! Weights: `embeddings.patch_embedding.{weight,bias}`, `embeddings.position_embedding.weight`,
//! `encoder.layers.{i}.{layer_norm1,self_attn.{q,k,v,out}_proj,layer_norm2,mlp.fc1,mlp.fc2}`,
//! `post_layernorm`, and with `vision_use_head` the attention-pooling `head.*`.
//!
//! Decisions:
//! - The image must be `image_size` square, as transformers' forward without
//!   `interpolate_pos_encoding` requires (the processor resizes every image to it): another
//!   size is a typed error naming the input, where transformers fails on a shape mismatch.
//! - `vision_use_head` (SigLIP's default): the pooling head's weights are read, so a checkpoint
//!   loads whole and the parameters are transformers', but its output (`pooler_output`) is not
//!   computed: Gemma3 replaces it with its projector's output and reads only
//!   `last_hidden_state`.

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::{
    error::{Error, Result},
    modeling_attention::{eager_attention_forward_unmasked, split_heads},
    nn::{Activation, LayerNorm, Linear},
    weights::{Init, VarBuilder},
};

/// The class named in errors.
const MODEL: &str = "SiglipVisionModel";

/// `SiglipVisionConfig` (the defaults of transformers 5.23's dataclass).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct SiglipVisionConfig {
    /// Width of the tower.
    pub hidden_size: i64,
    /// MLP inner size.
    pub intermediate_size: i64,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// Image channels.
    pub num_channels: i64,
    /// Side of the (square) image, in pixels (an int, or `[h, w]` equal).
    #[serde(deserialize_with = "square")]
    pub image_size: i64,
    /// Side of a patch, in pixels.
    #[serde(deserialize_with = "square")]
    pub patch_size: i64,
    /// MLP activation.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Whether the attention-pooling head exists.
    pub vision_use_head: bool,
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: "gelu_pytorch_tanh".to_owned(),
            layer_norm_eps: 1e-6,
            vision_use_head: true,
        }
    }
}

/// An int, or a list of two equal ints (a square).
pub(crate) fn square<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    let v = Json::deserialize(d)?;
    let side = match &v {
        Json::Number(n) => n.as_i64(),
        Json::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_i64(),
        _ => None,
    };
    side.ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{v}: a side in pixels (an integer, or [h, w] with h == w: SigLIP's position \
             embedding is a square grid)"
        ))
    })
}

impl SiglipVisionConfig {
    /// Patches along a side (`image_size // patch_size`).
    pub fn patches_per_side(&self) -> i64 {
        self.image_size / self.patch_size
    }

    /// Checks the sizes, naming the field under `prefix` (`vision_config`).
    ///
    /// # Errors
    /// [`Error::ConfigField`] for a size out of range or a width the heads do not divide.
    pub(crate) fn validate(&self, model: &str, prefix: &str) -> Result<()> {
        let field = |name: &str, message: String| Error::ConfigField {
            model: model.to_owned(),
            field: format!("{prefix}.{name}"),
            message,
        };
        crate::error::check_sizes(
            model,
            &format!("{prefix}."),
            &[
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("num_attention_heads", self.num_attention_heads),
                ("num_channels", self.num_channels),
                ("image_size", self.image_size),
                ("patch_size", self.patch_size),
            ],
            (self.hidden_size, self.num_attention_heads),
        )?;
        if self.patch_size > self.image_size {
            return Err(field(
                "patch_size",
                format!(
                    "{}: larger than image_size {}",
                    self.patch_size, self.image_size
                ),
            ));
        }
        Activation::from_name(model, &self.hidden_act)
            .map_err(|e| field("hidden_act", e.to_string()))?;
        Ok(())
    }
}

/// `SiglipVisionEmbeddings`: patch convolution and position embedding.
#[derive(Clone, Debug)]
pub struct SiglipVisionEmbeddings {
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// `position_embedding.weight` `[patches, hidden]`: the rows of `position_ids` =
    /// `arange(patches)`, so the matrix itself.
    position_embedding: Tensor,
    patch_size: i64,
    image_size: i64,
}

impl SiglipVisionEmbeddings {
    fn load(vb: &VarBuilder<'_>, c: &SiglipVisionConfig) -> Result<Self> {
        let (h, p) = (c.hidden_size, c.patch_size);
        let n = c.patches_per_side() * c.patches_per_side();
        let pe = vb.pp("patch_embedding");
        Ok(Self {
            patch_weight: pe.get("weight", &[h, c.num_channels, p, p], Init::Normal)?,
            patch_bias: pe.get("bias", &[h], Init::Zeros)?,
            position_embedding: vb
                .pp("position_embedding")
                .get("weight", &[n, h], Init::Normal)?,
            patch_size: p,
            image_size: c.image_size,
        })
    }

    /// `[batch, patches, hidden]` of `pixel_values` `[batch, C, image_size, image_size]` (cast
    /// to the weights' type).
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::Model`] for an image of another size; any error of the
    /// ops.
    pub fn forward(&self, pixel_values: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("embeddings");
        let shape = pixel_values.concrete_shape();
        if shape.len() != 4 || shape[2] != self.image_size || shape[3] != self.image_size {
            return Err(onnx_diagnostic_core::Error::Model {
                model: MODEL.to_owned(),
                message: format!(
                    "pixel_values has shape {shape:?}: it must be [images, channels, {s}, {s}] \
                     (image_size {s}; the processor resizes every image to it)",
                    s = self.image_size
                ),
            });
        }
        let p = self.patch_size;
        let x = pixel_values.to_kind(self.patch_weight.kind())?;
        let x = {
            let _c = scope("patch_embedding");
            x.conv2d(
                &self.patch_weight,
                Some(&self.patch_bias),
                [p, p],
                [0, 0],
                [1, 1],
                1,
            )?
        };
        let x = x.flatten(2, -1)?.transpose(1, 2)?;
        let _p = scope("position_embedding");
        x.add(&self.position_embedding)
    }
}

/// `SiglipAttention`: multi-head self-attention with biases, no mask.
#[derive(Clone, Debug)]
pub struct SiglipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
    head_dim: i64,
}

impl SiglipAttention {
    fn load(vb: &VarBuilder<'_>, c: &SiglipVisionConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            q_proj: Linear::load(vb, "q_proj", h, h, true)?,
            k_proj: Linear::load(vb, "k_proj", h, h, true)?,
            v_proj: Linear::load(vb, "v_proj", h, h, true)?,
            out_proj: Linear::load(vb, "out_proj", h, h, true)?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("self_attn");
        let split = |l: &Linear| split_heads(&l.forward(x)?, self.heads, self.head_dim);
        let (q, k, v) = (
            split(&self.q_proj)?,
            split(&self.k_proj)?,
            split(&self.v_proj)?,
        );
        let scale = (self.head_dim as f64).powf(-0.5);
        let out = eager_attention_forward_unmasked(&q, &k, &v, scale)?;
        // The width, not -1: a batch of no image has no elements to infer it from.
        let width = SymInt::new(self.heads * self.head_dim);
        let out = out.reshape(vec![x.size(0)?, x.size(1)?, width])?;
        self.out_proj.forward(&out)
    }
}

/// `SiglipMLP`: `fc2(act(fc1(x)))`.
#[derive(Clone, Debug)]
pub struct SiglipMLP {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl SiglipMLP {
    fn load(vb: &VarBuilder<'_>, c: &SiglipVisionConfig) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(vb, "fc1", c.hidden_size, c.intermediate_size, true)?,
            fc2: Linear::load(vb, "fc2", c.intermediate_size, c.hidden_size, true)?,
            act: Activation::from_name(MODEL, &c.hidden_act)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }
}

/// `SiglipEncoderLayer`: pre-norm attention and MLP with residuals.
#[derive(Clone, Debug)]
pub struct SiglipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SiglipAttention,
    layer_norm2: LayerNorm,
    mlp: SiglipMLP,
}

impl SiglipEncoderLayer {
    fn load(vb: &VarBuilder<'_>, c: &SiglipVisionConfig) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNorm::load(vb, "layer_norm1", h, eps)?,
            self_attn: SiglipAttention::load(&vb.pp("self_attn"), c)?,
            layer_norm2: LayerNorm::load(vb, "layer_norm2", h, eps)?,
            mlp: SiglipMLP::load(&vb.pp("mlp"), c)?,
        })
    }

    fn forward(&self, h: &Tensor) -> CoreResult<Tensor> {
        let x = {
            let _n = scope("layer_norm1");
            self.layer_norm1.forward(h)?
        };
        let h = h.add(&self.self_attn.forward(&x)?)?;
        let x = {
            let _n = scope("layer_norm2");
            self.layer_norm2.forward(&h)?
        };
        h.add(&self.mlp.forward(&x)?)
    }
}

/// `SiglipVisionModel`: embeddings, encoder, `post_layernorm`.
#[derive(Clone, Debug)]
pub struct SiglipVisionModel {
    embeddings: SiglipVisionEmbeddings,
    layers: Vec<SiglipEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl SiglipVisionModel {
    /// Reads the tower under `vb` (Gemma3: `model.vision_tower`).
    ///
    /// # Errors
    /// A missing or misshaped weight; an activation transformers does not have.
    pub fn load(vb: &VarBuilder<'_>, c: &SiglipVisionConfig) -> Result<Self> {
        let embeddings = SiglipVisionEmbeddings::load(&vb.pp("embeddings"), c)?;
        let enc = vb.pp("encoder");
        let layers = (0..c.num_hidden_layers)
            .map(|i| SiglipEncoderLayer::load(&enc.pp(format!("layers.{i}")), c))
            .collect::<Result<_>>()?;
        let post_layernorm =
            LayerNorm::load(vb, "post_layernorm", c.hidden_size, c.layer_norm_eps)?;
        if c.vision_use_head {
            load_pooling_head(&vb.pp("head"), c)?;
        }
        Ok(Self {
            embeddings,
            layers,
            post_layernorm,
        })
    }

    /// The weights' type.
    pub fn dtype(&self) -> tch::Kind {
        self.embeddings.patch_weight.kind()
    }

    /// `last_hidden_state` `[images, patches, hidden]` of `pixel_values`
    /// `[images, C, image_size, image_size]`.
    ///
    /// # Errors
    /// As [`SiglipVisionEmbeddings::forward`]; any error of the ops.
    pub fn forward(&self, pixel_values: &Tensor) -> CoreResult<Tensor> {
        let mut h = self.embeddings.forward(pixel_values)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let _l = scope(&format!("encoder.layers.{i}"));
            h = layer.forward(&h)?;
        }
        let _n = scope("post_layernorm");
        self.post_layernorm.forward(&h)
    }
}

/// Reads `SiglipMultiheadAttentionPoolingHead`'s weights (`probe`, the fused
/// `nn.MultiheadAttention`, `layernorm`, `mlp`), whose output Gemma3 does not read (see the
/// module doc).
fn load_pooling_head(vb: &VarBuilder<'_>, c: &SiglipVisionConfig) -> Result<()> {
    let h = c.hidden_size;
    vb.get("probe", &[1, 1, h], Init::Normal)?;
    let a = vb.pp("attention");
    a.get("in_proj_weight", &[3 * h, h], Init::Normal)?;
    a.get("in_proj_bias", &[3 * h], Init::Zeros)?;
    Linear::load(&a, "out_proj", h, h, true)?;
    LayerNorm::load(vb, "layernorm", h, c.layer_norm_eps)?;
    SiglipMLP::load(&vb.pp("mlp"), c)?;
    Ok(())
}

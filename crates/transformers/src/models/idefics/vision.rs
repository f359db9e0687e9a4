//! Idefics' vision tower, as transformers 5.23 writes it (`models/idefics/vision.py`,
//! `IdeficsVisionTransformer`, a CLIP vision model): the class token and the patches of a
//! `Conv2d` without bias, one learned position embedding per token, `pre_layrnorm`, the encoder
//! layers (LayerNorm, attention with biases, residual, LayerNorm, `fc1` / activation / `fc2`,
//! residual).
//!
//! Weights under `model.vision_model.`: `embeddings.{class_embedding,
//! patch_embedding.weight, position_embedding.weight}`, `pre_layrnorm`,
//! `encoder.layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1,
//! mlp.fc2}`, `post_layernorm`.
//!
//! Decisions: Idefics reads `last_hidden_state`, which `post_layernorm` does not touch (it only
//! normalises the pooled class token): its weights are read, not applied. The image must be
//! `image_size` square (`interpolate_pos_encoding` is false in the forward, as transformers'
//! default): another size is a typed error naming `pixel_values`.

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};

use super::configuration::{IdeficsVisionConfig, MODEL};
use crate::{
    error::Result,
    modeling_attention::{eager_attention_forward_unmasked, split_heads},
    nn::{Activation, LayerNorm, Linear},
    weights::{Init, VarBuilder},
};

/// `IdeficsVisionEncoderLayer`.
#[derive(Clone, Debug)]
struct IdeficsVisionEncoderLayer {
    layer_norm1: LayerNorm,
    qkv: [Linear; 3],
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
    heads: i64,
}

impl IdeficsVisionEncoderLayer {
    fn load(vb: &VarBuilder<'_>, c: &IdeficsVisionConfig) -> Result<Self> {
        let (e, eps) = (c.embed_dim, c.layer_norm_eps);
        let a = vb.pp("self_attn");
        let m = vb.pp("mlp");
        Ok(Self {
            layer_norm1: LayerNorm::load(vb, "layer_norm1", e, eps)?,
            qkv: [
                Linear::load(&a, "q_proj", e, e, true)?,
                Linear::load(&a, "k_proj", e, e, true)?,
                Linear::load(&a, "v_proj", e, e, true)?,
            ],
            out_proj: Linear::load(&a, "out_proj", e, e, true)?,
            layer_norm2: LayerNorm::load(vb, "layer_norm2", e, eps)?,
            fc1: Linear::load(&m, "fc1", e, c.intermediate_size, true)?,
            fc2: Linear::load(&m, "fc2", c.intermediate_size, e, true)?,
            act: Activation::from_name(MODEL, &c.hidden_act)?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, h: &Tensor) -> CoreResult<Tensor> {
        let x = self.layer_norm1.forward(h)?;
        let x = {
            let _s = scope("self_attn");
            let d = x.concrete_shape()[2] / self.heads;
            let [q, k, v] = &self.qkv;
            let split = |l: &Linear| split_heads(&l.forward(&x)?, self.heads, d);
            let out = eager_attention_forward_unmasked(
                &split(q)?,
                &split(k)?,
                &split(v)?,
                (d as f64).powf(-0.5),
            )?;
            let e = SymInt::new(self.heads * d);
            let out = out.reshape(vec![x.size(0)?, x.size(1)?, e])?;
            self.out_proj.forward(&out)?
        };
        let h = h.add(&x)?;
        let x = self.layer_norm2.forward(&h)?;
        let x = {
            let _s = scope("mlp");
            self.fc2
                .forward(&self.act.forward(&self.fc1.forward(&x)?)?)?
        };
        h.add(&x)
    }
}

/// `IdeficsVisionTransformer`.
#[derive(Clone, Debug)]
pub struct IdeficsVisionTransformer {
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<IdeficsVisionEncoderLayer>,
    config: IdeficsVisionConfig,
}

impl IdeficsVisionTransformer {
    /// Reads the tower under `vb` (`model.vision_model`).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, c: &IdeficsVisionConfig) -> Result<Self> {
        let (e, p, eps) = (c.embed_dim, c.patch_size, c.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let enc = vb.pp("encoder.layers");
        // `post_layernorm` normalises the pooled output only (see the module doc).
        let _post = LayerNorm::load(vb, "post_layernorm", e, eps)?;
        Ok(Self {
            class_embedding: emb.get("class_embedding", &[e], Init::Normal)?,
            patch_embedding: emb.pp("patch_embedding").get(
                "weight",
                &[e, c.num_channels, p, p],
                Init::Normal,
            )?,
            position_embedding: emb.pp("position_embedding").get(
                "weight",
                &[c.num_patches() + 1, e],
                Init::Normal,
            )?,
            pre_layrnorm: LayerNorm::load(vb, "pre_layrnorm", e, eps)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| IdeficsVisionEncoderLayer::load(&enc.pp(i.to_string()), c))
                .collect::<Result<_>>()?,
            config: c.clone(),
        })
    }

    /// `last_hidden_state` `[n, 1 + patches, embed_dim]` of images `[n, C, image_size,
    /// image_size]`.
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
                    "pixel_values has images of shape {:?}: each must be [{}, {s}, {s}] \
                     (vision_config.image_size {s}; interpolate_pos_encoding is not supported)",
                    &shape[1.min(shape.len())..],
                    c.num_channels,
                    s = c.image_size
                ),
            });
        }
        let _s = scope("embeddings");
        let p = c.patch_size;
        let patches = pixel_values
            .to_kind(self.patch_embedding.kind())?
            .conv2d(&self.patch_embedding, None, [p, p], [0, 0], [1, 1], 1)?
            .flatten(2, -1)?
            .transpose(1, 2)?;
        let n = pixel_values.size(0)?;
        let e = c.embed_dim;
        let class = self
            .class_embedding
            .expand(vec![n, SymInt::new(1), SymInt::new(e)])?;
        let h = Tensor::cat(&[&class, &patches], 1)?.add(&self.position_embedding)?;
        drop(_s);
        let mut h = {
            let _n = scope("pre_layrnorm");
            self.pre_layrnorm.forward(&h)?
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let _l = scope(&format!("encoder.layers.{i}"));
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

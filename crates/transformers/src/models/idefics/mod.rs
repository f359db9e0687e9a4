//! Idefics (`IdeficsForVisionText2Text`, transformers 5.23's `models/idefics`): a Llama-style
//! decoder whose layers are preceded by gated cross-attention layers over the image features,
//! the images encoded by a CLIP tower ([`vision`]) and resampled by a perceiver
//! ([`perceiver`]); the text side is in [`text`], the configs in [`configuration`], the
//! image-text-to-text inputs in [`crate::tasks::image_text_to_text::idefics`].
//!
//! Weights: `model.embed_tokens.{weight, additional_embedding.weight}`,
//! `model.vision_model.*`, `model.perceiver_resampler.*`, `model.layers.{i}.*`,
//! `model.gated_cross_attn_layers.{i}.*`, `model.norm`, `lm_head.{weight,
//! additional_fc.weight}` (the embedding's tables when `tie_word_embeddings`).
//!
//! Decisions:
//! - `forward` takes `input_ids`, `attention_mask`, `position_ids`, `past_key_values` (a
//!   `DynamicCache`), `pixel_values` `[batch, images, C, H, W]` and `image_attention_mask`
//!   `[batch, seq, images]` (1 where a token may attend an image). transformers' other image
//!   inputs (`image_encoder_embeddings`, `perceiver_embeddings`) are not taken: the images are
//!   always encoded, as `generate`'s first step does.
//! - Without `position_ids` they are computed as transformers does (from the attention mask's
//!   cumulative sum, else after the cache); `cache_position` is the new positions after the
//!   cache.
//! - The output is `IdeficsCausalLMOutputWithPast` with `logits`, `past_key_values` and
//!   `image_hidden_states` `[batch, images, image_seq_len, embed_dim]`.
//! - Named buffers: each decoder self-attention's rotary `inv_freq`, `cos_cached`,
//!   `sin_cached` (the cross-attentions' copies are never read and are not listed).

pub mod configuration;
pub mod perceiver;
pub mod text;
pub mod vision;

use std::path::Path;

use onnx_diagnostic_core::{
    Error as CoreError, Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, dataclass,
    scope,
};
use tch::Kind;

pub use configuration::{IdeficsConfig, IdeficsPerceiverConfig, IdeficsVisionConfig};
pub use perceiver::IdeficsPerceiverResampler;
pub use text::{
    IdeficsAttention, IdeficsDecoderLayer, IdeficsDecoupledEmbedding, IdeficsDecoupledLinear,
    IdeficsEmbedding, IdeficsGatedCrossAttentionLayer, apply_rotary_at,
};
pub use vision::IdeficsVisionTransformer;

use crate::{
    cache_utils::{DynamicCache, LayerKind},
    error::{Result, core_error},
    masking_utils::decoder_masks,
    nn::RmsNorm,
    weights::Weights,
};
use configuration::MODEL;

dataclass! {
    /// `IdeficsCausalLMOutputWithPast`: what `IdeficsForVisionText2Text` returns.
    IdeficsCausalLMOutputWithPast {
        /// The loss, when labels are given.
        loss,
        /// `[batch, seq, vocab_size + additional_vocab_size]`.
        logits,
        /// The grown cache (`DynamicCache`).
        past_key_values,
        /// The hidden states of every layer, when asked for.
        hidden_states,
        /// The attention weights of every layer, when asked for.
        attentions,
        /// `[batch, images, image_seq_len, embed_dim]`: the features the text attends to.
        image_hidden_states,
    }
}

fn model_error(message: String) -> CoreError {
    CoreError::Model {
        model: MODEL.to_owned(),
        message,
    }
}

/// `IdeficsForVisionText2Text`.
#[derive(Clone, Debug)]
pub struct IdeficsForVisionText2Text {
    /// The configuration.
    pub config: IdeficsConfig,
    embed_tokens: IdeficsDecoupledEmbedding,
    vision_model: IdeficsVisionTransformer,
    perceiver_resampler: Option<IdeficsPerceiverResampler>,
    layers: Vec<IdeficsDecoderLayer>,
    gated_cross_attn_layers: Vec<IdeficsGatedCrossAttentionLayer>,
    norm: RmsNorm,
    lm_head: IdeficsDecoupledLinear,
    params: Vec<(String, Tensor)>,
}

impl IdeficsForVisionText2Text {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// A missing or misshaped weight, checkpoint tensors no module reads.
    pub fn new(config: IdeficsConfig, weights: &mut Weights) -> Result<Self> {
        let c = &config;
        let rotary = IdeficsEmbedding::new(
            c.head_dim(),
            c.max_position_embeddings,
            c.rope_base(),
            weights.buffer_dtype(),
            weights.device(),
        )?;
        let root = weights.root();
        let m = root.pp("model");
        let embed_tokens = IdeficsDecoupledEmbedding::load(&m.pp("embed_tokens"), c)?;
        let vision_model = IdeficsVisionTransformer::load(&m.pp("vision_model"), &c.vision_config)?;
        let perceiver_resampler = if c.use_resampler {
            Some(IdeficsPerceiverResampler::load(
                &m.pp("perceiver_resampler"),
                c,
            )?)
        } else {
            None
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| IdeficsDecoderLayer::load(&m.pp(format!("layers.{i}")), c, i, rotary.clone()))
            .collect::<Result<_>>()?;
        let gated_cross_attn_layers = (0..c.num_hidden_layers / c.cross_layer_interval)
            .map(|i| {
                IdeficsGatedCrossAttentionLayer::load(
                    &m.pp(format!("gated_cross_attn_layers.{i}")),
                    c,
                    i,
                    rotary.clone(),
                )
            })
            .collect::<Result<_>>()?;
        let norm = RmsNorm::load(&m, "norm", c.hidden_size, c.rms_norm_eps, false)?;
        let tied = c.tie_word_embeddings.then(|| embed_tokens.weights());
        let lm_head = IdeficsDecoupledLinear::load(&root.pp("lm_head"), c, tied)?;
        let params = weights.finish()?;
        Ok(Self {
            config,
            embed_tokens,
            vision_model,
            perceiver_resampler,
            layers,
            gated_cross_attn_layers,
            norm,
            lm_head,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`IdeficsConfig::from_file`], [`Weights::from_dir`] and [`Self::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = IdeficsConfig::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, MODEL)?;
        Self::new(config, &mut weights)
    }

    /// The decoder layers.
    pub fn layers(&self) -> &[IdeficsDecoderLayer] {
        &self.layers
    }

    /// The image features `[batch, images * image_seq_len, embed_dim]` of `pixel_values`
    /// `[batch, images, C, H, W]`, and `image_seq_len`.
    ///
    /// # Errors
    /// [`CoreError::Model`] for images of another shape; any error of the ops.
    pub fn image_features(&self, pixel_values: &Tensor) -> CoreResult<(Tensor, i64)> {
        let s = pixel_values.shape();
        if s.len() != 5 {
            return Err(model_error(format!(
                "pixel_values has shape {:?}: it must be [batch, images, channels, height, width]",
                pixel_values.concrete_shape()
            )));
        }
        let (b, n) = (s[0].clone(), s[1].clone());
        let flat = pixel_values.contiguous()?.reshape(vec![
            &b * &n,
            s[2].clone(),
            s[3].clone(),
            s[4].clone(),
        ])?;
        let h = {
            let _v = scope("vision_model");
            self.vision_model.forward(&flat)?
        };
        let h = match &self.perceiver_resampler {
            Some(p) => p.forward(&h)?,
            None => h,
        };
        let hs = h.concrete_shape();
        let (len, e) = (hs[1], hs[2]);
        let h = h.reshape(vec![b, &n * len, SymInt::new(e)])?;
        Ok((h, len))
    }

    /// Logits, the grown cache and the image features `[b, images, image_seq_len, embed_dim]`.
    ///
    /// # Errors
    /// [`CoreError::Model`] naming a missing or misshaped input; any error of the ops.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
        pixel_values: &Tensor,
        image_attention_mask: &Tensor,
    ) -> CoreResult<(Tensor, DynamicCache, Tensor)> {
        let _m = scope("model");
        let mut cache = cache.unwrap_or_else(|| {
            DynamicCache::with_layers(&vec![LayerKind::Dynamic; self.layers.len()])
        });
        let h = {
            let _e = scope("embed_tokens");
            self.embed_tokens.forward(input_ids)?
        };
        let dtype = h.kind();
        let seq = input_ids.size(1)?;
        let past = cache
            .past_length(attention_mask, &seq)
            .map_err(|e| core_error(MODEL, e))?;
        let cache_position = Tensor::arange(
            past.clone(),
            &past + &seq,
            1,
            Kind::Int64,
            input_ids.device(),
        )?;
        let position_ids = match (position_ids, attention_mask) {
            (Some(p), _) => p.clone(),
            (None, Some(mask)) => {
                let p = mask.to_kind(Kind::Int64)?.cumsum(-1)?.sub_scalar(1)?;
                let p = p.masked_fill(&mask.eq_scalar(0)?, 1)?;
                let total = p.size(1)?;
                p.narrow(1, &total - &seq, seq.clone())?
            }
            (None, None) => cache_position.unsqueeze(0)?,
        };
        let (image, image_seq_len) = self.image_features(pixel_values)?;
        let image = image.to_kind(dtype)?;
        let ms = image_attention_mask.shape();
        if ms.len() != 3 {
            return Err(model_error(format!(
                "image_attention_mask has shape {:?}: it must be [batch, seq_length, images]",
                image_attention_mask.concrete_shape()
            )));
        }
        let image_mask = image_attention_mask
            .unsqueeze(-1)?
            .expand(vec![
                ms[0].clone(),
                ms[1].clone(),
                ms[2].clone(),
                SymInt::new(image_seq_len),
            ])?
            .reshape(vec![ms[0].clone(), ms[1].clone(), &ms[2] * image_seq_len])?;
        let zero = Tensor::zeros(Vec::<SymInt>::new(), dtype, h.device())?;
        let min = Tensor::full(
            Vec::<SymInt>::new(),
            crate::masking_utils::finfo_min(dtype),
            dtype,
            h.device(),
        )?;
        let image_mask = zero.where_cond(&image_mask.unsqueeze(1)?.ne_scalar(0)?, &min)?;
        let gate = image_mask
            .eq_scalar(0.0)?
            .any(&[-1], false)?
            .to_kind(dtype)?
            .squeeze_dim(1)?;
        let windows = vec![None; self.layers.len()];
        let (_, masks) = decoder_masks(
            MODEL,
            input_ids,
            attention_mask,
            Some(&position_ids),
            &cache,
            &windows,
            dtype,
        )?;
        let mut h = h;
        let interval = self.config.cross_layer_interval;
        for (i, (layer, mask)) in self.layers.iter().zip(&masks).enumerate() {
            if i % interval == 0 {
                let _g = scope(&format!("gated_cross_attn_layers.{}", i / interval));
                h = self.gated_cross_attn_layers[i / interval].forward(
                    &h,
                    &image,
                    &image_mask,
                    &gate,
                )?;
            }
            let _l = scope(&format!("layers.{i}"));
            h = layer.forward(&h, mask, &position_ids, &cache_position, &mut cache)?;
        }
        let h = {
            let _n = scope("norm");
            self.norm.forward(&h)?
        };
        drop(_m);
        let logits = {
            let _l = scope("lm_head");
            self.lm_head.forward(&h)?
        };
        let is = image.concrete_shape();
        let image = image.reshape(vec![
            ms[0].clone(),
            ms[2].clone(),
            SymInt::new(image_seq_len),
            SymInt::new(is[2]),
        ])?;
        Ok((logits, cache, image))
    }
}

impl Module for IdeficsForVisionText2Text {
    fn class_name(&self) -> String {
        MODEL.to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        [
            "input_ids",
            "attention_mask",
            "position_ids",
            "past_key_values",
            "pixel_values",
            "image_attention_mask",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                l.self_attn().rotary_emb().buffers().map(|(n, t)| {
                    (
                        format!("model.layers.{i}.self_attn.rotary_emb.{n}"),
                        t.clone(),
                    )
                })
            })
            .collect()
    }

    /// `IdeficsCausalLMOutputWithPast` with `logits`, `past_key_values` and
    /// `image_hidden_states`.
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let cache = DynamicCache::from_value(inputs.get("past_key_values"))
            .map_err(|e| core_error(MODEL, e))?;
        let pixel_values = inputs.opt_tensor("pixel_values")?.ok_or_else(|| {
            model_error("pixel_values is required (the images the text attends to)".to_owned())
        })?;
        let image_attention_mask = inputs.opt_tensor("image_attention_mask")?.ok_or_else(|| {
            model_error(
                "image_attention_mask is required: [batch, seq_length, images], 1 where a \
                 token may attend an image"
                    .to_owned(),
            )
        })?;
        let (logits, cache, image) = self.forward_with_cache(
            inputs.tensor("input_ids")?,
            inputs.opt_tensor("attention_mask")?,
            inputs.opt_tensor("position_ids")?,
            cache,
            pixel_values,
            image_attention_mask,
        )?;
        Ok(Value::custom(IdeficsCausalLMOutputWithPast {
            logits: Some(Value::Tensor(logits)),
            past_key_values: Some(Value::custom(cache)),
            image_hidden_states: Some(Value::Tensor(image)),
            ..IdeficsCausalLMOutputWithPast::default()
        }))
    }
}

//! Qwen2-VL and Qwen2.5-VL, as transformers 5.23 writes them (`models/qwen2_vl/modeling_qwen2_vl.py`,
//! `models/qwen2_5_vl/modeling_qwen2_5_vl.py`; they differ in the vision tower only, see
//! [`vision`], and Qwen2.5-VL's rope index spaces the frames of videos, which are not taken):
//! the vision tower ([`vision`]), the Qwen2 text decoder with the multimodal rope
//! (`Qwen2VLRotaryEmbedding`: the temporal, height and width positions each drive a section
//! of the frequencies, `mrope_section`), `Qwen2VLModel` (image features scattered into the
//! embeddings of the image placeholder tokens) and `Qwen2VLForConditionalGeneration`.
//!
//! Weights: `model.visual.*`, `model.language_model.*`, `lm_head.weight` (tied to the
//! embeddings when `tie_word_embeddings`), the names `save_pretrained` writes.
//!
//! Decisions:
//! - The forward takes `input_ids`, `attention_mask`, `position_ids` (`[3, batch, seq]` from
//!   [`get_rope_index`], or `[batch, seq]` text positions expanded to the three axes),
//!   `past_key_values` (a `DynamicCache`), `pixel_values` `[patches, C*T*P*P]`,
//!   `image_grid_thw` `[images, 3]` and `mm_token_type_ids`. Videos and `inputs_embeds` are
//!   not taken.
//! - Without `position_ids`, the positions come from [`get_rope_index`] when images and
//!   `mm_token_type_ids` are given (eagerly: it reads the data, as transformers does), else
//!   they are the text positions after the cache. transformers would add the `rope_deltas`
//!   it kept from an earlier call; a module here keeps no state between calls, so a step after
//!   the prompt must be given its positions (as `generate` gives them).
//! - `get_placeholder_mask` checks that the placeholder count matches the features
//!   (`torch_compilable_check`: an assertion in the exported graph).

mod configuration;
mod rope_index;
pub mod vision;

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope};
use tch::Kind;

pub use configuration::{Config, VisionConfig, VisionRope, VlArch};
pub use rope_index::{RopeIndex, get_rope_index};
pub use vision::{
    PatchEmbed, PatchMerger, Qwen2VLVisionBlock, Qwen2VLVisionRotaryEmbedding,
    Qwen2VisionTransformerPretrainedModel, VisionAttention, VisionMlp, VisionNorm, WindowAttention,
    Windows,
};

/// Qwen2.5-VL: the same struct, configured by [`VlArch::Qwen2_5VL`].
#[allow(non_camel_case_types)]
pub type Qwen2_5_VLForConditionalGeneration = Qwen2VLForConditionalGeneration;
/// Qwen2.5-VL's vision tower: the same struct with window attention.
#[allow(non_camel_case_types)]
pub type Qwen2_5_VisionTransformerPretrainedModel = Qwen2VisionTransformerPretrainedModel;
/// Qwen2.5-VL's vision attention: the same as Qwen2-VL's.
#[allow(non_camel_case_types)]
pub type Qwen2_5_VLVisionAttention = VisionAttention;

use crate::{
    cache_utils::DynamicCache,
    error::Result,
    modeling_outputs::causal_lm_forward,
    models::llama::{LlamaModel, LlamaRotaryEmbedding},
    vision_utils::grid_rows,
    weights::{Init, Weights},
};

/// `Qwen2VLRotaryEmbedding`: the default rope frequencies, applied to the temporal, height
/// and width positions `[3, batch, seq]`, each for its section of the frequencies.
#[derive(Clone, Debug)]
pub struct Qwen2VLRotaryEmbedding {
    inv_freq: Tensor,
    mrope_section: Vec<i64>,
}

impl Qwen2VLRotaryEmbedding {
    /// `(cos, sin)` `[batch, seq, head_dim]` (float32) of `position_ids` `[3, batch, seq]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, position_ids: &Tensor) -> CoreResult<(Tensor, Tensor)> {
        let _s = scope("rotary_emb");
        let freqs = position_ids
            .unsqueeze(-1)?
            .to_kind(Kind::Float)?
            .mul(&self.inv_freq)?;
        // `torch.cat([m[i % 3] for i, m in enumerate(freq.split(mrope_section, -1))], -1)`
        let recompose = |f: &Tensor| -> CoreResult<Tensor> {
            let parts = f.split_with_sizes(self.mrope_section.clone(), -1)?;
            let picked = parts
                .iter()
                .enumerate()
                .map(|(i, p)| p.select(0, (i % 3) as i64))
                .collect::<CoreResult<Vec<_>>>()?;
            let refs: Vec<&Tensor> = picked.iter().collect();
            let f = Tensor::cat(&refs, -1)?;
            Tensor::cat(&[&f, &f], -1)
        };
        Ok((recompose(&freqs.cos()?)?, recompose(&freqs.sin()?)?))
    }
}

/// `Qwen2VLTextModel`: the Qwen2 decoder on input embeddings, with the multimodal rope.
#[derive(Clone, Debug)]
pub struct Qwen2VLTextModel {
    decoder: LlamaModel,
    rotary_emb: Qwen2VLRotaryEmbedding,
}

/// `Qwen2VLModel`: the vision tower and the text model.
#[derive(Clone, Debug)]
pub struct Qwen2VLModel {
    /// The vision tower.
    pub visual: Qwen2VisionTransformerPretrainedModel,
    /// The text model.
    pub language_model: Qwen2VLTextModel,
    image_token_id: i64,
    spatial_merge_size: i64,
    class: &'static str,
}

impl Qwen2VLModel {
    fn error(&self, message: &str) -> onnx_diagnostic_core::Error {
        onnx_diagnostic_core::Error::Model {
            model: self.class.to_owned(),
            message: message.to_owned(),
        }
    }

    /// The merged features of each image, `[t * h * w / m^2, hidden_size]` each: the vision
    /// tower on `pixel_values` (cast to its type), split per image with
    /// `(image_grid_thw.prod(-1) // m**2).tolist()` as transformers does, a data-dependent
    /// read. Patchable: `patched_Qwen2VLModel.get_image_features` (crates/patch-transformers)
    /// returns the features of all images as one piece, which the forward concatenates anyway.
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::DataDependent`] during an export; any error of the ops.
    #[onnx_diagnostic_macros::patchable]
    pub fn get_image_features(
        &self,
        pixel_values: &Tensor,
        image_grid_thw: &Tensor,
    ) -> CoreResult<Vec<Tensor>> {
        let kind = self.visual.dtype();
        let (_, merged) = self
            .visual
            .forward(&pixel_values.to_kind(kind)?, image_grid_thw)?;
        let m2 = self.spatial_merge_size * self.spatial_merge_size;
        let sizes: Vec<i64> = grid_rows(image_grid_thw)?
            .iter()
            .map(|g| g.iter().product::<i64>() / m2)
            .collect();
        merged.split_with_sizes(sizes, 0)
    }

    /// `get_placeholder_mask`: `input_ids == image_token_id` as `[batch, seq, 1]`, after
    /// checking that there are as many placeholders as feature rows.
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::CheckFailed`] when the counts differ.
    pub fn get_placeholder_mask(
        &self,
        input_ids: &Tensor,
        image_features: &Tensor,
    ) -> CoreResult<Tensor> {
        let special = input_ids.eq_scalar(self.image_token_id)?;
        let n = special.to_kind(Kind::Int64)?.sum(&[], false)?;
        let rows = Tensor::full(
            Vec::<SymInt>::new(),
            image_features.size(0)?,
            Kind::Int64,
            n.device(),
        )?;
        // The counts of the example inputs, for the message only.
        let counted = n.as_tch().int64_value(&[]);
        let given = image_features
            .concrete_shape()
            .first()
            .copied()
            .unwrap_or(0);
        onnx_diagnostic_core::check(
            &n.eq(&rows)?,
            &format!(
                "Image features and image tokens do not match, tokens: {counted}, features: \
                 {given}"
            ),
        )?;
        special.unsqueeze(-1)
    }

    /// The last hidden states `[batch, seq, hidden]`; `cache` grows by the new positions.
    ///
    /// # Errors
    /// Any error of the ops; a `pixel_values` without `image_grid_thw`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: &mut DynamicCache,
        pixel_values: Option<&Tensor>,
        image_grid_thw: Option<&Tensor>,
        mm_token_type_ids: Option<&Tensor>,
    ) -> CoreResult<Tensor> {
        let _s = scope("model");
        let decoder = &self.language_model.decoder;
        let mut h = {
            let _l = scope("language_model");
            decoder.embed(input_ids)?
        };
        if let Some(pv) = pixel_values {
            let grid = image_grid_thw.ok_or_else(|| {
                self.error(
                    "pixel_values is given without image_grid_thw: the vision tower needs the \
                 grid of each image",
                )
            })?;
            let features = self.get_image_features(pv, grid)?;
            // No image (`pixel_values` `[0, ...]`): nothing to scatter.
            if !features.is_empty() {
                let refs: Vec<&Tensor> = features.iter().collect();
                let embeds = Tensor::cat(&refs, 0)?.to_kind(h.kind())?;
                let mask = self.get_placeholder_mask(input_ids, &embeds)?;
                h = h.masked_scatter(&mask, &embeds)?;
            }
        }
        let (b, s) = (input_ids.size(0)?, input_ids.size(1)?);
        let three = |p: &Tensor| {
            p.unsqueeze(0)?
                .expand(vec![SymInt::new(3), b.clone(), s.clone()])
        };
        let position_ids = match position_ids {
            // `[4, batch, seq]`: text positions first (transformers builds packed masks from
            // them; no packed mask is built here), then the three axes.
            Some(p) if p.rank() == 3 && p.concrete_shape()[0] == 4 => {
                p.slice(0, Some(SymInt::new(1)), None, 1)?
            }
            Some(p) if p.rank() == 3 && p.concrete_shape()[0] == 3 => p.clone(),
            Some(p) if p.rank() != 2 => {
                return Err(self.error(&format!(
                    "position_ids has shape {:?}: it must be [3, batch, seq] (or [4, ...] with \
                     the text positions first, or [batch, seq])",
                    p.concrete_shape()
                )));
            }
            Some(p) => three(p)?,
            None => match (image_grid_thw, mm_token_type_ids) {
                (Some(grid), Some(types)) if pixel_values.is_some() => {
                    self.rope_index(input_ids, types, grid, attention_mask)?
                }
                (Some(_), None) if pixel_values.is_some() => {
                    return Err(self.error(
                        "Multimodal data was passed (via image_grid_thw) but mm_token_type_ids \
                         is missing: pass it (or position_ids) so that the multimodal rope can \
                         be computed",
                    ));
                }
                _ => three(
                    &decoder
                        .default_positions(input_ids, attention_mask, cache)?
                        .squeeze_dim(0)?,
                )?,
            },
        };
        let _l = scope("language_model");
        let (cos, sin) = self.language_model.rotary_emb.forward(&position_ids)?;
        let cos_sin = (cos.to_kind(h.kind())?, sin.to_kind(h.kind())?);
        decoder.forward_embeds(h, input_ids, attention_mask, None, Some(cos_sin), cache)
    }

    /// [`get_rope_index`] on the values of the inputs (eager only: it reads them).
    fn rope_index(
        &self,
        input_ids: &Tensor,
        mm_token_type_ids: &Tensor,
        image_grid_thw: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> CoreResult<Tensor> {
        let shape = input_ids.concrete_shape();
        let &[batch, seq] = shape.as_slice() else {
            return Err(self.error(&format!("input_ids has shape {shape:?}, not [batch, seq]")));
        };
        let (batch, seq) = (batch as usize, seq as usize);
        let types = mm_token_type_ids.to_vec_i64()?;
        let grids = grid_rows(image_grid_thw)?;
        let mask = match attention_mask {
            // The mask of the new tokens: its last `seq` columns.
            Some(m) => {
                let all = m.to_vec_i64()?;
                let width = all.len() / batch.max(1);
                if width < seq || width * batch != all.len() {
                    return Err(self.error(&format!(
                        "attention_mask has shape {:?}: it must be [batch, past + seq] for \
                         input_ids [{batch}, {seq}]",
                        m.concrete_shape()
                    )));
                }
                Some(
                    (0..batch)
                        .flat_map(|r| all[r * width + width - seq..(r + 1) * width].to_vec())
                        .collect::<Vec<_>>(),
                )
            }
            None => None,
        };
        let (positions, _) = get_rope_index(
            batch,
            seq,
            &types,
            &grids,
            mask.as_deref(),
            self.spatial_merge_size,
        )
        .map_err(|e| self.error(&e.to_string()))?;
        let t = tch::Tensor::from_slice(&positions)
            .f_reshape([3, batch as i64, seq as i64])
            .and_then(|t| t.f_to_device(input_ids.device()))
            .map_err(|e| self.error(&e.to_string()))?;
        Ok(Tensor::from(t))
    }
}

impl Qwen2VisionTransformerPretrainedModel {
    /// The type of the vision weights (`self.visual.dtype`).
    pub fn dtype(&self) -> Kind {
        self.blocks.first().map_or(Kind::Float, |b| b.attn.kind())
    }
}

/// `Qwen2VLForConditionalGeneration`: [`Qwen2VLModel`] and the language-model head.
#[derive(Clone, Debug)]
pub struct Qwen2VLForConditionalGeneration {
    /// The configuration.
    pub config: Config,
    /// The model.
    pub model: Qwen2VLModel,
    lm_head: Tensor,
    params: Vec<(String, Tensor)>,
}

impl Qwen2VLForConditionalGeneration {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// A missing or misshaped weight, checkpoint tensors no module reads, a rope the text
    /// model does not take.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        // `_checkpoint_conversion_mapping`: the hub's layout, which `save_pretrained` writes.
        weights.map_keys(&[
            ("model.visual.", "visual."),
            ("model.language_model.", "model."),
        ]);
        let vb = weights.root();
        let visual =
            Qwen2VisionTransformerPretrainedModel::load(&vb.pp("model.visual"), &config.vision)?;
        let text = &config.text;
        let decoder = LlamaModel::load(&vb.pp("model.language_model"), text)?;
        let inv_freq = LlamaRotaryEmbedding::new(text)?
            .with_buffers(vb.buffer_dtype(), vb.device())?
            .inv_freq()
            .clone();
        let lm_head = if config.tie_word_embeddings {
            weights.ignore_unread("lm_head.weight");
            decoder.embed_weight().clone()
        } else {
            vb.pp("lm_head")
                .get("weight", &[text.vocab_size, text.hidden_size], Init::Normal)?
        };
        let params = weights.finish()?;
        let model = Qwen2VLModel {
            visual,
            language_model: Qwen2VLTextModel {
                decoder,
                rotary_emb: Qwen2VLRotaryEmbedding {
                    inv_freq,
                    mrope_section: config.mrope_section.clone(),
                },
            },
            image_token_id: config.image_token_id,
            spatial_merge_size: config.vision.spatial_merge_size,
            class: config.arch.class_name(),
        };
        Ok(Self {
            config,
            model,
            lm_head,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and [`Self::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, config.arch.class_name())?;
        Self::new(config, &mut weights)
    }

    /// Logits `[batch, seq, vocab]` and the grown cache.
    ///
    /// # Errors
    /// Any error of the ops.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
        pixel_values: Option<&Tensor>,
        image_grid_thw: Option<&Tensor>,
        mm_token_type_ids: Option<&Tensor>,
    ) -> CoreResult<(Tensor, DynamicCache)> {
        let mut cache = cache.unwrap_or_default();
        let h = self.model.forward(
            input_ids,
            attention_mask,
            position_ids,
            &mut cache,
            pixel_values,
            image_grid_thw,
            mm_token_type_ids,
        )?;
        let _s = scope("lm_head");
        Ok((h.linear(&self.lm_head, None)?, cache))
    }
}

impl Module for Qwen2VLForConditionalGeneration {
    fn class_name(&self) -> String {
        self.config.arch.class_name().to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        [
            "input_ids",
            "attention_mask",
            "position_ids",
            "past_key_values",
            "pixel_values",
            "image_grid_thw",
            "mm_token_type_ids",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            (
                "model.visual.rotary_pos_emb.inv_freq".to_owned(),
                self.model.visual.rotary_pos_emb().inv_freq().clone(),
            ),
            (
                "model.language_model.rotary_emb.inv_freq".to_owned(),
                self.model.language_model.rotary_emb.inv_freq.clone(),
            ),
        ]
    }

    /// `CausalLMOutputWithPast` with `logits` and `past_key_values` (a `DynamicCache`).
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let pixel_values = inputs.opt_tensor("pixel_values")?;
        let grid = inputs.opt_tensor("image_grid_thw")?;
        let types = inputs.opt_tensor("mm_token_type_ids")?;
        causal_lm_forward(
            self.config.arch.class_name(),
            inputs,
            |ids, mask, pos, cache| {
                self.forward_with_cache(ids, mask, pos, cache, pixel_values, grid, types)
            },
        )
    }
}

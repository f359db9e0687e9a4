//! Gemma3's multimodal model, as transformers 5.23 writes it (`models/gemma3/modeling_gemma3.py`,
//! `Gemma3ForConditionalGeneration` over `Gemma3Model`, config `Gemma3Config`, `model_type`
//! `gemma3`):
//!
//! - the SigLIP vision tower ([`SiglipVisionModel`]) on `pixel_values`
//!   `[images, C, image_size, image_size]`;
//! - `Gemma3MultiModalProjector`: the patches back on their square grid, average-pooled to
//!   `mm_tokens_per_image` per image, a one-centred RMSNorm and a matmul to the text width;
//! - the image features scattered into the embeddings of the image placeholder tokens (the
//!   placeholder id replaced by 0 before the embedding when it is outside the vocabulary);
//! - the Gemma3 text decoder ([`crate::models::gemma2`]) with token-type-aware masks: the
//!   tokens of one image attend to each other both ways (`token_type_ids` 1, one block per run
//!   of image tokens), every other token causally, and the sliding window still cuts both.
//!
//! Weights: `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`,
//! `lm_head.weight` (tied to the embeddings by default). `save_pretrained` writes the hub's
//! layout (`vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`,
//! `language_model.lm_head.*`), and older hub checkpoints hold `vision_tower.vision_model.*`:
//! all are read, as transformers' conversion mapping reads them.
//!
//! Decisions:
//! - The forward takes `input_ids`, `pixel_values`, `attention_mask`, `position_ids`,
//!   `past_key_values` (a `DynamicCache`) and `token_type_ids`; not `inputs_embeds`.
//! - `token_type_ids` are indexed by absolute position, as transformers' `blockwise_overlay`
//!   indexes them: after a cache they cover the cached positions too (`[batch, past + seq]`,
//!   what `generate` passes for a prefill in chunks); shorter ones are read as text past their
//!   end, as transformers pads them with -1. Without them the masks are causal only.
//! - `get_placeholder_mask` keeps the check transformers' Gemma3 had before 5.23: `raise
//!   ValueError` when the placeholders and the features differ in number, a branch on data
//!   that stops an export; `patched_Gemma3Model.get_placeholder_mask` (crates/patch-
//!   transformers) makes it a check recorded in the graph, as 5.23's `torch_compilable_check`.
//! - Untrained, `mm_input_projection_weight` is drawn like the other weights, where
//!   transformers' `_init_weights` zeroes it: a zero projection makes every image feature 0,
//!   so nothing downstream would see the images and validate could not check the vision path.

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope};
use tch::Kind;

use super::configuration::{Config, MODEL};
use crate::{
    cache_utils::DynamicCache,
    error::Result,
    modeling_outputs::causal_lm_forward,
    models::{gemma2::Gemma2ForCausalLM, siglip::SiglipVisionModel},
    nn::RmsNorm,
    weights::{Init, VarBuilder, Weights},
};

/// `Gemma3MultiModalProjector`: average pooling of the patch grid, RMSNorm, projection.
#[derive(Clone, Debug)]
pub struct Gemma3MultiModalProjector {
    mm_input_projection_weight: Tensor,
    mm_soft_emb_norm: RmsNorm,
    patches_per_image: i64,
    kernel_size: i64,
}

impl Gemma3MultiModalProjector {
    fn load(vb: &VarBuilder<'_>, c: &Config) -> Result<Self> {
        let vh = c.vision.hidden_size;
        Ok(Self {
            mm_input_projection_weight: vb.get(
                "mm_input_projection_weight",
                &[vh, c.text.hidden_size],
                Init::Normal,
            )?,
            mm_soft_emb_norm: RmsNorm::load(
                vb,
                "mm_soft_emb_norm",
                vh,
                c.vision.layer_norm_eps,
                true,
            )?,
            patches_per_image: c.vision.patches_per_side(),
            kernel_size: c.kernel_size(),
        })
    }

    /// `[images, tokens, text hidden]` of the tower's `[images, patches, vision hidden]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, vision_outputs: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("multi_modal_projector");
        let (b, hidden) = (vision_outputs.size(0)?, vision_outputs.size(2)?);
        let p = SymInt::new(self.patches_per_image);
        let grid = vision_outputs
            .transpose(1, 2)?
            .reshape(vec![b, hidden, p.clone(), p])?
            .contiguous()?;
        let k = self.kernel_size;
        let pooled = {
            let _p = scope("avg_pool");
            grid.avg_pool2d([k, k], [k, k], [0, 0])?
        };
        let pooled = pooled.flatten(2, -1)?.transpose(1, 2)?;
        let normed = {
            let _n = scope("mm_soft_emb_norm");
            self.mm_soft_emb_norm.forward(&pooled)?
        };
        normed
            .matmul(&self.mm_input_projection_weight)?
            .to_kind(vision_outputs.kind())
    }
}

/// `get_block_sequence_ids_for_mask`: for each position of `token_type_ids` `[batch, L]`, the
/// index of its run of image tokens (`token_type_ids == 1`) in the row, `-1` for text.
///
/// # Errors
/// Any error of the ops.
pub fn get_block_sequence_ids_for_mask(token_type_ids: &Tensor) -> CoreResult<Tensor> {
    let is_image = token_type_ids.eq_scalar(1i64)?;
    let len = token_type_ids.size(1)?;
    let previous = is_image
        .to_kind(Kind::Int64)?
        .pad(&[1, 0], 0.0)?
        .narrow(1, SymInt::new(0), len)?
        .to_kind(Kind::Bool)?;
    let new_start = is_image.logical_and(&previous.logical_not()?)?;
    let groups = new_start
        .to_kind(Kind::Int64)?
        .cumsum(1)?
        .sub_scalar(1i64)?;
    let none = Tensor::full(Vec::<SymInt>::new(), -1i64, Kind::Int64, groups.device())?;
    groups.where_cond(&is_image, &none)
}

/// `Gemma3Model`: the vision tower, the projector and the text model.
#[derive(Clone, Debug)]
pub struct Gemma3Model {
    /// The vision tower.
    pub vision_tower: SiglipVisionModel,
    /// The projector.
    pub multi_modal_projector: Gemma3MultiModalProjector,
    /// The text decoder (with the head of [`Gemma3ForConditionalGeneration`]).
    pub language_model: Gemma2ForCausalLM,
    image_token_id: i64,
    tokens_per_image: i64,
}

impl Gemma3Model {
    fn error(message: String) -> onnx_diagnostic_core::Error {
        onnx_diagnostic_core::Error::Model {
            model: MODEL.to_owned(),
            message,
        }
    }

    /// The projected features `[images, tokens, text hidden]` of `pixel_values` (cast to the
    /// tower's type).
    ///
    /// # Errors
    /// As [`SiglipVisionModel::forward`]; any error of the ops.
    pub fn get_image_features(&self, pixel_values: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("vision_tower");
        let pv = pixel_values.to_kind(self.vision_tower.dtype())?;
        let last = self.vision_tower.forward(&pv)?;
        drop(_s);
        self.multi_modal_projector.forward(&last)
    }

    /// `get_placeholder_mask`: `input_ids == image_token_id` as `[batch, seq, 1]`, after the
    /// check transformers' Gemma3 wrote before 5.23:
    /// `if inputs_embeds[special_image_mask].numel() != image_features.numel(): raise
    /// ValueError(...)`. The `if` reads the data: eagerly a mismatch is a typed error naming
    /// both counts; during an export it stops on the read. Patchable:
    /// `patched_Gemma3Model.get_placeholder_mask` records the check instead.
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::Model`] when the counts differ,
    /// [`onnx_diagnostic_core::Error::DataDependent`] during an export.
    #[onnx_diagnostic_macros::patchable]
    pub fn get_placeholder_mask(
        &self,
        input_ids: &Tensor,
        image_features: &Tensor,
    ) -> CoreResult<Tensor> {
        let special = input_ids.eq_scalar(self.image_token_id)?;
        let n_tokens = special.to_kind(Kind::Int64)?.sum(&[], false)?;
        let n_features = self.feature_rows(image_features)?;
        // The `raise ValueError` on a data-dependent count.
        if n_tokens.ne(&n_features)?.to_bool()? {
            return Err(Self::error(format!(
                "Image features and image tokens do not match: tokens: {}, features {}",
                n_tokens.item_f64()?,
                n_features.item_f64()?
            )));
        }
        special.unsqueeze(-1)
    }

    /// The number of feature rows, `images * tokens_per_image`, as a 0-d int64 tensor.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn feature_rows(&self, image_features: &Tensor) -> CoreResult<Tensor> {
        Tensor::full(
            Vec::<SymInt>::new(),
            image_features.size(0)?,
            Kind::Int64,
            image_features.device(),
        )?
        .mul_scalar(self.tokens_per_image)
    }

    /// The image token id.
    pub fn image_token_id(&self) -> i64 {
        self.image_token_id
    }

    /// Logits `[batch, seq, vocab]` and the grown cache.
    ///
    /// # Errors
    /// Any error of the ops; the placeholder check.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        pixel_values: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
        token_type_ids: Option<&Tensor>,
    ) -> CoreResult<(Tensor, DynamicCache)> {
        let text = &self.language_model;
        let mut h = {
            let _s = scope("model");
            let _l = scope("language_model");
            // An image id outside the vocabulary is embedded as token 0, then replaced.
            let ids = if self.image_token_id >= text.config.vocab_size {
                input_ids.masked_fill(&input_ids.eq_scalar(self.image_token_id)?, 0i64)?
            } else {
                input_ids.clone()
            };
            text.embed(&ids)?
        };
        if let Some(pv) = pixel_values {
            let _s = scope("model");
            let features = self.get_image_features(pv)?.to_kind(h.kind())?;
            let mask = self.get_placeholder_mask(input_ids, &features)?;
            h = h.masked_scatter(&mask, &features)?;
        }
        let blocks = match token_type_ids {
            Some(t) => Some(get_block_sequence_ids_for_mask(t)?),
            None => None,
        };
        text.forward_embeds(h, attention_mask, position_ids, cache, blocks.as_ref())
    }
}

/// `Gemma3ForConditionalGeneration`: [`Gemma3Model`] and the language-model head.
#[derive(Clone, Debug)]
pub struct Gemma3ForConditionalGeneration {
    /// The configuration.
    pub config: Config,
    /// The model.
    pub model: Gemma3Model,
    params: Vec<(String, Tensor)>,
}

impl Gemma3ForConditionalGeneration {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// A missing or misshaped weight, checkpoint tensors no module reads, a rope the text
    /// model does not take.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        weights.map_keys(&[
            ("model.vision_tower.", "vision_tower.vision_model."),
            ("model.vision_tower.", "vision_tower."),
            ("model.multi_modal_projector.", "multi_modal_projector."),
            ("model.language_model.", "language_model.model."),
            ("lm_head.", "language_model.lm_head."),
        ]);
        let vb = weights.root();
        let m = vb.pp("model");
        let vision_tower = SiglipVisionModel::load(&m.pp("vision_tower"), &config.vision)?;
        let multi_modal_projector =
            Gemma3MultiModalProjector::load(&m.pp("multi_modal_projector"), &config)?;
        let language_model = Gemma2ForCausalLM::load(
            config.text.clone(),
            weights,
            "model.language_model",
            config.tie_word_embeddings,
        )?;
        let params = weights.finish()?;
        let model = Gemma3Model {
            vision_tower,
            multi_modal_projector,
            language_model,
            image_token_id: config.image_token_index,
            tokens_per_image: config.image_tokens(),
        };
        Ok(Self {
            config,
            model,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and [`Self::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, MODEL)?;
        Self::new(config, &mut weights)
    }

    /// Logits `[batch, seq, vocab]` and the grown cache (see [`Gemma3Model::forward`]).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        pixel_values: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
        token_type_ids: Option<&Tensor>,
    ) -> CoreResult<(Tensor, DynamicCache)> {
        self.model.forward(
            input_ids,
            pixel_values,
            attention_mask,
            position_ids,
            cache,
            token_type_ids,
        )
    }
}

impl Module for Gemma3ForConditionalGeneration {
    fn class_name(&self) -> String {
        MODEL.to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        [
            "input_ids",
            "pixel_values",
            "attention_mask",
            "position_ids",
            "past_key_values",
            "token_type_ids",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.model.language_model.buffers()
    }

    /// `Gemma3CausalLMOutputWithPast` with `logits` and `past_key_values` (a `DynamicCache`
    /// of sliding and full layers).
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let pixel_values = inputs.opt_tensor("pixel_values")?;
        let token_type_ids = inputs.opt_tensor("token_type_ids")?;
        causal_lm_forward(MODEL, inputs, |ids, mask, pos, cache| {
            self.forward_with_cache(ids, pixel_values, mask, pos, cache, token_type_ids)
        })
    }
}

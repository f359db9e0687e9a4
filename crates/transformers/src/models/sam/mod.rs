//! SAM (`SamModel` and `SamVisionModel`, transformers 5.23's `models/sam/modeling_sam.py`):
//! the image encoder ([`vision`]), the prompt encoder ([`prompt_encoder`]) and the mask
//! decoder ([`mask_decoder`]); the configs are in [`configuration`], the mask-generation
//! inputs in [`crate::tasks::mask_generation`].
//!
//! `SamModel`'s weights: `shared_image_embedding.positional_embedding`, `vision_encoder.*`,
//! `prompt_encoder.*`, `mask_decoder.*`. With `tie_word_embeddings` (the default) the prompt
//! encoder's `shared_embedding` is `shared_image_embedding`, listed once in
//! `named_parameters` as torch lists a shared parameter; a checkpoint may hold it under either
//! name or both (`save_pretrained` keeps `shared_image_embedding`'s).
//!
//! Decisions:
//! - `forward` takes `pixel_values` or `image_embeddings` (exactly one, as transformers
//!   requires), and any of `input_points` `[b, point_batch, points, 2]`, `input_labels`
//!   `[b, point_batch, points]` (ones when absent, as transformers fills them),
//!   `input_boxes` `[b, boxes, 4]` and `input_masks` `[b, 1, 4·grid, 4·grid]`, all in pixel
//!   coordinates of the `image_size` input. `multimask_output` is [`SamModel::multimask_output`]
//!   (true, transformers' default): it picks the outputs' shape, so it is fixed for an export.
//! - The output is `SamImageSegmentationOutput` with `iou_scores` and `pred_masks` (the
//!   hidden states and attentions are not computed).
//! - transformers' shape checks (`ValueError`) are typed errors naming the input; the batch
//!   and point-batch agreements are size checks, recorded as guards during an export.

pub mod configuration;
pub mod mask_decoder;
pub mod prompt_encoder;
pub mod vision;

use std::path::Path;

use onnx_diagnostic_core::{
    Error as CoreError, Inputs, Module, Rel, Result as CoreResult, Tensor, Value, check_size,
    dataclass, scope,
};
use tch::Kind;

pub use configuration::{SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig};
pub use mask_decoder::{
    SamAttention, SamFeedForward, SamMaskDecoder, SamTwoWayAttentionBlock, SamTwoWayTransformer,
};
pub use prompt_encoder::{SamMaskEmbedding, SamPositionalEmbedding, SamPromptEncoder};
pub use vision::{
    SamChannelLayerNorm, SamVisionAttention, SamVisionConfig, SamVisionEncoder, SamVisionLayer,
};

use crate::{
    error::{Error, Result},
    weights::Weights,
};

impl SamVisionConfig {
    /// Parses the text of a `SamVisionConfig`'s `config.json` (`model_type`
    /// `sam_vision_model`), the keys left out taking the class's defaults.
    ///
    /// # Errors
    /// [`Error::Config`] for another `model_type`, [`Error::ConfigField`] naming a field.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// As [`SamVisionConfig::from_json`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = crate::error::parse_config(text, path)?;
        if let Some(t) = raw.get("model_type").and_then(serde_json::Value::as_str)
            && t != "sam_vision_model"
        {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!(
                    "model_type {t:?}: SamVisionModel takes a sam_vision_model config"
                ),
            });
        }
        let cfg: SamVisionConfig = serde_path_to_error::deserialize(raw)
            .map_err(|e| super::llama::parse_error("SamVisionModel", path, &e))?;
        cfg.validate("SamVisionModel", "")?;
        Ok(cfg)
    }
}

/// `SamVisionModel`: the image encoder alone.
#[derive(Clone, Debug)]
pub struct SamVisionModel {
    /// The configuration.
    pub config: SamVisionConfig,
    /// The encoder.
    pub vision_encoder: SamVisionEncoder,
    params: Vec<(String, Tensor)>,
}

impl SamVisionModel {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// A missing or misshaped weight, checkpoint tensors no module reads.
    pub fn new(config: SamVisionConfig, weights: &mut Weights) -> Result<Self> {
        let vision_encoder = SamVisionEncoder::load(&weights.root().pp("vision_encoder"), &config)?;
        let params = weights.finish()?;
        Ok(Self {
            config,
            vision_encoder,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`SamVisionConfig::from_file`], [`Weights::from_dir`] and [`Self::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = SamVisionConfig::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, "SamVisionModel")?;
        Self::new(config, &mut weights)
    }
}

impl Module for SamVisionModel {
    fn class_name(&self) -> String {
        "SamVisionModel".to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        vec!["pixel_values".to_owned()]
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// `last_hidden_state` `[batch, output_channels, grid, grid]`.
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        Ok(Value::from(
            self.vision_encoder
                .forward(inputs.tensor("pixel_values")?)?,
        ))
    }
}

dataclass! {
    /// `SamImageSegmentationOutput`: what `SamModel` returns.
    SamImageSegmentationOutput {
        /// `[batch, point_batch, masks]`: the predicted IoU of each mask.
        iou_scores,
        /// `[batch, point_batch, masks, 4·grid, 4·grid]`: the low-resolution mask logits.
        pred_masks,
        /// The image encoder's hidden states, when asked for.
        vision_hidden_states,
        /// The image encoder's attention weights, when asked for.
        vision_attentions,
        /// The mask decoder's attention weights, when asked for.
        mask_decoder_attentions,
    }
}

/// The name of the prompt encoder's tied positional embedding.
const TIED: &str = "prompt_encoder.shared_embedding.positional_embedding";

/// `SamModel`: image encoder, prompt encoder, mask decoder.
#[derive(Clone, Debug)]
pub struct SamModel {
    /// The configuration.
    pub config: SamConfig,
    /// Whether the multimask outputs are returned (true) or the single mask.
    pub multimask_output: bool,
    shared_image_embedding: SamPositionalEmbedding,
    vision_encoder: SamVisionEncoder,
    prompt_encoder: SamPromptEncoder,
    mask_decoder: SamMaskDecoder,
    params: Vec<(String, Tensor)>,
}

fn model_error(message: String) -> CoreError {
    CoreError::Model {
        model: configuration::MODEL.to_owned(),
        message,
    }
}

impl SamModel {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// A missing or misshaped weight, checkpoint tensors no module reads.
    pub fn new(config: SamConfig, weights: &mut Weights) -> Result<Self> {
        let shared_name = "shared_image_embedding.positional_embedding";
        let tie = config.tie_word_embeddings;
        if tie && weights.contains(TIED) && !weights.contains(shared_name) {
            // Only the tied copy was saved: it is the shared one.
            weights.map_keys(&[(shared_name, TIED)]);
        } else if tie {
            weights.ignore_unread(TIED);
        }
        let root = weights.root();
        let shared_image_embedding =
            SamPositionalEmbedding::load(&root.pp("shared_image_embedding"), &config.vision)?;
        let vision_encoder = SamVisionEncoder::load(&root.pp("vision_encoder"), &config.vision)?;
        let prompt_shared = if tie {
            shared_image_embedding.clone()
        } else {
            SamPositionalEmbedding::load(
                &root.pp("prompt_encoder.shared_embedding"),
                &config.vision,
            )?
        };
        let prompt_encoder = SamPromptEncoder::load(
            &root.pp("prompt_encoder"),
            &config.prompt_encoder,
            prompt_shared,
        )?;
        let mask_decoder = SamMaskDecoder::load(&root.pp("mask_decoder"), &config.mask_decoder)?;
        let params = weights.finish()?;
        Ok(Self {
            config,
            multimask_output: true,
            shared_image_embedding,
            vision_encoder,
            prompt_encoder,
            mask_decoder,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`SamConfig::from_file`], [`Weights::from_dir`] and [`Self::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = SamConfig::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, configuration::MODEL)?;
        Self::new(config, &mut weights)
    }

    /// The mask decoder.
    pub fn mask_decoder(&self) -> &SamMaskDecoder {
        &self.mask_decoder
    }

    /// `get_image_wide_positional_embeddings`: the positional features of the grid's cell
    /// centres, `[1, hidden, grid, grid]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn get_image_wide_positional_embeddings(&self) -> CoreResult<Tensor> {
        let size = self.config.prompt_encoder.image_embedding_size();
        let pe = self.shared_image_embedding.weight();
        let grid = Tensor::ones([size, size], pe.kind(), pe.device())?;
        let y = grid.cumsum(0)?.sub_scalar(0.5)?.div_scalar(size as f64)?;
        let x = grid.cumsum(1)?.sub_scalar(0.5)?.div_scalar(size as f64)?;
        self.shared_image_embedding
            .forward(&Tensor::stack(&[&x, &y], -1)?, None)?
            .permute(&[2, 0, 1])?
            .unsqueeze(0)
    }

    /// The image embeddings `[batch, output_channels, grid, grid]` of `pixel_values`.
    ///
    /// # Errors
    /// As [`SamVisionEncoder::forward`].
    pub fn get_image_embeddings(&self, pixel_values: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("vision_encoder");
        self.vision_encoder.forward(pixel_values)
    }

    /// The forward of `SamModel` on tensors (see the module doc): `(iou_scores, pred_masks)`.
    ///
    /// # Errors
    /// [`CoreError::Model`] naming the input for inputs transformers refuses; any error of
    /// the ops.
    pub fn segment(&self, inputs: &Inputs) -> CoreResult<(Tensor, Tensor)> {
        let pixel_values = inputs.opt_tensor("pixel_values")?;
        let given_embeddings = inputs.opt_tensor("image_embeddings")?;
        let points = inputs.opt_tensor("input_points")?;
        let labels = inputs.opt_tensor("input_labels")?;
        let boxes = inputs.opt_tensor("input_boxes")?;
        let masks = inputs.opt_tensor("input_masks")?;
        if let Some(p) = points
            && (p.rank() != 4 || p.concrete_shape()[3] != 2)
        {
            return Err(model_error(format!(
                "input_points has shape {:?}: it must be [batch_size, point_batch_size, \
                 nb_points_per_image, 2]",
                p.concrete_shape()
            )));
        }
        if let Some(b) = boxes
            && (b.rank() != 3 || b.concrete_shape()[2] != 4)
        {
            return Err(model_error(format!(
                "input_boxes has shape {:?}: it must be [batch_size, nb_boxes, 4]",
                b.concrete_shape()
            )));
        }
        if let (Some(p), Some(b)) = (points, boxes) {
            check_size(
                &p.size(1)?,
                Rel::Eq,
                b.size(1)?,
                "input_points and input_boxes: you should provide as many bounding boxes as \
                 input points per box",
            )?;
        }
        let image_embeddings = match (pixel_values, given_embeddings) {
            (Some(p), None) => self.get_image_embeddings(p)?,
            (None, Some(e)) => e.clone(),
            (None, None) => {
                return Err(model_error(
                    "Either pixel_values or image_embeddings must be provided.".to_owned(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(model_error(
                    "Only one of pixel_values and image_embeddings can be provided.".to_owned(),
                ));
            }
        };
        let batch = image_embeddings.size(0)?;
        let pe = self.get_image_wide_positional_embeddings()?;
        let ps = pe.shape();
        let image_pe = pe.expand(vec![
            batch.clone(),
            ps[1].clone(),
            ps[2].clone(),
            ps[3].clone(),
        ])?;
        let default_labels;
        let labels = match (points, labels) {
            (Some(p), None) => {
                let s = p.shape();
                default_labels = Tensor::ones(s[..3].to_vec(), Kind::Int, p.device())?;
                Some(&default_labels)
            }
            (_, l) => l,
        };
        if let Some(p) = points {
            check_size(
                &batch,
                Rel::Eq,
                p.size(0)?,
                "The batch size of the image embeddings and the input points must be the same",
            )?;
        }
        let (sparse, dense) = self.prompt_encoder.forward(points, labels, boxes, masks)?;
        let _s = scope("mask_decoder");
        let (pred_masks, iou_scores) = self.mask_decoder.forward(
            &image_embeddings,
            &image_pe,
            sparse.as_ref(),
            &dense,
            self.multimask_output,
        )?;
        Ok((iou_scores, pred_masks))
    }
}

impl Module for SamModel {
    fn class_name(&self) -> String {
        configuration::MODEL.to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        [
            "pixel_values",
            "input_points",
            "input_labels",
            "input_boxes",
            "input_masks",
            "image_embeddings",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// `SamImageSegmentationOutput` with `iou_scores` and `pred_masks`.
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        let (iou_scores, pred_masks) = self.segment(inputs)?;
        Ok(Value::custom(SamImageSegmentationOutput {
            iou_scores: Some(Value::Tensor(iou_scores)),
            pred_masks: Some(Value::Tensor(pred_masks)),
            ..SamImageSegmentationOutput::default()
        }))
    }
}

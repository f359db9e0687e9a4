//! SAM's configs, as transformers 5.23's `models/sam/configuration_sam.py` writes them:
//! `SamConfig` (`model_type` `sam`) with its `vision_config` ([`SamVisionConfig`]),
//! `prompt_encoder_config` ([`SamPromptEncoderConfig`]) and `mask_decoder_config`
//! ([`SamMaskDecoderConfig`]). Keys left out take the dataclasses' defaults.
//!
//! Decisions:
//! - What `__post_init__` derives is derived, whatever the file says: the prompt encoder's
//!   `image_embedding_size` is `image_size // patch_size` and the vision config's `scale`
//!   `hidden_size // 2`, as transformers recomputes both on load (`save_pretrained` writes
//!   them; a file whose values disagree is read as transformers reads it).
//! - A sub-config's `model_type` may be anything: the Python package's cached configs write
//!   `""` there, and transformers reads the sub-configs by key, not by type.
//! - Sizes the three parts must agree on are checked when the config is read, naming the
//!   field: the prompt and decoder widths, the positional features (`2 * num_pos_feats` is the
//!   prompt width), the image channels (`output_channels`), and the embedding grid
//!   (`image_embedding_size` is the vision grid). transformers only fails at the first add or
//!   concatenation of mismatched sizes, in the middle of a forward.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use super::vision::SamVisionConfig;
use crate::{
    error::{Error, Result},
    nn::Activation,
};

/// The class named in errors.
pub(crate) const MODEL: &str = "SamModel";

/// `SamPromptEncoderConfig`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct SamPromptEncoderConfig {
    /// Width of the prompt embeddings.
    pub hidden_size: i64,
    /// Side of the input image, in pixels (points and boxes are in its coordinates).
    pub image_size: i64,
    /// Side of a patch of the image encoder, in pixels.
    pub patch_size: i64,
    /// Channels of the mask embedding's second convolution.
    pub mask_input_channels: i64,
    /// Point embeddings: 0 and 1 for the point labels, 2 and 3 for the box corners.
    pub num_point_embeddings: i64,
    /// Activation of the mask embedding.
    pub hidden_act: String,
    /// LayerNorm epsilon of the mask embedding.
    pub layer_norm_eps: f64,
}

impl Default for SamPromptEncoderConfig {
    fn default() -> Self {
        Self {
            hidden_size: 256,
            image_size: 1024,
            patch_size: 16,
            mask_input_channels: 16,
            num_point_embeddings: 4,
            hidden_act: "gelu".to_owned(),
            layer_norm_eps: 1e-6,
        }
    }
}

impl SamPromptEncoderConfig {
    /// `image_embedding_size`: the side of the image embeddings' grid.
    pub fn image_embedding_size(&self) -> i64 {
        self.image_size / self.patch_size
    }
}

/// `SamMaskDecoderConfig`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct SamMaskDecoderConfig {
    /// Width of the tokens and of the image embeddings.
    pub hidden_size: i64,
    /// Activation of the two-way transformer's MLP.
    pub hidden_act: String,
    /// Width of the two-way transformer's MLP.
    pub mlp_dim: i64,
    /// Two-way attention blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// The cross-attentions project to `hidden_size / attention_downsample_rate`.
    pub attention_downsample_rate: i64,
    /// Masks predicted besides the single one (`num_mask_tokens` is one more).
    pub num_multimask_outputs: i64,
    /// Linear layers of the IoU head.
    pub iou_head_depth: i64,
    /// Width of the IoU head.
    pub iou_head_hidden_dim: i64,
    /// LayerNorm epsilon of the attention blocks.
    pub layer_norm_eps: f64,
}

impl Default for SamMaskDecoderConfig {
    fn default() -> Self {
        Self {
            hidden_size: 256,
            hidden_act: "relu".to_owned(),
            mlp_dim: 2048,
            num_hidden_layers: 2,
            num_attention_heads: 8,
            attention_downsample_rate: 2,
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            layer_norm_eps: 1e-6,
        }
    }
}

impl SamMaskDecoderConfig {
    /// `num_mask_tokens`: the masks predicted, the single one first.
    pub fn num_mask_tokens(&self) -> i64 {
        self.num_multimask_outputs + 1
    }
}

/// `SamConfig`.
#[derive(Clone, Debug)]
pub struct SamConfig {
    /// The image encoder's config.
    pub vision: SamVisionConfig,
    /// The prompt encoder's config.
    pub prompt_encoder: SamPromptEncoderConfig,
    /// The mask decoder's config.
    pub mask_decoder: SamMaskDecoderConfig,
    /// Std of untrained weights.
    pub initializer_range: f64,
    /// The prompt encoder's positional embedding is `shared_image_embedding`'s.
    pub tie_word_embeddings: bool,
}

#[derive(Deserialize)]
struct Top {
    #[serde(default = "std")]
    initializer_range: f64,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
}

fn std() -> f64 {
    0.02
}
fn yes() -> bool {
    true
}

/// A sub-config by key, `{}` when absent, its fields read with `prefix` in errors.
fn sub<T: for<'de> Deserialize<'de>>(raw: &Json, key: &str) -> Result<T> {
    let v = match raw.get(key) {
        Some(v) if v.is_object() => v.clone(),
        _ => serde_json::json!({}),
    };
    serde_path_to_error::deserialize(v).map_err(|e| Error::ConfigField {
        model: MODEL.to_owned(),
        field: format!("{key}.{}", e.path()),
        message: e.inner().to_string(),
    })
}

impl SamConfig {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] for another `model_type`, [`Error::ConfigField`] naming a field out
    /// of range or sizes the parts disagree on (`vision_config.*`, `prompt_encoder_config.*`,
    /// `mask_decoder_config.*`).
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// As [`SamConfig::from_json`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = crate::error::parse_config(text, path)?;
        if let Some(t) = raw.get("model_type").and_then(Json::as_str)
            && t != "sam"
        {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!("model_type {t:?}: {MODEL} takes a sam config"),
            });
        }
        let top: Top = serde_path_to_error::deserialize(raw.clone())
            .map_err(|e| super::super::llama::parse_error(MODEL, path, &e))?;
        let cfg = Self {
            vision: sub(&raw, "vision_config")?,
            prompt_encoder: sub(&raw, "prompt_encoder_config")?,
            mask_decoder: sub(&raw, "mask_decoder_config")?,
            initializer_range: top.initializer_range,
            tie_word_embeddings: top.tie_word_embeddings,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks each part's sizes and the sizes they share.
    ///
    /// # Errors
    /// [`Error::ConfigField`] naming the field.
    pub(crate) fn validate(&self) -> Result<()> {
        let field = |name: &str, message: String| Error::ConfigField {
            model: MODEL.to_owned(),
            field: name.to_owned(),
            message,
        };
        self.vision.validate(MODEL, "vision_config.")?;
        let (p, d) = (&self.prompt_encoder, &self.mask_decoder);
        crate::error::check_sizes(
            MODEL,
            "prompt_encoder_config.",
            &[
                ("hidden_size", p.hidden_size),
                ("image_size", p.image_size),
                ("patch_size", p.patch_size),
            ],
            (1, 1),
        )?;
        if p.mask_input_channels < 4 || p.mask_input_channels % 4 != 0 {
            return Err(field(
                "prompt_encoder_config.mask_input_channels",
                format!(
                    "{}: must be a positive multiple of 4 (the first mask convolution has a \
                     quarter of them)",
                    p.mask_input_channels
                ),
            ));
        }
        Activation::from_name(MODEL, &p.hidden_act)
            .map_err(|e| field("prompt_encoder_config.hidden_act", e.to_string()))?;
        // The blocks' cross-attentions project to hidden_size / 2, the final one to
        // hidden_size / attention_downsample_rate, the self-attentions to hidden_size.
        let final_internal = d.hidden_size / d.attention_downsample_rate.max(1);
        if d.num_attention_heads > 0 && final_internal % d.num_attention_heads != 0 {
            return Err(field(
                "mask_decoder_config.num_attention_heads",
                format!(
                    "{}: must divide hidden_size / attention_downsample_rate = {final_internal}",
                    d.num_attention_heads
                ),
            ));
        }
        crate::error::check_sizes(
            MODEL,
            "mask_decoder_config.",
            &[
                ("hidden_size", d.hidden_size),
                ("mlp_dim", d.mlp_dim),
                ("attention_downsample_rate", d.attention_downsample_rate),
                ("num_multimask_outputs", d.num_multimask_outputs),
                ("iou_head_depth", d.iou_head_depth),
                ("iou_head_hidden_dim", d.iou_head_hidden_dim),
            ],
            (d.hidden_size / 2, d.num_attention_heads),
        )?;
        if d.hidden_size % 8 != 0 {
            return Err(field(
                "mask_decoder_config.hidden_size",
                format!(
                    "{}: must be a multiple of 8 (the mask upscaling has hidden_size / 4, then \
                     / 8 channels)",
                    d.hidden_size
                ),
            ));
        }
        Activation::from_name(MODEL, &d.hidden_act)
            .map_err(|e| field("mask_decoder_config.hidden_act", e.to_string()))?;
        let agree = [
            (
                "prompt_encoder_config.hidden_size",
                p.hidden_size,
                "mask_decoder_config.hidden_size",
                d.hidden_size,
            ),
            (
                "vision_config.output_channels",
                self.vision.output_channels,
                "mask_decoder_config.hidden_size",
                d.hidden_size,
            ),
            (
                "vision_config.num_pos_feats",
                2 * self.vision.num_pos_feats,
                "mask_decoder_config.hidden_size",
                d.hidden_size,
            ),
            (
                "prompt_encoder_config.image_size",
                p.image_embedding_size(),
                "vision_config.image_size",
                self.vision.grid(),
            ),
        ];
        for (name, a, other, b) in agree {
            if a != b {
                return Err(field(
                    name,
                    format!(
                        "gives {a} where {other} gives {b}: the image embeddings, the \
                         positional features and the prompt tokens must have the same sizes"
                    ),
                ));
            }
        }
        Ok(())
    }
}

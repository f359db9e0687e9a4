//! Idefics' configs, as transformers 5.23's `models/idefics/configuration_idefics.py` writes
//! them: `IdeficsConfig` (`model_type` `idefics`) with its `vision_config`
//! ([`IdeficsVisionConfig`], `embed_dim` aliased `hidden_size`) and `perceiver_config`
//! ([`IdeficsPerceiverConfig`]). Keys left out take the dataclasses' defaults.
//!
//! Decisions:
//! - The perceiver runs when the top-level `use_resampler` is true, as `IdeficsModel` reads it;
//!   the perceiver config's own `use_resampler` is not read by transformers either (the Python
//!   package's tiny-random-idefics has `true` at the top and `false` inside).
//! - The rotary embedding is the default one (`rope_parameters.rope_type` `default`, theta from
//!   `rope_parameters.rope_theta`, else `rope_theta`, else 10000): Idefics' cached cos/sin
//!   tables ([`super::text::IdeficsEmbedding`]) have no other type; another one is refused
//!   naming the field.
//! - The gates' `alpha_type` (`float` or `vector`) and `alpha_initializer` (`zeros`, `ones`,
//!   `normal`, `gaussian`, `random`) are checked when the config is read, where transformers
//!   raises while building the layers.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::{
    error::{Error, Result},
    models::siglip::square,
    nn::Activation,
};

/// The class named in errors.
pub(crate) const MODEL: &str = "IdeficsForVisionText2Text";

/// `IdeficsVisionConfig` (a CLIP vision tower).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct IdeficsVisionConfig {
    /// Width of the tower (`embed_dim`, also read as `hidden_size`).
    #[serde(alias = "hidden_size")]
    pub embed_dim: i64,
    /// Side of the (square) image, in pixels.
    #[serde(deserialize_with = "square")]
    pub image_size: i64,
    /// MLP inner size.
    pub intermediate_size: i64,
    /// Side of a patch, in pixels.
    #[serde(deserialize_with = "square")]
    pub patch_size: i64,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// Image channels.
    pub num_channels: i64,
    /// MLP activation.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for IdeficsVisionConfig {
    fn default() -> Self {
        Self {
            embed_dim: 768,
            image_size: 224,
            intermediate_size: 5120,
            patch_size: 14,
            num_hidden_layers: 32,
            num_attention_heads: 16,
            num_channels: 3,
            hidden_act: "gelu".to_owned(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl IdeficsVisionConfig {
    /// Patches of an image (`(image_size // patch_size) ** 2`).
    pub fn num_patches(&self) -> i64 {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// `IdeficsPerceiverConfig`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct IdeficsPerceiverConfig {
    /// Latents each image is resampled to.
    pub resampler_n_latents: i64,
    /// Perceiver blocks.
    pub resampler_depth: usize,
    /// Perceiver attention heads.
    pub resampler_n_heads: i64,
    /// Perceiver head size.
    pub resampler_head_dim: i64,
    /// LayerNorms on the perceiver's queries and keys.
    pub qk_layer_norms_perceiver: bool,
}

impl Default for IdeficsPerceiverConfig {
    fn default() -> Self {
        Self {
            resampler_n_latents: 64,
            resampler_depth: 6,
            resampler_n_heads: 16,
            resampler_head_dim: 96,
            qk_layer_norms_perceiver: false,
        }
    }
}

/// How the gates' `alpha_*` are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlphaType {
    /// One value (`[1]`).
    Float,
    /// One per feature (`[1, 1, hidden_size]`).
    Vector,
}

/// `IdeficsConfig`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct IdeficsConfig {
    /// Text vocabulary (the pretrained embeddings).
    pub vocab_size: i64,
    /// Embeddings added after the pretrained ones (`<image>`, `<fake_token_around_image>`).
    pub additional_vocab_size: i64,
    /// Text width.
    pub hidden_size: i64,
    /// MLP inner size.
    pub intermediate_size: i64,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// MLP activation.
    pub hidden_act: String,
    /// Std of untrained weights.
    pub initializer_range: f64,
    /// `zeros`, `ones`, `normal` (`gaussian`, `random`): the gates' initial values.
    pub alpha_initializer: String,
    /// Std of `normal` gates.
    pub alphas_initializer_range: f64,
    /// `float` or `vector`.
    pub alpha_type: String,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Padding token.
    pub pad_token_id: Option<i64>,
    /// `lm_head` shares the embedding matrices.
    pub tie_word_embeddings: bool,
    /// A gated cross-attention layer before every `cross_layer_interval`-th decoder layer.
    pub cross_layer_interval: usize,
    /// RMSNorms on the cross-attention's queries and keys.
    pub qk_layer_norms: bool,
    /// Whether the perceiver resamples the image features.
    pub use_resampler: bool,
    /// The length of the cached cos/sin tables.
    pub max_position_embeddings: i64,
    /// The vision tower.
    pub vision_config: IdeficsVisionConfig,
    /// The perceiver.
    pub perceiver_config: IdeficsPerceiverConfig,
    /// `rope_parameters` (`rope_type`, `rope_theta`).
    pub rope_parameters: Option<Json>,
    /// The older `rope_theta`.
    pub rope_theta: Option<f64>,
}

impl Default for IdeficsConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            additional_vocab_size: 0,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            hidden_act: "silu".to_owned(),
            initializer_range: 0.02,
            alpha_initializer: "zeros".to_owned(),
            alphas_initializer_range: 0.0,
            alpha_type: "float".to_owned(),
            rms_norm_eps: 1e-6,
            pad_token_id: Some(0),
            tie_word_embeddings: false,
            cross_layer_interval: 1,
            qk_layer_norms: false,
            use_resampler: false,
            max_position_embeddings: 2048,
            vision_config: IdeficsVisionConfig::default(),
            perceiver_config: IdeficsPerceiverConfig::default(),
            rope_parameters: None,
            rope_theta: None,
        }
    }
}

impl IdeficsConfig {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] for another `model_type`, [`Error::ConfigField`] naming a field out
    /// of range.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// As [`IdeficsConfig::from_json`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = crate::error::parse_config(text, path)?;
        if let Some(t) = raw.get("model_type").and_then(Json::as_str)
            && t != "idefics"
        {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!("model_type {t:?}: {MODEL} takes an idefics config"),
            });
        }
        let mut raw = raw;
        // `null` sub-configs take their defaults, as transformers builds them.
        if let Some(o) = raw.as_object_mut() {
            for key in ["vision_config", "perceiver_config"] {
                if o.get(key).is_some_and(Json::is_null) {
                    o.remove(key);
                }
            }
        }
        let cfg: Self = serde_path_to_error::deserialize(raw)
            .map_err(|e| super::super::llama::parse_error(MODEL, path, &e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The gates' shape.
    pub fn alpha(&self) -> AlphaType {
        if self.alpha_type == "vector" {
            AlphaType::Vector
        } else {
            AlphaType::Float
        }
    }

    /// The rotary base.
    pub fn rope_base(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(Json::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// The head size of the text attention.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// The image features per image after the vision tower (and the perceiver).
    pub fn image_seq_len(&self) -> i64 {
        if self.use_resampler {
            self.perceiver_config.resampler_n_latents
        } else {
            self.vision_config.num_patches() + 1
        }
    }

    /// Checks the sizes and names.
    ///
    /// # Errors
    /// [`Error::ConfigField`] naming the field.
    pub(crate) fn validate(&self) -> Result<()> {
        let field = |name: &str, message: String| Error::ConfigField {
            model: MODEL.to_owned(),
            field: name.to_owned(),
            message,
        };
        crate::error::check_sizes(
            MODEL,
            "",
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
            (self.hidden_size, self.num_attention_heads),
        )?;
        if self.additional_vocab_size < 0 {
            return Err(field(
                "additional_vocab_size",
                format!("{}: must be 0 or more", self.additional_vocab_size),
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(field(
                "num_attention_heads",
                format!(
                    "{}: gives heads of {} features, the rotary embedding needs an even size",
                    self.num_attention_heads,
                    self.head_dim()
                ),
            ));
        }
        if self.cross_layer_interval == 0
            || !self
                .num_hidden_layers
                .is_multiple_of(self.cross_layer_interval)
        {
            // transformers builds `num_hidden_layers // cross_layer_interval` gated layers and
            // reads one before every `cross_layer_interval`-th decoder layer: an interval that
            // does not divide the layers reads one past the last (its IndexError).
            return Err(field(
                "cross_layer_interval",
                format!(
                    "{}: must be at least 1 and divide num_hidden_layers {}",
                    self.cross_layer_interval, self.num_hidden_layers
                ),
            ));
        }
        if !matches!(self.alpha_type.as_str(), "float" | "vector") {
            return Err(field(
                "alpha_type",
                format!("{:?}: Unknown value (float or vector)", self.alpha_type),
            ));
        }
        if !matches!(
            self.alpha_initializer.as_str(),
            "zeros" | "ones" | "normal" | "gaussian" | "random"
        ) {
            return Err(field(
                "alpha_initializer",
                format!(
                    "{:?}: not implemented (zeros, ones, normal, gaussian, random)",
                    self.alpha_initializer
                ),
            ));
        }
        if let Some(t) = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_type"))
            .and_then(Json::as_str)
            && t != "default"
        {
            return Err(field(
                "rope_parameters.rope_type",
                format!("{t:?}: Idefics' cached cos/sin tables take the default rope only"),
            ));
        }
        Activation::from_name(MODEL, &self.hidden_act)
            .map_err(|e| field("hidden_act", e.to_string()))?;
        let v = &self.vision_config;
        crate::error::check_sizes(
            MODEL,
            "vision_config.",
            &[
                ("embed_dim", v.embed_dim),
                ("intermediate_size", v.intermediate_size),
                ("patch_size", v.patch_size),
                ("num_channels", v.num_channels),
            ],
            (v.embed_dim, v.num_attention_heads),
        )?;
        if v.image_size < v.patch_size {
            return Err(field(
                "vision_config.image_size",
                format!("{}: smaller than patch_size {}", v.image_size, v.patch_size),
            ));
        }
        Activation::from_name(MODEL, &v.hidden_act)
            .map_err(|e| field("vision_config.hidden_act", e.to_string()))?;
        if self.use_resampler {
            let p = &self.perceiver_config;
            crate::error::check_sizes(
                MODEL,
                "perceiver_config.",
                &[
                    ("resampler_n_latents", p.resampler_n_latents),
                    ("resampler_n_heads", p.resampler_n_heads),
                    ("resampler_head_dim", p.resampler_head_dim),
                ],
                (1, 1),
            )?;
        }
        Ok(())
    }
}

//! `Gemma3Config` (transformers 5.23, `model_type` `gemma3`): the multimodal model's config,
//! with its `text_config` (a `Gemma3TextConfig`, read by [`crate::models::gemma2::Config`])
//! and `vision_config` (a [`SiglipVisionConfig`]). Keys left out get the config class's
//! defaults; `image_token_id`, `boi_token_id`, `eoi_token_id` are read for the `*_index` keys
//! they alias (`attribute_map`).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::{
    error::{Error, Result},
    models::{gemma2, siglip::SiglipVisionConfig},
};

/// The class named in errors.
pub(crate) const MODEL: &str = "Gemma3ForConditionalGeneration";

/// `Gemma3Config`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The text model's config (family Gemma3).
    pub text: gemma2::Config,
    /// The vision tower's config.
    pub vision: SiglipVisionConfig,
    /// Image tokens per image in the text (`mm_tokens_per_image`).
    pub mm_tokens_per_image: i64,
    /// `<start_of_image>` (`boi_token_index`).
    pub boi_token_index: i64,
    /// `<end_of_image>` (`eoi_token_index`).
    pub eoi_token_index: i64,
    /// The image placeholder (`image_token_index`; may be outside the text vocabulary).
    pub image_token_index: i64,
    /// `lm_head` shares the embedding matrix (the top-level key, as transformers reads it).
    pub tie_word_embeddings: bool,
}

#[derive(Deserialize)]
struct Top {
    #[serde(default = "mm_tokens")]
    mm_tokens_per_image: i64,
    #[serde(default = "boi", alias = "boi_token_id")]
    boi_token_index: i64,
    #[serde(default = "eoi", alias = "eoi_token_id")]
    eoi_token_index: i64,
    #[serde(default = "image", alias = "image_token_id")]
    image_token_index: i64,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
}

fn mm_tokens() -> i64 {
    256
}
fn boi() -> i64 {
    255_999
}
fn eoi() -> i64 {
    256_000
}
fn image() -> i64 {
    262_144
}
fn yes() -> bool {
    true
}

impl Config {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] for text that is not a Gemma3 config, [`Error::ConfigField`] naming a
    /// field out of range (`text_config.*`, `vision_config.*`, `mm_tokens_per_image`).
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// As [`Config::from_json`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = crate::error::parse_config(text, path)?;
        if let Some(t) = raw.get("model_type").and_then(Json::as_str)
            && t != "gemma3"
        {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!("model_type {t:?}: {MODEL} takes a gemma3 config"),
            });
        }
        let top: Top = serde_path_to_error::deserialize(raw.clone())
            .map_err(|e| super::super::llama::parse_error(MODEL, path, &e))?;
        let sub = |key: &str| match raw.get(key) {
            Some(v) if v.is_object() => v.clone(),
            _ => serde_json::json!({}),
        };
        let vision: SiglipVisionConfig = serde_path_to_error::deserialize(sub("vision_config"))
            .map_err(|e| Error::ConfigField {
                model: MODEL.to_owned(),
                field: format!("vision_config.{}", e.path()),
                message: e.inner().to_string(),
            })?;
        vision.validate(MODEL, "vision_config")?;
        let mut text_json = sub("text_config");
        if let Some(o) = text_json.as_object_mut() {
            o.insert("model_type".to_owned(), serde_json::json!("gemma3_text"));
            o.remove("architectures");
        }
        let text = gemma2::Config::from_json(&text_json.to_string()).map_err(|e| match e {
            Error::Config { message, .. } => Error::Config {
                path: path.to_owned(),
                message: format!("text_config: {message}"),
            },
            Error::ConfigField {
                model,
                field,
                message,
            } => Error::ConfigField {
                model,
                field: format!("text_config.{field}"),
                message,
            },
            other => other,
        })?;
        let cfg = Self {
            text,
            vision,
            mm_tokens_per_image: top.mm_tokens_per_image,
            boi_token_index: top.boi_token_index,
            eoi_token_index: top.eoi_token_index,
            image_token_index: top.image_token_index,
            tie_word_embeddings: top.tie_word_embeddings,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let field = |name: &str, message: String| Error::ConfigField {
            model: MODEL.to_owned(),
            field: name.to_owned(),
            message,
        };
        if self.mm_tokens_per_image < 1 {
            return Err(field(
                "mm_tokens_per_image",
                format!("{}: must be at least 1", self.mm_tokens_per_image),
            ));
        }
        let ppi = self.vision.patches_per_side();
        if self.kernel_size() < 1 {
            return Err(field(
                "mm_tokens_per_image",
                format!(
                    "{}: {} tokens per side for {ppi} patches per side \
                     (vision_config.image_size // patch_size): the projector pools the patches \
                     by {ppi} // {}, which must be at least 1",
                    self.mm_tokens_per_image,
                    self.tokens_per_side(),
                    self.tokens_per_side()
                ),
            ));
        }
        for (name, id) in [
            ("boi_token_index", self.boi_token_index),
            ("eoi_token_index", self.eoi_token_index),
            ("image_token_index", self.image_token_index),
        ] {
            if id < 0 {
                return Err(field(name, format!("{id}: must be a token id (>= 0)")));
            }
        }
        Ok(())
    }

    /// `int(mm_tokens_per_image ** 0.5)`.
    pub fn tokens_per_side(&self) -> i64 {
        let mut s = (self.mm_tokens_per_image as f64).sqrt() as i64;
        // The float root of a perfect square may fall one short or over.
        while (s + 1) * (s + 1) <= self.mm_tokens_per_image {
            s += 1;
        }
        while s * s > self.mm_tokens_per_image {
            s -= 1;
        }
        s
    }

    /// The projector's pooling kernel and stride (`patches_per_image // tokens_per_side`).
    pub fn kernel_size(&self) -> i64 {
        self.vision.patches_per_side() / self.tokens_per_side().max(1)
    }

    /// The image features per image after the pooling (`(patches_per_image // kernel)^2`):
    /// the image tokens the text must hold for each image.
    pub fn image_tokens(&self) -> i64 {
        let side = self.vision.patches_per_side() / self.kernel_size().max(1);
        side * side
    }
}

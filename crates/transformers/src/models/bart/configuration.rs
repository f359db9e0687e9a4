//! `BartConfig`, `PLBartConfig`, `MarianConfig` and `BlenderbotSmallConfig` (transformers
//! 5.23), with the names of `config.json`.
//!
//! The three configs share their fields and differ in defaults (and Marian's
//! `decoder_vocab_size` / `share_encoder_decoder_embeddings`), so one struct reads them: the
//! family is the config's `model_type` (`bart`, `plbart`, `marian`), else its
//! `architectures[0]`; the keys a config leaves out get that family's defaults first.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::{
    error::{Error, Result},
    nn::Activation,
};

/// Which config class the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `BartConfig`: learned positions (offset 2), `layernorm_embedding`.
    Bart,
    /// `PLBartConfig`: Bart's layers; `shift_tokens_right` starts with the language id.
    PLBart,
    /// `MarianConfig`: sinusoidal positions, no `layernorm_embedding`.
    Marian,
    /// `BlenderbotSmallConfig`: learned positions without offset; the decoder normalises its
    /// embeddings (unscaled) before adding the positions.
    BlenderbotSmall,
}

impl Family {
    /// The transformers class of the generation model.
    pub fn class_name(self) -> &'static str {
        match self {
            Family::Bart => "BartForConditionalGeneration",
            Family::PLBart => "PLBartForConditionalGeneration",
            Family::Marian => "MarianMTModel",
            Family::BlenderbotSmall => "BlenderbotSmallForConditionalGeneration",
        }
    }

    /// The transformers class of the base model (no head).
    pub fn base_class_name(self) -> &'static str {
        match self {
            Family::Bart => "BartModel",
            Family::PLBart => "PLBartModel",
            Family::Marian => "MarianModel",
            Family::BlenderbotSmall => "BlenderbotSmallModel",
        }
    }

    /// The `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Bart => "bart",
            Family::PLBart => "plbart",
            Family::Marian => "marian",
            Family::BlenderbotSmall => "blenderbot-small",
        }
    }

    fn defaults(self) -> Json {
        match self {
            Family::Bart => json!({
                "vocab_size": 50265, "max_position_embeddings": 1024, "encoder_layers": 12,
                "encoder_ffn_dim": 4096, "encoder_attention_heads": 16, "decoder_layers": 12,
                "decoder_ffn_dim": 4096, "decoder_attention_heads": 16,
                "activation_function": "gelu", "d_model": 1024, "init_std": 0.02,
                "scale_embedding": false, "pad_token_id": 1, "decoder_start_token_id": 2,
                "tie_word_embeddings": true,
            }),
            Family::PLBart => json!({
                "vocab_size": 50005, "max_position_embeddings": 1024, "encoder_layers": 6,
                "encoder_ffn_dim": 3072, "encoder_attention_heads": 12, "decoder_layers": 6,
                "decoder_ffn_dim": 3072, "decoder_attention_heads": 12,
                "activation_function": "gelu", "d_model": 768, "init_std": 0.02,
                "scale_embedding": true, "pad_token_id": 1, "decoder_start_token_id": null,
                "tie_word_embeddings": true,
            }),
            Family::Marian => json!({
                "vocab_size": 58101, "max_position_embeddings": 1024, "encoder_layers": 12,
                "encoder_ffn_dim": 4096, "encoder_attention_heads": 16, "decoder_layers": 12,
                "decoder_ffn_dim": 4096, "decoder_attention_heads": 16,
                "activation_function": "gelu", "d_model": 1024, "init_std": 0.02,
                "scale_embedding": false, "pad_token_id": 58100,
                "decoder_start_token_id": 58100, "tie_word_embeddings": true,
                "share_encoder_decoder_embeddings": true,
            }),
            Family::BlenderbotSmall => json!({
                "vocab_size": 50265, "max_position_embeddings": 512, "encoder_layers": 8,
                "encoder_ffn_dim": 2048, "encoder_attention_heads": 16, "decoder_layers": 8,
                "decoder_ffn_dim": 2048, "decoder_attention_heads": 16,
                "activation_function": "gelu", "d_model": 512, "init_std": 0.02,
                "scale_embedding": false, "pad_token_id": 0, "decoder_start_token_id": 1,
                "tie_word_embeddings": true,
            }),
        }
    }
}

/// The config of [`super::BartForConditionalGeneration`] (and PLBart's and Marian's).
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Which class the config is.
    #[serde(skip, default = "default_family")]
    pub family: Family,
    /// Vocabulary size (the encoder's, and the decoder's unless Marian's
    /// `decoder_vocab_size` says otherwise).
    pub vocab_size: i64,
    /// Marian: the decoder's vocabulary when its embeddings are not shared.
    #[serde(default)]
    pub decoder_vocab_size: Option<i64>,
    /// Marian: one embedding matrix for the encoder, the decoder and the head.
    #[serde(default = "yes")]
    pub share_encoder_decoder_embeddings: bool,
    /// Learned (Bart) or sinusoidal (Marian) positions.
    pub max_position_embeddings: i64,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Encoder MLP size.
    pub encoder_ffn_dim: i64,
    /// Encoder heads.
    pub encoder_attention_heads: i64,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Decoder MLP size.
    pub decoder_ffn_dim: i64,
    /// Decoder heads (self- and cross-attention).
    pub decoder_attention_heads: i64,
    /// MLP activation.
    pub activation_function: String,
    /// Hidden size.
    pub d_model: i64,
    /// Standard deviation of untrained weights.
    pub init_std: f64,
    /// The embeddings are multiplied by `sqrt(d_model)`.
    pub scale_embedding: bool,
    /// The padding token (zero row untrained; `shift_tokens_right` fills with it).
    pub pad_token_id: Option<i64>,
    /// The first decoder token of `shift_tokens_right` (PLBart has none: its language id).
    pub decoder_start_token_id: Option<i64>,
    /// `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The activation, checked when parsed.
    #[serde(skip)]
    pub(crate) act: Option<Activation>,
}

fn default_family() -> Family {
    Family::Bart
}

fn yes() -> bool {
    true
}

impl Config {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] for another family, [`Error::ConfigField`] naming a field out of
    /// range.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// As [`Config::from_json`].
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut raw = crate::error::parse_config(text, path)?;
        let family = crate::error::config_family(&raw, path, FAMILIES)?;
        // The config classes' `attribute_map`: these names set the fields they alias, and win
        // over them (transformers applies them last: sshleifer/tiny-marian-en-de's
        // `num_hidden_layers: 6` makes 6 encoder layers, whatever its `encoder_layers`).
        if let Some(o) = raw.as_object_mut() {
            for (alias, field) in [
                ("num_hidden_layers", "encoder_layers"),
                ("hidden_size", "d_model"),
                ("num_attention_heads", "encoder_attention_heads"),
            ] {
                if let Some(v) = o.get(alias).cloned() {
                    o.insert(field.to_owned(), v);
                }
            }
        }
        crate::error::fill_defaults(&mut raw, &family.defaults());
        let mut cfg: Config = serde_path_to_error::deserialize(raw)
            .map_err(|e| super::super::llama::parse_error(family.class_name(), path, &e))?;
        cfg.family = family;
        cfg.validate()?;
        Ok(cfg)
    }

    fn field(&self, name: &str, message: String) -> Error {
        Error::ConfigField {
            model: self.family.class_name().to_owned(),
            field: name.to_owned(),
            message,
        }
    }

    fn validate(&mut self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("decoder_vocab_size", self.decoder_vocab()),
            ("max_position_embeddings", self.max_position_embeddings),
            ("encoder_layers", self.encoder_layers as i64),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("decoder_layers", self.decoder_layers as i64),
            ("decoder_ffn_dim", self.decoder_ffn_dim),
            ("decoder_attention_heads", self.decoder_attention_heads),
            ("d_model", self.d_model),
        ] {
            if v < 1 {
                return Err(self.field(name, format!("{v}: must be at least 1")));
            }
        }
        for (name, heads) in [
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("decoder_attention_heads", self.decoder_attention_heads),
        ] {
            if self.d_model % heads != 0 {
                // BartAttention raises "embed_dim must be divisible by num_heads".
                return Err(self.field(
                    name,
                    format!("{heads} does not divide d_model={}", self.d_model),
                ));
            }
        }
        let Some(pad) = self.pad_token_id else {
            // shift_tokens_right raises "self.model.config.pad_token_id has to be defined."
            return Err(self.field(
                "pad_token_id",
                "null: shift_tokens_right needs the padding token".to_owned(),
            ));
        };
        let vocab = self.vocab_size.min(self.decoder_vocab());
        if !(0..vocab).contains(&pad) {
            return Err(self.field(
                "pad_token_id",
                format!("{pad}: must be a token of the vocabulary ({vocab})"),
            ));
        }
        if let Some(s) = self.decoder_start_token_id
            && !(0..self.decoder_vocab()).contains(&s)
        {
            return Err(self.field(
                "decoder_start_token_id",
                format!("{s}: must be a token of the decoder vocabulary"),
            ));
        }
        if self.family == Family::Marian && !self.share_encoder_decoder_embeddings {
            return Err(Error::Unsupported {
                model: self.family.class_name().to_owned(),
                feature: "share_encoder_decoder_embeddings=false (separate decoder embeddings)"
                    .to_owned(),
            });
        }
        self.act = Some(Activation::from_name(
            self.family.class_name(),
            &self.activation_function,
        )?);
        Ok(())
    }

    /// The decoder's vocabulary.
    pub fn decoder_vocab(&self) -> i64 {
        match self.family {
            Family::Marian => self.decoder_vocab_size.unwrap_or(self.vocab_size),
            _ => self.vocab_size,
        }
    }

    /// The activation (checked when the config was parsed).
    pub(crate) fn activation(&self) -> Result<Activation> {
        match self.act {
            Some(a) => Ok(a),
            None => Activation::from_name(self.family.class_name(), &self.activation_function),
        }
    }

    /// The head size of the decoder's attention (`d_model / decoder_attention_heads`).
    pub fn decoder_head_dim(&self) -> i64 {
        self.d_model / self.decoder_attention_heads
    }

    /// The sizes the text2text-generation input sets need.
    pub fn seq2seq_dims(&self) -> crate::tasks::text2text_generation::Seq2SeqDims {
        crate::tasks::text2text_generation::Seq2SeqDims {
            vocab_size: self.vocab_size.min(self.decoder_vocab()),
            decoder_layers: self.decoder_layers,
            heads: self.decoder_attention_heads,
            head_dim: self.decoder_head_dim(),
        }
    }
}

/// The families by `model_type` and class.
const FAMILIES: &[(&str, &str, Family)] = &[
    ("bart", "BartForConditionalGeneration", Family::Bart),
    ("bart", "BartModel", Family::Bart),
    ("plbart", "PLBartForConditionalGeneration", Family::PLBart),
    ("marian", "MarianMTModel", Family::Marian),
    (
        "blenderbot-small",
        "BlenderbotSmallForConditionalGeneration",
        Family::BlenderbotSmall,
    ),
];

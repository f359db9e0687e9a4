//! `Gemma2Config` and `Gemma3TextConfig` (transformers 5.23), with the names of `config.json`.
//!
//! The two configs have the same fields and differ in their defaults, so one struct reads both:
//! the family is the config's `model_type` (`gemma2`, `gemma3_text`), else its
//! `architectures[0]`; the keys a config leaves out get that family's defaults before it is
//! read, as the config class's own defaults would fill them (a key set to `null` stays `null`:
//! `"final_logit_softcapping": null` turns soft-capping off).

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::{
    cache_utils::LayerKind,
    error::{Error, Result},
    modeling_rope_utils::RopeParameters,
    nn::Activation,
    tasks::DecoderDims,
};

/// Which config class the file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `Gemma2Config` / `Gemma2ForCausalLM`.
    Gemma2,
    /// `Gemma3TextConfig` / `Gemma3ForCausalLM`: q/k norms, a local rope base.
    Gemma3,
}

impl Family {
    /// The transformers class of the causal LM.
    pub fn class_name(self) -> &'static str {
        match self {
            Family::Gemma2 => "Gemma2ForCausalLM",
            Family::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    /// The `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3_text",
        }
    }

    /// The defaults of the config class (transformers 5.23's dataclass fields).
    fn defaults(self) -> Json {
        let common = json!({
            "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
            "hidden_activation": "gelu_pytorch_tanh", "initializer_range": 0.02,
            "rms_norm_eps": 1e-6, "pad_token_id": 0, "tie_word_embeddings": true,
            "attention_bias": false, "query_pre_attn_scalar": 256, "sliding_window": 4096,
        });
        let own = match self {
            Family::Gemma2 => json!({
                "vocab_size": 256000, "max_position_embeddings": 8192,
                "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
            }),
            Family::Gemma3 => json!({
                "vocab_size": 262208, "max_position_embeddings": 131072,
                "final_logit_softcapping": null, "attn_logit_softcapping": null,
            }),
        };
        let mut out = common;
        if let (Some(o), Some(extra)) = (out.as_object_mut(), own.as_object()) {
            o.extend(extra.clone());
        }
        out
    }
}

/// The config of [`super::Gemma2ForCausalLM`] and [`crate::models::gemma3::Gemma3ForCausalLM`].
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    /// Which class the config is (set from `model_type`/`architectures` when parsed).
    #[serde(skip, default = "default_family")]
    pub family: Family,
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Hidden size.
    pub hidden_size: i64,
    /// MLP inner size.
    pub intermediate_size: i64,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads.
    pub num_key_value_heads: i64,
    /// Head size.
    pub head_dim: i64,
    /// MLP activation (`gelu_pytorch_tanh`).
    pub hidden_activation: String,
    /// Longest sequence of training.
    pub max_position_embeddings: i64,
    /// Standard deviation of untrained weights.
    pub initializer_range: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// The padding token (its embedding row is zero untrained).
    pub pad_token_id: Option<i64>,
    /// `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v/o.
    pub attention_bias: bool,
    /// The attention scale is `query_pre_attn_scalar ** -0.5` (not the head size's).
    pub query_pre_attn_scalar: f64,
    /// The window of the `sliding_attention` layers.
    pub sliding_window: Option<i64>,
    /// `sliding_attention` or `full_attention` per layer (default: Gemma2 alternates from a
    /// sliding layer, Gemma3 makes every `sliding_window_pattern`-th layer full).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Gemma3's older way to give the layer types (default 6).
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// The same as transformers 5 saves it next to `layer_types` (read when
    /// `sliding_window_pattern` is absent).
    #[serde(default, rename = "_sliding_window_pattern")]
    pub saved_sliding_window_pattern: Option<usize>,
    /// `logits = tanh(logits / cap) * cap` when set.
    pub final_logit_softcapping: Option<f64>,
    /// The same on the attention scores.
    pub attn_logit_softcapping: Option<f64>,
    /// Bidirectional attention (not implemented: refused).
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
    /// Legacy top-level rope base (global layers for Gemma3).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Gemma3's legacy base of the sliding layers' rope.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// transformers 5's rope parameters: one set (Gemma2) or one per layer type (Gemma3,
    /// `{"sliding_attention": {...}, "full_attention": {...}}`).
    #[serde(default)]
    pub rope_parameters: Option<Json>,
    /// transformers 4's rope scaling (Gemma3: of the full-attention layers).
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// The activation, checked when the config was parsed.
    #[serde(skip)]
    pub(crate) act: Option<Activation>,
}

fn default_family() -> Family {
    Family::Gemma2
}

impl Config {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] for a config of another family, [`Error::ConfigField`] naming a field
    /// out of range, [`Error::Unsupported`] for bidirectional attention.
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
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers as i64),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v < 1 {
                return Err(self.field(name, format!("{v}: must be at least 1")));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(self.field(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads={}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(self.field(
                "head_dim",
                format!("{}: the rotary embedding needs an even size", self.head_dim),
            ));
        }
        if !(self.query_pre_attn_scalar > 0.0 && self.query_pre_attn_scalar.is_finite()) {
            return Err(self.field(
                "query_pre_attn_scalar",
                format!("{}: must be a positive number", self.query_pre_attn_scalar),
            ));
        }
        for (name, cap) in [
            ("final_logit_softcapping", self.final_logit_softcapping),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
        ] {
            if let Some(c) = cap
                && !(c > 0.0 && c.is_finite())
            {
                return Err(self.field(name, format!("{c}: must be a positive number or null")));
            }
        }
        if let Some(pad) = self.pad_token_id
            && !(-self.vocab_size..self.vocab_size).contains(&pad)
        {
            return Err(self.field(
                "pad_token_id",
                format!(
                    "{pad}: must be a token of the vocabulary (vocab_size={})",
                    self.vocab_size
                ),
            ));
        }
        if self.use_bidirectional_attention == Some(true) {
            return Err(Error::Unsupported {
                model: self.family.class_name().to_owned(),
                feature: "use_bidirectional_attention=true (an encoder's mask)".to_owned(),
            });
        }
        if self.sliding_window_pattern == Some(0) || self.saved_sliding_window_pattern == Some(0) {
            return Err(self.field("sliding_window_pattern", "0: must be at least 1".to_owned()));
        }
        let types = self.layer_types();
        if types.len() != self.num_hidden_layers {
            return Err(self.field(
                "layer_types",
                format!(
                    "{} entries for num_hidden_layers={}",
                    types.len(),
                    self.num_hidden_layers
                ),
            ));
        }
        for t in &types {
            if t != "sliding_attention" && t != "full_attention" {
                return Err(self.field(
                    "layer_types",
                    format!("{t:?}: expected \"sliding_attention\" or \"full_attention\""),
                ));
            }
        }
        let sliding = types.iter().any(|t| t == "sliding_attention");
        match self.sliding_window {
            Some(w) if w < 1 => {
                return Err(self.field("sliding_window", format!("{w}: must be at least 1")));
            }
            None if sliding => {
                // transformers' create_sliding_window_causal_mask raises the same.
                return Err(self.field(
                    "sliding_window",
                    "null, but layer_types has sliding_attention layers".to_owned(),
                ));
            }
            _ => {}
        }
        self.rope("full_attention")?;
        self.rope("sliding_attention")?;
        self.act = Some(Activation::from_name(
            self.family.class_name(),
            &self.hidden_activation,
        )?);
        Ok(())
    }

    /// The layer types, given or derived as the config class derives them.
    pub fn layer_types(&self) -> Vec<String> {
        if let Some(t) = &self.layer_types {
            return t.clone();
        }
        let pattern = match self.family {
            Family::Gemma2 => 2,
            Family::Gemma3 => self
                .sliding_window_pattern
                .or(self.saved_sliding_window_pattern)
                .unwrap_or(6),
        };
        (0..self.num_hidden_layers)
            .map(|i| {
                if (i + 1) % pattern != 0 {
                    "sliding_attention".to_owned()
                } else {
                    "full_attention".to_owned()
                }
            })
            .collect()
    }

    /// The window of layer `i` (`None` for a full-attention layer).
    pub(crate) fn window(&self, i: usize) -> Option<i64> {
        let types = self.layer_types();
        match types.get(i).map(String::as_str) {
            Some("sliding_attention") => self.sliding_window,
            _ => None,
        }
    }

    /// The rope parameters and base of the layers of `layer_type`: Gemma2 has one set (the
    /// `rope_parameters`, else `rope_scaling` and `rope_theta`, base 10000); Gemma3 one per
    /// type, with the legacy keys `rope_theta` (global, 1e6), `rope_local_base_freq` (local,
    /// 1e4) and `rope_scaling` (of the full-attention layers) as `convert_rope_params_to_dict`
    /// reads them.
    ///
    /// # Errors
    /// [`Error::ConfigField`] for `rope_parameters` that are not rope parameters.
    pub(crate) fn rope(&self, layer_type: &str) -> Result<(RopeParameters, f64)> {
        let read = |v: &Json, name: &str| -> Result<RopeParameters> {
            RopeParameters::deserialize(v).map_err(|e| self.field(name, e.to_string()))
        };
        match self.family {
            Family::Gemma2 => {
                let p = match &self.rope_parameters {
                    Some(v) => read(v, "rope_parameters")?,
                    None => self.rope_scaling.clone().unwrap_or_default(),
                };
                let theta = p.rope_theta.or(self.rope_theta).unwrap_or(10000.0);
                Ok((p, theta))
            }
            Family::Gemma3 => {
                let given = match &self.rope_parameters {
                    Some(v) => match v.get(layer_type) {
                        Some(Json::Null) | None => None,
                        Some(p) => Some(read(p, &format!("rope_parameters.{layer_type}"))?),
                    },
                    None => None,
                };
                let full = layer_type == "full_attention";
                let mut p = given.unwrap_or_default();
                if full
                    && self.rope_parameters.is_none()
                    && let Some(s) = &self.rope_scaling
                {
                    p = s.clone();
                }
                let legacy = if full {
                    self.rope_theta.unwrap_or(1_000_000.0)
                } else {
                    self.rope_local_base_freq.unwrap_or(10_000.0)
                };
                let theta = p.rope_theta.unwrap_or(legacy);
                Ok((p, theta))
            }
        }
    }

    /// The activation (checked when the config was parsed).
    pub(crate) fn activation(&self) -> Result<Activation> {
        match self.act {
            Some(a) => Ok(a),
            None => Activation::from_name(self.family.class_name(), &self.hidden_activation),
        }
    }

    /// The cache layers `DynamicCache(config=...)` creates: a `DynamicSlidingWindowLayer` for
    /// each sliding layer, a `DynamicLayer` for each full one.
    pub fn layer_kinds(&self) -> Vec<LayerKind> {
        (0..self.num_hidden_layers)
            .map(|i| match self.window(i) {
                Some(w) => LayerKind::DynamicSlidingWindow(w),
                None => LayerKind::Dynamic,
            })
            .collect()
    }

    /// The sizes the text-generation input sets need.
    pub fn decoder_dims(&self) -> DecoderDims {
        DecoderDims {
            vocab_size: self.vocab_size,
            num_layers: self.num_hidden_layers,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            layer_kinds: self.layer_kinds(),
        }
    }
}

/// The families by `model_type` and class.
const FAMILIES: &[(&str, &str, Family)] = &[
    ("gemma2", "Gemma2ForCausalLM", Family::Gemma2),
    ("gemma3_text", "Gemma3ForCausalLM", Family::Gemma3),
];

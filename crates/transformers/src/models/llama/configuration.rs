//! `LlamaConfig` and the configs of the families sharing Llama's decoder (transformers'
//! `configuration_llama.py`, `configuration_mistral.py`, ...), read from `config.json` as
//! transformers 5.23's `save_pretrained` writes it and as older hub configs hold it.
//!
//! Decisions:
//! - The family comes from `model_type` (else from `architectures[0]`, else Llama: the caller
//!   asked for a Llama-family config). Another `model_type` is
//!   [`Error::UnsupportedArchitecture`], never a Llama built from a Qwen3 or Gemma2 config.
//! - Sizes are checked before any tensor exists: zero or negative sizes, key/value heads that do
//!   not divide the query heads, a window below one, are [`Error::ConfigField`] naming the
//!   field; a value of the wrong JSON type names its field too.
//! - `hidden_act` picks the activation ([`Activation::from_name`]: any other name is an
//!   error). `hidden_activation` is accepted and, as transformers 5.23's configs of these five
//!   families do, not read. `dtype` and the older `torch_dtype` are both accepted (the model
//!   type of a checkpoint, see [`crate::checkpoint`]).

use std::path::Path;

use serde::Deserialize;

use crate::{
    cache_utils::LayerKind,
    error::{Error, Result},
    modeling_rope_utils::RopeParameters,
    nn::Activation,
};

fn default_theta() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".to_owned()
}
fn default_std() -> f64 {
    0.02
}
fn default_max_pos() -> i64 {
    2048
}

/// `LlamaConfig`, with the names of `config.json`; keys no field names are ignored, as
/// transformers keeps them as attributes no module reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
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
    /// Key/value heads (defaults to the query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Head size (defaults to hidden / heads).
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// MLP activation.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest sequence of training.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Rope base (legacy top-level key).
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Rope parameters (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Rope parameters (transformers 4 name).
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// Biases on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP.
    #[serde(default)]
    pub mlp_bias: bool,
    /// `lm_head` shares the embedding weights.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Standard deviation of untrained weights.
    #[serde(default = "default_std")]
    pub initializer_range: f64,
    /// The padding token: its embedding row is zero in an untrained model.
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// Attention window (Mistral and Phi-3; Llama ignores it, as transformers does).
    #[serde(default)]
    pub sliding_window: Option<i64>,
    /// Qwen2 and SmolLM3: whether `sliding_window` applies (Qwen2: to the layers from
    /// `max_window_layers` on; SmolLM3: to its NoPE layers).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Qwen2: the first layer with a window when `use_sliding_window` (28).
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// `sliding_attention` or `full_attention` per layer (Qwen2, SmolLM3; derived when absent
    /// as their configs derive it).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Phi-3: the part of the head the rotary embedding applies to (also read from
    /// `rope_parameters`; the rest of the head passes through).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// The pretraining length (Phi-3 keeps it at the top level; `longrope` and `yarn` read it
    /// when their parameters do not give it).
    #[serde(default)]
    pub original_max_position_embeddings: Option<i64>,
    /// SmolLM3: 1 for a layer with the rotary embedding, 0 for a NoPE layer (default: every
    /// `no_rope_layer_interval`-th layer is NoPE, as `SmolLM3Config` builds it).
    #[serde(default)]
    pub no_rope_layers: Option<Vec<i64>>,
    /// SmolLM3: the NoPE period when `no_rope_layers` is absent (4).
    #[serde(default)]
    pub no_rope_layer_interval: Option<i64>,
    /// The model type (transformers 5 name).
    #[serde(default)]
    pub dtype: Option<String>,
    /// The model type (transformers 4 name).
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Gemma-2-style activation name: accepted, not read by these families.
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// Qwen3Moe and Mixtral: the number of experts (`num_experts`, saved by transformers 5.23
    /// as `num_local_experts`).
    #[serde(default, alias = "num_local_experts")]
    pub num_experts: Option<i64>,
    /// Qwen3Moe and Mixtral: the experts each token is routed to.
    #[serde(default)]
    pub num_experts_per_tok: Option<i64>,
    /// Qwen3Moe: the inner size of each expert (Mixtral's experts use `intermediate_size`).
    #[serde(default)]
    pub moe_intermediate_size: Option<i64>,
    /// Qwen3Moe: the top-k routing weights are renormalised to sum to 1 (Mixtral always does).
    #[serde(default)]
    pub norm_topk_prob: Option<bool>,
    /// Qwen3Moe: every `decoder_sparse_step`-th layer is sparse (1: all).
    #[serde(default)]
    pub decoder_sparse_step: Option<i64>,
    /// Qwen3Moe: the layers that keep a dense MLP.
    #[serde(default)]
    pub mlp_only_layers: Option<Vec<usize>>,
    /// Qwen3Moe and Mixtral: whether the model also returns the router logits and the
    /// auxiliary loss (refused: see [`Config::validate`]).
    #[serde(default)]
    pub output_router_logits: bool,
    /// The architecture family, from `model_type` (what differs from Llama, see [`Arch`]).
    #[serde(skip)]
    pub arch: Arch,
    /// The activation of `hidden_act`.
    #[serde(skip)]
    pub(crate) act: Option<Activation>,
}

/// The families sharing Llama's decoder, and what each changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    /// `llama`.
    #[default]
    Llama,
    /// `mistral`: the sliding-window mask.
    Mistral,
    /// `qwen2`: biases on q/k/v (not on o).
    Qwen2,
    /// `gemma`: embeddings scaled by `sqrt(hidden_size)`, RMSNorm by `1 + weight`, tanh GELU,
    /// tied embeddings and `head_dim` 256 by default.
    Gemma,
    /// `phi3`: fused `qkv_proj` and `gate_up_proj`, no biases, the sliding-window mask when
    /// `sliding_window` is set.
    Phi3,
    /// `smollm3`: the layers of `no_rope_layers` at 0 take no rotary embedding (NoPE), tied
    /// embeddings by default.
    SmolLM3,
    /// `qwen3`: RMSNorm of each query and key head (`q_norm`, `k_norm`), `head_dim` 128 by
    /// default, sliding layers as Qwen2's.
    Qwen3,
    /// `qwen3_moe`: Qwen3's attention, sparse mixture-of-experts MLPs
    /// ([`crate::models::qwen3_moe::Qwen3MoeSparseMoeBlock`]), every layer windowed when
    /// `use_sliding_window`.
    Qwen3Moe,
    /// `mixtral`: Mistral's attention, top-2 sparse experts on every layer, rope base 1e6 by
    /// default.
    Mixtral,
}

impl Arch {
    /// Every family, in the registry's order.
    pub const ALL: [Arch; 9] = [
        Arch::Llama,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Gemma,
        Arch::Phi3,
        Arch::SmolLM3,
        Arch::Qwen3,
        Arch::Qwen3Moe,
        Arch::Mixtral,
    ];

    /// The family of a `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.model_type() == model_type)
    }

    /// The family of a causal-LM class name.
    pub fn from_class_name(class: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.class_name() == class)
    }

    /// The `model_type` of the family.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma => "gemma",
            Arch::Phi3 => "phi3",
            Arch::SmolLM3 => "smollm3",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3_moe",
            Arch::Mixtral => "mixtral",
        }
    }

    /// The transformers class of the causal LM.
    pub fn class_name(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Gemma => "GemmaForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
            Arch::SmolLM3 => "SmolLM3ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Qwen3Moe => "Qwen3MoeForCausalLM",
            Arch::Mixtral => "MixtralForCausalLM",
        }
    }
}

/// A parse error of serde, naming the field it happened in.
pub(crate) fn parse_error(
    model: &str,
    path: &Path,
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> Error {
    let field = e.path().to_string();
    if field.is_empty() || field == "." {
        Error::Config {
            path: path.to_owned(),
            message: e.inner().to_string(),
        }
    } else {
        Error::ConfigField {
            model: model.to_owned(),
            field,
            message: e.inner().to_string(),
        }
    }
}

impl Config {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`], [`Error::ConfigField`] or [`Error::UnsupportedArchitecture`] (see
    /// the module doc).
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

    /// Parses a `config.json` with the defaults of its `model_type` (transformers' config
    /// classes differ: `GemmaConfig` ties the embeddings and uses `head_dim` 256 unless told
    /// otherwise, and turns `hidden_act="gelu"` into the tanh approximation).
    fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut raw = crate::error::parse_config(text, path)?;
        let model_type = raw.get("model_type").and_then(|v| v.as_str());
        let class = raw.pointer("/architectures/0").and_then(|v| v.as_str());
        let arch = match (model_type, class) {
            (Some(t), _) => Arch::from_model_type(t),
            (None, Some(c)) => Arch::from_class_name(c),
            (None, None) => Some(Arch::Llama),
        }
        .ok_or_else(|| Error::UnsupportedArchitecture {
            architecture: model_type
                .map(|t| format!("model_type {t:?}"))
                .or(class.map(str::to_owned))
                .unwrap_or_default(),
            supported: Arch::ALL
                .iter()
                .map(|a| a.class_name().to_owned())
                .collect(),
        })?;
        if let (Arch::Gemma, Some(obj)) = (arch, raw.as_object_mut()) {
            for (k, v) in [
                ("tie_word_embeddings", serde_json::json!(true)),
                ("head_dim", serde_json::json!(256)),
                ("hidden_act", serde_json::json!("gelu_pytorch_tanh")),
            ] {
                if obj.get(k).is_none_or(serde_json::Value::is_null) {
                    obj.insert(k.to_owned(), v);
                }
            }
            if obj.get("hidden_act").and_then(|v| v.as_str()) == Some("gelu") {
                obj.insert(
                    "hidden_act".to_owned(),
                    serde_json::json!("gelu_pytorch_tanh"),
                );
            }
        }
        // The defaults of the other config classes, for keys a config does not give.
        let defaults: &[(&str, serde_json::Value)] = match arch {
            Arch::Qwen3 => &[("head_dim", serde_json::json!(128))],
            Arch::Qwen3Moe => &[
                ("num_experts", serde_json::json!(128)),
                ("num_experts_per_tok", serde_json::json!(8)),
                ("moe_intermediate_size", serde_json::json!(768)),
                ("norm_topk_prob", serde_json::json!(false)),
                ("decoder_sparse_step", serde_json::json!(1)),
            ],
            Arch::Mixtral => &[
                ("num_experts", serde_json::json!(8)),
                ("num_experts_per_tok", serde_json::json!(2)),
                ("rms_norm_eps", serde_json::json!(1e-5)),
                ("rope_theta", serde_json::json!(1e6)),
            ],
            _ => &[],
        };
        if let Some(obj) = raw.as_object_mut() {
            if obj.contains_key("num_local_experts") {
                // `num_experts` is the attribute name, `num_local_experts` the stored one.
                obj.remove("num_experts");
            }
            for (k, v) in defaults {
                // (`rope_theta` is the base when `rope_parameters` does not give one.)
                let given = obj.get(*k).is_some_and(|x| !x.is_null())
                    || (*k == "num_experts" && obj.contains_key("num_local_experts"));
                if !given {
                    obj.insert((*k).to_owned(), v.clone());
                }
            }
        }
        let model = arch.class_name();
        let mut cfg: Config =
            serde_path_to_error::deserialize(raw).map_err(|e| parse_error(model, path, &e))?;
        cfg.arch = arch;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks of the module doc.
    fn validate(&mut self) -> Result<()> {
        let model = self.arch.class_name();
        let field = |name: &str, message: String| Error::ConfigField {
            model: model.to_owned(),
            field: name.to_owned(),
            message,
        };
        let positive = |name: &str, v: i64| {
            if v >= 1 {
                Ok(())
            } else {
                Err(field(name, format!("{v}: must be at least 1")))
            }
        };
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers as i64)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        if let Some(kv) = self.num_key_value_heads {
            positive("num_key_value_heads", kv)?;
            if self.num_attention_heads % kv != 0 {
                return Err(field(
                    "num_key_value_heads",
                    format!(
                        "{kv} does not divide num_attention_heads={} (grouped-query attention \
                         repeats each key/value head for a whole group of query heads)",
                        self.num_attention_heads
                    ),
                ));
            }
        }
        match self.head_dim {
            Some(d) => positive("head_dim", d)?,
            None if self.hidden_size < self.num_attention_heads => {
                return Err(field(
                    "num_attention_heads",
                    format!(
                        "{} heads of hidden_size={} leave a head size of 0 (give head_dim)",
                        self.num_attention_heads, self.hidden_size
                    ),
                ));
            }
            None => {}
        }
        if let Some(pad) = self.pad_token_id
            && !(-self.vocab_size..self.vocab_size).contains(&pad)
        {
            // torch's Embedding asserts "Padding_idx must be within num_embeddings".
            return Err(field(
                "pad_token_id",
                format!(
                    "{pad}: must be a token of the vocabulary (vocab_size={})",
                    self.vocab_size
                ),
            ));
        }
        if let Some(w) = self.sliding_window {
            positive("sliding_window", w)?;
        }
        if let Some(p) = self.original_max_position_embeddings {
            positive("original_max_position_embeddings", p)?;
        }
        if !(self.rms_norm_eps >= 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(field(
                "rms_norm_eps",
                format!("{}: must be a finite number, at least 0", self.rms_norm_eps),
            ));
        }
        if !(self.initializer_range >= 0.0 && self.initializer_range.is_finite()) {
            return Err(field(
                "initializer_range",
                format!(
                    "{}: must be a finite number, at least 0",
                    self.initializer_range
                ),
            ));
        }
        let (_, theta) = self.rope();
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(field("rope_theta", format!("{theta}: must be positive")));
        }
        let partial = self.partial_rotary_factor();
        if !(partial > 0.0 && partial <= 1.0) || (self.arch != Arch::Phi3 && partial != 1.0) {
            return Err(field(
                "partial_rotary_factor",
                format!(
                    "{partial}: must be in (0, 1], and 1 for {model} (only Phi-3 applies the \
                     rotary embedding to part of the head)"
                ),
            ));
        }
        if let Some(layers) = &self.no_rope_layers
            && (layers.len() < self.num_hidden_layers
                || layers.iter().any(|v| !(0..=1).contains(v)))
        {
            return Err(field(
                "no_rope_layers",
                format!(
                    "{layers:?}: needs a 0 or 1 for each of the {} layers",
                    self.num_hidden_layers
                ),
            ));
        }
        if self.no_rope_layer_interval.is_some_and(|i| i < 1) {
            return Err(field(
                "no_rope_layer_interval",
                "must be at least 1".to_owned(),
            ));
        }
        let types = self.layer_types();
        if types.len() != self.num_hidden_layers {
            return Err(field(
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
                return Err(field(
                    "layer_types",
                    format!("{t:?}: expected \"sliding_attention\" or \"full_attention\""),
                ));
            }
        }
        if types.iter().any(|t| t == "sliding_attention") && self.config_window().is_none() {
            // transformers' create_sliding_window_causal_mask raises the same.
            return Err(field(
                "sliding_window",
                "no window (null, or use_sliding_window=false), but layer_types has \
                 sliding_attention layers"
                    .to_owned(),
            ));
        }
        if let Some(w) = self.config_window()
            && w < 1
        {
            return Err(field("sliding_window", format!("{w}: must be at least 1")));
        }
        self.validate_experts()?;
        self.act = Some(Activation::from_name(model, &self.hidden_act)?);
        Ok(())
    }

    /// The checks of the mixture-of-experts fields (Qwen3Moe, Mixtral).
    fn validate_experts(&self) -> Result<()> {
        if !matches!(self.arch, Arch::Qwen3Moe | Arch::Mixtral) {
            return Ok(());
        }
        let model = self.arch.class_name();
        let field = |name: &str, message: String| Error::ConfigField {
            model: model.to_owned(),
            field: name.to_owned(),
            message,
        };
        let experts = self.num_experts.unwrap_or(0);
        if experts < 1 {
            return Err(field(
                "num_experts",
                format!("{experts}: must be at least 1"),
            ));
        }
        let k = self.num_experts_per_tok.unwrap_or(0);
        if !(1..=experts).contains(&k) {
            return Err(field(
                "num_experts_per_tok",
                format!("{k}: must be between 1 and num_experts={experts}"),
            ));
        }
        if self.expert_intermediate_size() < 1 {
            return Err(field(
                "moe_intermediate_size",
                format!("{}: must be at least 1", self.expert_intermediate_size()),
            ));
        }
        if self.decoder_sparse_step.is_some_and(|s| s < 1) {
            return Err(field(
                "decoder_sparse_step",
                "must be at least 1 (transformers divides by it)".to_owned(),
            ));
        }
        if self.output_router_logits {
            return Err(field(
                "output_router_logits",
                "true: the model would also return its router logits and auxiliary loss, which \
                 this export does not build; set it to false in config.json (inference does \
                 not need them)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The inner size of an expert: Qwen3Moe's `moe_intermediate_size`, Mixtral's
    /// `intermediate_size`.
    pub(crate) fn expert_intermediate_size(&self) -> i64 {
        match self.arch {
            Arch::Qwen3Moe => self.moe_intermediate_size.unwrap_or(768),
            _ => self.intermediate_size,
        }
    }

    /// Whether layer `i` has a sparse mixture-of-experts MLP: every Mixtral layer; Qwen3Moe's
    /// layers not in `mlp_only_layers` whose number (from 1) `decoder_sparse_step` divides.
    pub fn is_sparse_layer(&self, i: usize) -> bool {
        match self.arch {
            Arch::Mixtral => true,
            Arch::Qwen3Moe => {
                !self
                    .mlp_only_layers
                    .as_ref()
                    .is_some_and(|l| l.contains(&i))
                    && self.num_experts.unwrap_or(0) > 0
                    && (i as i64 + 1) % self.decoder_sparse_step.unwrap_or(1) == 0
            }
            _ => false,
        }
    }

    /// The sizes the text-generation input sets need.
    pub fn decoder_dims(&self) -> crate::tasks::DecoderDims {
        crate::tasks::DecoderDims {
            vocab_size: self.vocab_size,
            num_layers: self.num_hidden_layers,
            kv_heads: self.kv_heads(),
            head_dim: self.head_size(),
            layer_kinds: self.layer_kinds(),
        }
    }

    /// The window the config gives its sliding layers: `sliding_window` (Qwen2's only with
    /// `use_sliding_window`, as `Qwen2Config` drops it otherwise; Llama and Gemma have none).
    fn config_window(&self) -> Option<i64> {
        match self.arch {
            Arch::Mistral | Arch::Phi3 | Arch::SmolLM3 | Arch::Mixtral => self.sliding_window,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe if self.use_sliding_window => {
                self.sliding_window
            }
            _ => None,
        }
    }

    /// The layer types, given or derived as the config classes derive them: Mistral, Phi-3,
    /// Qwen3Moe and Mixtral slide every layer when they have a window; Qwen2 and Qwen3 the
    /// layers from `max_window_layers` on (28); SmolLM3 its NoPE layers, with
    /// `use_sliding_window`.
    pub fn layer_types(&self) -> Vec<String> {
        if let Some(t) = &self.layer_types
            && matches!(self.arch, Arch::Qwen2 | Arch::Qwen3 | Arch::SmolLM3)
        {
            return t.clone();
        }
        let w = self.config_window();
        (0..self.num_hidden_layers)
            .map(|i| {
                let sliding = w.is_some()
                    && match self.arch {
                        Arch::Mistral | Arch::Phi3 | Arch::Qwen3Moe | Arch::Mixtral => true,
                        Arch::Qwen2 | Arch::Qwen3 => i >= self.max_window_layers.unwrap_or(28),
                        Arch::SmolLM3 => self.use_sliding_window && !self.uses_rope(i),
                        _ => false,
                    };
                if sliding {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
                .to_owned()
            })
            .collect()
    }

    /// The window of each layer (`None` for a full-attention layer).
    pub(crate) fn windows(&self) -> Vec<Option<i64>> {
        let w = self.config_window();
        self.layer_types()
            .iter()
            .map(|t| if t == "sliding_attention" { w } else { None })
            .collect()
    }

    /// The cache layers transformers 5.23's `DynamicCache(config=...)` creates: a
    /// `DynamicSlidingWindowLayer` per sliding layer, a `DynamicLayer` per full one.
    pub fn layer_kinds(&self) -> Vec<LayerKind> {
        self.windows()
            .into_iter()
            .map(|w| match w {
                Some(w) => LayerKind::DynamicSlidingWindow(w),
                None => LayerKind::Dynamic,
            })
            .collect()
    }

    /// Key/value heads.
    pub(crate) fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The head size.
    pub(crate) fn head_size(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The part of the head the rotary embedding covers: the top-level `partial_rotary_factor`,
    /// else the one in the rope parameters, else 1.
    pub(crate) fn partial_rotary_factor(&self) -> f64 {
        self.partial_rotary_factor
            .or(self.rope().0.partial_rotary_factor)
            .unwrap_or(1.0)
    }

    /// The rotary dimension, `int(head_dim * partial_rotary_factor)` as transformers computes
    /// it.
    pub(crate) fn rotary_dim(&self) -> i64 {
        (self.head_size() as f64 * self.partial_rotary_factor()) as i64
    }

    /// Whether layer `i` applies the rotary embedding (SmolLM3's `no_rope_layers`; every layer
    /// for the other families).
    pub(crate) fn uses_rope(&self, i: usize) -> bool {
        if self.arch != Arch::SmolLM3 {
            return true;
        }
        match &self.no_rope_layers {
            Some(layers) => layers.get(i).is_none_or(|v| *v != 0),
            None => (i as i64 + 1) % self.no_rope_layer_interval.unwrap_or(4) != 0,
        }
    }

    /// The activation (checked when the config was parsed).
    pub(crate) fn activation(&self) -> Result<Activation> {
        match self.act {
            Some(a) => Ok(a),
            None => Activation::from_name(self.arch.class_name(), &self.hidden_act),
        }
    }

    /// The effective rope parameters and base.
    pub(crate) fn rope(&self) -> (RopeParameters, f64) {
        let p = self
            .rope_parameters
            .clone()
            .or_else(|| self.rope_scaling.clone())
            .unwrap_or_default();
        let theta = p.rope_theta.unwrap_or(self.rope_theta);
        (p, theta)
    }
}

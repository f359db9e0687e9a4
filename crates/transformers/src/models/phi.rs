//! Phi (phi-1, phi-1.5, phi-2), as transformers 5.23 writes it (`models/phi/modeling_phi.py`):
//! one `LayerNorm` per layer feeding attention and MLP in parallel (`attn + mlp + residual`),
//! q/k/v projections and `dense` with biases, optional q/k LayerNorms (`qk_layernorm`), the
//! rotary embedding on the first `partial_rotary_factor` of each head (the rest passes through),
//! `fc1`/`fc2` with `gelu_new`, `final_layernorm`, an `lm_head` with a bias; eager attention
//! and an explicit [`DynamicCache`].
//!
//! Decisions: the rotary embedding is [`LlamaRotaryEmbedding`] (`PhiRotaryEmbedding` computes
//! the same frequencies from the rotary dimension), so the seeds' rotary patch applies to it;
//! `qk_layernorm`'s norms have `hidden_size / num_attention_heads` features, as transformers
//! builds them even when `head_dim` says otherwise.

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope};
use serde::Deserialize;

use super::llama::LlamaRotaryEmbedding;
use crate::{
    cache_utils::DynamicCache,
    error::{Error, Result, core_error},
    masking_utils::decoder_masks,
    modeling_attention::{apply_rotary_pos_emb, eager_attention_forward, split_heads},
    modeling_outputs::{causal_lm_forward, causal_lm_signature},
    modeling_rope_utils::{RopeParameters, RopeSettings},
    nn::{Activation, Embedding, LayerNorm, Linear},
    tasks::DecoderDims,
    weights::{Init, VarBuilder, Weights},
};

const MODEL: &str = "PhiForCausalLM";

/// `PhiRotaryEmbedding`: the Llama rotary embedding over the rotary dimension.
pub type PhiRotaryEmbedding = LlamaRotaryEmbedding;

fn default_act() -> String {
    "gelu_new".to_owned()
}
fn default_max_pos() -> i64 {
    2048
}
fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10000.0
}
fn default_std() -> f64 {
    0.02
}

/// `PhiConfig`, with the names of `config.json` (transformers 5.23's defaults).
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
    /// Head size (defaults to hidden / heads; phi-2's reduced config gives 80).
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// MLP activation (`gelu_new`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest sequence of training.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Rope base (legacy top-level key).
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Rope parameters (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Rope parameters (transformers 4 name).
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// The part of each head the rotary embedding covers (`PhiConfig`'s default 0.5; also read
    /// from `rope_parameters`).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// LayerNorms on the queries and keys.
    #[serde(default)]
    pub qk_layernorm: bool,
    /// `lm_head` shares the embedding weights (its bias stays its own).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Standard deviation of untrained weights.
    #[serde(default = "default_std")]
    pub initializer_range: f64,
    /// The padding token: its embedding row is zero in an untrained model.
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

impl Config {
    /// Parses the text of a `config.json`.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::ConfigField`] naming the field (see the checks of
    /// [`crate::models::llama::Config`]).
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = crate::error::parse_config(text, path)?;
        if let Some(t) = raw.get("model_type").and_then(|v| v.as_str())
            && t != "phi"
        {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!("model_type {t:?} is not phi"),
            });
        }
        let cfg: Config = serde_path_to_error::deserialize(raw)
            .map_err(|e| super::llama::parse_error(MODEL, path, &e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let field = |name: &str, message: String| Error::ConfigField {
            model: MODEL.to_owned(),
            field: name.to_owned(),
            message,
        };
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers as i64),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_size()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v < 1 {
                return Err(field(name, format!("{v}: must be at least 1")));
            }
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            return Err(field(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads={}",
                    self.kv_heads(),
                    self.num_attention_heads
                ),
            ));
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
        let partial = self.partial_rotary_factor();
        if !(partial > 0.0 && partial <= 1.0) || self.rotary_dim() < 2 {
            return Err(field(
                "partial_rotary_factor",
                format!("{partial}: must be in (0, 1] and cover at least 2 of the head"),
            ));
        }
        if !(self.layer_norm_eps >= 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(field(
                "layer_norm_eps",
                format!(
                    "{}: must be a finite number, at least 0",
                    self.layer_norm_eps
                ),
            ));
        }
        Activation::from_name(MODEL, &self.hidden_act)?;
        Ok(())
    }

    fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_size(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn rope(&self) -> (RopeParameters, f64) {
        let p = self
            .rope_parameters
            .clone()
            .or_else(|| self.rope_scaling.clone())
            .unwrap_or_default();
        let theta = p.rope_theta.unwrap_or(self.rope_theta);
        (p, theta)
    }

    fn partial_rotary_factor(&self) -> f64 {
        self.partial_rotary_factor
            .or(self.rope().0.partial_rotary_factor)
            .unwrap_or(0.5)
    }

    fn rotary_dim(&self) -> i64 {
        (self.head_size() as f64 * self.partial_rotary_factor()) as i64
    }

    /// The sizes the text-generation input sets need.
    pub fn decoder_dims(&self) -> DecoderDims {
        DecoderDims {
            vocab_size: self.vocab_size,
            num_layers: self.num_hidden_layers,
            kv_heads: self.kv_heads(),
            head_dim: self.head_size(),
            layer_kinds: Vec::new(),
        }
    }
}

/// `PhiAttention`: q/k/v with biases, optional q/k LayerNorms, partial rotary, `dense`.
#[derive(Clone, Debug)]
pub struct PhiAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    dense: Linear,
    qk_layernorm: Option<(LayerNorm, LayerNorm)>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    layer: usize,
}

impl PhiAttention {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_size());
        let (nq, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let norm = cfg.hidden_size / cfg.num_attention_heads;
        let qk_layernorm = if cfg.qk_layernorm {
            Some((
                LayerNorm::load(vb, "q_layernorm", norm, cfg.layer_norm_eps)?,
                LayerNorm::load(vb, "k_layernorm", norm, cfg.layer_norm_eps)?,
            ))
        } else {
            None
        };
        Ok(Self {
            q_proj: Linear::load(vb, "q_proj", h, nq * d, true)?,
            k_proj: Linear::load(vb, "k_proj", h, nkv * d, true)?,
            v_proj: Linear::load(vb, "v_proj", h, nkv * d, true)?,
            dense: Linear::load(vb, "dense", nq * d, h, true)?,
            qk_layernorm,
            heads: nq,
            kv_heads: nkv,
            head_dim: d,
            layer,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let _s = scope("self_attn");
        let (b, s) = (x.size(0)?, x.size(1)?);
        let split = |t: Tensor, heads: i64| split_heads(&t, heads, self.head_dim);
        let mut q = split(self.q_proj.forward(x)?, self.heads)?;
        let mut k = split(self.k_proj.forward(x)?, self.kv_heads)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        if let Some((qn, kn)) = &self.qk_layernorm {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let (q, k) = apply_rotary_pos_emb(&q, &k, &cos_sin.0, &cos_sin.1)?;
        let (k, v) = cache
            .update(&k, &v, self.layer)
            .map_err(|e| core_error(MODEL, e))?;
        let scaling = (self.head_dim as f64).powf(-0.5);
        let out = eager_attention_forward(&q, &k, &v, mask, scaling, self.heads / self.kv_heads)?;
        self.dense
            .forward(&out.reshape(vec![b, s, SymInt::new(-1)])?)
    }
}

/// `PhiMLP`: `fc2(act(fc1(x)))`.
#[derive(Clone, Debug)]
pub struct PhiMLP {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

/// `PhiDecoderLayer`: `attn(ln(x)) + mlp(ln(x)) + x`.
#[derive(Clone, Debug)]
pub struct PhiDecoderLayer {
    input_layernorm: LayerNorm,
    self_attn: PhiAttention,
    mlp: PhiMLP,
}

impl PhiDecoderLayer {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mlp = vb.pp("mlp");
        Ok(Self {
            self_attn: PhiAttention::load(&vb.pp("self_attn"), cfg, layer)?,
            mlp: PhiMLP {
                fc1: Linear::load(&mlp, "fc1", h, i, true)?,
                fc2: Linear::load(&mlp, "fc2", i, h, true)?,
                act: Activation::from_name(MODEL, &cfg.hidden_act)?,
            },
            input_layernorm: LayerNorm::load(vb, "input_layernorm", h, cfg.layer_norm_eps)?,
        })
    }

    fn forward(
        &self,
        h: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let x = {
            let _n = scope("input_layernorm");
            self.input_layernorm.forward(h)?
        };
        let attn = self.self_attn.forward(&x, cos_sin, mask, cache)?;
        let ff = {
            let _m = scope("mlp");
            let y = self.mlp.act.forward(&self.mlp.fc1.forward(&x)?)?;
            self.mlp.fc2.forward(&y)?
        };
        attn.add(&ff)?.add(h)
    }
}

/// `PhiForCausalLM`: `PhiModel` (embeddings, layers, `final_layernorm`) and `lm_head`.
#[derive(Clone, Debug)]
pub struct PhiForCausalLM {
    /// The configuration.
    pub config: Config,
    embed_tokens: Embedding,
    layers: Vec<PhiDecoderLayer>,
    final_layernorm: LayerNorm,
    rotary_emb: PhiRotaryEmbedding,
    lm_head: (Tensor, Tensor),
    params: Vec<(String, Tensor)>,
}

impl PhiForCausalLM {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// [`Error::Weight`], [`Error::UnusedWeights`], or a rope type not implemented.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let vb = weights.root();
        let m = vb.pp("model");
        let (h, v) = (config.hidden_size, config.vocab_size);
        let embed_tokens = Embedding::load(&m, "embed_tokens", v, h, config.pad_token_id)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| PhiDecoderLayer::load(&m.pp(format!("layers.{i}")), &config, i))
            .collect::<Result<_>>()?;
        let final_layernorm = LayerNorm::load(&m, "final_layernorm", h, config.layer_norm_eps)?;
        let (p, base) = config.rope();
        let rotary_emb = PhiRotaryEmbedding::from_rope(
            &p,
            &RopeSettings {
                model: MODEL,
                dim: config.rotary_dim(),
                base,
                max_position_embeddings: config.max_position_embeddings,
                original_max_position_embeddings: None,
            },
        )?
        .with_buffers(vb.buffer_dtype(), vb.device())?;
        let head = vb.pp("lm_head");
        let lm_weight = if config.tie_word_embeddings {
            weights.ignore_unread("lm_head.weight");
            embed_tokens.weight().clone()
        } else {
            head.get("weight", &[v, h], Init::Normal)?
        };
        let lm_bias = head.get("bias", &[v], Init::Zeros)?;
        weights.ignore_unread("rotary_emb.inv_freq");
        let params = weights.finish()?;
        Ok(Self {
            config,
            embed_tokens,
            layers,
            final_layernorm,
            rotary_emb,
            lm_head: (lm_weight, lm_bias),
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_json`], [`Weights::from_dir`] and [`PhiForCausalLM::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let file = dir.join("config.json");
        let config = Config::parse(&crate::error::read_config(&file)?, &file)?;
        let mut weights = Weights::from_dir(dir, MODEL)?;
        Self::new(config, &mut weights)
    }

    /// Logits `[batch, seq, vocab]` and the grown cache.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
    ) -> CoreResult<(Tensor, DynamicCache)> {
        let mut cache = cache.unwrap_or_default();
        let _s = scope("model");
        let mut h = {
            let _e = scope("embed_tokens");
            self.embed_tokens.forward(input_ids)?
        };
        let (position_ids, masks) = decoder_masks(
            MODEL,
            input_ids,
            attention_mask,
            position_ids,
            &cache,
            &vec![None; self.layers.len()],
            h.kind(),
        )?;
        let mask = &masks[0];
        let (cos, sin) = self.rotary_emb.forward(&position_ids)?;
        let cos_sin = (cos.to_kind(h.kind())?, sin.to_kind(h.kind())?);
        for (i, layer) in self.layers.iter().enumerate() {
            let _l = scope(&format!("layers.{i}"));
            h = layer.forward(&h, &cos_sin, mask, &mut cache)?;
        }
        let h = {
            let _n = scope("final_layernorm");
            self.final_layernorm.forward(&h)?
        };
        drop(_s);
        let _s = scope("lm_head");
        Ok((h.linear(&self.lm_head.0, Some(&self.lm_head.1))?, cache))
    }
}

impl crate::auto::CausalLM for PhiForCausalLM {
    fn decoder_dims(&self) -> DecoderDims {
        self.config.decoder_dims()
    }
}

impl Module for PhiForCausalLM {
    fn class_name(&self) -> String {
        MODEL.to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        causal_lm_signature()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![(
            "model.rotary_emb.inv_freq".to_owned(),
            self.rotary_emb.inv_freq().clone(),
        )]
    }

    /// `CausalLMOutputWithPast` with `logits` and `past_key_values` (a `DynamicCache`).
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        causal_lm_forward(MODEL, inputs, |ids, mask, pos, cache| {
            self.forward_with_cache(ids, mask, pos, cache)
        })
    }
}

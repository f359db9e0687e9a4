//! Gemma2, as transformers 5.23 writes it (`models/gemma2/modeling_gemma2.py`), and the
//! decoder Gemma3's text model shares with it (`models/gemma3/modeling_gemma3.py`,
//! [`crate::models::gemma3`]):
//!
//! - `Gemma2RMSNorm` (`(1 + weight) * x / rms(x)`, in float32), four per layer: before and
//!   after attention, before and after the MLP;
//! - `Gemma2Attention`: grouped-query attention scaled by `query_pre_attn_scalar ** -0.5`, the
//!   scores soft-capped (`attn_logit_softcapping`), the sliding window on the
//!   `sliding_attention` layers of `layer_types`; Gemma3 adds `q_norm`/`k_norm` over the head
//!   before the rotary embedding;
//! - the embeddings scaled by `sqrt(hidden_size)` in the weights' type;
//! - the logits soft-capped (`final_logit_softcapping`).
//!
//! The cache: a fresh one is `DynamicCache(config=...)`, a `DynamicSlidingWindowLayer` per
//! sliding layer (keeping its last `sliding_window - 1` positions), a `DynamicLayer` per full
//! one; each layer type gets its mask, sized by the first cache layer of that type.
//!
//! Decisions: the rotary embeddings are [`LlamaRotaryEmbedding`]s (Gemma2's computes the same
//! frequencies; Gemma3 has one per layer type, `sliding_attention` from the local base), so the
//! seeds' rotary patch applies to them.

mod configuration;

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope};

pub use configuration::{Config, Family};

use super::llama::LlamaRotaryEmbedding;
use crate::{
    cache_utils::DynamicCache,
    error::{Error, Result, core_error},
    masking_utils::decoder_masks_with_blocks,
    modeling_attention::{apply_rotary_pos_emb, eager_attention_forward_softcapped, split_heads},
    modeling_outputs::{causal_lm_forward, causal_lm_signature},
    modeling_rope_utils::RopeSettings,
    nn::{Activation, Embedding, Linear, RmsNorm, round_to},
    tasks::DecoderDims,
    weights::{Init, VarBuilder, Weights},
};

/// `Gemma2RMSNorm`: the one-centred RMSNorm.
pub type Gemma2RMSNorm = RmsNorm;

/// `Gemma2RotaryEmbedding`: the Llama rotary embedding.
pub type Gemma2RotaryEmbedding = LlamaRotaryEmbedding;

/// `Gemma2MLP`: `down(act(gate(x)) * up(x))`.
#[derive(Clone, Debug)]
pub struct Gemma2MLP {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl Gemma2MLP {
    fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::load(vb, "gate_proj", h, i, false)?,
            up_proj: Linear::load(vb, "up_proj", h, i, false)?,
            down_proj: Linear::load(vb, "down_proj", i, h, false)?,
            act: cfg.activation()?,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        let gate = self.act.forward(&self.gate_proj.forward(x)?)?;
        self.down_proj
            .forward(&gate.mul(&self.up_proj.forward(x)?)?)
    }
}

/// `Gemma2Attention` (and `Gemma3Attention` with its q/k norms).
#[derive(Clone, Debug)]
pub struct Gemma2Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Gemma3's `q_norm`, `k_norm`.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    scaling: f64,
    softcap: Option<f64>,
    layer: usize,
    model: &'static str,
}

impl Gemma2Attention {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let (h, d, b) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
        let (nq, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let qk_norm = match cfg.family {
            Family::Gemma2 => None,
            Family::Gemma3 => Some((
                RmsNorm::load(vb, "q_norm", d, cfg.rms_norm_eps, true)?,
                RmsNorm::load(vb, "k_norm", d, cfg.rms_norm_eps, true)?,
            )),
        };
        Ok(Self {
            q_proj: Linear::load(vb, "q_proj", h, nq * d, b)?,
            k_proj: Linear::load(vb, "k_proj", h, nkv * d, b)?,
            v_proj: Linear::load(vb, "v_proj", h, nkv * d, b)?,
            o_proj: Linear::load(vb, "o_proj", nq * d, h, b)?,
            qk_norm,
            heads: nq,
            kv_heads: nkv,
            head_dim: d,
            scaling: cfg.query_pre_attn_scalar.powf(-0.5),
            softcap: cfg.attn_logit_softcapping,
            layer,
            model: cfg.family.class_name(),
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
        let split = |t: &Tensor, heads: i64| split_heads(t, heads, self.head_dim);
        let mut q = split(&self.q_proj.forward(x)?, self.heads)?;
        let mut k = split(&self.k_proj.forward(x)?, self.kv_heads)?;
        let v = split(&self.v_proj.forward(x)?, self.kv_heads)?;
        if let Some((qn, kn)) = &self.qk_norm {
            q = {
                let _n = scope("q_norm");
                qn.forward(&q)?
            };
            k = {
                let _n = scope("k_norm");
                kn.forward(&k)?
            };
        }
        let (q, k) = apply_rotary_pos_emb(&q, &k, &cos_sin.0, &cos_sin.1)?;
        let (k, v) = cache
            .update(&k, &v, self.layer)
            .map_err(|e| core_error(self.model, e))?;
        let out = eager_attention_forward_softcapped(
            &q,
            &k,
            &v,
            mask,
            self.scaling,
            self.heads / self.kv_heads,
            self.softcap,
        )?;
        let out = out.reshape(vec![b, s, SymInt::new(-1)])?;
        self.o_proj.forward(&out)
    }
}

/// `Gemma2DecoderLayer`: attention and MLP, each between two norms, with residuals.
#[derive(Clone, Debug)]
pub struct Gemma2DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Gemma2Attention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: Gemma2MLP,
    post_feedforward_layernorm: RmsNorm,
}

impl Gemma2DecoderLayer {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let norm = |name: &str| RmsNorm::load(vb, name, h, eps, true);
        Ok(Self {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Gemma2Attention::load(&vb.pp("self_attn"), cfg, layer)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            mlp: Gemma2MLP::load(&vb.pp("mlp"), cfg)?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
        })
    }

    fn forward(
        &self,
        h: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let norm = |n: &RmsNorm, name: &str, x: &Tensor| {
            let _n = scope(name);
            n.forward(x)
        };
        let x = norm(&self.input_layernorm, "input_layernorm", h)?;
        let x = self.self_attn.forward(&x, cos_sin, mask, cache)?;
        let h = h.add(&norm(
            &self.post_attention_layernorm,
            "post_attention_layernorm",
            &x,
        )?)?;
        let x = norm(
            &self.pre_feedforward_layernorm,
            "pre_feedforward_layernorm",
            &h,
        )?;
        let x = self.mlp.forward(&x)?;
        h.add(&norm(
            &self.post_feedforward_layernorm,
            "post_feedforward_layernorm",
            &x,
        )?)
    }
}

/// The rotary embeddings of the model: one (Gemma2), or one per layer type (Gemma3:
/// `full_attention`, `sliding_attention`).
#[derive(Clone, Debug)]
struct Rotary {
    full: LlamaRotaryEmbedding,
    sliding: Option<LlamaRotaryEmbedding>,
    /// Where the decoder's modules are (`model`).
    prefix: String,
}

impl Rotary {
    fn new(cfg: &Config, vb: &VarBuilder<'_>, prefix: &str) -> Result<Self> {
        let make = |layer_type: &str| -> Result<LlamaRotaryEmbedding> {
            let (p, base) = cfg.rope(layer_type)?;
            LlamaRotaryEmbedding::from_rope(
                &p,
                &RopeSettings {
                    model: cfg.family.class_name(),
                    dim: cfg.head_dim,
                    base,
                    max_position_embeddings: cfg.max_position_embeddings,
                    original_max_position_embeddings: None,
                },
            )?
            .with_buffers(vb.buffer_dtype(), vb.device())
            .map_err(Error::Core)
        };
        Ok(Self {
            full: make("full_attention")?,
            sliding: match cfg.family {
                Family::Gemma2 => None,
                Family::Gemma3 => Some(make("sliding_attention")?),
            },
            prefix: prefix.to_owned(),
        })
    }

    /// The buffers under transformers' names.
    fn buffers(&self) -> Vec<(String, Tensor)> {
        let p = &self.prefix;
        match &self.sliding {
            None => vec![(
                format!("{p}.rotary_emb.inv_freq"),
                self.full.inv_freq().clone(),
            )],
            Some(s) => vec![
                (
                    format!("{p}.rotary_emb.full_attention_inv_freq"),
                    self.full.inv_freq().clone(),
                ),
                (
                    format!("{p}.rotary_emb.sliding_attention_inv_freq"),
                    s.inv_freq().clone(),
                ),
            ],
        }
    }
}

/// `Gemma2ForCausalLM` (and, configured by [`Family::Gemma3`], the text model of
/// `Gemma3ForCausalLM`).
#[derive(Clone, Debug)]
pub struct Gemma2ForCausalLM {
    /// The configuration.
    pub config: Config,
    embed_tokens: Embedding,
    layers: Vec<Gemma2DecoderLayer>,
    norm: RmsNorm,
    rotary: Rotary,
    lm_head: Tensor,
    windows: Vec<Option<i64>>,
    params: Vec<(String, Tensor)>,
}

impl Gemma2ForCausalLM {
    /// Builds the model from a config and weights (a checkpoint or untrained); `weights`
    /// builds this one model.
    ///
    /// # Errors
    /// [`Error::Weight`] for a missing or misshaped weight, [`Error::UnusedWeights`] for
    /// checkpoint tensors no module reads, [`Error::Unsupported`] for a rope type not
    /// implemented yet.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let tie = config.tie_word_embeddings;
        let mut model = Self::load(config, weights, "model", tie)?;
        model.params = weights.finish()?;
        Ok(model)
    }

    /// Reads the decoder under `prefix` (`model`, or Gemma3's `model.language_model`) and the
    /// head (`lm_head.weight`, or the embeddings when `tie`), leaving the build open for the
    /// other modules of a larger model: the parameters are set by the caller.
    ///
    /// # Errors
    /// As [`Gemma2ForCausalLM::new`].
    pub(crate) fn load(config: Config, weights: &Weights, prefix: &str, tie: bool) -> Result<Self> {
        let vb = weights.root();
        let m = vb.pp(prefix);
        let (h, v) = (config.hidden_size, config.vocab_size);
        let embed_tokens = Embedding::load(&m, "embed_tokens", v, h, config.pad_token_id)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Gemma2DecoderLayer::load(&m.pp(format!("layers.{i}")), &config, i))
            .collect::<Result<_>>()?;
        let norm = RmsNorm::load(&m, "norm", h, config.rms_norm_eps, true)?;
        let rotary = Rotary::new(&config, &vb, prefix)?;
        let lm_head = if tie {
            weights.ignore_unread("lm_head.weight");
            embed_tokens.weight().clone()
        } else {
            vb.pp("lm_head").get("weight", &[v, h], Init::Normal)?
        };
        weights.ignore_unread("rotary_emb.inv_freq");
        let windows = (0..config.num_hidden_layers)
            .map(|i| config.window(i))
            .collect();
        Ok(Self {
            config,
            embed_tokens,
            layers,
            norm,
            rotary,
            lm_head,
            windows,
            params: Vec::new(),
        })
    }

    /// The rotary buffers under transformers' names.
    pub(crate) fn buffers(&self) -> Vec<(String, Tensor)> {
        self.rotary.buffers()
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and [`Gemma2ForCausalLM::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, config.family.class_name())?;
        Self::new(config, &mut weights)
    }

    fn model(&self) -> &'static str {
        self.config.family.class_name()
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
        let h = {
            let _s = scope("model");
            self.embed(input_ids)?
        };
        self.forward_embeds(h, attention_mask, position_ids, cache, None)
    }

    /// The scaled token embeddings (`Gemma3TextScaledWordEmbedding`: `embed_tokens(ids) *
    /// embed_scale.to(weight.dtype)`, sqrt(hidden_size) rounded to the weights' type).
    ///
    /// # Errors
    /// Any error of the ops.
    pub(crate) fn embed(&self, input_ids: &Tensor) -> CoreResult<Tensor> {
        let _e = scope("embed_tokens");
        let h = self.embed_tokens.forward(input_ids)?;
        let scale = (self.config.hidden_size as f64).sqrt();
        h.mul_scalar(round_to(scale, h.kind()))
    }

    /// Logits and the grown cache from input embeddings `[batch, seq, hidden]` (the decoder
    /// under `model.`, then the head); `block_sequence_ids` adds Gemma3's bidirectional image
    /// blocks to every mask ([`crate::masking_utils::causal_mask_with_blocks`]).
    ///
    /// # Errors
    /// Any error of the ops.
    pub(crate) fn forward_embeds(
        &self,
        h: Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
        block_sequence_ids: Option<&Tensor>,
    ) -> CoreResult<(Tensor, DynamicCache)> {
        let mut cache = match cache {
            Some(c) if !c.layers.is_empty() => c,
            _ => DynamicCache::with_layers(&self.config.layer_kinds()),
        };
        let _s = scope("model");
        let (position_ids, masks) = decoder_masks_with_blocks(
            self.model(),
            &h,
            attention_mask,
            position_ids,
            &cache,
            &self.windows,
            block_sequence_ids,
            h.kind(),
        )?;
        let kind = h.kind();
        let cos_sin = |r: &LlamaRotaryEmbedding| -> CoreResult<(Tensor, Tensor)> {
            let (cos, sin) = r.forward(&position_ids)?;
            Ok((cos.to_kind(kind)?, sin.to_kind(kind)?))
        };
        let full = cos_sin(&self.rotary.full)?;
        let sliding = match &self.rotary.sliding {
            Some(r) => Some(cos_sin(r)?),
            None => None,
        };
        let mut h = h;
        for (i, (layer, mask)) in self.layers.iter().zip(&masks).enumerate() {
            let _l = scope(&format!("layers.{i}"));
            let cs = match (&sliding, self.windows[i]) {
                (Some(s), Some(_)) => s,
                _ => &full,
            };
            h = layer.forward(&h, cs, mask, &mut cache)?;
        }
        let h = {
            let _n = scope("norm");
            self.norm.forward(&h)?
        };
        drop(_s);
        let _s = scope("lm_head");
        let mut logits = h.linear(&self.lm_head, None)?;
        if let Some(cap) = self.config.final_logit_softcapping {
            logits = logits.div_scalar(cap)?.tanh()?.mul_scalar(cap)?;
        }
        Ok((logits, cache))
    }
}

impl crate::auto::CausalLM for Gemma2ForCausalLM {
    fn decoder_dims(&self) -> DecoderDims {
        self.config.decoder_dims()
    }
}

impl Module for Gemma2ForCausalLM {
    fn class_name(&self) -> String {
        self.model().to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        causal_lm_signature()
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.rotary.buffers()
    }

    /// `CausalLMOutputWithPast` with `logits` and `past_key_values` (a `DynamicCache` of
    /// sliding and full layers).
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        causal_lm_forward(self.model(), inputs, |ids, mask, pos, cache| {
            self.forward_with_cache(ids, mask, pos, cache)
        })
    }
}

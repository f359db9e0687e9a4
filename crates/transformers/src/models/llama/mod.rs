//! Llama, as transformers 5.23 writes it (`models/llama/modeling_llama.py`): `LlamaRMSNorm`,
//! `LlamaRotaryEmbedding`, `LlamaMLP`, `LlamaAttention` (grouped-query), `LlamaDecoderLayer`,
//! `LlamaModel`, `LlamaForCausalLM`, on the shared layers ([`crate::nn`],
//! [`crate::modeling_rope_utils`], [`crate::masking_utils`], [`crate::modeling_attention`]).
//! Eager attention, the causal mask combined with the padding mask, an explicit
//! [`DynamicCache`]. Written the natural eager way: making it export-friendly is the patches'
//! job. Mistral, Qwen2, Gemma, Phi-3, SmolLM3, Qwen3, Qwen3Moe and Mixtral are this decoder
//! with the differences of their [`Arch`] (their files declare them under their class names;
//! the sparse MLP of the last two is [`Qwen3MoeSparseMoeBlock`]).
//!
//! Weights load through [`Weights`]: their names are written once, in the `load` functions, and
//! `named_parameters` is what the loading recorded. A checkpoint tensor no module reads is an
//! error, except `rotary_emb.inv_freq` (a buffer older checkpoints saved and transformers drops)
//! and `lm_head.weight` when the embeddings are tied (transformers re-ties it to
//! `model.embed_tokens.weight`).

mod configuration;
mod rotary;

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, SymInt, Tensor, Value, scope};

pub(crate) use configuration::parse_error;
pub use configuration::{Arch, Config};
pub use rotary::LlamaRotaryEmbedding;

use super::qwen3_moe::{ExpertNames, Qwen3MoeSparseMoeBlock};
use crate::{
    cache_utils::DynamicCache,
    cache_utils::LayerKind,
    error::{Result, core_error},
    masking_utils::decoder_masks,
    modeling_attention::{apply_rotary_pos_emb, eager_attention_forward, split_heads},
    modeling_outputs::{causal_lm_forward, causal_lm_signature},
    nn::{Activation, Embedding, Linear, RmsNorm},
    weights::{Init, VarBuilder, Weights},
};

/// `LlamaRMSNorm` (`GemmaRMSNorm` when one-centered).
pub type LlamaRMSNorm = RmsNorm;

/// Projections stored separately (`q_proj`, `k_proj`, `v_proj`) or fused into one matrix whose
/// output is split along the last dim (Phi-3's `qkv_proj`, `gate_up_proj`).
#[derive(Clone, Debug)]
enum Projections {
    Separate(Vec<Linear>),
    Fused(Linear, Vec<i64>),
}

impl Projections {
    fn forward(&self, x: &Tensor) -> CoreResult<Vec<Tensor>> {
        match self {
            Projections::Separate(ps) => ps.iter().map(|p| p.forward(x)).collect(),
            Projections::Fused(p, sizes) => {
                let y = p.forward(x)?;
                let mut start = 0;
                let mut out = Vec::with_capacity(sizes.len());
                for n in sizes {
                    out.push(y.narrow(-1, start, *n)?);
                    start += n;
                }
                Ok(out)
            }
        }
    }
}

/// `LlamaMLP`: `down(act(gate(x)) * up(x))`.
#[derive(Clone, Debug)]
pub struct LlamaMLP {
    /// `gate_proj` and `up_proj`, or Phi-3's fused `gate_up_proj`.
    gate_up: Projections,
    down_proj: Linear,
    act: Activation,
}

impl LlamaMLP {
    fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        let gate_up = if cfg.arch == Arch::Phi3 {
            Projections::Fused(
                Linear::load(vb, "gate_up_proj", h, 2 * i, false)?,
                vec![i, i],
            )
        } else {
            Projections::Separate(vec![
                Linear::load(vb, "gate_proj", h, i, b)?,
                Linear::load(vb, "up_proj", h, i, b)?,
            ])
        };
        Ok(Self {
            gate_up,
            down_proj: Linear::load(vb, "down_proj", i, h, b)?,
            act: cfg.activation()?,
        })
    }

    /// The MLP.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        let gu = self.gate_up.forward(x)?;
        let gate = self.act.forward(&gu[0])?;
        self.down_proj.forward(&gate.mul(&gu[1])?)
    }
}

/// `LlamaAttention`: grouped-query attention with rotary embeddings and a KV cache.
#[derive(Clone, Debug)]
pub struct LlamaAttention {
    /// `q_proj`, `k_proj`, `v_proj`, or Phi-3's fused `qkv_proj`.
    qkv: Projections,
    o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    layer: usize,
    /// SmolLM3's NoPE layers take no rotary embedding.
    use_rope: bool,
    /// Qwen3's RMSNorm of each query and key head (`q_norm`, `k_norm`).
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    model: &'static str,
}

impl LlamaAttention {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let (h, d, b) = (cfg.hidden_size, cfg.head_size(), cfg.attention_bias);
        let (nq, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        // Qwen2: biases on q, k and v always, never on o.
        let (bqkv, bo) = if cfg.arch == Arch::Qwen2 {
            (true, false)
        } else {
            (b, b)
        };
        let qkv = if cfg.arch == Arch::Phi3 {
            Projections::Fused(
                Linear::load(vb, "qkv_proj", h, (nq + 2 * nkv) * d, false)?,
                vec![nq * d, nkv * d, nkv * d],
            )
        } else {
            Projections::Separate(vec![
                Linear::load(vb, "q_proj", h, nq * d, bqkv)?,
                Linear::load(vb, "k_proj", h, nkv * d, bqkv)?,
                Linear::load(vb, "v_proj", h, nkv * d, bqkv)?,
            ])
        };
        Ok(Self {
            qkv,
            o_proj: Linear::load(vb, "o_proj", nq * d, h, bo)?,
            heads: nq,
            kv_heads: nkv,
            head_dim: d,
            layer,
            use_rope: cfg.uses_rope(layer),
            qk_norm: if matches!(cfg.arch, Arch::Qwen3 | Arch::Qwen3Moe) {
                Some((
                    RmsNorm::load(vb, "q_norm", d, cfg.rms_norm_eps, false)?,
                    RmsNorm::load(vb, "k_norm", d, cfg.rms_norm_eps, false)?,
                ))
            } else {
                None
            },
            model: cfg.arch.class_name(),
        })
    }

    /// Attention over the cached and new positions; the cache is updated in place.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        x: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let _s = scope("self_attn");
        let (b, s) = (x.size(0)?, x.size(1)?);
        let split = |t: &Tensor, heads: i64| split_heads(t, heads, self.head_dim);
        let qkv = self.qkv.forward(x)?;
        let [q, k, v] = qkv.as_slice() else {
            return Err(onnx_diagnostic_core::Error::Model {
                model: self.model.to_owned(),
                message: format!("the q/k/v projections gave {} tensors", qkv.len()),
            });
        };
        let (q, k) = (split(q, self.heads)?, split(k, self.kv_heads)?);
        // Qwen3 normalises each head (before the transpose in transformers: the same over the
        // last dim).
        let (q, k) = match &self.qk_norm {
            Some((qn, kn)) => {
                let q = {
                    let _n = scope("q_norm");
                    qn.forward(&q)?
                };
                let _n = scope("k_norm");
                (q, kn.forward(&k)?)
            }
            None => (q, k),
        };
        let v = split(v, self.kv_heads)?;
        let (q, k) = if self.use_rope {
            apply_rotary_pos_emb(&q, &k, &cos_sin.0, &cos_sin.1)?
        } else {
            (q, k)
        };
        let (k, v) = cache
            .update(&k, &v, self.layer)
            .map_err(|e| core_error(self.model, e))?;
        let scaling = (self.head_dim as f64).powf(-0.5);
        let out = eager_attention_forward(&q, &k, &v, mask, scaling, self.heads / self.kv_heads)?;
        let out = out.reshape(vec![b, s, SymInt::new(-1)])?;
        self.o_proj.forward(&out)
    }
}

/// The MLP of a decoder layer: dense, or Qwen3Moe's and Mixtral's sparse experts.
#[derive(Clone, Debug)]
enum Mlp {
    Dense(LlamaMLP),
    Sparse(Box<Qwen3MoeSparseMoeBlock>),
}

/// `LlamaDecoderLayer`: pre-norm attention and MLP with residuals.
#[derive(Clone, Debug)]
pub struct LlamaDecoderLayer {
    input_layernorm: LlamaRMSNorm,
    self_attn: LlamaAttention,
    post_attention_layernorm: LlamaRMSNorm,
    mlp: Mlp,
}

impl LlamaDecoderLayer {
    fn load(vb: &VarBuilder<'_>, cfg: &Config, layer: usize) -> Result<Self> {
        let (h, eps, gemma) = (cfg.hidden_size, cfg.rms_norm_eps, cfg.arch == Arch::Gemma);
        Ok(Self {
            input_layernorm: RmsNorm::load(vb, "input_layernorm", h, eps, gemma)?,
            self_attn: LlamaAttention::load(&vb.pp("self_attn"), cfg, layer)?,
            post_attention_layernorm: RmsNorm::load(vb, "post_attention_layernorm", h, eps, gemma)?,
            mlp: if cfg.is_sparse_layer(layer) {
                Mlp::Sparse(Box::new(Qwen3MoeSparseMoeBlock::load(
                    vb,
                    cfg,
                    &ExpertNames::of(cfg.arch),
                )?))
            } else {
                Mlp::Dense(LlamaMLP::load(&vb.pp("mlp"), cfg)?)
            },
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
        let h = h.add(&self.self_attn.forward(&x, cos_sin, mask, cache)?)?;
        let x = {
            let _n = scope("post_attention_layernorm");
            self.post_attention_layernorm.forward(&h)?
        };
        let m = match &self.mlp {
            Mlp::Dense(m) => m.forward(&x)?,
            Mlp::Sparse(m) => m.forward(&x)?,
        };
        h.add(&m)
    }
}

/// `LlamaModel`: embeddings, decoder layers, final norm.
#[derive(Clone, Debug)]
pub struct LlamaModel {
    embed_tokens: Embedding,
    layers: Vec<LlamaDecoderLayer>,
    norm: LlamaRMSNorm,
    rotary_emb: LlamaRotaryEmbedding,
    /// Gemma's embedding scale, `sqrt(hidden_size)`.
    embed_scale: Option<f64>,
    /// The window of each layer (Mistral's and Phi-3's `sliding_window` on every layer, Qwen2's
    /// and SmolLM3's on their sliding layers).
    windows: Vec<Option<i64>>,
    /// The cache layers a new cache gets ([`Config::layer_kinds`]).
    layer_kinds: Vec<LayerKind>,
    model: &'static str,
}

impl LlamaModel {
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        let gemma = cfg.arch == Arch::Gemma;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| LlamaDecoderLayer::load(&vb.pp(format!("layers.{i}")), cfg, i))
            .collect::<Result<_>>()?;
        Ok(Self {
            embed_tokens: Embedding::load(
                vb,
                "embed_tokens",
                cfg.vocab_size,
                cfg.hidden_size,
                cfg.pad_token_id,
            )?,
            layers,
            norm: RmsNorm::load(vb, "norm", cfg.hidden_size, cfg.rms_norm_eps, gemma)?,
            rotary_emb: LlamaRotaryEmbedding::new(cfg)?
                .with_buffers(vb.buffer_dtype(), vb.device())?,
            embed_scale: gemma.then(|| (cfg.hidden_size as f64).sqrt()),
            windows: cfg.windows(),
            layer_kinds: cfg.layer_kinds(),
            model: cfg.arch.class_name(),
        })
    }

    /// The hidden states of the last layer; `cache` grows by the new positions.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let _s = scope("model");
        let h = self.embed(input_ids)?;
        self.forward_embeds(h, input_ids, attention_mask, position_ids, None, cache)
    }

    /// `embed_tokens(input_ids)` (times Gemma's scale).
    ///
    /// # Errors
    /// Any error of the ops.
    pub(crate) fn embed(&self, input_ids: &Tensor) -> CoreResult<Tensor> {
        let _e = scope("embed_tokens");
        let h = self.embed_tokens.forward(input_ids)?;
        match self.embed_scale {
            // transformers multiplies by a tensor of the hidden states' type holding
            // sqrt(hidden_size).
            Some(scale) => h.mul_scalar(crate::nn::round_to(scale, h.kind())),
            None => Ok(h),
        }
    }

    /// The embedding matrix.
    pub(crate) fn embed_weight(&self) -> &Tensor {
        self.embed_tokens.weight()
    }

    /// The decoder on input embeddings `h` (`inputs_embeds`; `input_ids` gives the batch and
    /// length): the masks, the rotary embedding of `position_ids` (or `cos_sin` when the
    /// model computes its own, Qwen2-VL's multimodal rope), the layers and the final norm.
    ///
    /// # Errors
    /// Any error of the ops.
    pub(crate) fn forward_embeds(
        &self,
        mut h: Tensor,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cos_sin: Option<(Tensor, Tensor)>,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        if cache.layers.is_empty() {
            // `DynamicCache(config=...)`: sliding layers where the config has a window.
            *cache = DynamicCache::with_layers(&self.layer_kinds);
        }
        let (position_ids, masks) = decoder_masks(
            self.model,
            input_ids,
            attention_mask,
            position_ids,
            cache,
            &self.windows,
            h.kind(),
        )?;
        let cos_sin = match cos_sin {
            Some(cs) => cs,
            None => {
                // transformers' rotary forward ends with `cos.to(x.dtype), sin.to(x.dtype)`.
                let (cos, sin) = self.rotary_emb.forward(&position_ids)?;
                (cos.to_kind(h.kind())?, sin.to_kind(h.kind())?)
            }
        };
        for (i, (layer, mask)) in self.layers.iter().zip(&masks).enumerate() {
            let _l = scope(&format!("layers.{i}"));
            h = layer.forward(&h, &cos_sin, mask, cache)?;
        }
        let _n = scope("norm");
        self.norm.forward(&h)
    }

    /// The positions of the new tokens, `past..past + seq` `[1, seq]`, as the decoder computes
    /// them when none are given.
    ///
    /// # Errors
    /// Any error of the ops.
    pub(crate) fn default_positions(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &DynamicCache,
    ) -> CoreResult<Tensor> {
        let q = input_ids.size(1)?;
        let past = cache
            .past_length(attention_mask, &q)
            .map_err(|e| core_error(self.model, e))?;
        let total = &past + &q;
        Tensor::arange(past, total, 1, tch::Kind::Int64, input_ids.device())?.unsqueeze(0)
    }
}

/// `LlamaForCausalLM`: [`LlamaModel`] and the language-model head.
#[derive(Clone, Debug)]
pub struct LlamaForCausalLM {
    /// The configuration.
    pub config: Config,
    model: LlamaModel,
    lm_head: Tensor,
    /// What the build loaded, in load order: `named_parameters`.
    params: Vec<(String, Tensor)>,
}

impl LlamaForCausalLM {
    /// Builds the model from a config and weights (a checkpoint or untrained); `weights`
    /// builds this one model.
    ///
    /// # Errors
    /// [`Error::Weight`] for a missing or misshaped weight, [`Error::UnusedWeights`] for
    /// checkpoint tensors no module reads, [`Error::Unsupported`] for a rope type not
    /// implemented yet.
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let vb = weights.root();
        let model = LlamaModel::load(&vb.pp("model"), &config)?;
        let lm_head = if config.tie_word_embeddings {
            weights.ignore_unread("lm_head.weight");
            model.embed_tokens.weight().clone()
        } else {
            vb.pp("lm_head").get(
                "weight",
                &[config.vocab_size, config.hidden_size],
                Init::Normal,
            )?
        };
        weights.ignore_unread("rotary_emb.inv_freq");
        let params = weights.finish()?;
        Ok(Self {
            config,
            model,
            lm_head,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Config::from_file`], [`Weights::from_dir`] and [`LlamaForCausalLM::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, config.arch.class_name())?;
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
        let h = self
            .model
            .forward(input_ids, attention_mask, position_ids, &mut cache)?;
        let _s = scope("lm_head");
        Ok((h.linear(&self.lm_head, None)?, cache))
    }
}

impl Module for LlamaForCausalLM {
    fn class_name(&self) -> String {
        "LlamaForCausalLM".to_owned()
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
            self.model.rotary_emb.inv_freq().clone(),
        )]
    }

    /// `CausalLMOutputWithPast` with `logits` and `past_key_values` (a `DynamicCache`).
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        causal_lm_forward(self.model.model, inputs, |ids, mask, pos, cache| {
            self.forward_with_cache(ids, mask, pos, cache)
        })
    }
}

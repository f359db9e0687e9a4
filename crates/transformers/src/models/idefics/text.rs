//! Idefics' text side (`models/idefics/modeling_idefics.py`): the decoupled embedding and
//! head (the pretrained vocabulary and `additional_vocab_size` more tokens), the rotary
//! embedding with its cached cos/sin tables (`IdeficsEmbedding`), the attention
//! (`IdeficsAttention`, self- and cross-), `IdeficsMLP`, `IdeficsDecoderLayer` and
//! `IdeficsGatedCrossAttentionLayer`.
//!
//! Decisions:
//! - The rotary embedding and the attention are written as transformers wrote them before
//!   5.x, the code the seeds' `patched_IdeficsEmbedding.forward` and
//!   `patched_IdeficsAttention.forward` replace: `IdeficsEmbedding` keeps cos/sin tables of
//!   `max_position_embeddings` rows and grows them when asked for a longer length
//!   (`if seq_len > self.max_seq_len_cached`); the attention asks for `max(kv_seq_len, q_len)`
//!   with `kv_seq_len = key_len + cache_position[0]`, a value read from the data, and gathers
//!   the tables at `position_ids`. transformers 5.23 computes `cos(position_ids * inv_freq)`
//!   directly (`IdeficsRotaryEmbedding`): the same float32 products, so the same values. The
//!   grown tables are not stored (a forward does not change the model).
//! - Position ids must be below the cached plus new length (the tables' length), as in
//!   transformers 4.x; 5.23 takes any.

use onnx_diagnostic_core::{Rel, Result as CoreResult, SymInt, Tensor, scope};
use tch::{Device, Kind};

use super::configuration::{AlphaType, IdeficsConfig, MODEL};
use crate::{
    cache_utils::DynamicCache,
    error::{Result, core_error},
    modeling_attention::{apply_rotary_pos_emb, eager_attention_forward, split_heads},
    nn::{Activation, Linear, RmsNorm},
    weights::{Init, VarBuilder},
};

/// `IdeficsDecoupledEmbedding`: `weight` for the ids below `vocab_size`,
/// `additional_embedding` for the `additional_vocab_size` ids after them.
#[derive(Clone, Debug)]
pub struct IdeficsDecoupledEmbedding {
    weight: Tensor,
    additional: Option<Tensor>,
    vocab: i64,
}

impl IdeficsDecoupledEmbedding {
    /// Reads `weight` and `additional_embedding.weight` under `vb` (`model.embed_tokens`).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, c: &IdeficsConfig) -> Result<Self> {
        let pad = c.pad_token_id.filter(|p| (0..c.vocab_size).contains(p));
        let h = c.hidden_size;
        Ok(Self {
            weight: vb.get("weight", &[c.vocab_size, h], Init::NormalWithZeroRow(pad))?,
            additional: if c.additional_vocab_size > 0 {
                Some(vb.pp("additional_embedding").get(
                    "weight",
                    &[c.additional_vocab_size, h],
                    Init::Normal,
                )?)
            } else {
                None
            },
            vocab: c.vocab_size,
        })
    }

    /// `[b, s, hidden]` of `ids` `[b, s]`.
    ///
    /// # Errors
    /// Any error of the ops (an id past both tables).
    pub fn forward(&self, ids: &Tensor) -> CoreResult<Tensor> {
        let Some(additional) = &self.additional else {
            return Tensor::embedding(&self.weight, ids);
        };
        let is_additional = ids.ge_scalar(self.vocab)?;
        let base = Tensor::embedding(&self.weight, &ids.masked_fill(&is_additional, 0)?)?;
        let extra_ids = ids
            .sub_scalar(self.vocab)?
            .masked_fill(&is_additional.logical_not()?, 0)?;
        let extra = Tensor::embedding(additional, &extra_ids)?;
        extra.where_cond(&is_additional.unsqueeze(-1)?, &base)
    }

    /// The pretrained table and the additional one.
    pub(crate) fn weights(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.weight, self.additional.as_ref())
    }
}

/// `IdeficsDecoupledLinear` without bias: the logits of the pretrained vocabulary, then those
/// of the additional tokens (`additional_fc`).
#[derive(Clone, Debug)]
pub struct IdeficsDecoupledLinear {
    weight: Tensor,
    additional_fc: Option<Tensor>,
}

impl IdeficsDecoupledLinear {
    /// Reads `lm_head.weight` and `lm_head.additional_fc.weight`, or takes the embedding's
    /// tables when `tied`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        c: &IdeficsConfig,
        tied: Option<(&Tensor, Option<&Tensor>)>,
    ) -> Result<Self> {
        if let Some((w, a)) = tied {
            return Ok(Self {
                weight: w.clone(),
                additional_fc: a.cloned(),
            });
        }
        let h = c.hidden_size;
        Ok(Self {
            weight: vb.get("weight", &[c.vocab_size, h], Init::Normal)?,
            additional_fc: if c.additional_vocab_size > 0 {
                Some(vb.pp("additional_fc").get(
                    "weight",
                    &[c.additional_vocab_size, h],
                    Init::Normal,
                )?)
            } else {
                None
            },
        })
    }

    /// `[b, s, vocab + additional]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, h: &Tensor) -> CoreResult<Tensor> {
        let logits = h.linear(&self.weight, None)?;
        match &self.additional_fc {
            Some(a) => Tensor::cat(&[&logits, &h.linear(a, None)?], -1),
            None => Ok(logits),
        }
    }
}

/// `IdeficsEmbedding`: the rotary embedding with cos/sin tables cached for
/// `max_position_embeddings` positions (see the module doc).
#[derive(Clone, Debug)]
pub struct IdeficsEmbedding {
    inv_freq: Tensor,
    cos_cached: Tensor,
    sin_cached: Tensor,
    max_seq_len_cached: i64,
}

impl IdeficsEmbedding {
    /// The tables of `dim` features for `max_position_embeddings` positions, base `base`.
    /// `inv_freq` is rounded to `buffer_kind` and read back in float32, as a model converted
    /// with `model.to(dtype)` keeps its buffer (see
    /// [`crate::models::llama::LlamaRotaryEmbedding::with_buffers`]); the tables are float32,
    /// cast to the states' type when read, so they hold what transformers 5.23 computes.
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn new(
        dim: i64,
        max_position_embeddings: i64,
        base: f64,
        buffer_kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let fail = |e: tch::TchError| {
            crate::error::Error::Core(onnx_diagnostic_core::Error::Model {
                model: MODEL.to_owned(),
                message: format!("the rotary tables: {e}"),
            })
        };
        let exps = tch::Tensor::f_arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))
            .and_then(|t| t.f_to_kind(Kind::Float))
            .map_err(fail)?
            / dim as f64;
        let mut inv_freq = tch::Tensor::from(base as f32).pow(&exps).reciprocal();
        if buffer_kind != Kind::Float {
            inv_freq = inv_freq.to_kind(buffer_kind).to_kind(Kind::Float);
        }
        let t = tch::Tensor::f_arange(max_position_embeddings, (Kind::Float, Device::Cpu))
            .map_err(fail)?;
        let freqs = t.reshape([-1, 1]) * inv_freq.reshape([1, -1]);
        let emb = tch::Tensor::cat(&[&freqs, &freqs], -1);
        let on = |t: tch::Tensor| t.f_to_device(device).map(Tensor::from).map_err(fail);
        Ok(Self {
            cos_cached: on(emb.cos())?,
            sin_cached: on(emb.sin())?,
            inv_freq: on(inv_freq)?,
            max_seq_len_cached: max_position_embeddings,
        })
    }

    /// The tables for positions `0..seq_len` computed from `inv_freq` (`_set_cos_sin_cache`),
    /// in `kind`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn tables(&self, seq_len: &SymInt, kind: Kind) -> CoreResult<(Tensor, Tensor)> {
        let t = Tensor::arange(0, seq_len.clone(), 1, Kind::Int64, self.inv_freq.device())?
            .to_kind(Kind::Float)?;
        let freqs = t.unsqueeze(1)?.mul(&self.inv_freq.unsqueeze(0)?)?;
        let emb = Tensor::cat(&[&freqs, &freqs], -1)?;
        Ok((emb.cos()?.to_kind(kind)?, emb.sin()?.to_kind(kind)?))
    }

    /// The cached tables `[max_position_embeddings, dim]` and their length.
    pub fn cached(&self) -> (&Tensor, &Tensor, i64) {
        (&self.cos_cached, &self.sin_cached, self.max_seq_len_cached)
    }

    /// `inv_freq`, `cos_cached`, `sin_cached`.
    pub(crate) fn buffers(&self) -> [(&'static str, &Tensor); 3] {
        [
            ("inv_freq", &self.inv_freq),
            ("cos_cached", &self.cos_cached),
            ("sin_cached", &self.sin_cached),
        ]
    }

    /// `IdeficsEmbedding.forward(x, seq_len)`: the cos and sin tables of the first `seq_len`
    /// positions `[seq_len, dim]` in `x`'s type, grown past `max_position_embeddings` when
    /// asked (`if seq_len > self.max_seq_len_cached`: a comparison of sizes, which an export
    /// records as a guard on the lengths).
    ///
    /// # Errors
    /// Any error of the ops.
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(&self, x: &Tensor, seq_len: &SymInt) -> CoreResult<(Tensor, Tensor)> {
        let kind = x.kind();
        if seq_len.compare(Rel::Gt, self.max_seq_len_cached)? {
            return self.tables(seq_len, kind);
        }
        Ok((
            self.cos_cached
                .narrow(0, 0, seq_len.clone())?
                .to_kind(kind)?,
            self.sin_cached
                .narrow(0, 0, seq_len.clone())?
                .to_kind(kind)?,
        ))
    }
}

/// The old `apply_rotary_pos_emb(q, k, cos, sin, position_ids)`: the tables gathered at
/// `position_ids` `[b, s]`, then the rotation.
///
/// # Errors
/// Any error of the ops.
pub fn apply_rotary_at(
    q: &Tensor,
    k: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    position_ids: &Tensor,
) -> CoreResult<(Tensor, Tensor)> {
    let at = |t: &Tensor| Tensor::embedding(t, position_ids);
    apply_rotary_pos_emb(q, k, &at(cos)?, &at(sin)?)
}

/// `IdeficsAttention`: the decoder's self-attention (rotary, cache) or the gated layers'
/// cross-attention to the image features (no rotary, optional RMSNorms of queries and keys).
#[derive(Clone, Debug)]
pub struct IdeficsAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    rotary_emb: IdeficsEmbedding,
    qk_layer_norms: Option<(RmsNorm, RmsNorm)>,
    heads: i64,
    head_dim: i64,
    layer: usize,
}

impl IdeficsAttention {
    fn load(
        vb: &VarBuilder<'_>,
        c: &IdeficsConfig,
        layer: usize,
        cross: bool,
        rotary_emb: IdeficsEmbedding,
    ) -> Result<Self> {
        let (h, d) = (c.hidden_size, c.head_dim());
        let kv_in = if cross { c.vision_config.embed_dim } else { h };
        Ok(Self {
            q_proj: Linear::load(vb, "q_proj", h, h, false)?,
            k_proj: Linear::load(vb, "k_proj", kv_in, h, false)?,
            v_proj: Linear::load(vb, "v_proj", kv_in, h, false)?,
            o_proj: Linear::load(vb, "o_proj", h, h, false)?,
            rotary_emb,
            qk_layer_norms: if cross && c.qk_layer_norms {
                Some((
                    RmsNorm::load(vb, "q_layer_norm", d, c.rms_norm_eps, false)?,
                    RmsNorm::load(vb, "k_layer_norm", d, c.rms_norm_eps, false)?,
                ))
            } else {
                None
            },
            heads: c.num_attention_heads,
            head_dim: d,
            layer,
        })
    }

    /// The rotary embedding.
    pub fn rotary_emb(&self) -> &IdeficsEmbedding {
        &self.rotary_emb
    }

    /// The queries `[b, heads, s, d]` of `h`, the keys and values of `kv` (`h` itself for
    /// the self-attention).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn project(&self, h: &Tensor, kv: &Tensor) -> CoreResult<(Tensor, Tensor, Tensor)> {
        let split = |l: &Linear, x: &Tensor| split_heads(&l.forward(x)?, self.heads, self.head_dim);
        Ok((
            split(&self.q_proj, h)?,
            split(&self.k_proj, kv)?,
            split(&self.v_proj, kv)?,
        ))
    }

    /// The positions this layer's cache holds before the update.
    ///
    /// # Errors
    /// A cache layer of another kind.
    pub fn past_length(&self, cache: &DynamicCache) -> CoreResult<SymInt> {
        match cache.layers.get(self.layer) {
            Some(l) => l.get_seq_length().map_err(|e| core_error(MODEL, e)),
            None => Ok(SymInt::new(0)),
        }
    }

    /// The rotation at `position_ids` with tables of `rotary_len` rows, the cache update and
    /// the attention with `mask`: `[b, s, hidden]`.
    ///
    /// # Errors
    /// Any error of the ops.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        (q, k, v): (Tensor, Tensor, Tensor),
        rotary_len: &SymInt,
        position_ids: &Tensor,
        mask: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let (cos, sin) = {
            let _r = scope("rotary_emb");
            self.rotary_emb.forward(&v, rotary_len)?
        };
        let (q, k) = apply_rotary_at(&q, &k, &cos, &sin, position_ids)?;
        let (k, v) = cache
            .update(&k, &v, self.layer)
            .map_err(|e| core_error(MODEL, e))?;
        self.output(&q, &k, &v, mask)
    }

    /// `o_proj` of the attention `[b, s, hidden]`.
    fn output(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> CoreResult<Tensor> {
        let scaling = (self.head_dim as f64).powf(-0.5);
        let out = eager_attention_forward(q, k, v, mask, scaling, 1)?;
        let out = out.reshape(vec![q.size(0)?, q.size(2)?, SymInt::new(-1)])?;
        self.o_proj.forward(&out)
    }

    /// The self-attention of `hidden_states` over the cached and new positions, as
    /// transformers 4.x wrote it: `kv_seq_len = key_len + cache_position[0]` and the tables
    /// asked for `max(kv_seq_len, q_len)`, a comparison of a value of the data.
    ///
    /// # Errors
    /// [`onnx_diagnostic_core::Error::DataDependent`] when exported without the patch; any
    /// error of the ops.
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        attention_mask: &Tensor,
        position_ids: &Tensor,
        cache_position: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let qkv = self.project(hidden_states, hidden_states)?;
        let q_len = hidden_states.size(1)?;
        // kv_seq_len = key_states.shape[-2]; kv_seq_len += cache_position[0]
        let kv_seq_len = cache_position
            .select(0, 0)?
            .add_scalar(qkv.1.concrete_shape()[2])?;
        // max(kv_seq_len, q_len): Python compares the tensor with the length.
        let rotary_len = if kv_seq_len.lt_scalar(q_len.hint())?.to_bool()? {
            q_len
        } else {
            SymInt::new(kv_seq_len.to_vec_i64()?[0])
        };
        self.attend(qkv, &rotary_len, position_ids, attention_mask, cache)
    }

    /// The cross-attention of `h` `[b, s, hidden]` to the image features `[b, n, embed_dim]`
    /// with the additive `mask` `[b, 1, s, n]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn cross(&self, h: &Tensor, image: &Tensor, mask: &Tensor) -> CoreResult<Tensor> {
        let (q, k, v) = self.project(h, image)?;
        let (q, k) = match &self.qk_layer_norms {
            Some((qn, kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            None => (q, k),
        };
        self.output(&q, &k, &v, mask)
    }
}

/// `IdeficsMLP`: `down(act(gate(x)) * up(x))`, no biases.
#[derive(Clone, Debug)]
struct IdeficsMLP {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl IdeficsMLP {
    fn load(vb: &VarBuilder<'_>, c: &IdeficsConfig) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Self {
            gate_proj: Linear::load(vb, "gate_proj", h, i, false)?,
            up_proj: Linear::load(vb, "up_proj", h, i, false)?,
            down_proj: Linear::load(vb, "down_proj", i, h, false)?,
            act: Activation::from_name(MODEL, &c.hidden_act)?,
        })
    }

    fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        let g = self.act.forward(&self.gate_proj.forward(x)?)?;
        self.down_proj.forward(&g.mul(&self.up_proj.forward(x)?)?)
    }
}

/// `IdeficsDecoderLayer`: pre-norm self-attention and MLP with residuals.
#[derive(Clone, Debug)]
pub struct IdeficsDecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: IdeficsAttention,
    post_attention_layernorm: RmsNorm,
    mlp: IdeficsMLP,
}

impl IdeficsDecoderLayer {
    /// Reads layer `i` under `vb` (`model.layers.{i}`).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub(crate) fn load(
        vb: &VarBuilder<'_>,
        c: &IdeficsConfig,
        i: usize,
        rotary: IdeficsEmbedding,
    ) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::load(vb, "input_layernorm", h, eps, false)?,
            self_attn: IdeficsAttention::load(&vb.pp("self_attn"), c, i, false, rotary)?,
            post_attention_layernorm: RmsNorm::load(vb, "post_attention_layernorm", h, eps, false)?,
            mlp: IdeficsMLP::load(&vb.pp("mlp"), c)?,
        })
    }

    /// The self-attention.
    pub fn self_attn(&self) -> &IdeficsAttention {
        &self.self_attn
    }

    pub(crate) fn forward(
        &self,
        h: &Tensor,
        mask: &Tensor,
        position_ids: &Tensor,
        cache_position: &Tensor,
        cache: &mut DynamicCache,
    ) -> CoreResult<Tensor> {
        let x = {
            let _n = scope("input_layernorm");
            self.input_layernorm.forward(h)?
        };
        let x = {
            let _a = scope("self_attn");
            self.self_attn
                .forward(&x, mask, position_ids, cache_position, cache)?
        };
        let h = h.add(&x)?;
        let x = {
            let _n = scope("post_attention_layernorm");
            self.post_attention_layernorm.forward(&h)?
        };
        h.add(&self.mlp.forward(&x)?)
    }
}

/// `IdeficsGatedCrossAttentionLayer`: a cross-attention to the image features and an MLP,
/// each scaled by `tanh` of its gate (`alpha_cross_attn`, `alpha_dense`) before its residual;
/// the cross-attention's output is zeroed for the tokens attending no image.
#[derive(Clone, Debug)]
pub struct IdeficsGatedCrossAttentionLayer {
    input_layernorm: RmsNorm,
    cross_attn: IdeficsAttention,
    post_attention_layernorm: RmsNorm,
    mlp: IdeficsMLP,
    alpha_cross_attn: Tensor,
    alpha_dense: Tensor,
}

impl IdeficsGatedCrossAttentionLayer {
    /// Reads layer `i` under `vb` (`model.gated_cross_attn_layers.{i}`).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub(crate) fn load(
        vb: &VarBuilder<'_>,
        c: &IdeficsConfig,
        i: usize,
        rotary: IdeficsEmbedding,
    ) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        let shape: &[i64] = match c.alpha() {
            AlphaType::Vector => &[1, 1, h],
            AlphaType::Float => &[1],
        };
        let init = match c.alpha_initializer.as_str() {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            _ => Init::NormalStd(c.alphas_initializer_range),
        };
        Ok(Self {
            input_layernorm: RmsNorm::load(vb, "input_layernorm", h, eps, false)?,
            cross_attn: IdeficsAttention::load(&vb.pp("cross_attn"), c, i, true, rotary)?,
            post_attention_layernorm: RmsNorm::load(vb, "post_attention_layernorm", h, eps, false)?,
            mlp: IdeficsMLP::load(&vb.pp("mlp"), c)?,
            alpha_cross_attn: vb.get("alpha_cross_attn", shape, init)?,
            alpha_dense: vb.get("alpha_dense", shape, init)?,
        })
    }

    /// The layer on `h` with the image features `[b, n, embed_dim]`, their additive mask
    /// `[b, 1, s, n]` and the gate `[b, s]` (0 for a token attending no image).
    ///
    /// # Errors
    /// Any error of the ops.
    pub(crate) fn forward(
        &self,
        h: &Tensor,
        image: &Tensor,
        image_mask: &Tensor,
        gate: &Tensor,
    ) -> CoreResult<Tensor> {
        let x = {
            let _n = scope("input_layernorm");
            self.input_layernorm.forward(h)?
        };
        let x = {
            let _a = scope("cross_attn");
            self.cross_attn.cross(&x, image, image_mask)?
        };
        let x = x.masked_fill(&gate.eq_scalar(0.0)?.unsqueeze(-1)?, 0.0)?;
        let h = h.add(&self.alpha_cross_attn.tanh()?.mul(&x)?)?;
        let x = {
            let _n = scope("post_attention_layernorm");
            self.post_attention_layernorm.forward(&h)?
        };
        let x = self.mlp.forward(&x)?;
        h.add(&self.alpha_dense.tanh()?.mul(&x)?)
    }
}

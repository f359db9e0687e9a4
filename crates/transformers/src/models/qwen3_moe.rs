//! Qwen3Moe, as transformers 5.23 writes it (`models/qwen3_moe/modeling_qwen3_moe.py`):
//! Qwen3's attention (RMSNorm of each query and key head) on Llama's decoder, with a sparse
//! mixture-of-experts MLP ([`Qwen3MoeSparseMoeBlock`]) on the layers
//! [`Config::is_sparse_layer`] selects (`mlp_only_layers`, `decoder_sparse_step`) and
//! `Qwen3MoeMLP` (Llama's gated MLP of `intermediate_size`) on the others. Mixtral's block is
//! the same struct ([`crate::models::mixtral`]).
//!
//! The block is written as transformers' eager experts path (`Qwen3MoeExperts.forward` with
//! `experts_implementation="eager"`): `one_hot` of the chosen experts, `nonzero` of the experts
//! some token was routed to, then a loop over those experts only, each on its tokens
//! (`torch.where` of its mask), added back with `index_add`. The loop's length is the
//! data-dependent count `u0`: an export of this code fails with
//! [`onnx_diagnostic_core::Error::DataDependent`] naming the loop's line, as torch.export
//! does; crates/patch-transformers' `patched_Qwen3MoeSparseMoeBlock.forward` makes it export.
//!
//! Weights: the model holds each layer's experts fused, as transformers 5.23 does in memory
//! (`mlp.experts.gate_up_proj` `[experts, 2 * inner, hidden]`, `mlp.experts.down_proj`
//! `[experts, hidden, inner]`, `mlp.gate.weight` `[experts, hidden]`), which is what
//! `named_parameters` and the ONNX initializers are named; a checkpoint stores them per expert
//! (`mlp.experts.{e}.gate_proj.weight`, `up_proj`, `down_proj`; Mixtral's
//! `block_sparse_moe.experts.{e}.w1`/`w3`/`w2`), as `save_pretrained` writes them back, and
//! both forms load.

use onnx_diagnostic_core::{Result as CoreResult, SymInt, Tensor, scope};
use tch::Kind;

use super::{
    causal_lm,
    llama::{Arch, Config},
};
use crate::{
    error::Result,
    nn::Activation,
    weights::{Init, VarBuilder},
};

causal_lm!(
    /// `Qwen3MoeForCausalLM`.
    Qwen3MoeForCausalLM,
    Arch::Qwen3Moe,
    [
        Qwen3MoeModel,
        Qwen3MoeDecoderLayer,
        Qwen3MoeAttention,
        Qwen3MoeMLP,
        Qwen3MoeRMSNorm,
        Qwen3MoeRotaryEmbedding
    ]
);

/// `Qwen3MoeTopKRouter` (`MixtralTopKRouter`): the router's linear layer and its top-k.
#[derive(Clone, Debug)]
pub struct Qwen3MoeTopKRouter {
    weight: Tensor,
    top_k: i64,
    /// Qwen3Moe's `norm_topk_prob`; Mixtral always renormalises.
    norm_topk_prob: bool,
    /// Qwen3Moe casts the routing weights back to the model's type; Mixtral keeps them in
    /// float32.
    cast_back: bool,
}

impl Qwen3MoeTopKRouter {
    /// `(router_logits [tokens, experts], routing weights [tokens, k], chosen experts [tokens,
    /// k])` of the hidden states `[tokens, hidden]`: softmax in float32, top-k, renormalised
    /// when the config says so.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, h: &Tensor) -> CoreResult<(Tensor, Tensor, Tensor)> {
        let _s = scope("gate");
        let logits = h.linear(&self.weight, None)?;
        let probs = logits.to_kind(Kind::Float)?.softmax(-1)?;
        let (mut top, idx) = probs.topk(self.top_k, -1, true, true)?;
        if self.norm_topk_prob {
            top = top.div(&top.sum(&[-1], true)?)?;
        }
        if self.cast_back {
            top = top.to_kind(logits.kind())?;
        }
        Ok((logits, top, idx))
    }
}

/// `Qwen3MoeExperts` (`MixtralExperts`): the experts' weights stored as 3-D tensors.
#[derive(Clone, Debug)]
pub struct Qwen3MoeExperts {
    /// `[experts, 2 * inner, hidden]`: each expert's gate then up projection.
    gate_up_proj: Tensor,
    /// `[experts, hidden, inner]`.
    down_proj: Tensor,
    act: Activation,
    num_experts: i64,
}

impl Qwen3MoeExperts {
    /// The number of experts.
    pub fn num_experts(&self) -> i64 {
        self.num_experts
    }

    /// Expert `e` (an index, or a 0-d tensor) on its tokens `[n, hidden]`: `down(act(gate(x))
    /// * up(x))`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn expert_forward<'i>(
        &self,
        e: impl Into<onnx_diagnostic_core::TensorIndex<'i>> + Clone,
        x: &Tensor,
    ) -> CoreResult<Tensor> {
        let gate_up = x.linear(&self.gate_up_proj.select(0, e.clone())?, None)?;
        let parts = gate_up.chunk(2, -1)?;
        let h = self.act.forward(&parts[0])?.mul(&parts[1])?;
        h.linear(&self.down_proj.select(0, e)?, None)
    }

    /// Every expert on every token `[tokens, hidden]`: `[experts, tokens, hidden]` (the dense
    /// form, for comparisons).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn all_experts_forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let gate_up = x
            .unsqueeze(0)?
            .matmul(&self.gate_up_proj.transpose(1, 2)?)?;
        let parts = gate_up.chunk(2, -1)?;
        let h = self.act.forward(&parts[0])?.mul(&parts[1])?;
        h.matmul(&self.down_proj.transpose(1, 2)?)
    }

    /// transformers' eager loop: only the experts some token was routed to, each on its
    /// tokens.
    fn forward(
        &self,
        h: &Tensor,
        top_k_index: &Tensor,
        top_k_weights: &Tensor,
    ) -> CoreResult<Tensor> {
        let _s = scope("experts");
        let mut out = Tensor::zeros(h.shape(), h.kind(), h.device())?;
        // `num_classes=num_experts + 1`, as transformers writes it (the last class is the
        // padding expert of expert parallelism, skipped below).
        let expert_mask = top_k_index
            .one_hot(self.num_experts + 1)?
            .permute(&[2, 1, 0])?;
        let per_expert = expert_mask.sum(&[-1, -2], false)?;
        record_counts(&per_expert, self.num_experts);
        let expert_hit = per_expert.gt_scalar(0)?.nonzero()?;
        // `for expert_idx in expert_hit:` iterates over a data-dependent number of experts.
        let hit = expert_hit.size(0)?.guard_int()?;
        for j in 0..hit {
            let e = expert_hit.select(0, j)?.select(0, 0)?.item_f64()? as i64;
            if e == self.num_experts {
                continue;
            }
            let where_ = expert_mask.select(0, e)?.nonzero_tuple()?;
            let (top_k_pos, token_idx) = (&where_[0], &where_[1]);
            let current = self.expert_forward(e, &h.index_select(0, token_idx)?)?;
            let w = top_k_weights
                .index(&[token_idx, top_k_pos])?
                .unsqueeze(-1)?;
            let current = current.mul(&w)?.to_kind(out.kind())?;
            out = out.index_add(0, token_idx, &current)?;
        }
        Ok(out)
    }
}

thread_local! {
    static COUNTS: std::cell::RefCell<Option<Vec<Vec<i64>>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns, with its result, how many tokens each expert got in each sparse block
/// `f` ran eagerly in this thread, in call order (one list of `num_experts` counts per block
/// call; what transformers' router hooks give). Blocks running inside an export record
/// nothing: their counts are not known there.
pub fn record_expert_counts<R>(f: impl FnOnce() -> R) -> (R, Vec<Vec<i64>>) {
    let outer = COUNTS.with_borrow_mut(|c| c.replace(Vec::new()));
    let r = f();
    let counts = COUNTS
        .with_borrow_mut(|c| std::mem::replace(c, outer))
        .unwrap_or_default();
    (r, counts)
}

fn record_counts(per_expert: &Tensor, num_experts: i64) {
    if COUNTS.with_borrow(Option::is_none) {
        return;
    }
    // Fails (and records nothing) during an export, where the values are unknown.
    if let Ok(v) = per_expert.to_vec_f32() {
        let counts = v
            .iter()
            .take(num_experts as usize)
            .map(|c| *c as i64)
            .collect();
        COUNTS.with_borrow_mut(|c| c.get_or_insert_with(Vec::new).push(counts));
    }
}

/// `Qwen3MoeSparseMoeBlock` (also `MixtralSparseMoeBlock`): the router then the experts on the
/// flattened tokens.
#[derive(Clone, Debug)]
pub struct Qwen3MoeSparseMoeBlock {
    gate: Qwen3MoeTopKRouter,
    experts: Qwen3MoeExperts,
}

impl Qwen3MoeSparseMoeBlock {
    /// Loads the block of a layer (`vb` is the layer's view): fused weights under `mlp`, a
    /// checkpoint's pieces where `stored` says.
    pub(crate) fn load(vb: &VarBuilder<'_>, cfg: &Config, stored: &ExpertNames) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.expert_intermediate_size());
        let e = cfg.num_experts.unwrap_or(0);
        let piece = |k: i64, name: &str, shape: [i64; 2]| {
            (
                format!("{}.{k}.{name}.weight", stored.experts),
                shape.to_vec(),
            )
        };
        let gate_up: Vec<_> = (0..e)
            .map(|k| vec![piece(k, stored.gate, [i, h]), piece(k, stored.up, [i, h])])
            .collect();
        let down: Vec<_> = (0..e)
            .map(|k| vec![piece(k, stored.down, [h, i])])
            .collect();
        let router = vec![vec![(format!("{}.weight", stored.router), vec![e, h])]];
        let fused = |name: &str, shape: &[i64], parts: &[Vec<(String, Vec<i64>)>], stack| {
            vb.get_fused(name, shape, Init::Normal, parts, stack)
        };
        Ok(Self {
            gate: Qwen3MoeTopKRouter {
                weight: fused("mlp.gate.weight", &[e, h], &router, false)?,
                top_k: cfg.num_experts_per_tok.unwrap_or(1),
                norm_topk_prob: cfg.arch == Arch::Mixtral || cfg.norm_topk_prob.unwrap_or(false),
                cast_back: cfg.arch != Arch::Mixtral,
            },
            experts: Qwen3MoeExperts {
                gate_up_proj: fused("mlp.experts.gate_up_proj", &[e, 2 * i, h], &gate_up, true)?,
                down_proj: fused("mlp.experts.down_proj", &[e, h, i], &down, true)?,
                act: cfg.activation()?,
                num_experts: e,
            },
        })
    }

    /// The router.
    pub fn gate(&self) -> &Qwen3MoeTopKRouter {
        &self.gate
    }

    /// The experts.
    pub fn experts(&self) -> &Qwen3MoeExperts {
        &self.experts
    }

    /// The block on `[batch, seq, hidden]`, under the scope `mlp`.
    ///
    /// # Errors
    /// Any error of the ops; [`onnx_diagnostic_core::Error::DataDependent`] during an export
    /// (the loop over the experts hit, see the module doc).
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(&self, hidden_states: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("mlp");
        let r = self.route(hidden_states)?;
        let out = self.experts.forward(&r.tokens, &r.experts, &r.weights)?;
        out.reshape(hidden_states.shape())
    }

    /// The first half of the block's forward, shared by its export forms: the hidden states
    /// `[..., hidden]` flattened to tokens `[tokens, hidden]`, and the router's top-k weights
    /// and experts `[tokens, k]`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn route(&self, hidden_states: &Tensor) -> CoreResult<Routing> {
        let tokens = hidden_states.reshape(vec![SymInt::new(-1), hidden_states.size(-1)?])?;
        let (_, weights, experts) = self.gate.forward(&tokens)?;
        Ok(Routing {
            tokens,
            weights,
            experts,
        })
    }
}

/// What [`Qwen3MoeSparseMoeBlock::route`] gives.
#[derive(Clone, Debug)]
pub struct Routing {
    /// The hidden states as `[tokens, hidden]`.
    pub tokens: Tensor,
    /// The routing weights of the chosen experts, `[tokens, k]` (float32 for Mixtral).
    pub weights: Tensor,
    /// The chosen experts, `[tokens, k]` (int64).
    pub experts: Tensor,
}

/// Where a checkpoint stores a layer's experts, relative to the layer: Qwen3Moe's
/// `mlp.experts.{e}.gate_proj/up_proj/down_proj` and `mlp.gate`, Mixtral's
/// `block_sparse_moe.experts.{e}.w1/w3/w2` and `block_sparse_moe.gate`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExpertNames {
    pub(crate) experts: &'static str,
    pub(crate) gate: &'static str,
    pub(crate) up: &'static str,
    pub(crate) down: &'static str,
    pub(crate) router: &'static str,
}

impl ExpertNames {
    /// The layout of `save_pretrained` for the family.
    pub(crate) fn of(arch: Arch) -> Self {
        match arch {
            Arch::Mixtral => Self {
                experts: "block_sparse_moe.experts",
                gate: "w1",
                up: "w3",
                down: "w2",
                router: "block_sparse_moe.gate",
            },
            _ => Self {
                experts: "mlp.experts",
                gate: "gate_proj",
                up: "up_proj",
                down: "down_proj",
                router: "mlp.gate",
            },
        }
    }
}

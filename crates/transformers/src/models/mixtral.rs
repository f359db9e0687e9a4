//! Mixtral, as transformers 5.23 writes it (`models/mixtral/modeling_mixtral.py`): Mistral's
//! attention (the sliding-window mask on every layer when `sliding_window` is set) with a
//! top-`num_experts_per_tok` sparse mixture of `num_local_experts` experts on every layer. Its
//! `MixtralSparseMoeBlock` is Qwen3Moe's block
//! ([`crate::models::qwen3_moe::Qwen3MoeSparseMoeBlock`]) with the routing weights always
//! renormalised and kept in float32, the experts of `intermediate_size`; checkpoints store them
//! as `block_sparse_moe.experts.{e}.w1` (gate), `w3` (up), `w2` (down) and
//! `block_sparse_moe.gate`, which load into the fused `mlp.experts.*` weights.

use super::{causal_lm, llama::Arch};

causal_lm!(
    /// `MixtralForCausalLM`.
    MixtralForCausalLM,
    Arch::Mixtral,
    [
        MixtralModel,
        MixtralDecoderLayer,
        MixtralAttention,
        MixtralMLP,
        MixtralRMSNorm,
        MixtralRotaryEmbedding
    ]
);

/// `MixtralSparseMoeBlock` (the same struct as Qwen3Moe's block, and the same patch).
pub type MixtralSparseMoeBlock = super::qwen3_moe::Qwen3MoeSparseMoeBlock;

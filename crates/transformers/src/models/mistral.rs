//! Mistral, as transformers 5.23 writes it (`models/mistral/modeling_mistral.py`): Llama's
//! decoder (RMSNorm, rotary embedding, grouped-query attention, gated MLP, the same weight
//! names) with one difference, the sliding-window causal mask (`kv_idx > q_idx -
//! sliding_window` on top of the causal mask) when the config sets `sliding_window`.
//!
//! The cache stays a [`crate::DynamicCache`] of full layers: transformers gives a
//! sliding-window model `DynamicSlidingWindowLayer`s (in crate::cache_utils, checked against
//! transformers), which keep only the window and give the same attention results; using them
//! here needs the mask to take the layer's offset (`get_mask_sizes`), left to the models issue.

use super::{causal_lm, llama::Arch};

causal_lm!(
    /// `MistralForCausalLM`.
    MistralForCausalLM,
    Arch::Mistral,
    [
        MistralModel,
        MistralDecoderLayer,
        MistralAttention,
        MistralMLP,
        MistralRMSNorm,
        MistralRotaryEmbedding
    ]
);

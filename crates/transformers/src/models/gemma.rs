//! Gemma (1), as transformers 5.23 writes it (`models/gemma/modeling_gemma.py`): Llama's
//! decoder with
//! - embeddings multiplied by `sqrt(hidden_size)` (`GemmaTextScaledWordEmbedding`, a float32
//!   scale),
//! - `GemmaRMSNorm`: `x / sqrt(mean(x^2) + eps) * (1 + weight)`, all in float32 (untrained
//!   norms are zeros),
//! - the tanh GELU (`hidden_act="gelu"` in old configs means it, as `GemmaConfig` decides),
//! - `GemmaConfig`'s defaults: tied embeddings, `head_dim` 256.

use super::{causal_lm, llama::Arch};

causal_lm!(
    /// `GemmaForCausalLM`.
    GemmaForCausalLM,
    Arch::Gemma,
    [
        GemmaModel,
        GemmaDecoderLayer,
        GemmaAttention,
        GemmaMLP,
        GemmaRMSNorm,
        GemmaRotaryEmbedding
    ]
);

//! Qwen2, as transformers 5.23 writes it (`models/qwen2/modeling_qwen2.py`): Llama's decoder
//! with biases on the q, k and v projections (none on o), whatever `attention_bias` says.
//!
//! `use_sliding_window=true` (sliding layers from `max_window_layers` on) is refused by the
//! config with a typed error; the published Qwen2 checkpoints leave it off, and then
//! transformers ignores `sliding_window`, as this file does.

use super::{causal_lm, llama::Arch};

causal_lm!(
    /// `Qwen2ForCausalLM`.
    Qwen2ForCausalLM,
    Arch::Qwen2,
    [
        Qwen2Model,
        Qwen2DecoderLayer,
        Qwen2Attention,
        Qwen2MLP,
        Qwen2RMSNorm,
        Qwen2RotaryEmbedding
    ]
);

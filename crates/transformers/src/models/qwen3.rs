//! Qwen3, as transformers 5.23 writes it (`models/qwen3/modeling_qwen3.py`): Llama's decoder
//! with an RMSNorm over each query and key head (`q_norm`, `k_norm`, applied before the rotary
//! embedding), `head_dim` 128 unless the config gives it, biases on q/k/v/o as
//! `attention_bias` says, and Qwen2's sliding layers (`use_sliding_window`,
//! `max_window_layers`, `layer_types`).

use super::{causal_lm, llama::Arch};

causal_lm!(
    /// `Qwen3ForCausalLM`.
    Qwen3ForCausalLM,
    Arch::Qwen3,
    [
        Qwen3Model,
        Qwen3DecoderLayer,
        Qwen3Attention,
        Qwen3MLP,
        Qwen3RMSNorm,
        Qwen3RotaryEmbedding
    ]
);

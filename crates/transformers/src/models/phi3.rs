//! Phi-3, as transformers 5.23 writes it (`models/phi3/modeling_phi3.py`): Llama's decoder with
//! the q/k/v projections fused into `qkv_proj` and the gate/up projections into `gate_up_proj`
//! (their outputs split along the last dim, as transformers slices and chunks them), no
//! biases, and the sliding-window mask when `sliding_window` is set (as Mistral).
//!
//! A `partial_rotary_factor` other than 1.0 is refused by the config with a typed error, and so
//! are the rope types not implemented yet (`longrope` of the 128k checkpoints).

use super::{causal_lm, llama::Arch};

causal_lm!(
    /// `Phi3ForCausalLM`.
    Phi3ForCausalLM,
    Arch::Phi3,
    [
        Phi3Model,
        Phi3DecoderLayer,
        Phi3Attention,
        Phi3MLP,
        Phi3RMSNorm,
        Phi3RotaryEmbedding
    ]
);

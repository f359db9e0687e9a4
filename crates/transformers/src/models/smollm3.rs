//! SmolLM3, as transformers 5.23 writes it (`models/smollm3/modeling_smollm3.py`): Llama's
//! decoder whose layers marked 0 in `no_rope_layers` (every fourth by default) take no rotary
//! embedding (NoPE), with `SmolLM3Config`'s defaults (tied embeddings). `use_sliding_window`
//! (sliding-window NoPE layers) is refused with a typed error until the sliding caches exist.

use super::{causal_lm, llama::Arch};

causal_lm!(
    /// `SmolLM3ForCausalLM`.
    SmolLM3ForCausalLM,
    Arch::SmolLM3,
    [
        SmolLM3Model,
        SmolLM3DecoderLayer,
        SmolLM3Attention,
        SmolLM3MLP,
        SmolLM3RMSNorm,
        SmolLM3RotaryEmbedding
    ]
);

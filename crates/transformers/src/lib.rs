//! Hugging Face transformers architectures written on the engine's `Tensor`, reading
//! `config.json` and safetensors checkpoints as they are (DESIGN.md section 5: candle-like model
//! files, HF class and weight names, explicit caches).
//!
//! - [`models::llama`]: `LlamaForCausalLM` and its pieces, numerically checked against
//!   transformers 5.23 (tests/parity).
//! - [`cache_utils`]: the KV caches (`DynamicCache`, `StaticCache`, ...), explicit inputs and
//!   outputs of the models; [`modeling_outputs`]: the output classes (`CausalLMOutputWithPast`).
//! - [`catalog`]: model ids → configs, offline; [`tasks`]: the text-generation input sets.
//! - [`weights`]: checkpoint loading (one safetensors file or a sharded index) and untrained
//!   initialisation from a seed.

pub mod cache_utils;
pub mod catalog;
pub mod error;
pub mod modeling_outputs;
pub mod models;
pub mod tasks;
pub mod weights;

pub use cache_utils::{
    CacheLayer, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer, EncoderDecoderCache,
    HybridCache, LayerKind, MambaCache, SlidingWindowCache, StaticCache, StaticLayer,
    StaticSlidingWindowLayer, make_dynamic_cache, make_dynamic_cache_with_layers,
    make_encoder_decoder_cache, make_hybrid_cache, make_mamba_cache, make_sliding_window_cache,
    make_static_cache,
};
pub use error::{Error, Result};
pub use modeling_outputs::{BaseModelOutput, CausalLMOutputWithPast, Seq2SeqLMOutput};

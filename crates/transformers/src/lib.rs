//! Hugging Face transformers architectures written on the engine's `Tensor`, reading
//! `config.json` and safetensors checkpoints as they are (DESIGN.md section 5: candle-like model
//! files, HF class and weight names, explicit caches).
//!
//! - [`models`]: one file per architecture (`LlamaForCausalLM` and the families sharing its
//!   decoder), numerically checked against transformers 5.23 (tests/parity); [`auto`]: the
//!   `AutoConfig` / `AutoModelForCausalLM` registry that picks the class of a config.
//! - Shared layers: [`nn`] (Linear, Embedding, RMS norms, activations),
//!   [`modeling_rope_utils`], [`masking_utils`], [`modeling_attention`].
//! - [`cache_utils`]: the KV caches (`DynamicCache`, `StaticCache`, ...), explicit inputs and
//!   outputs of the models; [`modeling_outputs`]: the output classes (`CausalLMOutputWithPast`).
//! - [`catalog`]: model ids → configs, offline; [`tasks`]: the text-generation input sets.
//! - [`weights`]: the one weight source (`VarBuilder`), reading a checkpoint memory-mapped
//!   ([`checkpoint`], one safetensors file or a sharded index) or drawing untrained weights
//!   from a seed ([`init`]).

pub mod auto;
pub mod cache_utils;
pub mod catalog;
pub mod checkpoint;
pub mod error;
pub mod init;
pub mod masking_utils;
pub mod modeling_attention;
pub mod modeling_outputs;
pub mod modeling_rope_utils;
pub mod models;
pub mod nn;
pub mod tasks;
pub mod vision_utils;
pub mod weights;

pub use auto::{AutoConfig, AutoModel, AutoModelForCausalLM, CausalLM, TaskModel, TextGeneration};

pub use cache_utils::{
    CacheLayer, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer, EncoderDecoderCache,
    HybridCache, KeyPositions, LayerKind, MambaCache, SlidingWindowCache, StaticCache, StaticLayer,
    StaticSlidingWindowLayer, make_dynamic_cache, make_dynamic_cache_with_layers,
    make_encoder_decoder_cache, make_hybrid_cache, make_mamba_cache, make_sliding_window_cache,
    make_static_cache,
};
pub use error::{Error, Result};
pub use modeling_outputs::{
    BaseModelOutput, CausalLMOutputWithPast, Seq2SeqLMOutput, Seq2SeqModelOutput,
};

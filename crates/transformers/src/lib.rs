//! Hugging Face transformers architectures written on the engine's `Tensor`, reading
//! `config.json` and safetensors checkpoints as they are (DESIGN.md section 5: candle-like model
//! files, HF class and weight names, explicit caches).
//!
//! - [`models::llama`]: `LlamaForCausalLM` and its pieces, numerically checked against
//!   transformers 5.23 (tests/parity).
//! - [`cache_utils::DynamicCache`]: the explicit KV cache, input and output of the models.
//! - [`catalog`]: model ids → configs, offline; [`tasks`]: the text-generation input sets.
//! - [`weights`]: checkpoint loading (one safetensors file or a sharded index) and untrained
//!   initialisation from a seed.

pub mod cache_utils;
pub mod catalog;
pub mod error;
pub mod models;
pub mod tasks;
pub mod weights;

pub use cache_utils::{DynamicCache, DynamicLayer};
pub use error::{Error, Result};

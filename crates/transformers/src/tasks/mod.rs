//! The tasks of the Python package's `tasks` module: the input sets `validate` makes for a
//! model and their dynamic shapes.
//!
//! - [`text_generation`]: decoder-only LLMs with a KV cache (the items are re-exported here);
//! - [`text2text_generation`]: encoder-decoders with an `EncoderDecoderCache`;
//! - [`feature_extraction`]: the feature-extraction and summarization sets of encoder-decoders
//!   (the source only, the decoder's inputs shifted from it);
//! - [`image_text_to_text`]: vision-language models (Qwen2-VL, Gemma3) with images and a KV
//!   cache;
//! - [`mask_generation`]: SAM's images with point and box prompts.

pub mod feature_extraction;
pub mod image_text_to_text;
pub mod mask_generation;
pub mod text2text_generation;
pub mod text_generation;

pub use text_generation::*;

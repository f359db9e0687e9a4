//! The KV caches of transformers' `cache_utils` (5.x layer design), explicit inputs and
//! outputs of the models' `forward`, and the `make_*_cache` helpers of onnx-diagnostic's
//! `helpers.cache_helper`.
//!
//! - Layers: [`DynamicLayer`] (grows by concatenation), [`DynamicSlidingWindowLayer`] (keeps
//!   the last `sliding_window - 1` positions), [`StaticLayer`] (preallocated `max_cache_len`
//!   positions written at the cache position), [`StaticSlidingWindowLayer`] (a static layer of
//!   `min(sliding_window, max_cache_len)` positions that rolls once full).
//! - Caches: [`DynamicCache`], [`StaticCache`], and the classes of transformers 4.x that the
//!   seeds still serialize: [`SlidingWindowCache`] (static, every layer sliding),
//!   [`HybridCache`] (static, sliding and full layers mixed), [`EncoderDecoderCache`] (a
//!   self-attention and a cross-attention cache), [`MambaCache`] (convolution and SSM states).
//!
//! Updates are functional (a layer's tensors are replaced, never written in place), which is
//! what an export records; transformers' in-place `index_copy_` becomes `index_put`.
//!
//! Each cache is a [`CustomObject`]: it crosses the export boundary through the serializers of
//! crates/serialization, flattened into `key_0, value_0, key_1, ...` (names
//! `past_key_values_key_0`, ...).
//!
//! Files: `layers` (the four layer kinds and their updates), `caches` (the cache classes),
//! `make` (the `make_*_cache` helpers).

mod caches;
mod layers;
mod make;

pub use caches::{
    DynamicCache, EncoderDecoderCache, HybridCache, MambaCache, SlidingWindowCache, StaticCache,
};
pub use layers::{
    CacheLayer, DynamicLayer, DynamicSlidingWindowLayer, KeyPositions, LayerKind, StaticLayer,
    StaticSlidingWindowLayer,
};
pub use make::{
    make_dynamic_cache, make_dynamic_cache_with_layers, make_encoder_decoder_cache,
    make_hybrid_cache, make_mamba_cache, make_sliding_window_cache, make_static_cache,
};

use crate::error::Error;

pub(crate) fn input_error(path: &str, reason: String) -> Error {
    Error::Core(onnx_diagnostic_core::Error::Input {
        path: path.to_owned(),
        reason,
    })
}

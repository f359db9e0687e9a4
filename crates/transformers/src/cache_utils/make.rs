//! The `make_*_cache` helpers of onnx-diagnostic's `helpers.cache_helper`.

use onnx_diagnostic_core::Tensor;

use super::{
    caches::{
        DynamicCache, EncoderDecoderCache, HybridCache, MambaCache, SlidingWindowCache,
        StaticCache, make_static_layers,
    },
    input_error,
    layers::{CacheLayer, LayerKind},
};
use crate::error::Result;

/// `make_dynamic_cache`: a [`DynamicCache`] of [`DynamicLayer`]s from `(key, value)` pairs.
pub fn make_dynamic_cache(pairs: Vec<(Tensor, Tensor)>) -> DynamicCache {
    DynamicCache::from_pairs(pairs)
}

/// `make_dynamic_cache(..., cls_layers=...)`: a [`DynamicCache`] whose layer `i` is of kind
/// `kinds[i]`, holding `pairs[i]` as they are.
///
/// # Errors
/// [`Error::Core`] when the numbers of pairs and kinds differ or a kind is not dynamic.
pub fn make_dynamic_cache_with_layers(
    pairs: Vec<(Tensor, Tensor)>,
    kinds: &[LayerKind],
) -> Result<DynamicCache> {
    if pairs.len() != kinds.len() {
        return Err(input_error(
            "make_dynamic_cache",
            format!("{} pairs for {} layer kinds", pairs.len(), kinds.len()),
        ));
    }
    let layers = pairs
        .into_iter()
        .zip(kinds)
        .map(|((k, v), kind)| match kind {
            LayerKind::Dynamic | LayerKind::DynamicSlidingWindow(_) => {
                CacheLayer::filled(*kind, k, v)
            }
            other => Err(input_error(
                "make_dynamic_cache",
                format!("a DynamicCache cannot hold a {}", other.class_name()),
            )),
        })
        .collect::<Result<_>>()?;
    Ok(DynamicCache {
        layers,
        cache_position: None,
    })
}

/// `make_static_cache`: a [`StaticCache`] of `max_cache_len` positions per layer, `pairs`
/// written from position 0.
///
/// # Errors
/// [`Error::Core`] when a pair is longer than `max_cache_len`; any error of the ops.
pub fn make_static_cache(pairs: Vec<(Tensor, Tensor)>, max_cache_len: i64) -> Result<StaticCache> {
    check_len(&pairs, max_cache_len, "make_static_cache")?;
    let kinds = vec![LayerKind::Static(max_cache_len); pairs.len()];
    make_static_layers(pairs, &kinds)
}

/// `make_sliding_window_cache`: a [`SlidingWindowCache`] whose window is the length of the
/// pairs (as the Python helper does), the pairs written in.
///
/// # Errors
/// Any error of the ops.
pub fn make_sliding_window_cache(pairs: Vec<(Tensor, Tensor)>) -> Result<SlidingWindowCache> {
    let window = match pairs.first() {
        Some((k, _)) => k.size(-2)?.hint(),
        None => 0,
    };
    let kinds = vec![LayerKind::StaticSlidingWindow(window, window); pairs.len()];
    Ok(SlidingWindowCache(make_static_layers(pairs, &kinds)?))
}

/// `make_hybrid_cache`: a [`HybridCache`] with layer `i` of kind `kinds[i]` (static, full or
/// sliding), `pairs[i]` written from position 0.
///
/// # Errors
/// [`Error::Core`] when the numbers differ, a kind is dynamic, or a pair is longer than its
/// layer.
pub fn make_hybrid_cache(pairs: Vec<(Tensor, Tensor)>, kinds: &[LayerKind]) -> Result<HybridCache> {
    if pairs.len() != kinds.len() {
        return Err(input_error(
            "make_hybrid_cache",
            format!("{} pairs for {} layer kinds", pairs.len(), kinds.len()),
        ));
    }
    for (i, ((k, _), kind)) in pairs.iter().zip(kinds).enumerate() {
        let cap = match kind {
            LayerKind::Static(m) => *m,
            LayerKind::StaticSlidingWindow(m, w) => (*m).min(*w),
            other => {
                return Err(input_error(
                    "make_hybrid_cache",
                    format!(
                        "layer {i}: a HybridCache cannot hold a {}",
                        other.class_name()
                    ),
                ));
            }
        };
        if k.size(-2)?.hint() > cap {
            return Err(input_error(
                "make_hybrid_cache",
                format!(
                    "layer {i}: {} positions for a layer of {cap}",
                    k.size(-2)?.hint()
                ),
            ));
        }
    }
    Ok(HybridCache(make_static_layers(pairs, kinds)?))
}

/// `make_encoder_decoder_cache`.
pub fn make_encoder_decoder_cache(
    self_attention_cache: DynamicCache,
    cross_attention_cache: DynamicCache,
) -> EncoderDecoderCache {
    EncoderDecoderCache {
        self_attention_cache,
        cross_attention_cache,
    }
}

/// `make_mamba_cache`: a [`MambaCache`] from `(conv_state, ssm_state)` pairs, one per layer.
pub fn make_mamba_cache(states: Vec<(Tensor, Tensor)>) -> MambaCache {
    let (conv_states, ssm_states) = states.into_iter().unzip();
    MambaCache {
        conv_states,
        ssm_states,
    }
}

fn check_len(pairs: &[(Tensor, Tensor)], max_cache_len: i64, what: &str) -> Result<()> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        let n = k.size(-2)?.hint();
        if n > max_cache_len {
            return Err(input_error(
                what,
                format!("layer {i}: {n} positions but max_cache_len={max_cache_len}"),
            ));
        }
    }
    Ok(())
}

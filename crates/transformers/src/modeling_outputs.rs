//! The output classes of transformers' `modeling_outputs` that the models return and the
//! seeds serialize: dataclasses of optional fields, flattened into the fields that are set
//! (`logits`, `past_key_values_key_0`, ...).

use onnx_diagnostic_core::{Inputs, Result as CoreResult, Tensor, Value, dataclass};

use crate::{
    cache_utils::{DynamicCache, HybridCache, SlidingWindowCache, StaticCache},
    error::core_error,
};

/// The forward signature of the causal LMs: `input_ids`, `attention_mask`, `position_ids`,
/// `past_key_values` (transformers' `*ForCausalLM.forward`, its first arguments), and
/// `cache_position`, the positions of the new tokens, which transformers 4 took and a static
/// cache needs across an export (its flattened tensors do not say how many positions they
/// hold).
pub fn causal_lm_signature() -> Vec<String> {
    [
        "input_ids",
        "attention_mask",
        "position_ids",
        "past_key_values",
        "cache_position",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The class of the `past_key_values` a causal LM was given, to give the grown cache back as
/// the same class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CacheClass {
    Dynamic,
    Static,
    Hybrid,
    SlidingWindow,
}

/// The layers of a `past_key_values` input of any key/value cache class, and its class.
fn cache_layers(value: &Value) -> Result<Option<(CacheClass, DynamicCache)>, crate::Error> {
    if let Value::None = value {
        return Ok(None);
    }
    let wrap = |layers: &[crate::cache_utils::CacheLayer]| DynamicCache {
        layers: layers.to_vec(),
        cache_position: None,
    };
    if let Some(c) = value.downcast_ref::<DynamicCache>() {
        return Ok(Some((CacheClass::Dynamic, c.clone())));
    }
    if let Some(c) = value.downcast_ref::<StaticCache>() {
        return Ok(Some((CacheClass::Static, wrap(&c.layers))));
    }
    if let Some(c) = value.downcast_ref::<HybridCache>() {
        return Ok(Some((CacheClass::Hybrid, wrap(&c.0.layers))));
    }
    if let Some(c) = value.downcast_ref::<SlidingWindowCache>() {
        return Ok(Some((CacheClass::SlidingWindow, wrap(&c.0.layers))));
    }
    DynamicCache::from_value(value).map(|c| c.map(|c| (CacheClass::Dynamic, c)))
}

/// The `forward` of a causal LM on bound inputs: `step(input_ids, attention_mask,
/// position_ids, past_key_values)` gives the logits and the grown cache, returned as
/// `CausalLMOutputWithPast`. A static cache (`StaticCache`, `HybridCache`,
/// `SlidingWindowCache`) runs as its layers and comes back as its class; `cache_position`
/// reaches its layers through [`DynamicCache::cache_position`].
///
/// # Errors
/// A `past_key_values` that is not a key/value cache, a `cache_position` that is not a tensor,
/// or any error of `step`.
pub(crate) fn causal_lm_forward(
    model: &str,
    inputs: &Inputs,
    step: impl FnOnce(
        &Tensor,
        Option<&Tensor>,
        Option<&Tensor>,
        Option<DynamicCache>,
    ) -> CoreResult<(Tensor, DynamicCache)>,
) -> CoreResult<Value> {
    let given = cache_layers(inputs.get("past_key_values")).map_err(|e| core_error(model, e))?;
    let cache_position = inputs.opt_tensor("cache_position")?;
    let (class, cache) = match given {
        Some((class, mut c)) => {
            c.cache_position = cache_position.cloned();
            (class, Some(c))
        }
        None => (CacheClass::Dynamic, None),
    };
    let (logits, mut cache) = step(
        inputs.tensor("input_ids")?,
        inputs.opt_tensor("attention_mask")?,
        inputs.opt_tensor("position_ids")?,
        cache,
    )?;
    cache.cache_position = None;
    let past = match class {
        CacheClass::Dynamic => Value::custom(cache),
        CacheClass::Static => Value::custom(StaticCache {
            layers: cache.layers,
        }),
        CacheClass::Hybrid => Value::custom(HybridCache(StaticCache {
            layers: cache.layers,
        })),
        CacheClass::SlidingWindow => Value::custom(SlidingWindowCache(StaticCache {
            layers: cache.layers,
        })),
    };
    Ok(Value::custom(CausalLMOutputWithPast {
        logits: Some(Value::Tensor(logits)),
        past_key_values: Some(past),
        ..CausalLMOutputWithPast::default()
    }))
}

dataclass! {
    /// `BaseModelOutput`: the hidden states of an encoder (or a base model).
    BaseModelOutput {
        /// `[batch, seq, hidden]`.
        last_hidden_state,
        /// The hidden states of every layer, when asked for.
        hidden_states,
        /// The attention weights of every layer, when asked for.
        attentions,
    }
}

dataclass! {
    /// `CausalLMOutputWithPast`: what a decoder-only LLM returns.
    CausalLMOutputWithPast {
        /// The language-modelling loss, when labels are given.
        loss,
        /// `[batch, seq, vocab]`.
        logits,
        /// The grown cache (`DynamicCache`).
        past_key_values,
        /// The hidden states of every layer, when asked for.
        hidden_states,
        /// The attention weights of every layer, when asked for.
        attentions,
    }
}

dataclass! {
    /// `Seq2SeqLMOutput`: what an encoder-decoder LM returns.
    Seq2SeqLMOutput {
        /// The loss, when labels are given.
        loss,
        /// `[batch, target_seq, vocab]`.
        logits,
        /// The grown cache (`EncoderDecoderCache`).
        past_key_values,
        /// The decoder's hidden states, when asked for.
        decoder_hidden_states,
        /// The decoder's attention weights, when asked for.
        decoder_attentions,
        /// The cross-attention weights, when asked for.
        cross_attentions,
        /// The encoder's last hidden state.
        encoder_last_hidden_state,
        /// The encoder's hidden states, when asked for.
        encoder_hidden_states,
        /// The encoder's attention weights, when asked for.
        encoder_attentions,
    }
}

dataclass! {
    /// `Seq2SeqModelOutput`: what an encoder-decoder base model returns.
    Seq2SeqModelOutput {
        /// The decoder's last hidden state `[batch, target_seq, d_model]`.
        last_hidden_state,
        /// The grown cache (`EncoderDecoderCache`).
        past_key_values,
        /// The decoder's hidden states, when asked for.
        decoder_hidden_states,
        /// The decoder's attention weights, when asked for.
        decoder_attentions,
        /// The cross-attention weights, when asked for.
        cross_attentions,
        /// The encoder's last hidden state.
        encoder_last_hidden_state,
        /// The encoder's hidden states, when asked for.
        encoder_hidden_states,
        /// The encoder's attention weights, when asked for.
        encoder_attentions,
    }
}

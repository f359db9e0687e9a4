//! The output classes of transformers' `modeling_outputs` that the models return and the
//! seeds serialize: dataclasses of optional fields, flattened into the fields that are set
//! (`logits`, `past_key_values_key_0`, ...).

use onnx_diagnostic_core::{Inputs, Result as CoreResult, Tensor, Value, dataclass};

use crate::{cache_utils::DynamicCache, error::core_error};

/// The forward signature of the causal LMs: `input_ids`, `attention_mask`, `position_ids`,
/// `past_key_values` (transformers' `*ForCausalLM.forward`, its first arguments).
pub fn causal_lm_signature() -> Vec<String> {
    [
        "input_ids",
        "attention_mask",
        "position_ids",
        "past_key_values",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The `forward` of a causal LM on bound inputs: `step(input_ids, attention_mask,
/// position_ids, past_key_values)` gives the logits and the grown cache, returned as
/// `CausalLMOutputWithPast`.
///
/// # Errors
/// A `past_key_values` that is not a `DynamicCache`, or any error of `step`.
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
    let cache = DynamicCache::from_value(inputs.get("past_key_values"))
        .map_err(|e| core_error(model, e))?;
    let (logits, cache) = step(
        inputs.tensor("input_ids")?,
        inputs.opt_tensor("attention_mask")?,
        inputs.opt_tensor("position_ids")?,
        cache,
    )?;
    Ok(Value::custom(CausalLMOutputWithPast {
        logits: Some(Value::Tensor(logits)),
        past_key_values: Some(Value::custom(cache)),
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

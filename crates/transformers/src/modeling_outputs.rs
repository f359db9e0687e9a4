//! The output classes of transformers' `modeling_outputs` that the models return and the
//! seeds serialize: dataclasses of optional fields, flattened into the fields that are set
//! (`logits`, `past_key_values_key_0`, ...).

use onnx_diagnostic_core::dataclass;

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

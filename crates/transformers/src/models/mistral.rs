//! Mistral, as transformers 5.23 writes it (`models/mistral/modeling_mistral.py`): Llama's
//! decoder (RMSNorm, rotary embedding, grouped-query attention, gated MLP, the same weight
//! names) with one difference, the sliding-window causal mask (`kv_idx > q_idx -
//! sliding_window` on top of the causal mask) when the config sets `sliding_window`.
//!
//! The cache stays a [`crate::DynamicCache`] of full layers: transformers gives a
//! sliding-window model `DynamicSlidingWindowLayer`s (in crate::cache_utils, checked against
//! transformers), which keep only the window and give the same attention results; using them
//! here needs the mask to take the layer's offset (`get_mask_sizes`), left to the models issue.

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, Tensor, Value};

use super::llama::{Config, LlamaForCausalLM};
use crate::{cache_utils::DynamicCache, error::Result, weights::Weights};

/// `MistralForCausalLM`.
#[derive(Clone, Debug)]
pub struct MistralForCausalLM {
    inner: LlamaForCausalLM,
}

impl MistralForCausalLM {
    /// Builds the model from a config (`MistralConfig` keys) and weights.
    ///
    /// # Errors
    /// As [`LlamaForCausalLM::new`].
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        let window = config.sliding_window;
        Ok(Self {
            inner: LlamaForCausalLM::new(config, weights)?.with_sliding_window(window),
        })
    }

    /// Loads a checkpoint directory.
    ///
    /// # Errors
    /// As [`LlamaForCausalLM::from_pretrained`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let window = Config::from_file(&dir.join("config.json"))?.sliding_window;
        Ok(Self {
            inner: LlamaForCausalLM::from_pretrained(dir)?.with_sliding_window(window),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Logits and the grown cache (see [`LlamaForCausalLM::forward_with_cache`]).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        cache: Option<DynamicCache>,
    ) -> CoreResult<(Tensor, DynamicCache)> {
        self.inner
            .forward_with_cache(input_ids, attention_mask, position_ids, cache)
    }
}

impl Module for MistralForCausalLM {
    fn class_name(&self) -> String {
        "MistralForCausalLM".to_owned()
    }
    fn forward_signature(&self) -> Vec<String> {
        self.inner.forward_signature()
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner.named_parameters()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.inner.named_buffers()
    }
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        self.inner.forward(inputs)
    }
}

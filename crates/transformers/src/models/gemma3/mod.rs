//! Gemma3's text model, as transformers 5.23 writes it (`models/gemma3/modeling_gemma3.py`,
//! `Gemma3ForCausalLM` over `Gemma3TextModel`, config `Gemma3TextConfig`, `model_type`
//! `gemma3_text`): the Gemma2 decoder ([`crate::models::gemma2`]) with `q_norm`/`k_norm` on
//! each head, one rotary embedding per layer type (`sliding_attention` on the local base
//! `rope_local_base_freq`, `full_attention` on `rope_theta` with the config's scaling), every
//! `sliding_window_pattern`-th layer full (6 by default), no soft-capping by default.
//!
//! The multimodal `Gemma3ForConditionalGeneration` (config `Gemma3Config`, `model_type`
//! `gemma3`) is in [`multimodal`]: the SigLIP tower and this text model.

mod configuration;
pub mod multimodal;

use std::path::Path;

pub use configuration::Config as Gemma3Config;
pub use multimodal::{
    Gemma3ForConditionalGeneration, Gemma3Model, Gemma3MultiModalProjector,
    get_block_sequence_ids_for_mask,
};

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, Tensor, Value};

use super::gemma2::{Config, Family, Gemma2ForCausalLM};
use crate::{
    DynamicCache,
    error::{Error, Result},
    tasks::DecoderDims,
    weights::Weights,
};

/// `Gemma3RotaryEmbedding`: one Llama rotary embedding per layer type.
pub type Gemma3RotaryEmbedding = super::llama::LlamaRotaryEmbedding;

/// `Gemma3ForCausalLM`: the text model of Gemma3.
#[derive(Clone, Debug)]
pub struct Gemma3ForCausalLM {
    inner: Gemma2ForCausalLM,
}

impl Gemma3ForCausalLM {
    /// Builds the model from a `Gemma3TextConfig` and weights.
    ///
    /// # Errors
    /// [`Error::Config`] for a Gemma2 config, else as [`Gemma2ForCausalLM::new`].
    pub fn new(config: Config, weights: &mut Weights) -> Result<Self> {
        if config.family != Family::Gemma3 {
            return Err(Error::Config {
                path: "<config>".into(),
                message: format!(
                    "Gemma3ForCausalLM takes a gemma3_text config, got {}",
                    config.family.model_type()
                ),
            });
        }
        Ok(Self {
            inner: Gemma2ForCausalLM::new(config, weights)?,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`Gemma3ForCausalLM::new`] and [`Weights::from_dir`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, "Gemma3ForCausalLM")?;
        Self::new(config, &mut weights)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Logits and the grown cache (see [`Gemma2ForCausalLM::forward_with_cache`]).
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

impl crate::auto::CausalLM for Gemma3ForCausalLM {
    fn decoder_dims(&self) -> DecoderDims {
        self.inner.config.decoder_dims()
    }
}

impl Module for Gemma3ForCausalLM {
    fn class_name(&self) -> String {
        "Gemma3ForCausalLM".to_owned()
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

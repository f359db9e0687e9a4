//! Model definitions, one file per architecture (candle's layout), and the pieces they share.

pub mod bart;
pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod idefics;
pub mod llama;
pub mod mistral;
pub mod mixtral;
pub mod phi;
pub mod phi3;
pub mod qwen2;
pub mod qwen2_vl;
pub mod qwen3;
pub mod qwen3_moe;
pub mod sam;
pub mod siglip;
pub mod smollm3;

/// Declares a causal LM of the Llama family under its transformers class name: the same
/// decoder as [`llama::LlamaForCausalLM`] with the differences of its [`llama::Arch`] (set on
/// the config, so that a config without `model_type` still builds this architecture).
macro_rules! causal_lm {
    (
        $(#[$doc:meta])* $name:ident, $arch:expr,
        [$model:ident, $layer:ident, $attn:ident, $mlp:ident, $norm:ident, $rope:ident]
    ) => {
        /// The decoder stack under its transformers name (the same struct as
        /// [`super::llama::LlamaModel`], configured by the architecture of the config).
        pub type $model = super::llama::LlamaModel;
        /// The decoder layer under its transformers name.
        pub type $layer = super::llama::LlamaDecoderLayer;
        /// The attention under its transformers name.
        pub type $attn = super::llama::LlamaAttention;
        /// The MLP under its transformers name.
        pub type $mlp = super::llama::LlamaMLP;
        /// The RMSNorm under its transformers name.
        pub type $norm = super::llama::LlamaRMSNorm;
        /// The rotary embedding under its transformers name.
        pub type $rope = super::llama::LlamaRotaryEmbedding;

        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            inner: super::llama::LlamaForCausalLM,
        }

        impl $name {
            /// Builds the model from a config and weights (a checkpoint or untrained).
            ///
            /// # Errors
            /// As [`super::llama::LlamaForCausalLM::new`].
            pub fn new(
                mut config: super::llama::Config,
                weights: &mut crate::weights::Weights,
            ) -> crate::Result<Self> {
                config.arch = $arch;
                Ok(Self {
                    inner: super::llama::LlamaForCausalLM::new(config, weights)?,
                })
            }

            /// Loads a checkpoint directory (`config.json` + safetensors).
            ///
            /// # Errors
            /// As [`super::llama::LlamaForCausalLM::from_pretrained`].
            pub fn from_pretrained(dir: &std::path::Path) -> crate::Result<Self> {
                let config = super::llama::Config::from_file(&dir.join("config.json"))?;
                let mut weights = crate::weights::Weights::from_dir(dir, stringify!($name))?;
                Self::new(config, &mut weights)
            }

            /// The configuration.
            pub fn config(&self) -> &super::llama::Config {
                &self.inner.config
            }

            /// Logits and the grown cache (see
            /// [`super::llama::LlamaForCausalLM::forward_with_cache`]).
            ///
            /// # Errors
            /// Any error of the ops.
            pub fn forward_with_cache(
                &self,
                input_ids: &onnx_diagnostic_core::Tensor,
                attention_mask: Option<&onnx_diagnostic_core::Tensor>,
                position_ids: Option<&onnx_diagnostic_core::Tensor>,
                cache: Option<crate::DynamicCache>,
            ) -> onnx_diagnostic_core::Result<(onnx_diagnostic_core::Tensor, crate::DynamicCache)>
            {
                self.inner
                    .forward_with_cache(input_ids, attention_mask, position_ids, cache)
            }
        }

        impl crate::auto::CausalLM for $name {
            fn decoder_dims(&self) -> crate::tasks::DecoderDims {
                self.inner.config.decoder_dims()
            }
        }

        impl onnx_diagnostic_core::Module for $name {
            fn class_name(&self) -> String {
                stringify!($name).to_owned()
            }
            fn forward_signature(&self) -> Vec<String> {
                self.inner.forward_signature()
            }
            fn named_parameters(&self) -> Vec<(String, onnx_diagnostic_core::Tensor)> {
                self.inner.named_parameters()
            }
            fn named_buffers(&self) -> Vec<(String, onnx_diagnostic_core::Tensor)> {
                self.inner.named_buffers()
            }
            fn forward(
                &self,
                inputs: &onnx_diagnostic_core::Inputs,
            ) -> onnx_diagnostic_core::Result<onnx_diagnostic_core::Value> {
                self.inner.forward(inputs)
            }
        }
    };
}
pub(crate) use causal_lm;

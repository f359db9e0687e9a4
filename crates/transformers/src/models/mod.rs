//! Model definitions, one file per architecture (candle's layout), and the pieces they share.

pub mod gemma;
pub mod llama;
pub mod mistral;
pub mod phi3;
pub mod qwen2;

use onnx_diagnostic_core::{Result, Tensor, scope};

use crate::weights::Weights;

/// `torch.nn.Linear` under its module name: `y = x @ weight.T + bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    name: &'static str,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.{name}.weight` (and `.bias` when `bias`).
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        name: &'static str,
        in_features: i64,
        out_features: i64,
        bias: bool,
    ) -> crate::Result<Self> {
        let weight = w.get(
            &format!("{prefix}.{name}.weight"),
            &[out_features, in_features],
        )?;
        let bias = if bias {
            Some(w.get(&format!("{prefix}.{name}.bias"), &[out_features])?)
        } else {
            None
        };
        Ok(Self { name, weight, bias })
    }

    /// The projection, recorded under the module name.
    ///
    /// # Errors
    /// Any error of the op.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _s = scope(self.name);
        x.linear(&self.weight, self.bias.as_ref())
    }

    /// `(name, tensor)` of its weights under `prefix`.
    pub fn named_parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((
            format!("{prefix}.{}.weight", self.name),
            self.weight.clone(),
        ));
        if let Some(b) = &self.bias {
            out.push((format!("{prefix}.{}.bias", self.name), b.clone()));
        }
    }
}

/// An activation by its `hidden_act` name.
///
/// # Errors
/// Any error of the op.
pub fn activation(name: &str, x: &Tensor) -> Result<Tensor> {
    match name {
        "gelu" => x.gelu("none"),
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => x.gelu("tanh"),
        "relu" => x.relu(),
        _ => x.silu(),
    }
}

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

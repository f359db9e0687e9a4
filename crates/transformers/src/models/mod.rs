//! Model definitions, one file per architecture (candle's layout), and the pieces they share.

pub mod llama;
pub mod mistral;

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

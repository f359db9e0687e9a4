//! The torch layers diffusers' models are made of beyond transformers' shared ones
//! ([`onnx_diagnostic_transformers::nn`]: `Linear`, `LayerNorm`, the activations):
//! `nn.Conv2d` and `nn.GroupNorm`. Untrained, they hold torch's own initialisation, which is
//! what a diffusers model built from its config has (diffusers has no `_init_weights`):
//! U(±1/√fan_in) for convolution weights and biases, ones and zeros for the norms.

use onnx_diagnostic_core::{Result as CoreResult, Tensor, scope};
use onnx_diagnostic_transformers::{
    Result,
    weights::{Init, VarBuilder},
};

/// `torch.nn.Conv2d(in, out, kernel, stride, padding)` under its module name.
#[derive(Clone, Debug)]
pub struct Conv2d {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    /// Loads `{name}.weight` `[out, in, kernel, kernel]` and `{name}.bias` `[out]` (when
    /// `bias`) under `vb`.
    ///
    /// # Errors
    /// A missing, misshaped or non-floating weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        (in_channels, out_channels): (i64, i64),
        kernel: i64,
        (stride, padding): (i64, i64),
        bias: bool,
    ) -> Result<Self> {
        let bound = 1.0 / ((in_channels * kernel * kernel).max(1) as f64).sqrt();
        let vb = vb.pp(name);
        let weight = vb.get(
            "weight",
            &[out_channels, in_channels, kernel, kernel],
            Init::Uniform(bound),
        )?;
        let bias = if bias {
            Some(vb.get("bias", &[out_channels], Init::Uniform(bound))?)
        } else {
            None
        };
        Ok(Self {
            name: name.to_owned(),
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// The convolution, recorded under the module name.
    ///
    /// # Errors
    /// Any error of the op.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        let _s = scope(&self.name);
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride; 2],
            [self.padding; 2],
            [1, 1],
            1,
        )
    }
}

/// `torch.nn.GroupNorm(num_groups, num_channels, eps, affine=True)`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    /// Loads `{name}.weight` and `{name}.bias` `[channels]` under `vb`.
    ///
    /// # Errors
    /// A missing, misshaped or non-floating weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        groups: i64,
        channels: i64,
        eps: f64,
    ) -> Result<Self> {
        let vb = vb.pp(name);
        Ok(Self {
            weight: vb.get("weight", &[channels], Init::Ones)?,
            bias: vb.get("bias", &[channels], Init::Zeros)?,
            groups,
            eps,
        })
    }

    /// The normalisation over groups of channels.
    ///
    /// # Errors
    /// Any error of the op.
    pub fn forward(&self, x: &Tensor) -> CoreResult<Tensor> {
        x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps)
    }
}

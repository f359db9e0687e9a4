//! `Upsample2D` and `Downsample2D` of diffusers' `models/upsampling.py` and
//! `models/downsampling.py`, in the form the UNets use them (`use_conv=True`, nearest
//! interpolation, no norm).
//!
//! `Upsample2D.forward` keeps diffusers' size checks: `hidden_states.shape[0] >= 64` (a
//! `contiguous()` for a libtorch kernel limit) and `numel * scale_factor > 2**31` (the same),
//! two decisions on the batch and the sizes that an export records as guards. The patch
//! `patched_Upsample2D.forward` (crates/patch-diffusers) removes them.

use onnx_diagnostic_core::{
    InterpolateMode, Rel, Resize, Result as CoreResult, SymInt, Tensor, scope,
};
use onnx_diagnostic_transformers::{Result, weights::VarBuilder};

use crate::nn::Conv2d;

/// `Upsample2D(channels, use_conv=True, out_channels)`: nearest upsampling (by 2, or to
/// `output_size`), then a 3×3 convolution `conv`.
#[derive(Clone, Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Loads `{name}.conv` under `vb`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(vb: &VarBuilder<'_>, name: &str, channels: i64, out_channels: i64) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(
                &vb.pp(name),
                "conv",
                (channels, out_channels),
                3,
                (1, 1),
                true,
            )?,
        })
    }

    /// The convolution.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// diffusers' `Upsample2D.forward(hidden_states, output_size)`.
    ///
    /// # Errors
    /// Any error of the ops.
    #[onnx_diagnostic_macros::patchable]
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        output_size: Option<&[SymInt; 2]>,
    ) -> CoreResult<Tensor> {
        let _s = scope("upsamplers.0");
        let shape = hidden_states.shape();
        let mut h = hidden_states.clone();
        // "upsample_nearest_nhwc fails with large batch sizes"
        if shape[0].compare(Rel::Ge, 64)? {
            h = h.contiguous()?;
        }
        // scale_factor = 2 if output_size is None else max(f / s for f, s in ...); the
        // comparison `numel * scale_factor > 2**31` in integers, on the height's ratio.
        let numel = shape.iter().fold(SymInt::new(1), |acc, d| &acc * d);
        let (num, den) = match output_size {
            None => (SymInt::new(2), SymInt::new(1)),
            Some(size) => (size[0].clone(), shape[2].clone()),
        };
        if (&numel * &num).compare(Rel::Gt, &den * (1_i64 << 31))? {
            h = h.contiguous()?;
        }
        let h = match output_size {
            None => h.upsample_nearest2d(2)?,
            Some(size) => h.interpolate(&Resize::Size(size.clone()), InterpolateMode::Nearest)?,
        };
        self.conv.forward(&h)
    }
}

/// `Downsample2D(channels, use_conv=True, out_channels, padding, name="op")`: a 3×3
/// convolution of stride 2 (`conv`), after a `(0, 1, 0, 1)` zero padding when `padding` is 0.
#[derive(Clone, Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    padding: i64,
}

impl Downsample2D {
    /// Loads `{name}.conv` under `vb`.
    ///
    /// # Errors
    /// A missing or misshaped weight.
    pub fn load(
        vb: &VarBuilder<'_>,
        name: &str,
        (channels, out_channels): (i64, i64),
        padding: i64,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(
                &vb.pp(name),
                "conv",
                (channels, out_channels),
                3,
                (2, padding),
                true,
            )?,
            padding,
        })
    }

    /// The downsampled hidden states.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn forward(&self, hidden_states: &Tensor) -> CoreResult<Tensor> {
        let _s = scope("downsamplers.0");
        if self.padding == 0 {
            return self.conv.forward(&hidden_states.pad(&[0, 1, 0, 1], 0.0)?);
        }
        self.conv.forward(hidden_states)
    }
}

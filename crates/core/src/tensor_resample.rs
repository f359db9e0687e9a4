//! The [`Tensor`] methods that resample or pad images: `interpolate` (as
//! `torch.nn.functional.interpolate`, nearest and bilinear, to a size or by scale factors) and
//! `pad` (`F.pad(..., mode="constant")`).
//!
//! Decisions:
//! - The output size is computed here, symbolically, as torch computes it: `size=` is taken
//!   as given (a skip connection's symbolic size stays symbolic); a scale factor gives
//!   `floor(size * scale)`. On a dynamic size a scale must be a ratio `p/q` (q ≤ 64: 1.5,
//!   0.75, 2.5, ...) so that the size is `(size * p) // q`; another scale on a dynamic size
//!   is an error naming the op and the scale, never a size specialised silently.
//! - The scale factors go to the kernel as `F.interpolate` passes them
//!   (`recompute_scale_factor=None`): libtorch maps output coordinates through them, not
//!   through the ratio of the sizes, and so does ONNX Resize with `scales`.

use crate::{
    error::{Error, Loc, Result},
    graph::Attr,
    ops,
    sym::SymInt,
    tensor::{Tensor, call1},
};

/// The target of [`Tensor::interpolate`]: `size=` or `scale_factor=`.
#[derive(Clone, Debug)]
pub enum Resize {
    /// `size=(height, width)`, possibly symbolic.
    Size([SymInt; 2]),
    /// `scale_factor=(height, width)`.
    Scale([f64; 2]),
}

/// The `mode=` of [`Tensor::interpolate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterpolateMode {
    /// `mode="nearest"` (torch's legacy nearest: `floor(dst * in / out)`).
    Nearest,
    /// `mode="bilinear"`, with its `align_corners`.
    Bilinear {
        /// `align_corners=True`: the corner pixels of input and output are aligned.
        align_corners: bool,
    },
}

/// `floor(size * scale)` as a symbolic size: exact for a ratio `p/q` with `q ≤ 64`, or for a
/// static size.
fn scaled(size: &SymInt, scale: f64) -> Option<SymInt> {
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    if let Some(v) = size.as_static() {
        return Some(SymInt::new((v as f64 * scale).floor() as i64));
    }
    (1..=64_i64).find_map(|q| {
        let p = scale * q as f64;
        ((p - p.round()).abs() < 1e-9).then(|| (size * p.round() as i64).floor_div(q))
    })
}

impl Tensor {
    /// `torch.nn.functional.interpolate(self, size=... | scale_factor=..., mode=...)` of a 4-D
    /// `[batch, channels, height, width]` tensor (see the module doc for the sizes).
    ///
    /// # Errors
    /// [`Error::Torch`] for an input that is not 4-D, a scale that is not positive, or a
    /// scale on a dynamic size that is no ratio `p/q` with `q ≤ 64` (give `size=` instead);
    /// any error of libtorch.
    #[track_caller]
    pub fn interpolate(&self, to: &Resize, mode: InterpolateMode) -> Result<Tensor> {
        let op = match mode {
            InterpolateMode::Nearest => &ops::UPSAMPLE_NEAREST2D,
            InterpolateMode::Bilinear { .. } => &ops::UPSAMPLE_BILINEAR2D,
        };
        let fail = |message: String| Error::Torch {
            op: op.name,
            location: Loc::caller(),
            message,
        };
        let shape = self.shape();
        if shape.len() != 4 {
            return Err(fail(format!(
                "interpolate expects a 4-D input [batch, channels, height, width], got rank {}",
                shape.len()
            )));
        }
        let (size, scales) = match to {
            Resize::Size(s) => (s.to_vec(), [Attr::None, Attr::None]),
            Resize::Scale(f) => {
                let mut size = Vec::with_capacity(2);
                for (k, scale) in f.iter().enumerate() {
                    size.push(scaled(&shape[2 + k], *scale).ok_or_else(|| {
                        fail(format!(
                            "scale factor {scale} on the size {} of dimension {}: a scale on a \
                             dynamic size must be positive and a ratio p/q with q <= 64; give \
                             size= instead",
                            shape[2 + k],
                            2 + k
                        ))
                    })?);
                }
                (size, [Attr::Float(f[0]), Attr::Float(f[1])])
            }
        };
        let [sh, sw] = scales;
        let attrs = match mode {
            InterpolateMode::Nearest => vec![Attr::Ints(size), sh, sw],
            InterpolateMode::Bilinear { align_corners } => {
                vec![Attr::Ints(size), Attr::Bool(align_corners), sh, sw]
            }
        };
        call1(op, &[Some(self)], attrs)
    }

    /// Nearest upsampling by an integer factor (`F.interpolate(x, scale_factor=scale)`).
    ///
    /// # Errors
    /// As [`Tensor::interpolate`].
    #[track_caller]
    pub fn upsample_nearest2d(&self, scale: i64) -> Result<Tensor> {
        let s = scale as f64;
        self.interpolate(&Resize::Scale([s, s]), InterpolateMode::Nearest)
    }

    /// `F.pad(self, pad, mode="constant", value=value)`: `pad` holds `(before, after)` pairs
    /// from the last dimension on (negative amounts crop).
    ///
    /// # Errors
    /// An odd number of amounts, more pairs than dimensions; any error of libtorch.
    #[track_caller]
    pub fn pad(&self, pad: &[i64], value: f64) -> Result<Tensor> {
        call1(
            &ops::CONSTANT_PAD_ND,
            &[Some(self)],
            vec![
                Attr::Ints(pad.iter().map(|p| SymInt::new(*p)).collect()),
                Attr::Float(value),
            ],
        )
    }
}

//! Lowerings of the resampling ops: `upsample_nearest2d`, `upsample_bilinear2d` (ONNX
//! `Resize`) and `constant_pad_nd` (ONNX `Pad`).
//!
//! - Nearest is Resize with `asymmetric` coordinates and `floor` rounding, torch's legacy
//!   nearest mode; bilinear is Resize `linear` with `half_pixel` coordinates
//!   (`align_corners=False`: `(dst + 0.5) / scale - 0.5`, clamped at 0, as libtorch maps them,
//!   an output of one pixel included: `pytorch_half_pixel` would map it to 0) or
//!   `align_corners`.
//! - A scale factor given to `F.interpolate` goes to Resize as its `scales` input (both map
//!   the output coordinates through the scale, as libtorch does, and both size the output as
//!   `floor(size * scale)`); a `size=` goes as `sizes`, computed at run time from the symbolic
//!   output shape. `align_corners=True` always uses sizes (its mapping is
//!   `(in - 1) / (out - 1)` in both).
//! - float16 and bfloat16 resample in float32 and are cast back (ONNX Runtime's CPU Resize
//!   has no half-precision kernel); nearest copies values, so this is exact.
//! - Pad takes torch's `(before, after)` pairs from the last dimension on, turned into ONNX's
//!   `[begins..., ends...]` over every axis, and the value as a scalar of the input's type.

use onnx_diagnostic_core::SymInt;
use tch::Kind;

use super::{A, Ctx, Entry, LowerError};

/// Emits `Resize(x, scales | sizes)` with `attrs`, in float32 for half types.
fn resize(
    c: &mut Ctx<'_>,
    scales: Option<(f64, f64)>,
    attrs: Vec<(&str, A)>,
) -> Result<(), LowerError> {
    let kind = c.kind(0)?;
    let compute = if matches!(kind, Kind::Half | Kind::BFloat16) {
        Kind::Float
    } else {
        kind
    };
    let x = c.input_as(0, compute)?;
    let linear = attrs
        .iter()
        .any(|(k, v)| *k == "mode" && matches!(v, A::Str("linear")));
    let out = match scales {
        Some((h, w)) if linear => {
            // One axis at a time (bilinear is separable): ONNX Runtime 1.31's CPU Resize maps
            // the width wrongly when both scales are given and one of them shrinks.
            let sh = tch::Tensor::from_slice(&[1f32, 1.0, h as f32, 1.0]);
            let sh = c.b.constant(&sh, "resize_scales")?;
            let sw = tch::Tensor::from_slice(&[1f32, 1.0, 1.0, w as f32]);
            let sw = c.b.constant(&sw, "resize_scales")?;
            let y = c.b.op("Resize", &[&x, "", &sh], attrs.clone());
            c.b.op("Resize", &[&y, "", &sw], attrs)
        }
        Some((h, w)) => {
            let s = tch::Tensor::from_slice(&[1f32, 1.0, h as f32, w as f32]);
            let s = c.b.constant(&s, "resize_scales")?;
            c.b.op("Resize", &[&x, "", &s], attrs)
        }
        None => {
            let target = c.out_info(0)?.shape.clone();
            let sizes = c.b.shape(&target)?;
            c.b.op("Resize", &[&x, "", "", &sizes], attrs)
        }
    };
    c.finish_as(&out, compute)
}

/// The scales of attributes `h` and `w` when `F.interpolate` was given a scale factor.
fn scales(c: &Ctx<'_>, h: usize, w: usize) -> Result<Option<(f64, f64)>, LowerError> {
    Ok(match (c.float(h)?, c.float(w)?) {
        (Some(h), Some(w)) => Some((h, w)),
        _ => None,
    })
}

fn upsample_nearest2d(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let s = scales(c, 1, 2)?;
    resize(
        c,
        s,
        vec![
            ("mode", A::Str("nearest")),
            ("coordinate_transformation_mode", A::Str("asymmetric")),
            ("nearest_mode", A::Str("floor")),
        ],
    )
}

fn upsample_bilinear2d(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let align_corners = c.bool(1)?;
    let s = if align_corners {
        None
    } else {
        scales(c, 2, 3)?
    };
    let mode = if align_corners {
        "align_corners"
    } else {
        "half_pixel"
    };
    resize(
        c,
        s,
        vec![
            ("mode", A::Str("linear")),
            ("coordinate_transformation_mode", A::Str(mode)),
        ],
    )
}

fn constant_pad_nd(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let pad: Vec<SymInt> = c.syms(0)?;
    let mut begins = vec![SymInt::new(0); rank];
    let mut ends = vec![SymInt::new(0); rank];
    for (k, pair) in pad.chunks(2).enumerate() {
        let d = rank - 1 - k;
        begins[d] = pair[0].clone();
        ends[d] = pair.get(1).cloned().unwrap_or_else(|| SymInt::new(0));
    }
    begins.extend(ends);
    let pads = c.b.shape(&begins)?;
    let kind = c.kind(0)?;
    let value = c.scalar_attr(1, kind)?;
    let x = c.input(0)?;
    c.emit_out(
        "Pad",
        &[&x, &pads, &value],
        vec![("mode", A::Str("constant"))],
    )
}

/// The lowerings of this module.
pub(crate) static TABLE: &[Entry] = &[
    Entry {
        op: "aten.upsample_nearest2d.vec",
        min_opset: 13,
        lower: upsample_nearest2d,
    },
    Entry {
        op: "aten.upsample_bilinear2d.vec",
        min_opset: 13,
        lower: upsample_bilinear2d,
    },
    Entry {
        op: "aten.constant_pad_nd.default",
        min_opset: 18,
        lower: constant_pad_nd,
    },
];

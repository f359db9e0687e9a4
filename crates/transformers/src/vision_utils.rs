//! The helpers of transformers 5.23's `vision_utils` that the vision encoders call on
//! `grid_thw` (`[images, 3]`: the temporal, height and width sizes of each image in patches),
//! written as transformers writes them: `get_vision_position_ids` loops over
//! `grid_thw.tolist()` (a data-dependent read, which an export refuses) and
//! `get_vision_cu_seqlens` repeats each frame's length with a data-dependent count (which an
//! export records with an unbacked length).

use onnx_diagnostic_core::{Result, SymInt, Tensor};
use tch::Kind;

/// The rows `(t, h, w)` of `grid_thw` (`.tolist()`: a data-dependent read during an export).
///
/// # Errors
/// [`onnx_diagnostic_core::Error::Model`] naming `image_grid_thw` when it is not `[images, 3]`;
/// [`onnx_diagnostic_core::Error::DataDependent`] during an export.
#[track_caller]
pub fn grid_rows(grid_thw: &Tensor) -> Result<Vec<[i64; 3]>> {
    let shape = grid_thw.concrete_shape();
    if shape.len() != 2 || shape[1] != 3 {
        return Err(onnx_diagnostic_core::Error::Model {
            model: "vision encoder".to_owned(),
            message: format!(
                "image_grid_thw has shape {shape:?}: it must be [images, 3], the (t, h, w) of \
                 each image in patches"
            ),
        });
    }
    Ok(grid_thw
        .to_vec_i64()?
        .chunks_exact(3)
        .map(|g| [g[0], g[1], g[2]])
        .collect())
}

/// `get_vision_cu_seqlens(grid_thw)`: the cumulative lengths `[0, h0*w0, 2*h0*w0, ...]` of
/// the attention segments, one per frame (`h * w` patches each, `t` frames per image), in
/// int32 as transformers' eager path gives them. Its length, one more than the number of
/// frames, depends on the values of `grid_thw`.
///
/// # Errors
/// Any error of the ops.
pub fn get_vision_cu_seqlens(grid_thw: &Tensor) -> Result<Tensor> {
    let (t, h, w) = (
        grid_thw.select(1, 0)?,
        grid_thw.select(1, 1)?,
        grid_thw.select(1, 2)?,
    );
    let seqlens = h.mul(&w)?.repeat_interleave_tensor(&t)?;
    seqlens.cumsum(0)?.to_kind(Kind::Int)?.pad(&[1, 0], 0.0)
}

/// `get_vision_position_ids(grid_thw, spatial_merge_size)`: the `(row, column)` of every
/// patch, `[patches, 2]` int64, laid out block-major over `m x m` merge blocks and repeated
/// for each frame, image after image. Loops over `grid_thw.tolist()` as transformers does,
/// so an export stops here on the data-dependent read
/// (`patched_Qwen2VisionTransformerPretrainedModel.forward` of crates/patch-transformers
/// computes the same ids from the patch index instead).
///
/// # Errors
/// [`onnx_diagnostic_core::Error::DataDependent`] during an export; any error of the ops.
pub fn get_vision_position_ids(grid_thw: &Tensor, spatial_merge_size: i64) -> Result<Tensor> {
    let device = grid_thw.device();
    let m = spatial_merge_size;
    let mut position_ids = Vec::new();
    for [t, h, w] in grid_rows(grid_thw)? {
        let hpos = Tensor::arange(0, h, 1, Kind::Int64, device)?
            .unsqueeze(1)?
            .expand([h, w])?;
        let wpos = Tensor::arange(0, w, 1, Kind::Int64, device)?
            .unsqueeze(0)?
            .expand([h, w])?;
        let block = |x: &Tensor| -> Result<Tensor> {
            x.reshape([h / m, m, w / m, m])?
                .transpose(1, 2)?
                .reshape(vec![SymInt::new(-1)])
        };
        let ids = Tensor::stack(&[&block(&hpos)?, &block(&wpos)?], -1)?;
        // `.repeat(t, 1)`
        position_ids.push(
            ids.unsqueeze(0)?
                .expand([t, h * w, 2])?
                .reshape([t * h * w, 2])?,
        );
    }
    if position_ids.is_empty() {
        // No image: transformers' `torch.cat([])` raises; an image-less step (`pixel_values`
        // `[0, ...]`) gets no positions, as the patched form computes.
        return Tensor::zeros([0, 2], Kind::Int64, device);
    }
    let refs: Vec<&Tensor> = position_ids.iter().collect();
    Tensor::cat(&refs, 0)
}

/// `get_vision_window_index(grid_thw, spatial_merge_size, window_size, patch_size)`: Qwen2.5-VL's
/// window order of the merged units (`window_index` `[units]` int64: for each image and frame,
/// the windows of `window_size / m / patch_size` merged units a side row by row, each window's
/// units row by row; the windows at the right and bottom edges are cut) and the bounds of the
/// windows in patches (`cu_window_seqlens` int32, consecutive repeats removed as
/// `unique_consecutive` does). Loops over `grid_thw.tolist()` as transformers does, so an
/// export stops here on the data-dependent read
/// (`patched_Qwen2VisionTransformerPretrainedModel.forward` computes the order from the patch
/// index).
///
/// # Errors
/// [`onnx_diagnostic_core::Error::DataDependent`] during an export; any error of the ops.
pub fn get_vision_window_index(
    grid_thw: &Tensor,
    spatial_merge_size: i64,
    window_size: i64,
    patch_size: i64,
) -> Result<(Tensor, Tensor)> {
    let m = spatial_merge_size;
    let ws = (window_size / m / patch_size).max(1);
    let unit = m * m;
    let (mut index, mut cu) = (Vec::new(), vec![0i64]);
    let mut offset = 0;
    for [t, h, w] in grid_rows(grid_thw)? {
        let (gh, gw) = (h / m, w / m);
        // transformers pads by a whole window when the size is a multiple of it: an empty
        // window, which `unique_consecutive` drops.
        let (nh, nw) = ((gh + ws - gh % ws) / ws, (gw + ws - gw % ws) / ws);
        for f in 0..t {
            for wr in 0..nh {
                for wc in 0..nw {
                    let mut count = 0;
                    for r in wr * ws..(wr + 1) * ws {
                        for c in wc * ws..(wc + 1) * ws {
                            if r < gh && c < gw {
                                index.push(offset + f * gh * gw + r * gw + c);
                                count += 1;
                            }
                        }
                    }
                    let last = cu.last().copied().unwrap_or(0);
                    cu.push(last + count * unit);
                }
            }
        }
        offset += t * gh * gw;
    }
    cu.dedup();
    let device = grid_thw.device();
    let to = |v: &[i64], kind: Kind| -> Result<Tensor> {
        tch::Tensor::f_from_slice(v)
            .and_then(|t| t.f_to_kind(kind))
            .and_then(|t| t.f_to_device(device))
            .map(Tensor::from)
            .map_err(|e| onnx_diagnostic_core::Error::Model {
                model: "Qwen2_5_VisionTransformerPretrainedModel".to_owned(),
                message: e.to_string(),
            })
    };
    Ok((to(&index, Kind::Int64)?, to(&cu, Kind::Int)?))
}

//! The patches of Qwen2-VL's vision path. transformers computes three things from the values
//! of `image_grid_thw` with Python loops over `.tolist()`: the position ids of the patches,
//! the attention segments (one per frame) and the split of the features per image. An export
//! cannot read values, so each is rewritten as tensor arithmetic over the patch index, which
//! exports with any number of images of any size (`pixel_values` `[patches, ...]` and
//! `image_grid_thw` `[images, 3]` both dynamic).
//!
//! The attention: the Python package offers two forms, the seeds' `patched_VisionAttention`
//! (one attention over all patches with a block-diagonal mask built from `cu_seqlens`) and,
//! for Qwen2.5-VL, a loop over the segments in ONNX (`LoopMHAAttention`, or
//! `PackedMultiHeadAttention` on CUDA). The mask is what exports here with a dynamic number of
//! images and sizes without custom ONNX functions or contrib ops, and it is what the seeds
//! patch this class with; its cost is one `[patches, patches]` mask and scores over all
//! patches (the loop computes only the diagonal blocks), which matters for many large images.

use onnx_diagnostic_core::{Result, SymInt, Tensor, scope};
use onnx_diagnostic_macros::patch;
use onnx_diagnostic_transformers::{
    masking_utils::finfo_min,
    models::qwen2_vl::{
        Qwen2VLModel, Qwen2VisionTransformerPretrainedModel, VisionAttention, Windows,
        vision::vision_attention,
    },
    vision_utils::get_vision_cu_seqlens,
};
use tch::Kind;

/// Replaces `VisionAttention.forward`, which splits the patches with
/// `torch.split(x, (cu_seqlens[1:] - cu_seqlens[:-1]).tolist())` and attends within each
/// piece in a Python loop: the number and the sizes of the pieces are data, so the export
/// stops on the read. As the seeds' `patched_VisionAttention.forward` (which rewrites the same
/// loop into `rewrite_loop_for_square_mask`), the patch attends over all patches at once with
/// a mask that keeps each patch within its segment: the segment of patch `j` is the number of
/// boundaries `cu_seqlens[i] <= j` (no slicing of the data-dependent `cu_seqlens`), and two
/// patches see each other when their segments are equal. The values are the same: the masked
/// scores get `finfo.min`, whose softmax weight is zero. It can go when the exporters handle
/// a loop over a data-dependent list (or transformers writes the mask itself).
#[patch(target = VisionAttention::forward, family = "transformers")]
pub fn patched_vision_attention_forward(
    this: &VisionAttention,
    hidden_states: &Tensor,
    cu_seqlens: &Tensor,
    position_embeddings: &(Tensor, Tensor),
) -> Result<Tensor> {
    let _s = scope("attn");
    let n = hidden_states.size(0)?;
    let [q, k, v] = this.project(hidden_states, position_embeddings)?;
    let j = Tensor::arange(0, n.clone(), 1, Kind::Int64, q.device())?;
    let bounds = cu_seqlens.to_kind(Kind::Int64)?.unsqueeze(0)?;
    let segment = j
        .unsqueeze(1)?
        .ge(&bounds)?
        .to_kind(Kind::Int64)?
        .sum(&[-1], false)?;
    let same = segment.unsqueeze(1)?.eq(&segment.unsqueeze(0)?)?;
    let mask = same
        .logical_not()?
        .to_kind(q.kind())?
        .mul_scalar(finfo_min(q.kind()))?;
    let out = vision_attention(&q, &k, &v, Some(&mask), this.scaling())?;
    this.output(&out, n)
}

/// The `(row, column)` of every patch `[patches, 2]` from the patch index: for patch `j`, its
/// image is the number of images that end at or before `j`, its place in the frame is
/// `(j - start) % (h * w)`, and the block-major layout of `m x m` merge squares gives the row
/// `(block // (w / m)) * m + r // m` and the column `(block % (w / m)) * m + r % m` of
/// `block, r = divmod(place, m * m)`; the same as `get_vision_position_ids`.
///
/// # Errors
/// Any error of the ops.
pub fn position_ids_from_patch_index(
    grid_thw: &Tensor,
    patches: SymInt,
    spatial_merge_size: i64,
) -> Result<Tensor> {
    let device = grid_thw.device();
    let scalar = |v: i64| Tensor::full(Vec::<SymInt>::new(), v, Kind::Int64, device);
    let grid = grid_thw.to_kind(Kind::Int64)?;
    let (h, w) = (grid.select(1, 1)?, grid.select(1, 2)?);
    let hw = h.mul(&w)?;
    let ends = grid.select(1, 0)?.mul(&hw)?.cumsum(0)?;
    let j = Tensor::arange(0, patches, 1, Kind::Int64, device)?;
    let image = j
        .unsqueeze(1)?
        .ge(&ends.unsqueeze(0)?)?
        .to_kind(Kind::Int64)?
        .sum(&[-1], false)?;
    let starts = ends.sub(&grid.select(1, 0)?.mul(&hw)?)?;
    let (m, mm) = (
        scalar(spatial_merge_size)?,
        scalar(spatial_merge_size * spatial_merge_size)?,
    );
    let place = j
        .sub(&starts.index_select(0, &image)?)?
        .remainder(&hw.index_select(0, &image)?)?;
    let (block, r) = (place.floor_divide(&mm)?, place.remainder(&mm)?);
    let per_row = w.index_select(0, &image)?.floor_divide(&m)?;
    let row = block
        .floor_divide(&per_row)?
        .mul(&m)?
        .add(&r.floor_divide(&m)?)?;
    let col = block.remainder(&per_row)?.mul(&m)?.add(&r.remainder(&m)?)?;
    Tensor::stack(&[&row, &col], -1)
}

/// Qwen2.5-VL's window order and window bounds from the merged-unit index, for any number of
/// images of any size: for unit `u`, its image, frame, row `r` and column `c` (as in
/// [`position_ids_from_patch_index`]) give its window `(r // ws) * nw + c // ws` (`nw` the
/// windows a row of its image has, counting transformers' padding) and its place in it; the
/// order is the `argsort` of `(frame, window, place)` packed in one integer key, the frames
/// numbered across images. The bounds, `cu_window_seqlens`, hold `p * m^2` at each position
/// `p` of the order where the window changes and 0 elsewhere, then the total: transformers'
/// bounds with zeros for the repeats `unique_consecutive` drops, which leaves the segment of
/// every patch (the count of bounds at or below it) as it is, so that
/// [`patched_vision_attention_forward`] masks the same windows.
///
/// # Errors
/// Any error of the ops.
pub fn windows_from_patch_index(
    grid_thw: &Tensor,
    patches: SymInt,
    spatial_merge_size: i64,
    merger_window: i64,
) -> Result<Windows> {
    let device = grid_thw.device();
    let scalar = |v: i64| Tensor::full(Vec::<SymInt>::new(), v, Kind::Int64, device);
    let (m, ws) = (scalar(spatial_merge_size)?, scalar(merger_window)?);
    let unit = spatial_merge_size * spatial_merge_size;
    let units = patches.floor_div(unit);
    let grid = grid_thw.to_kind(Kind::Int64)?;
    let t = grid.select(1, 0)?;
    let (gh, gw) = (
        grid.select(1, 1)?.floor_divide(&m)?,
        grid.select(1, 2)?.floor_divide(&m)?,
    );
    let per_frame = gh.mul(&gw)?;
    let per_image = t.mul(&per_frame)?;
    let ends = per_image.cumsum(0)?;
    let starts = ends.sub(&per_image)?;
    let frames_before = t.cumsum(0)?.sub(&t)?;
    let u = Tensor::arange(0, units.clone(), 1, Kind::Int64, device)?;
    let image = u
        .unsqueeze(1)?
        .ge(&ends.unsqueeze(0)?)?
        .to_kind(Kind::Int64)?
        .sum(&[-1], false)?;
    let at = |x: &Tensor| x.index_select(0, &image);
    let (uw, pf) = (at(&gw)?, at(&per_frame)?);
    let local = u.sub(&at(&starts)?)?;
    let frame = at(&frames_before)?.add(&local.floor_divide(&pf)?)?;
    let within = local.remainder(&pf)?;
    let (r, c) = (within.floor_divide(&uw)?, within.remainder(&uw)?);
    // transformers pads each row to `gw + ws - gw % ws` units.
    let nw = uw.add(&ws)?.sub(&uw.remainder(&ws)?)?.floor_divide(&ws)?;
    let window = r.floor_divide(&ws)?.mul(&nw)?.add(&c.floor_divide(&ws)?)?;
    let wid = frame.mul_scalar(1_i64 << 31)?.add(&window)?;
    let place = r.remainder(&ws)?.mul(&ws)?.add(&c.remainder(&ws)?)?;
    let key = wid.mul_scalar(merger_window * merger_window)?.add(&place)?;
    let index = key.argsort(0, false)?;
    let sorted = wid.index_select(0, &index)?;
    let zero = scalar(0)?;
    let before = u.sub_scalar(1_i64)?;
    let before = before.where_cond(&before.ge_scalar(0_i64)?, &zero)?;
    let change = sorted
        .ne(&sorted.index_select(0, &before)?)?
        .logical_and(&u.gt_scalar(0_i64)?)?;
    let bounds = u.mul_scalar(unit)?.where_cond(&change, &zero)?;
    let total = Tensor::full([1], units * unit, Kind::Int64, device)?;
    let first = Tensor::zeros([1], Kind::Int64, device)?;
    let cu = Tensor::cat(&[&first, &bounds, &total], 0)?.to_kind(Kind::Int)?;
    Ok(Windows {
        index,
        cu_seqlens: cu,
    })
}

/// Replaces `Qwen2VisionTransformerPretrainedModel.forward` (also Qwen2.5-VL's
/// `Qwen2_5_VisionTransformerPretrainedModel`, the same struct), whose position ids
/// (`get_vision_position_ids`) and, for Qwen2.5-VL, window order (`get_vision_window_index`)
/// loop over `grid_thw.tolist()`: the export stops on the read. The patch computes the same
/// ids ([`position_ids_from_patch_index`]) and windows ([`windows_from_patch_index`]) from the
/// patch index, sized by `pixel_values`' first dim, and keeps the rest of the original
/// (`get_vision_cu_seqlens`, whose data-dependent length the export records as an unbacked
/// size). The Python package patches Qwen2.5-VL's `rot_pos_emb` and `get_window_index` for the
/// same loops, iterating over the rows of a grid of static shape (one image). It can go when
/// transformers computes them without reading the grid.
#[patch(target = Qwen2VisionTransformerPretrainedModel::forward, family = "transformers")]
pub fn patched_qwen2_vision_forward(
    this: &Qwen2VisionTransformerPretrainedModel,
    pixel_values: &Tensor,
    grid_thw: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let _s = scope("visual");
    let position_ids =
        position_ids_from_patch_index(grid_thw, pixel_values.size(0)?, this.spatial_merge_size)?;
    let cu_seqlens = get_vision_cu_seqlens(grid_thw)?;
    let windows = match &this.window {
        Some(w) => Some(windows_from_patch_index(
            grid_thw,
            pixel_values.size(0)?,
            this.spatial_merge_size,
            w.merger_window,
        )?),
        None => None,
    };
    this.forward_with_positions(pixel_values, &position_ids, &cu_seqlens, windows.as_ref())
}

/// Replaces `Qwen2VLModel.get_image_features`, which splits the merged features per image with
/// `(image_grid_thw.prod(-1) // m**2).tolist()`: a data-dependent read, and a list whose length
/// is the number of images. Its only caller, the forward, concatenates the pieces back, so the
/// patch returns the features of all images as one piece: the same tensor, with any number of
/// images. It can go when the exporters handle a split by data-dependent sizes.
#[patch(target = Qwen2VLModel::get_image_features, family = "transformers")]
pub fn patched_get_image_features(
    this: &Qwen2VLModel,
    pixel_values: &Tensor,
    image_grid_thw: &Tensor,
) -> Result<Vec<Tensor>> {
    let kind = this.visual.dtype();
    let (_, merged) = this
        .visual
        .forward(&pixel_values.to_kind(kind)?, image_grid_thw)?;
    Ok(vec![merged])
}

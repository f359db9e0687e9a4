//! Attention masks as transformers 5.23's `masking_utils` builds them for eager attention: a
//! float mask added to the attention scores, 0 where a query may attend a key position and the
//! minimum of the scores' type (`torch.finfo(dtype).min`) elsewhere, combining the causal rule,
//! the sliding window (`sliding_window_overlay`) and the padding mask.

use onnx_diagnostic_core::{Result, SymInt, Tensor};
use tch::Kind;

use crate::{
    cache_utils::{DynamicCache, KeyPositions},
    error::core_error,
};

/// `torch.finfo(kind).min`: the most negative finite value of a floating type.
pub fn finfo_min(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        // bfloat16 keeps float32's exponent: its largest value is 0x7f7f.
        Kind::BFloat16 => -f64::from(f32::from_bits(0x7f7f_0000)),
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// The mask `[batch or 1, 1, seq, kv]` for queries at `cache_position` (`[seq]`) over keys
/// at the absolute positions `keys` (the layer cache's `get_mask_sizes`, or a static layer's
/// slots): a key at `kv` is allowed when `kv <= q`, when `kv > q - sliding_window` if the layer
/// has a window, when its slot holds a position, and when `attention_mask` (`[batch, past +
/// seq]`, 1 for tokens, 0 for padding, indexed by absolute position) keeps it; positions past
/// the end of `attention_mask` count as padding, as transformers' `prepare_padding_mask` pads it
/// with zeros.
///
/// # Errors
/// Any error of the ops.
pub fn causal_mask(
    attention_mask: Option<&Tensor>,
    cache_position: &Tensor,
    keys: &KeyPositions,
    sliding_window: Option<i64>,
    kind: Kind,
) -> Result<Tensor> {
    causal_mask_with_blocks(
        attention_mask,
        cache_position,
        keys,
        sliding_window,
        None,
        kind,
    )
}

/// The group of each position of `positions` (`[n]`, absolute) in `block_sequence_ids`
/// (`[batch, L]`), `-1` past its end: transformers' `maybe_pad_block_sequence_ids` pads the
/// ids with `-1` up to the last key position, then indexes them by position.
fn block_groups(block_sequence_ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
    let device = positions.device();
    let len = block_sequence_ids.size(1)?;
    let inside = positions.lt_scalar(len)?;
    let zero = Tensor::zeros(Vec::<SymInt>::new(), Kind::Int64, device)?;
    let at = positions.where_cond(&inside, &zero)?;
    let none = Tensor::full(Vec::<SymInt>::new(), -1i64, Kind::Int64, device)?;
    block_sequence_ids
        .to_kind(Kind::Int64)?
        .index_select(1, &at)?
        .where_cond(&inside.unsqueeze(0)?, &none)
}

/// [`causal_mask`] with transformers' `blockwise_overlay` (Gemma3's images): a query also
/// attends every key of its own block, `block_sequence_ids[b, q] == block_sequence_ids[b, kv]
/// >= 0` (`get_block_sequence_ids_for_mask`: `-1` for text, the image's index for its tokens),
/// OR-ed with the causal rule before the sliding window and the padding are AND-ed, as
/// `create_masks_for_vision_model` composes them. The mask is then `[batch, 1, seq, kv]`.
///
/// # Errors
/// Any error of the ops.
pub fn causal_mask_with_blocks(
    attention_mask: Option<&Tensor>,
    cache_position: &Tensor,
    keys: &KeyPositions,
    sliding_window: Option<i64>,
    block_sequence_ids: Option<&Tensor>,
    kind: Kind,
) -> Result<Tensor> {
    let device = cache_position.device();
    let (kv, valid) = match keys {
        KeyPositions::Range { offset, length } => (
            Tensor::arange(offset.clone(), offset + length, 1, Kind::Int64, device)?,
            None,
        ),
        KeyPositions::Slots { positions, valid } => (positions.clone(), valid.clone()),
    };
    let q = cache_position.unsqueeze(1)?;
    let kv_row = kv.unsqueeze(0)?;
    let mut allowed = kv_row.le(&q)?.unsqueeze(0)?;
    if let Some(ids) = block_sequence_ids {
        let qg = block_groups(ids, cache_position)?.unsqueeze(2)?;
        let kg = block_groups(ids, &kv)?.unsqueeze(1)?;
        let same = qg.eq(&kg)?.logical_and(&qg.ge_scalar(0i64)?)?;
        allowed = allowed.logical_or(&same)?;
    }
    if let Some(window) = sliding_window {
        allowed = allowed.logical_and(&kv_row.gt(&q.sub_scalar(window)?)?)?;
    }
    if let Some(v) = valid {
        allowed = allowed.logical_and(&v.unsqueeze(0)?)?;
    }
    let mut allowed = allowed.unsqueeze(1)?;
    if let Some(m) = attention_mask {
        let m = m.to_kind(Kind::Bool)?;
        let m = match keys {
            KeyPositions::Range { offset, .. } if offset.as_static() == Some(0) => m,
            KeyPositions::Range { offset, length } => {
                m.narrow(1, offset.clone(), length.clone())?
            }
            KeyPositions::Slots { .. } => {
                // The mask at each slot's position, 0 past its end.
                let len = m.size(1)?;
                let inside = kv.lt_scalar(len.clone())?;
                let zero = Tensor::zeros(Vec::<SymInt>::new(), Kind::Int64, device)?;
                let at = kv.where_cond(&inside, &zero)?;
                m.index_select(1, &at)?.logical_and(&inside.unsqueeze(0)?)?
            }
        };
        allowed = allowed.logical_and(&m.unsqueeze(1)?.unsqueeze(1)?)?;
    }
    allowed
        .logical_not()?
        .to_kind(kind)?
        .mul_scalar(finfo_min(kind))
}

/// The position ids (those given, else the cache positions: the cache's `cache_position`
/// when the model was given one, else `past..past + seq`) and one eager mask per decoder layer, as transformers' models build their
/// `causal_mask_mapping` before the layers: one mask per layer type (full, or sliding with
/// its window, `windows[i]` from the config), sized by the cache layer of that type that comes
/// first (`get_mask_sizes`).
///
/// The past length comes from [`DynamicCache::past_length`]: a full layer's length, else the
/// attention mask's, else the sliding layers' count (transformers reads layer 0's count, which a
/// flattened cache cannot carry across an export once a sliding layer has dropped positions).
///
/// # Errors
/// Any error of the ops.
pub(crate) fn decoder_masks(
    model: &str,
    input_ids: &Tensor,
    attention_mask: Option<&Tensor>,
    position_ids: Option<&Tensor>,
    cache: &DynamicCache,
    windows: &[Option<i64>],
    kind: Kind,
) -> Result<(Tensor, Vec<Tensor>)> {
    decoder_masks_with_blocks(
        model,
        input_ids,
        attention_mask,
        position_ids,
        cache,
        windows,
        None,
        kind,
    )
}

/// [`decoder_masks`] with the blockwise overlay of [`causal_mask_with_blocks`] on every layer
/// type (`input_ids` only gives the number of new positions and the device: input embeddings
/// `[batch, seq, hidden]` do as well).
///
/// # Errors
/// Any error of the ops.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decoder_masks_with_blocks(
    model: &str,
    input_ids: &Tensor,
    attention_mask: Option<&Tensor>,
    position_ids: Option<&Tensor>,
    cache: &DynamicCache,
    windows: &[Option<i64>],
    block_sequence_ids: Option<&Tensor>,
    kind: Kind,
) -> Result<(Tensor, Vec<Tensor>)> {
    let q = input_ids.size(1)?;
    let past = cache
        .past_length(attention_mask, &q)
        .map_err(|e| core_error(model, e))?;
    let cache_position = match &cache.cache_position {
        Some(p) => p.clone(),
        None => {
            let total = &past + &q;
            Tensor::arange(past.clone(), total, 1, Kind::Int64, input_ids.device())?
        }
    };
    let position_ids = match position_ids {
        Some(p) => p.clone(),
        None => cache_position.unsqueeze(0)?,
    };
    let mut by_type: Vec<(Option<i64>, Tensor)> = Vec::new();
    let mut masks = Vec::with_capacity(windows.len());
    for (i, window) in windows.iter().enumerate() {
        if let Some((_, m)) = by_type.iter().find(|(w, _)| w == window) {
            masks.push(m.clone());
            continue;
        }
        let keys = cache
            .key_positions(i, &past, &q, &cache_position)
            .map_err(|e| core_error(model, e))?;
        let m = causal_mask_with_blocks(
            attention_mask,
            &cache_position,
            &keys,
            *window,
            block_sequence_ids,
            kind,
        )?;
        by_type.push((*window, m.clone()));
        masks.push(m);
    }
    Ok((position_ids, masks))
}

//! Attention masks as transformers 5.23's `masking_utils` builds them for eager attention: a
//! float mask added to the attention scores, 0 where a query may attend a key position and the
//! minimum of the scores' type (`torch.finfo(dtype).min`) elsewhere, combining the causal rule,
//! the sliding window (`sliding_window_overlay`) and the padding mask.

use onnx_diagnostic_core::{Result, SymInt, Tensor};
use tch::Kind;

use crate::{cache_utils::DynamicCache, error::core_error};

/// `torch.finfo(kind).min`: the most negative finite value of a floating type.
pub(crate) fn finfo_min(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        // bfloat16 keeps float32's exponent: its largest value is 0x7f7f.
        Kind::BFloat16 => -f64::from(f32::from_bits(0x7f7f_0000)),
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// The mask `[batch or 1, 1, seq, kv_length]` for queries at `cache_position` (`[seq]`) over
/// the key positions `kv_offset..kv_offset + kv_length` (the layer cache's `get_mask_sizes`): a
/// key `kv` is allowed when `kv <= q`, when `kv > q - sliding_window` if the layer has a window,
/// and when `attention_mask` (`[batch, past + seq]`, 1 for tokens, 0 for padding, indexed by
/// absolute position) keeps it.
///
/// # Errors
/// Any error of the ops.
pub fn causal_mask(
    attention_mask: Option<&Tensor>,
    cache_position: &Tensor,
    kv_offset: &SymInt,
    kv_length: &SymInt,
    sliding_window: Option<i64>,
    kind: Kind,
) -> Result<Tensor> {
    let device = cache_position.device();
    let end = kv_offset + kv_length;
    let kv = Tensor::arange(kv_offset.clone(), end, 1, Kind::Int64, device)?.unsqueeze(0)?;
    let q = cache_position.unsqueeze(1)?;
    let mut allowed = kv.le(&q)?;
    if let Some(window) = sliding_window {
        allowed = allowed.logical_and(&kv.gt(&q.sub_scalar(window)?)?)?;
    }
    let mut allowed = allowed.unsqueeze(0)?.unsqueeze(0)?;
    if let Some(m) = attention_mask {
        let m = m.to_kind(Kind::Bool)?;
        let m = if kv_offset.as_static() == Some(0) {
            m
        } else {
            m.narrow(1, kv_offset.clone(), kv_length.clone())?
        };
        allowed = allowed.logical_and(&m.unsqueeze(1)?.unsqueeze(1)?)?;
    }
    allowed
        .logical_not()?
        .to_kind(kind)?
        .mul_scalar(finfo_min(kind))
}

/// The position ids (those given, else the cache positions `past..past + seq` of the new
/// tokens) and one eager mask per decoder layer, as transformers' models build their
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
    let q = input_ids.size(1)?;
    let past = cache
        .past_length(attention_mask, &q)
        .map_err(|e| core_error(model, e))?;
    let total = &past + &q;
    let cache_position = Tensor::arange(past.clone(), total, 1, Kind::Int64, input_ids.device())?;
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
        let (offset, length) = cache
            .mask_sizes(i, &past, &q)
            .map_err(|e| core_error(model, e))?;
        let m = causal_mask(
            attention_mask,
            &cache_position,
            &offset,
            &length,
            *window,
            kind,
        )?;
        by_type.push((*window, m.clone()));
        masks.push(m);
    }
    Ok((position_ids, masks))
}

//! Attention masks as transformers 5.23's `masking_utils` builds them for eager attention: a
//! float mask added to the attention scores, 0 where a query may attend a key position and the
//! minimum of the scores' type (`torch.finfo(dtype).min`) elsewhere, combining the causal rule,
//! the sliding window (`sliding_window_overlay`) and the padding mask.

use onnx_diagnostic_core::{Result, SymInt, Tensor};
use tch::Kind;

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

/// The mask `[batch or 1, 1, seq, total]` for queries at `cache_position` (`[seq]`) over the
/// `total` key positions (cached and new): a key `kv` is allowed when `kv <= q`, when
/// `kv > q - sliding_window` if the layer has a window, and when `attention_mask` (`[batch,
/// total]`, 1 for tokens, 0 for padding) keeps it.
///
/// # Errors
/// Any error of the ops.
pub fn causal_mask(
    attention_mask: Option<&Tensor>,
    cache_position: &Tensor,
    total: &SymInt,
    sliding_window: Option<i64>,
    kind: Kind,
) -> Result<Tensor> {
    let device = cache_position.device();
    let kv = Tensor::arange(0, total.clone(), 1, Kind::Int64, device)?.unsqueeze(0)?;
    let q = cache_position.unsqueeze(1)?;
    let mut allowed = kv.le(&q)?;
    if let Some(window) = sliding_window {
        allowed = allowed.logical_and(&kv.gt(&q.sub_scalar(window)?)?)?;
    }
    let mut allowed = allowed.unsqueeze(0)?.unsqueeze(0)?;
    if let Some(m) = attention_mask {
        let pad = m.to_kind(Kind::Bool)?.unsqueeze(1)?.unsqueeze(1)?;
        allowed = allowed.logical_and(&pad)?;
    }
    allowed
        .logical_not()?
        .to_kind(kind)?
        .mul_scalar(finfo_min(kind))
}

/// The position ids (those given, else the cache positions `past..past + seq` of the new
/// tokens) and the eager mask over the `past + seq` key positions, as transformers' models
/// derive them from `cache_position` before their layers.
///
/// # Errors
/// Any error of the ops.
pub(crate) fn positions_and_mask(
    input_ids: &Tensor,
    attention_mask: Option<&Tensor>,
    position_ids: Option<&Tensor>,
    past: SymInt,
    sliding_window: Option<i64>,
    kind: Kind,
) -> Result<(Tensor, Tensor)> {
    let total = &past + &input_ids.size(1)?;
    let cache_position = Tensor::arange(past, total.clone(), 1, Kind::Int64, input_ids.device())?;
    let position_ids = match position_ids {
        Some(p) => p.clone(),
        None => cache_position.unsqueeze(0)?,
    };
    let mask = causal_mask(
        attention_mask,
        &cache_position,
        &total,
        sliding_window,
        kind,
    )?;
    Ok((position_ids, mask))
}

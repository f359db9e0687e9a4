//! The patches of Idefics' rotary embedding and attention.

use onnx_diagnostic_core::{Result, SymInt, Tensor, cond};
use onnx_diagnostic_macros::patch;
use onnx_diagnostic_transformers::{
    cache_utils::DynamicCache,
    models::idefics::{IdeficsAttention, IdeficsEmbedding},
};
use tch::Kind;

/// Replaces `IdeficsAttention.forward`, which asks the rotary embedding for
/// `max(kv_seq_len, q_len)` rows with `kv_seq_len = key_len + cache_position[0]`: a value of
/// the data compared in Python, which an export cannot take. As the seeds'
/// `patched_IdeficsAttention.forward`, the patch computes the length without reading the data:
/// from the sizes, the keys' length plus the positions this layer's cache holds (what
/// transformers 5.23 adds, `past_key_values.get_seq_length()`); it is at least `q_len`, so it
/// is the maximum. The rest of the attention is the original's. It can go with the attention
/// of transformers 5.23, which no longer asks for a length.
#[patch(target = IdeficsAttention::forward, family = "transformers")]
pub fn patched_attention_forward(
    this: &IdeficsAttention,
    hidden_states: &Tensor,
    attention_mask: &Tensor,
    position_ids: &Tensor,
    cache_position: &Tensor,
    cache: &mut DynamicCache,
) -> Result<Tensor> {
    let _ = cache_position;
    let qkv = this.project(hidden_states, hidden_states)?;
    let kv_seq_len = &qkv.1.size(2)? + &this.past_length(cache)?;
    this.attend(qkv, &kv_seq_len, position_ids, attention_mask, cache)
}

/// Replaces `IdeficsEmbedding.forward`, which grows its cos/sin tables `if seq_len >
/// self.max_seq_len_cached`: an export records the comparison of the lengths as a guard, so
/// the program (and the ONNX file, which drops guards) is only valid up to
/// `max_position_embeddings` positions, where eager grows the tables. As the seeds'
/// `patched_IdeficsEmbedding.forward`, the patch keeps both branches with `cond(seq_len >
/// max_seq_len_cached, ...)`: the tables computed for `seq_len` positions, or the cached ones
/// for the first `seq_len` positions. The second is a gather at `min(position,
/// max_seq_len_cached - 1)`, which is the slice whenever the branch is taken and keeps both
/// branches of one length, so the exported length stays the size expression. It can go with
/// transformers 5.23's rotary embedding, which computes `cos(position_ids * inv_freq)`
/// without a table.
#[patch(target = IdeficsEmbedding::forward, family = "transformers")]
pub fn patched_embedding_forward(
    this: &IdeficsEmbedding,
    x: &Tensor,
    seq_len: &SymInt,
) -> Result<(Tensor, Tensor)> {
    let kind = x.kind();
    let (cos, sin, max) = this.cached();
    let device = cos.device();
    let n = Tensor::full(Vec::<SymInt>::new(), seq_len.clone(), Kind::Int64, device)?;
    let grow = n.gt_scalar(max)?;
    let out = cond(
        &grow,
        |_| {
            let (c, s) = this.tables(seq_len, kind)?;
            Ok(vec![c, s])
        },
        |t| {
            let last = Tensor::full(Vec::<SymInt>::new(), max - 1, Kind::Int64, device)?;
            let index =
                Tensor::arange(0, seq_len.clone(), 1, Kind::Int64, device)?.minimum(&last)?;
            Ok(vec![
                t[0].index_select(0, &index)?.to_kind(kind)?,
                t[1].index_select(0, &index)?.to_kind(kind)?,
            ])
        },
        &[cos.clone(), sin.clone()],
    )?;
    let [c, s]: [Tensor; 2] =
        out.try_into()
            .map_err(|v: Vec<Tensor>| onnx_diagnostic_core::Error::Model {
                model: "IdeficsForVisionText2Text".to_owned(),
                message: format!("the rotary cond gave {} tensors", v.len()),
            })?;
    Ok((c, s))
}

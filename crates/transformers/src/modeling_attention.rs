//! The pieces of eager attention every decoder shares, as transformers writes them in each
//! modeling file: `rotate_half`, `apply_rotary_pos_emb`, `repeat_kv` and
//! `eager_attention_forward` (scores in the hidden states' type, the mask added, softmax in
//! float32 then cast back).

use onnx_diagnostic_core::{Result, SymInt, Tensor};
use tch::Kind;

/// `rotate_half`: `[x1, x2]` → `[-x2, x1]` along the last dim.
///
/// # Errors
/// Any error of the ops.
pub fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let d = x.size(-1)?;
    let half = d.floor_div(2);
    let x1 = x.slice(-1, None, Some(half.clone()), 1)?;
    let x2 = x.slice(-1, Some(half), None, 1)?;
    Tensor::cat(&[&x2.neg()?, &x1], -1)
}

/// `apply_rotary_pos_emb`: `q * cos + rotate_half(q) * sin` (and the same for `k`), cos/sin
/// `[batch, seq, dim]` broadcast over the heads. When cos/sin cover only the first `dim` of
/// the head (a partial rotary factor, Phi and Phi-3), the rest of the head passes through, as
/// transformers' Phi-3 `apply_rotary_pos_emb` (`rotary_dim = cos.shape[-1]`) and Phi's
/// attention split and concatenate it.
///
/// # Errors
/// Any error of the ops.
pub fn apply_rotary_pos_emb(
    q: &Tensor,
    k: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
    // Head sizes are static: the example sizes are the sizes.
    let rotary = cos.concrete_shape().last().copied().unwrap_or(0);
    let rotate = |x: &Tensor| -> Result<Tensor> {
        if x.concrete_shape().last().copied() == Some(rotary) {
            return x.mul(&cos)?.add(&rotate_half(x)?.mul(&sin)?);
        }
        let x_rot = x.slice(-1, None, Some(SymInt::new(rotary)), 1)?;
        let x_pass = x.slice(-1, Some(SymInt::new(rotary)), None, 1)?;
        let x_rot = x_rot.mul(&cos)?.add(&rotate_half(&x_rot)?.mul(&sin)?)?;
        Tensor::cat(&[&x_rot, &x_pass], -1)
    };
    Ok((rotate(q)?, rotate(k)?))
}

/// `x.view(b, s, heads, head_dim).transpose(1, 2)`: the projected states `[b, s, heads *
/// head_dim]` split into heads `[b, heads, s, head_dim]`.
///
/// # Errors
/// Any error of the ops.
pub fn split_heads(x: &Tensor, heads: i64, head_dim: i64) -> Result<Tensor> {
    x.view(vec![
        x.size(0)?,
        x.size(1)?,
        SymInt::new(heads),
        SymInt::new(head_dim),
    ])?
    .transpose(1, 2)
}

/// `repeat_kv`: `[b, kv_heads, s, d]` → `[b, kv_heads * n_rep, s, d]`.
///
/// # Errors
/// Any error of the ops.
pub fn repeat_kv(x: &Tensor, n_rep: i64) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let s = x.shape();
    x.unsqueeze(2)?
        .expand(vec![
            s[0].clone(),
            s[1].clone(),
            SymInt::new(n_rep),
            s[2].clone(),
            s[3].clone(),
        ])?
        .reshape(vec![
            s[0].clone(),
            &s[1] * n_rep,
            s[2].clone(),
            s[3].clone(),
        ])
}

/// `eager_attention_forward`: `softmax(q k^T * scaling + mask) v` with the keys and values
/// repeated to the query heads, the softmax in float32 (transformers: `softmax(weights,
/// dim=-1, dtype=torch.float32).to(query.dtype)`). Returns `[b, s, heads, d]`.
///
/// # Errors
/// Any error of the ops.
pub fn eager_attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scaling: f64,
    n_rep: i64,
) -> Result<Tensor> {
    eager_attention_forward_softcapped(q, k, v, mask, scaling, n_rep, None)
}

/// [`eager_attention_forward`] with Gemma2's soft-capping of the scores before the mask:
/// `tanh(scores / cap) * cap` (`softcap` of transformers' Gemma2 `eager_attention_forward`).
///
/// # Errors
/// Any error of the ops.
pub fn eager_attention_forward_softcapped(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scaling: f64,
    n_rep: i64,
    softcap: Option<f64>,
) -> Result<Tensor> {
    attention(q, k, v, Some(mask), scaling, n_rep, softcap)
}

/// [`eager_attention_forward`] without a mask (an encoder's, SigLIP's: every position sees
/// every other).
///
/// # Errors
/// Any error of the ops.
pub fn eager_attention_forward_unmasked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scaling: f64,
) -> Result<Tensor> {
    attention(q, k, v, None, scaling, 1, None)
}

fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scaling: f64,
    n_rep: i64,
    softcap: Option<f64>,
) -> Result<Tensor> {
    let (k, v) = (repeat_kv(k, n_rep)?, repeat_kv(v, n_rep)?);
    let mut weights = q.matmul(&k.transpose(2, 3)?)?.mul_scalar(scaling)?;
    if let Some(cap) = softcap {
        weights = weights.div_scalar(cap)?.tanh()?.mul_scalar(cap)?;
    }
    let weights = match mask {
        Some(m) => weights.add(m)?,
        None => weights,
    };
    let weights = weights
        .to_kind(Kind::Float)?
        .softmax(-1)?
        .to_kind(q.kind())?;
    weights.matmul(&v)?.transpose(1, 2)?.contiguous()
}

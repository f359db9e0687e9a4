//! `Qwen2VLModel.get_rope_index` on plain values: the multimodal rope positions `[3, batch,
//! seq]` (temporal, height, width) of a prompt whose image placeholders are marked by
//! `mm_token_type_ids`, and the offset of the positions that follow (`rope_deltas`).
//!
//! transformers runs it on the host before the decoder, in `generate` (and in
//! `Qwen2VLModel.forward` when no positions are given): it groups the token types of each row
//! with `itertools.groupby` over `.tolist()`, which no graph records. The input sets of the
//! `image-text-to-text` task compute it here and pass the positions to the model, as
//! generation does; the model calls it only eagerly.

use crate::error::{Error, Result};

/// The positions `[3, batch, seq]` (row-major) and the deltas `[batch]`.
pub type RopeIndex = (Vec<i64>, Vec<i64>);

/// `get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, attention_mask)`, row-major
/// `[batch, seq]` values: text tokens (type 0) advance by one position on all three axes; the
/// tokens of an image (type 1, its `(t, h, w)` the next of `image_grid_thw`) take the
/// `(frame, row, column)` of their merged patch (`h / m` by `w / m` per frame) offset by the
/// current position, which then advances by `max(h, w) / m`. Padding (mask 0) keeps position 0.
///
/// # Errors
/// [`Error::InputOption`] for sizes that disagree, videos (type 2), more image groups than
/// grids, or an image group whose length is not its merged patch count.
pub fn get_rope_index(
    batch: usize,
    seq: usize,
    mm_token_type_ids: &[i64],
    image_grid_thw: &[[i64; 3]],
    attention_mask: Option<&[i64]>,
    spatial_merge_size: i64,
) -> Result<RopeIndex> {
    let fail = |key: &str, message: String| Error::InputOption {
        key: key.to_owned(),
        value: String::new(),
        message: format!("get_rope_index: {message}"),
    };
    if mm_token_type_ids.len() != batch * seq {
        return Err(fail(
            "mm_token_type_ids",
            format!("{} values for [{batch}, {seq}]", mm_token_type_ids.len()),
        ));
    }
    let mask = attention_mask.unwrap_or(&[]);
    if attention_mask.is_some() && mask.len() != batch * seq {
        return Err(fail(
            "attention_mask",
            format!("{} values for [{batch}, {seq}]", mask.len()),
        ));
    }
    let m = spatial_merge_size;
    let mut grids = image_grid_thw.iter();
    let mut positions = vec![0i64; 3 * batch * seq];
    let mut deltas = Vec::with_capacity(batch);
    for b in 0..batch {
        let kept: Vec<usize> = (0..seq)
            .filter(|&s| attention_mask.is_none() || mask[b * seq + s] != 0)
            .collect();
        let types: Vec<i64> = kept
            .iter()
            .map(|&s| mm_token_type_ids[b * seq + s])
            .collect();
        let mut llm: [Vec<i64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut current = 0i64;
        let mut start = 0;
        while start < types.len() {
            let kind = types[start];
            let end = (start..types.len())
                .find(|&i| types[i] != kind)
                .unwrap_or(types.len());
            let len = (end - start) as i64;
            match kind {
                0 => {
                    for axis in &mut llm {
                        axis.extend(current..current + len);
                    }
                    current += len;
                }
                1 => {
                    let &[t, h, w] = grids.next().ok_or_else(|| {
                        fail(
                            "image_grid_thw",
                            format!(
                                "row {b} holds more images than the {} grids",
                                image_grid_thw.len()
                            ),
                        )
                    })?;
                    let (gh, gw) = (h / m, w / m);
                    if t * gh * gw != len {
                        return Err(fail(
                            "input_ids",
                            format!(
                                "row {b}: an image of grid ({t}, {h}, {w}) takes {} tokens, the \
                                 prompt holds {len}",
                                t * gh * gw
                            ),
                        ));
                    }
                    for ti in 0..t {
                        for hi in 0..gh {
                            for wi in 0..gw {
                                llm[0].push(ti + current);
                                llm[1].push(hi + current);
                                llm[2].push(wi + current);
                            }
                        }
                    }
                    current += h.max(w) / m;
                }
                other => {
                    return Err(fail(
                        "mm_token_type_ids",
                        format!("token type {other} (videos are not supported)"),
                    ));
                }
            }
            start = end;
        }
        for (axis, values) in llm.iter().enumerate() {
            for (k, &s) in kept.iter().enumerate() {
                positions[(axis * batch + b) * seq + s] = values[k];
            }
        }
        let top = llm[0]
            .iter()
            .chain(&llm[1])
            .chain(&llm[2])
            .copied()
            .max()
            .unwrap_or(-1);
        deltas.push(top + 1 - kept.len() as i64);
    }
    Ok((positions, deltas))
}

//! The layers of a cache: dynamic, dynamic sliding-window, static, static sliding-window, and
//! how each updates and tells attention where its keys are.

use onnx_diagnostic_core::{SymInt, Tensor};
use tch::Kind;

use super::input_error;
use crate::error::Result;

/// `DynamicLayer`: keys and values `[batch, kv_heads, seq, head_dim]` growing by concatenation.
#[derive(Clone, Debug, Default)]
pub struct DynamicLayer {
    /// Cached keys (`None` before the first update).
    pub keys: Option<Tensor>,
    /// Cached values.
    pub values: Option<Tensor>,
}

/// `DynamicSlidingWindowLayer`: a dynamic layer that keeps only the last `sliding_window - 1`
/// positions (all a next token can attend to) and returns the full states of the update.
#[derive(Clone, Debug)]
pub struct DynamicSlidingWindowLayer {
    /// The window.
    pub sliding_window: i64,
    /// Cached keys (at most `sliding_window - 1` positions).
    pub keys: Option<Tensor>,
    /// Cached values.
    pub values: Option<Tensor>,
    /// Positions seen so far (`get_seq_length`).
    pub cumulative_length: SymInt,
}

/// `StaticLayer`: `max_cache_len` preallocated positions, the update written at the cache
/// position.
#[derive(Clone, Debug)]
pub struct StaticLayer {
    /// Allocated positions.
    pub max_cache_len: i64,
    /// Keys `[batch, kv_heads, max_cache_len, head_dim]` (`None` before the first update).
    pub keys: Option<Tensor>,
    /// Values.
    pub values: Option<Tensor>,
    /// Positions written so far.
    pub cumulative_length: i64,
}

/// `StaticSlidingWindowLayer`: a static layer of `min(sliding_window, max_cache_len)`
/// positions keeping the last ones once full.
#[derive(Clone, Debug)]
pub struct StaticSlidingWindowLayer {
    /// Allocated positions (`min(sliding_window, max_cache_len)`).
    pub max_cache_len: i64,
    /// The window.
    pub sliding_window: i64,
    /// Keys.
    pub keys: Option<Tensor>,
    /// Values.
    pub values: Option<Tensor>,
    /// Positions seen so far.
    pub cumulative_length: i64,
}

/// The absolute positions of the keys a layer's attention reads (see
/// [`CacheLayer::key_positions`]).
#[derive(Clone, Debug)]
pub enum KeyPositions {
    /// `offset..offset + length` (transformers' `kv_offset`, `kv_length`).
    Range {
        /// The first position.
        offset: SymInt,
        /// How many.
        length: SymInt,
    },
    /// One position per key (a static layer's slots), with the slots that hold no position
    /// yet marked invalid.
    Slots {
        /// `[kv]` int64.
        positions: Tensor,
        /// `[kv]` bool, `None` when every slot counts (causality masks the unwritten ones).
        valid: Option<Tensor>,
    },
}

/// One layer of a cache, of any of the four kinds.
#[derive(Clone, Debug)]
pub enum CacheLayer {
    /// [`DynamicLayer`].
    Dynamic(DynamicLayer),
    /// [`DynamicSlidingWindowLayer`].
    DynamicSlidingWindow(DynamicSlidingWindowLayer),
    /// [`StaticLayer`].
    Static(StaticLayer),
    /// [`StaticSlidingWindowLayer`].
    StaticSlidingWindow(StaticSlidingWindowLayer),
}

/// The kind of a layer and its parameters, without tensors (how a cache is declared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `DynamicLayer`.
    Dynamic,
    /// `DynamicSlidingWindowLayer` with its window.
    DynamicSlidingWindow(i64),
    /// `StaticLayer` with its `max_cache_len`.
    Static(i64),
    /// `StaticSlidingWindowLayer` with its `max_cache_len` and window.
    StaticSlidingWindow(i64, i64),
}

impl LayerKind {
    /// An empty layer of this kind.
    pub fn layer(self) -> CacheLayer {
        match self {
            LayerKind::Dynamic => CacheLayer::Dynamic(DynamicLayer::default()),
            LayerKind::DynamicSlidingWindow(w) => {
                CacheLayer::DynamicSlidingWindow(DynamicSlidingWindowLayer {
                    sliding_window: w,
                    keys: None,
                    values: None,
                    cumulative_length: SymInt::new(0),
                })
            }
            LayerKind::Static(m) => CacheLayer::Static(StaticLayer {
                max_cache_len: m,
                keys: None,
                values: None,
                cumulative_length: 0,
            }),
            LayerKind::StaticSlidingWindow(m, w) => {
                CacheLayer::StaticSlidingWindow(StaticSlidingWindowLayer {
                    max_cache_len: m.min(w),
                    sliding_window: w,
                    keys: None,
                    values: None,
                    cumulative_length: 0,
                })
            }
        }
    }

    /// The transformers class name of the layer.
    pub fn class_name(self) -> &'static str {
        match self {
            LayerKind::Dynamic => "DynamicLayer",
            LayerKind::DynamicSlidingWindow(_) => "DynamicSlidingWindowLayer",
            LayerKind::Static(_) => "StaticLayer",
            LayerKind::StaticSlidingWindow(..) => "StaticSlidingWindowLayer",
        }
    }
}

/// Concatenation along the sequence axis of an optional cached tensor and new states.
fn cat_seq(old: Option<&Tensor>, new: &Tensor) -> Result<Tensor> {
    Ok(match old {
        Some(o) => Tensor::cat(&[o, new], -2)?,
        None => new.clone(),
    })
}

/// `zeros` shaped like `t` with `len` positions.
fn zeros_with_len(t: &Tensor, len: i64) -> Result<Tensor> {
    let mut shape = t.shape();
    shape[2] = SymInt::new(len);
    Ok(Tensor::zeros(shape, t.kind(), t.device())?)
}

/// The slots a static layer of `max_cache_len` writes `n` new positions to: `cache_position`
/// when given, else those after its `count` (refused past the end: the cache was rebuilt from
/// flattened tensors, or is full).
fn write_positions(
    count: i64,
    n: &SymInt,
    max_cache_len: i64,
    cache_position: Option<&Tensor>,
    device: tch::Device,
) -> Result<Tensor> {
    if let Some(p) = cache_position {
        return Ok(p.clone());
    }
    if count + n.hint() > max_cache_len {
        return Err(input_error(
            "cache_position",
            format!(
                "a StaticLayer of {max_cache_len} slots holding {count} positions cannot take \
                 {} more; pass `cache_position` (the positions of the new tokens) or a larger \
                 max_cache_len",
                n.hint()
            ),
        ));
    }
    Ok(Tensor::arange(count, n + count, 1, Kind::Int64, device)?)
}

impl CacheLayer {
    /// The kind and parameters of the layer.
    pub fn kind(&self) -> LayerKind {
        match self {
            CacheLayer::Dynamic(_) => LayerKind::Dynamic,
            CacheLayer::DynamicSlidingWindow(l) => {
                LayerKind::DynamicSlidingWindow(l.sliding_window)
            }
            CacheLayer::Static(l) => LayerKind::Static(l.max_cache_len),
            CacheLayer::StaticSlidingWindow(l) => {
                LayerKind::StaticSlidingWindow(l.max_cache_len, l.sliding_window)
            }
        }
    }

    /// The cached keys.
    pub fn keys(&self) -> Option<&Tensor> {
        match self {
            CacheLayer::Dynamic(l) => l.keys.as_ref(),
            CacheLayer::DynamicSlidingWindow(l) => l.keys.as_ref(),
            CacheLayer::Static(l) => l.keys.as_ref(),
            CacheLayer::StaticSlidingWindow(l) => l.keys.as_ref(),
        }
    }

    /// The cached values.
    pub fn values(&self) -> Option<&Tensor> {
        match self {
            CacheLayer::Dynamic(l) => l.values.as_ref(),
            CacheLayer::DynamicSlidingWindow(l) => l.values.as_ref(),
            CacheLayer::Static(l) => l.values.as_ref(),
            CacheLayer::StaticSlidingWindow(l) => l.values.as_ref(),
        }
    }

    /// Adds the states of new positions and returns the keys and values attention reads
    /// (transformers' `update` of the layer class).
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn update(&mut self, keys: &Tensor, values: &Tensor) -> Result<(Tensor, Tensor)> {
        self.update_at(keys, values, None)
    }

    /// [`CacheLayer::update`] with the positions of the new tokens (`cache_position`, as
    /// transformers 4 passed it in `cache_kwargs`): a static layer writes there instead of
    /// after its own count, which a cache rebuilt from flattened tensors no longer knows.
    ///
    /// # Errors
    /// [`Error::Core`] when a static layer would write past its slots; any error of the ops.
    pub fn update_at(
        &mut self,
        keys: &Tensor,
        values: &Tensor,
        cache_position: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        match self {
            CacheLayer::Dynamic(l) => {
                let k = cat_seq(l.keys.as_ref(), keys)?;
                let v = cat_seq(l.values.as_ref(), values)?;
                l.keys = Some(k.clone());
                l.values = Some(v.clone());
                Ok((k, v))
            }
            CacheLayer::DynamicSlidingWindow(l) => {
                l.cumulative_length = &l.cumulative_length + &keys.size(-2)?;
                let k = cat_seq(l.keys.as_ref(), keys)?;
                let v = cat_seq(l.values.as_ref(), values)?;
                // transformers' `full[:, :, -(window - 1):]`, written with a symbolic
                // `min(total, window - 1)` so that an export does not fix on which side of
                // the window the length falls.
                let total = k.size(-2)?;
                let keep = total.min(l.sliding_window - 1);
                let start = &total - &keep;
                l.keys = Some(k.narrow(2, start.clone(), keep.clone())?);
                l.values = Some(v.narrow(2, start, keep)?);
                Ok((k, v))
            }
            CacheLayer::Static(l) => {
                let (ck, cv) = match (&l.keys, &l.values) {
                    (Some(k), Some(v)) => (k.clone(), v.clone()),
                    _ => (
                        zeros_with_len(keys, l.max_cache_len)?,
                        zeros_with_len(values, l.max_cache_len)?,
                    ),
                };
                let n = keys.size(-2)?;
                let pos = write_positions(
                    l.cumulative_length,
                    &n,
                    l.max_cache_len,
                    cache_position,
                    keys.device(),
                )?;
                l.cumulative_length += n.hint();
                let k = ck.index_copy(2, &pos, keys)?;
                let v = cv.index_copy(2, &pos, values)?;
                l.keys = Some(k.clone());
                l.values = Some(v.clone());
                Ok((k, v))
            }
            CacheLayer::StaticSlidingWindow(l) => {
                // transformers branches on its Python count (not yet full / becoming full /
                // full, rolled or concatenated). Written without a branch, on the position of
                // the first new token `p0`, so that an export serves every case: attention
                // reads the `w` slots and the new states (the slots' absolute positions are
                // given to the mask by `key_positions`), and the layer keeps the last `w`
                // positions in order, or writes in place while they fit.
                let w = l.max_cache_len;
                let (ck, cv) = match (&l.keys, &l.values) {
                    (Some(k), Some(v)) => (k.clone(), v.clone()),
                    _ => (zeros_with_len(keys, w)?, zeros_with_len(values, w)?),
                };
                let n = keys.size(-2)?;
                let pos = match cache_position {
                    Some(p) => p.clone(),
                    None => Tensor::arange(
                        l.cumulative_length,
                        &n + l.cumulative_length,
                        1,
                        Kind::Int64,
                        keys.device(),
                    )?,
                };
                l.cumulative_length += n.hint();
                let p0 = pos.select(0, 0)?;
                let fk = Tensor::cat(&[&ck, keys], 2)?;
                let fv = Tensor::cat(&[&cv, values], 2)?;
                // Slot s keeps position t = s + max(p0 + n - w, 0): a new state when
                // p0 <= t < p0 + n, else the slot holding t (or, while the window is not full,
                // the slot s itself).
                let zero = Tensor::zeros(Vec::<SymInt>::new(), Kind::Int64, keys.device())?;
                let shift = p0.add_scalar(n.clone())?.sub_scalar(w)?.maximum(&zero)?;
                let t = Tensor::arange(0, w, 1, Kind::Int64, keys.device())?.add(&shift)?;
                let is_new = t.ge(&p0)?.logical_and(&t.lt(&p0.add_scalar(n.clone())?)?)?;
                let new_index = t.sub(&p0)?.add_scalar(w)?;
                let old_index = t.sub(&p0.sub_scalar(w)?.maximum(&zero)?)?;
                let index = new_index.where_cond(&is_new, &old_index)?;
                l.keys = Some(fk.index_select(2, &index)?);
                l.values = Some(fv.index_select(2, &index)?);
                Ok((fk, fv))
            }
        }
    }

    /// The number of positions stored (0 before the first update).
    ///
    /// # Errors
    /// Any error reading a size.
    pub fn stored_length(&self) -> Result<SymInt> {
        Ok(match self.keys() {
            Some(k) => k.size(-2)?,
            None => SymInt::new(0),
        })
    }

    /// The absolute positions of the keys attention reads after this layer is updated with
    /// `query_length` new positions at `cache_position` (`[q]`), `past` positions seen
    /// (transformers' `get_mask_sizes`, which gives them as an offset and a length):
    ///
    /// - a dynamic layer reads all it holds and the new ones, `0..stored + q`;
    /// - a sliding one holds the last positions only, so they start at `past - stored`
    ///   (`max(past - window + 1, 0)` in transformers, equal since a sliding layer stores
    ///   `min(past, window - 1)`);
    /// - a static layer reads its `max_cache_len` slots `0..max_cache_len` (unwritten ones
    ///   are masked by causality);
    /// - a static sliding layer reads its `w` slots then the new states: slot `j` holds
    ///   position `j + max(p0 - w, 0)` (valid when below `p0`, the first new position), the new
    ///   states `p0..p0 + q`.
    ///
    /// # Errors
    /// Any error of the ops.
    pub fn key_positions(
        &self,
        past: &SymInt,
        query_length: &SymInt,
        cache_position: &Tensor,
    ) -> Result<KeyPositions> {
        let stored = self.stored_length()?;
        let device = cache_position.device();
        Ok(match self {
            CacheLayer::Dynamic(_) => KeyPositions::Range {
                offset: SymInt::new(0),
                length: &stored + query_length,
            },
            CacheLayer::DynamicSlidingWindow(_) => KeyPositions::Range {
                offset: past - &stored,
                length: &stored + query_length,
            },
            CacheLayer::Static(l) => KeyPositions::Slots {
                positions: Tensor::arange(0, l.max_cache_len, 1, Kind::Int64, device)?,
                valid: None,
            },
            CacheLayer::StaticSlidingWindow(l) => {
                let w = l.max_cache_len;
                let p0 = cache_position.select(0, 0)?;
                let zero = Tensor::zeros(Vec::<SymInt>::new(), Kind::Int64, device)?;
                let slots = Tensor::arange(0, w, 1, Kind::Int64, device)?
                    .add(&p0.sub_scalar(w)?.maximum(&zero)?)?;
                let valid = Tensor::cat(
                    &[
                        &slots.lt(&p0)?,
                        &Tensor::ones(vec![query_length.clone()], Kind::Bool, device)?,
                    ],
                    0,
                )?;
                KeyPositions::Slots {
                    positions: Tensor::cat(&[&slots, cache_position], 0)?,
                    valid: Some(valid),
                }
            }
        })
    }

    /// The number of positions seen (`get_seq_length`).
    ///
    /// # Errors
    /// Any error reading a size.
    pub fn get_seq_length(&self) -> Result<SymInt> {
        Ok(match self {
            CacheLayer::Dynamic(l) => match &l.keys {
                Some(k) => k.size(-2)?,
                None => SymInt::new(0),
            },
            CacheLayer::DynamicSlidingWindow(l) => l.cumulative_length.clone(),
            CacheLayer::Static(l) => SymInt::new(l.cumulative_length),
            CacheLayer::StaticSlidingWindow(l) => SymInt::new(l.cumulative_length),
        })
    }

    /// Removes the last `tokens` positions (transformers' `crop` with a negative count) of a
    /// dynamic layer.
    ///
    /// # Errors
    /// [`Error::Core`] for a static layer, or a sliding-window layer whose window is full (the
    /// removed positions are no longer there, transformers refuses it too).
    pub fn crop(&mut self, tokens: i64) -> Result<()> {
        if tokens == 0 {
            return Ok(());
        }
        let cut = |t: &mut Option<Tensor>| -> Result<()> {
            if let Some(x) = t.as_ref() {
                let len = x.size(-2)?;
                *t = Some(x.narrow(2, 0, &len - tokens)?);
            }
            Ok(())
        };
        match self {
            CacheLayer::Dynamic(l) => {
                cut(&mut l.keys)?;
                cut(&mut l.values)
            }
            CacheLayer::DynamicSlidingWindow(l)
                if l.cumulative_length.hint() < l.sliding_window =>
            {
                cut(&mut l.keys)?;
                cut(&mut l.values)?;
                l.cumulative_length = &l.cumulative_length - tokens;
                Ok(())
            }
            other => Err(input_error(
                "cache.crop",
                format!(
                    "a {} cannot be cropped (transformers refuses it as well)",
                    other.kind().class_name()
                ),
            )),
        }
    }

    /// Reorders the batch for beam search (`reorder_cache`).
    ///
    /// # Errors
    /// Any error of `index_select`.
    pub fn reorder(&mut self, beam_idx: &Tensor) -> Result<()> {
        let sel = |t: &mut Option<Tensor>| -> Result<()> {
            if let Some(x) = t.as_ref() {
                *t = Some(x.index_select(0, beam_idx)?);
            }
            Ok(())
        };
        match self {
            CacheLayer::Dynamic(DynamicLayer { keys, values })
            | CacheLayer::DynamicSlidingWindow(DynamicSlidingWindowLayer {
                keys, values, ..
            })
            | CacheLayer::Static(StaticLayer { keys, values, .. })
            | CacheLayer::StaticSlidingWindow(StaticSlidingWindowLayer { keys, values, .. }) => {
                sel(keys)?;
                sel(values)
            }
        }
    }

    /// Sets the number of positions a static layer has seen (its slots hold the last of
    /// them); a dynamic layer's count is its length and stays.
    pub fn set_seen(&mut self, seen: i64) {
        match self {
            CacheLayer::Static(l) => l.cumulative_length = seen,
            CacheLayer::StaticSlidingWindow(l) => l.cumulative_length = seen,
            CacheLayer::Dynamic(_) | CacheLayer::DynamicSlidingWindow(_) => {}
        }
    }

    /// A layer of `kind` holding `keys`/`values` as they are (a deserialised or handmade
    /// cache): the seen length is the stored length.
    pub fn filled(kind: LayerKind, keys: Tensor, values: Tensor) -> Result<Self> {
        let len = keys.size(-2)?;
        Ok(match kind.layer() {
            CacheLayer::Dynamic(_) => CacheLayer::Dynamic(DynamicLayer {
                keys: Some(keys),
                values: Some(values),
            }),
            CacheLayer::DynamicSlidingWindow(l) => {
                CacheLayer::DynamicSlidingWindow(DynamicSlidingWindowLayer {
                    keys: Some(keys),
                    values: Some(values),
                    cumulative_length: len,
                    ..l
                })
            }
            CacheLayer::Static(l) => CacheLayer::Static(StaticLayer {
                keys: Some(keys),
                values: Some(values),
                cumulative_length: len.hint(),
                ..l
            }),
            CacheLayer::StaticSlidingWindow(l) => {
                CacheLayer::StaticSlidingWindow(StaticSlidingWindowLayer {
                    keys: Some(keys),
                    values: Some(values),
                    cumulative_length: len.hint(),
                    ..l
                })
            }
        })
    }
}

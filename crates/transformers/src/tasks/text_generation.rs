//! Input sets of the text-generation task, as the Python validate makes them: `inputs` (batch 2,
//! sequence 3, cache 30), `inputs2` (batch 3, sequence 4, cache 31), `inputs_empty_cache`
//! (cache 0), `inputs_batch1` (batch 1), each `input_ids`, `attention_mask`, `position_ids`
//! (`cache..cache + sequence` on every row) and `past_key_values`, with their dynamic shapes
//! named `batch`, `seq_length`, `cache_length` and, for the attention mask that spans cache +
//! sequence, `cache+seq` (onnx-diagnostic 0.9.3's name: it gives names as strings, which
//! `torch.export` takes as `Dim.DYNAMIC`, so the name need not be an identifier; ours is a
//! name only, as in the ONNX file's `dim_param`); and
//! `inputs_prompt`, a prompt of 11 tokens for batch 1 without cache or mask, which the Python
//! validate runs eagerly only (the exported model takes a cache; a prompt needs a generation
//! loop).

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Tensor, Value};
use tch::{Device, Kind};

use crate::{
    cache_utils::{DynamicCache, LayerKind, make_dynamic_cache_with_layers},
    error::{Error, Result},
};

/// What the input sets need to know of a decoder-only config.
#[derive(Clone, Debug)]
pub struct DecoderDims {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Decoder layers.
    pub num_layers: usize,
    /// Key/value heads.
    pub kv_heads: i64,
    /// Head size.
    pub head_dim: i64,
    /// The cache layer of each decoder layer as `DynamicCache(config=...)` makes it (empty:
    /// all [`LayerKind::Dynamic`]). A sliding layer holds `min(cache, window - 1)` positions.
    pub layer_kinds: Vec<LayerKind>,
}

impl DecoderDims {
    /// The kind of layer `i`'s cache.
    pub fn layer_kind(&self, i: usize) -> LayerKind {
        self.layer_kinds
            .get(i)
            .copied()
            .unwrap_or(LayerKind::Dynamic)
    }
}

/// The named input sets of the task: `(name, (batch, sequence, cache))`.
pub const INPUT_SETS: &[(&str, (i64, i64, i64))] = &[
    ("inputs", (2, 3, 30)),
    ("inputs2", (3, 4, 31)),
    ("inputs_empty_cache", (2, 3, 0)),
    ("inputs_batch1", (1, 3, 30)),
];

/// Length of the `inputs_prompt` set.
pub const PROMPT_LENGTH: i64 = 11;

/// `inputs_prompt`: `input_ids` `[1, 11]` only, tokens drawn in `[1000, 30000)` as the Python
/// package draws them (within the vocabulary when it is smaller).
///
/// # Errors
/// [`Error::InputOption`] for a vocabulary below one token.
pub fn text_generation_prompt(d: &DecoderDims) -> Result<Vec<(String, Value)>> {
    let (low, high) = if d.vocab_size > 30000 {
        (1000, 30000)
    } else {
        (0, d.vocab_size)
    };
    let ids = tch::Tensor::f_randint_low(low, high, [1, PROMPT_LENGTH], (Kind::Int64, Device::Cpu))
        .map_err(|e| size_error("vocab_size", d.vocab_size, &e))?;
    Ok(vec![("input_ids".to_owned(), Value::from(ids))])
}

/// The error of a size libtorch refused.
fn size_error(key: &str, value: i64, e: &tch::TchError) -> Error {
    Error::InputOption {
        key: key.to_owned(),
        value: value.to_string(),
        message: format!("libtorch refused the size: {e}"),
    }
}

/// The input sets of the default options with the second one grown by `increment` (see
/// [`TextGenerationOptions::input_sets`]).
pub fn input_sets(increment: i64) -> Vec<(&'static str, (i64, i64, i64))> {
    TextGenerationOptions::default().input_sets(increment)
}

/// The cache class of the input sets (`--iop cls_cache=...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheChoice {
    /// `DynamicCache` (its layers sliding where the model has a window).
    #[default]
    Dynamic,
    /// `StaticCache` (transformers 5: `StaticLayer`s, `StaticSlidingWindowLayer`s where the
    /// model has a window).
    Static,
    /// `HybridCache` (transformers 4, Gemma2/3): static, sliding and full layers mixed.
    Hybrid,
    /// `SlidingWindowCache` (transformers 4, Mistral): static, every layer sliding.
    SlidingWindow,
}

impl CacheChoice {
    /// The class name.
    pub fn class_name(self) -> &'static str {
        match self {
            CacheChoice::Dynamic => "DynamicCache",
            CacheChoice::Static => "StaticCache",
            CacheChoice::Hybrid => "HybridCache",
            CacheChoice::SlidingWindow => "SlidingWindowCache",
        }
    }

    /// Whether the class preallocates its positions (and the model takes `cache_position`).
    pub fn is_static(self) -> bool {
        self != CacheChoice::Dynamic
    }
}

/// The sizes of the text-generation inputs, set by the Python validate's `--iop KEY=VALUE`
/// (the keyword arguments of its `get_inputs`, with the same names and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextGenerationOptions {
    /// Batch size (2).
    pub batch_size: i64,
    /// Length of the cache (30).
    pub sequence_length: i64,
    /// Number of new tokens (3).
    pub sequence_length2: i64,
    /// The cache class (`DynamicCache`).
    pub cls_cache: CacheChoice,
    /// The slots of a static cache (default: the longest cache + new tokens of the input sets,
    /// at least `head_dim`, as the Python package's `max(sequence_length + sequence_length2,
    /// head_dim)` but one size for every set, since the slots are a static dimension).
    pub max_cache_len: Option<i64>,
    /// The cached target tokens of the feature-extraction and summarization sets (30, the
    /// Python package's `past_length`).
    pub past_length: i64,
    /// The keys set by [`TextGenerationOptions::set`]: a task whose defaults differ
    /// (feature-extraction's 12 source tokens) keeps its own where the user gave none.
    pub given: Vec<String>,
}

impl Default for TextGenerationOptions {
    fn default() -> Self {
        Self {
            batch_size: 2,
            sequence_length: 30,
            sequence_length2: 3,
            cls_cache: CacheChoice::Dynamic,
            max_cache_len: None,
            past_length: 30,
            given: Vec::new(),
        }
    }
}

impl TextGenerationOptions {
    /// Sets the option `key` (`batch_size`, `sequence_length`, `sequence_length2`,
    /// `max_cache_len`, `past_length`) from its text; `cls_cache` takes `DynamicCache` only, the one cache the models take.
    ///
    /// # Errors
    /// [`Error::InputOption`] naming the key and what it accepts.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let refuse = |message: &str| Error::InputOption {
            key: key.to_owned(),
            value: value.to_owned(),
            message: message.to_owned(),
        };
        let number = |min: i64| -> Result<i64> {
            value
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= min)
                .ok_or_else(|| refuse(&format!("expected an integer, at least {min}")))
        };
        match key {
            "batch_size" => self.batch_size = number(1)?,
            "sequence_length" => self.sequence_length = number(0)?,
            "sequence_length2" => self.sequence_length2 = number(1)?,
            "cls_cache" => {
                self.cls_cache = match value {
                    "DynamicCache" => CacheChoice::Dynamic,
                    "StaticCache" => CacheChoice::Static,
                    "HybridCache" => CacheChoice::Hybrid,
                    "SlidingWindowCache" => CacheChoice::SlidingWindow,
                    _ => {
                        return Err(refuse(
                            "expected DynamicCache, StaticCache, HybridCache or \
                             SlidingWindowCache",
                        ));
                    }
                }
            }
            "max_cache_len" => self.max_cache_len = Some(number(1)?),
            "past_length" => self.past_length = number(0)?,
            _ => {
                return Err(refuse(
                    "unknown option of the text-generation inputs (batch_size, \
                     sequence_length, sequence_length2, cls_cache, max_cache_len, past_length)",
                ));
            }
        }
        self.given.push(key.to_owned());
        Ok(())
    }

    /// Checks that the model `d` can take the cache class: a `SlidingWindowCache` needs every
    /// layer sliding, a `HybridCache` some; a static cache needs `max_cache_len` to hold the
    /// longest set.
    ///
    /// # Errors
    /// [`Error::InputOption`] naming `cls_cache` or `max_cache_len` and what fits the model.
    pub fn check(&self, d: &DecoderDims, increment: i64) -> Result<()> {
        let sliding = (0..d.num_layers)
            .filter(|&i| matches!(d.layer_kind(i), LayerKind::DynamicSlidingWindow(_)))
            .count();
        let refuse = |message: String| Error::InputOption {
            key: "cls_cache".to_owned(),
            value: self.cls_cache.class_name().to_owned(),
            message,
        };
        match self.cls_cache {
            CacheChoice::SlidingWindow if sliding < d.num_layers => {
                return Err(refuse(format!(
                    "every layer of a SlidingWindowCache slides, but {} of the model's {} \
                     layers attend to all positions; use StaticCache or HybridCache",
                    d.num_layers - sliding,
                    d.num_layers
                )));
            }
            CacheChoice::Hybrid if sliding == 0 => {
                return Err(refuse(
                    "the model has no sliding-window layer to mix with full ones; use \
                     StaticCache"
                        .to_owned(),
                ));
            }
            _ => {}
        }
        if self.cls_cache.is_static() {
            let m = self.max_cache_len(d, increment);
            let longest = self
                .input_sets(increment)
                .iter()
                .map(|(_, (_, q, c))| q + c)
                .max()
                .unwrap_or(0);
            if m < longest {
                return Err(Error::InputOption {
                    key: "max_cache_len".to_owned(),
                    value: m.to_string(),
                    message: format!(
                        "a set holds {longest} positions (cache + new tokens); give at least \
                         that many slots"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The slots of a static cache for these sets ([`TextGenerationOptions::max_cache_len`]).
    pub fn max_cache_len(&self, d: &DecoderDims, increment: i64) -> i64 {
        self.max_cache_len.unwrap_or_else(|| {
            self.input_sets(increment)
                .iter()
                .map(|(_, (_, q, c))| q + c)
                .max()
                .unwrap_or(0)
                .max(d.head_dim)
        })
    }

    /// One input set of the options' cache class: [`text_generation_inputs`] for a
    /// `DynamicCache`, [`text_generation_static_inputs`] for the static classes.
    ///
    /// # Errors
    /// As those functions.
    pub fn inputs(
        &self,
        d: &DecoderDims,
        (batch, seq, cache): (i64, i64, i64),
        increment: i64,
    ) -> Result<Vec<(String, Value)>> {
        if self.cls_cache.is_static() {
            let m = self.max_cache_len(d, increment);
            text_generation_static_inputs(d, self.cls_cache, batch, seq, cache, m)
        } else {
            text_generation_inputs(d, batch, seq, cache)
        }
    }

    /// The dynamic shapes of [`TextGenerationOptions::inputs`].
    pub fn dynamic_shapes(&self, d: &DecoderDims) -> DynamicShapes {
        if self.cls_cache.is_static() {
            text_generation_static_dynamic_shapes(d)
        } else {
            text_generation_dynamic_shapes(d)
        }
    }

    /// The named input sets `(name, (batch, new tokens, cache length))` as the Python package
    /// makes them with `add_second_input=increment`: `inputs`; `inputs2` with one more row and
    /// one more cached position and `|increment|` more new tokens (a single row when
    /// `increment` is negative); `inputs_empty_cache`; `inputs_batch1`. With 0, `inputs`
    /// alone.
    pub fn input_sets(&self, increment: i64) -> Vec<(&'static str, (i64, i64, i64))> {
        let (b, q, c) = (self.batch_size, self.sequence_length2, self.sequence_length);
        let mut sets = vec![("inputs", (b, q, c))];
        if increment == 0 {
            return sets;
        }
        let b2 = if increment > 0 { b + 1 } else { 1 };
        sets.push(("inputs2", (b2, q + increment.abs(), c + 1)));
        sets.push(("inputs_empty_cache", (b, q, 0)));
        sets.push(("inputs_batch1", (1, q, c)));
        sets
    }
}

/// The past of an input set: a `DynamicCache` with one layer of each of `kinds`, its keys and
/// values `[batch, kv_heads, past, head_dim]` drawn from libtorch's generator (keys then values,
/// layer by layer), float32; a sliding layer holds `min(past, window - 1)` positions, what it
/// keeps.
///
/// # Errors
/// [`Error::InputOption`] naming `sequence_length` when libtorch refuses the sizes.
pub fn random_past(
    kinds: &[LayerKind],
    batch: i64,
    kv_heads: i64,
    head_dim: i64,
    past: i64,
) -> Result<DynamicCache> {
    let opts = (Kind::Float, Device::Cpu);
    let randn = |len: i64| {
        tch::Tensor::f_randn([batch, kv_heads, len, head_dim], opts)
            .map(Tensor::from)
            .map_err(|e| size_error("sequence_length", past, &e))
    };
    let pairs = kinds
        .iter()
        .map(|k| {
            let len = match k {
                LayerKind::DynamicSlidingWindow(w) => past.min(w - 1),
                _ => past,
            };
            Ok((randn(len)?, randn(len)?))
        })
        .collect::<Result<Vec<_>>>()?;
    if kinds.iter().all(|k| *k == LayerKind::Dynamic) {
        Ok(DynamicCache::from_pairs(pairs))
    } else {
        make_dynamic_cache_with_layers(pairs, kinds)
    }
}

/// Keyword inputs `input_ids` `[batch, seq]`, `attention_mask` `[batch, cache + seq]` (ones),
/// `position_ids` `[batch, seq]` (`cache..cache + seq` on every row, as onnx-diagnostic 0.9.3's
/// `get_inputs` makes them, so that the exported model takes its positions as an input) and
/// `past_key_values` of the given sizes, drawn from libtorch's generator.
///
/// # Errors
/// [`Error::InputOption`] naming the size when one is negative (or the vocabulary empty).
pub fn text_generation_inputs(
    d: &DecoderDims,
    batch: i64,
    seq: i64,
    cache: i64,
) -> Result<Vec<(String, Value)>> {
    for (key, v, min) in [
        ("batch_size", batch, 1),
        ("sequence_length2", seq, 0),
        ("sequence_length", cache, 0),
        ("vocab_size", d.vocab_size, 1),
    ] {
        if v < min {
            return Err(Error::InputOption {
                key: key.to_owned(),
                value: v.to_string(),
                message: format!("must be at least {min}"),
            });
        }
    }
    let kinds: Vec<LayerKind> = (0..d.num_layers).map(|i| d.layer_kind(i)).collect();
    let past = random_past(&kinds, batch, d.kv_heads, d.head_dim, cache)?;
    let ids = tch::Tensor::f_randint(d.vocab_size, [batch, seq], (Kind::Int64, Device::Cpu))
        .map_err(|e| size_error("sequence_length2", seq, &e))?;
    let mask = tch::Tensor::f_ones([batch, cache + seq], (Kind::Int64, Device::Cpu))
        .map_err(|e| size_error("batch_size", batch, &e))?;
    let positions = tch::Tensor::f_arange_start(cache, cache + seq, (Kind::Int64, Device::Cpu))
        .and_then(|p| p.f_expand([batch, seq], false))
        .and_then(|p| p.f_contiguous())
        .map_err(|e| size_error("sequence_length2", seq, &e))?;
    Ok(vec![
        ("input_ids".to_owned(), Value::from(ids)),
        ("attention_mask".to_owned(), Value::from(mask)),
        ("position_ids".to_owned(), Value::from(positions)),
        ("past_key_values".to_owned(), Value::custom(past)),
    ])
}

/// Keyword inputs for a static cache of class `cls` with `max_cache_len` slots per layer:
/// `input_ids` `[batch, seq]`, `attention_mask` `[batch, cache + seq]` (int64 ones),
/// `cache_position` `cache..cache + seq`, and `past_key_values` as a cache that has seen `cache`
/// positions: a `StaticLayer` holds them in its first slots (zeros after), a
/// `StaticSlidingWindowLayer` of `min(window, max_cache_len)` slots holds the last of them.
/// The Python package's static sets (a 4-D boolean mask, positions from 0) describe no
/// consistent cache state; these are the ones transformers' `generate` produces.
///
/// # Errors
/// [`Error::InputOption`] for sizes out of range, as [`text_generation_inputs`].
pub fn text_generation_static_inputs(
    d: &DecoderDims,
    cls: CacheChoice,
    batch: i64,
    seq: i64,
    cache: i64,
    max_cache_len: i64,
) -> Result<Vec<(String, Value)>> {
    let mut set = text_generation_inputs(d, batch, seq, 0)?;
    if cache + seq > max_cache_len {
        return Err(Error::InputOption {
            key: "max_cache_len".to_owned(),
            value: max_cache_len.to_string(),
            message: format!("{cache} cached and {seq} new positions do not fit"),
        });
    }
    let opts = (Kind::Float, Device::Cpu);
    let layer = |kind: LayerKind| -> Result<crate::cache_utils::CacheLayer> {
        let slots = match kind {
            LayerKind::StaticSlidingWindow(m, w) => m.min(w),
            _ => max_cache_len,
        };
        let held = cache.min(slots);
        let states = || -> Result<Tensor> {
            let filled = tch::Tensor::f_randn([batch, d.kv_heads, held, d.head_dim], opts)
                .and_then(|t| {
                    let rest =
                        tch::Tensor::f_zeros([batch, d.kv_heads, slots - held, d.head_dim], opts)?;
                    tch::Tensor::f_cat(&[t, rest], 2)
                })
                .map_err(|e| size_error("sequence_length", cache, &e))?;
            Ok(Tensor::from(filled))
        };
        let mut l = crate::cache_utils::CacheLayer::filled(kind, states()?, states()?)?;
        l.set_seen(cache);
        Ok(l)
    };
    let kinds: Vec<LayerKind> = (0..d.num_layers)
        .map(|i| match d.layer_kind(i) {
            LayerKind::DynamicSlidingWindow(w) => LayerKind::StaticSlidingWindow(max_cache_len, w),
            _ => LayerKind::Static(max_cache_len),
        })
        .collect();
    let layers = kinds.into_iter().map(layer).collect::<Result<Vec<_>>>()?;
    let static_cache = crate::cache_utils::StaticCache { layers };
    let past = match cls {
        CacheChoice::Hybrid => Value::custom(crate::cache_utils::HybridCache(static_cache)),
        CacheChoice::SlidingWindow => {
            Value::custom(crate::cache_utils::SlidingWindowCache(static_cache))
        }
        _ => Value::custom(static_cache),
    };
    let mask = tch::Tensor::f_ones([batch, cache + seq], (Kind::Int64, Device::Cpu))
        .map_err(|e| size_error("batch_size", batch, &e))?;
    let positions = tch::Tensor::f_arange_start(cache, cache + seq, (Kind::Int64, Device::Cpu))
        .map_err(|e| size_error("sequence_length2", seq, &e))?;
    // The positions come from `cache_position`, as in the Python package's static sets.
    set.retain(|(name, _)| name != "position_ids");
    for (name, v) in &mut set {
        match name.as_str() {
            "attention_mask" => *v = Value::from(mask.shallow_clone()),
            "past_key_values" => *v = past.clone(),
            _ => {}
        }
    }
    set.push(("cache_position".to_owned(), Value::from(positions)));
    Ok(set)
}

/// The dynamic shapes of [`text_generation_static_inputs`]: `batch`, `seq_length` (also of
/// `cache_position`), `cache+seq`; the slots of the cache are static.
pub fn text_generation_static_dynamic_shapes(d: &DecoderDims) -> DynamicShapes {
    let (batch, seq) = (Dim::new("batch"), Dim::new("seq_length"));
    let cache_spec = DynSpec::Seq(
        (0..2 * d.num_layers)
            .map(|_| DynSpec::dims([(0, batch.clone())]))
            .collect(),
    );
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            (
                "input_ids".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, seq.clone())]),
            ),
            (
                "attention_mask".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, Dim::new("cache+seq"))]),
            ),
            ("past_key_values".to_owned(), cache_spec),
            ("cache_position".to_owned(), DynSpec::dims([(0, seq)])),
        ],
    }
}

/// The dynamic shapes of [`text_generation_inputs`].
pub fn text_generation_dynamic_shapes(d: &DecoderDims) -> DynamicShapes {
    let (batch, seq, cache) = (
        Dim::new("batch"),
        Dim::new("seq_length"),
        Dim::new("cache_length"),
    );
    // The cache follows its flattened form: key_0, value_0, key_1, ... A sliding layer's
    // length is its own dimension, `sliding_cache_length` (it stops growing at the window).
    let sliding = Dim::new("sliding_cache_length");
    let cache_spec = DynSpec::Seq(
        (0..2 * d.num_layers)
            .map(|j| {
                let len = match d.layer_kind(j / 2) {
                    LayerKind::DynamicSlidingWindow(_) => sliding.clone(),
                    _ => cache.clone(),
                };
                DynSpec::dims([(0, batch.clone()), (2, len)])
            })
            .collect(),
    );
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            (
                "input_ids".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, seq.clone())]),
            ),
            (
                "attention_mask".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, Dim::new("cache+seq"))]),
            ),
            (
                "position_ids".to_owned(),
                DynSpec::dims([(0, batch), (1, seq)]),
            ),
            ("past_key_values".to_owned(), cache_spec),
        ],
    }
}

/// The input set with its floating-point tensors (the cache) converted to `dtype`, as the
/// Python validate's `to_any(inputs, dtype)` converts them; integer tensors (ids, masks) are
/// kept.
///
/// # Errors
/// A libtorch error of the casts.
pub fn cast_floats(set: &[(String, Value)], dtype: Kind) -> Result<Vec<(String, Value)>> {
    set.iter()
        .map(|(name, v)| {
            let v = v.map_tensors(&mut |t| {
                if t.as_tch().is_floating_point() {
                    t.to_kind(dtype)
                } else {
                    Ok(t.clone())
                }
            })?;
            Ok((name.clone(), v))
        })
        .collect()
}

/// The input set moved to `device` (the Python validate's `to_any(inputs, device)`).
///
/// # Errors
/// A libtorch error of the copies.
pub fn move_to(set: &[(String, Value)], device: Device) -> Result<Vec<(String, Value)>> {
    set.iter()
        .map(|(name, v)| {
            let v = v.map_tensors(&mut |t| {
                if t.device() == device {
                    Ok(t.clone())
                } else {
                    t.to_device(device)
                }
            })?;
            Ok((name.clone(), v))
        })
        .collect()
}

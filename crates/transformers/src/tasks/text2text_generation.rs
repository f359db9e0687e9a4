//! Input sets of the `text2text-generation` task (onnx-diagnostic 0.9.3's
//! `tasks/text2text_generation.py`): `input_ids` and `attention_mask` of the source,
//! `decoder_input_ids` of the new target tokens, `past_key_values` an `EncoderDecoderCache`;
//! the sets `inputs` (batch 2, source 30, 3 new tokens after 30 cached ones) and `inputs2` (one
//! more row, source and new token); dynamic shapes with the Python package's names (`batch`,
//! `seq_length`, `seq_ids`, `seq_mask`, `cache_length_key`, `cache_length_val`).
//!
//! Decisions where its sizes describe no state a model reaches: the cross-attention cache holds
//! the encoder's states of the source (as many positions as `input_ids`, the head size
//! `d_model / decoder_attention_heads`), not `sequence_length2` positions of a head size taken
//! from the FFN size; the source mask and the cross-attention cache then share the source's
//! length, so `seq_mask` and `cache_length_val` are that dimension, `seq_length` (one symbol,
//! as the exporter finds them equal).

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Tensor, Value};
use tch::{Device, Kind};

use crate::{
    cache_utils::{DynamicCache, EncoderDecoderCache},
    error::{Error, Result},
    tasks::text_generation::{CacheChoice, TextGenerationOptions},
};

/// What the input sets need to know of an encoder-decoder config.
#[derive(Clone, Debug)]
pub struct Seq2SeqDims {
    /// Vocabulary of the source and target tokens.
    pub vocab_size: i64,
    /// Decoder layers (one self- and one cross-attention cache layer each).
    pub decoder_layers: usize,
    /// Decoder heads.
    pub heads: i64,
    /// Decoder head size.
    pub head_dim: i64,
}

/// The sizes of a set: `(batch, source, new target tokens, cached target tokens)`.
pub type Sizes = (i64, i64, i64, i64);

/// The named input sets of the default options.
pub const INPUT_SETS: &[(&str, Sizes)] = &[("inputs", (2, 30, 3, 30)), ("inputs2", (3, 31, 4, 31))];

/// The input sets of `options` as the Python package makes them with
/// `add_second_input=increment`: `inputs` (batch, `sequence_length` source tokens and cached
/// target ones, `sequence_length2` new ones) and `inputs2` (one more row, `increment` more
/// source and cached tokens, one more new token); 0 gives `inputs` alone.
///
/// # Errors
/// [`Error::InputOption`] for a static cache class (the task's cache is an
/// `EncoderDecoderCache` of dynamic caches) or a negative `increment` (the Python package
/// asserts it positive).
pub fn text2text_input_sets(
    options: &TextGenerationOptions,
    increment: i64,
) -> Result<Vec<(&'static str, Sizes)>> {
    if options.cls_cache != CacheChoice::Dynamic {
        return Err(Error::InputOption {
            key: "cls_cache".to_owned(),
            value: options.cls_cache.class_name().to_owned(),
            message: "the text2text-generation inputs take an EncoderDecoderCache of \
                      DynamicCaches"
                .to_owned(),
        });
    }
    if increment < 0 {
        return Err(Error::InputOption {
            key: "inputs2".to_owned(),
            value: increment.to_string(),
            message: "text2text-generation grows its second set, it cannot shrink it".to_owned(),
        });
    }
    let (b, s, q) = (
        options.batch_size,
        options.sequence_length,
        options.sequence_length2,
    );
    let mut sets = vec![("inputs", (b, s, q, s))];
    if increment > 0 {
        sets.push(("inputs2", (b + 1, s + increment, q + 1, s + increment)));
    }
    Ok(sets)
}

/// `inputs_prompt`: `input_ids` `[1, 11]` only (the decoder's inputs are the shifted source),
/// tokens in `[1000, 30000)` as the Python package draws them (within the vocabulary when it
/// is smaller).
///
/// # Errors
/// [`Error::InputOption`] for an empty vocabulary.
pub fn text2text_generation_prompt(d: &Seq2SeqDims) -> Result<Vec<(String, Value)>> {
    let (low, high) = if d.vocab_size > 30000 {
        (1000, 30000)
    } else {
        (0, d.vocab_size)
    };
    let ids = tch::Tensor::f_randint_low(low, high, [1, 11], (Kind::Int64, Device::Cpu)).map_err(
        |e| Error::InputOption {
            key: "vocab_size".to_owned(),
            value: d.vocab_size.to_string(),
            message: format!("libtorch refused the size: {e}"),
        },
    )?;
    Ok(vec![("input_ids".to_owned(), Value::from(ids))])
}

/// One input set: `input_ids` `[batch, source]`, `decoder_input_ids` `[batch, new]`, the
/// source's `attention_mask` (ones), and an `EncoderDecoderCache` of `cached` self-attention
/// positions and `source` cross-attention ones, drawn from libtorch's generator.
///
/// # Errors
/// [`Error::InputOption`] naming a size out of range.
pub fn text2text_generation_inputs(
    d: &Seq2SeqDims,
    batch: i64,
    source: i64,
    new: i64,
    cached: i64,
) -> Result<Vec<(String, Value)>> {
    for (key, v, min) in [
        ("batch_size", batch, 1),
        ("sequence_length", source, 1),
        ("sequence_length2", new, 1),
        ("cache_length", cached, 0),
    ] {
        if v < min {
            return Err(Error::InputOption {
                key: key.to_owned(),
                value: v.to_string(),
                message: format!("must be at least {min}"),
            });
        }
    }
    let cache = encoder_decoder_cache(d, batch, cached, source)?;
    let fail = |e: tch::TchError| Error::InputOption {
        key: "sequence_length".to_owned(),
        value: source.to_string(),
        message: format!("libtorch refused the size: {e}"),
    };
    let ids = |n: i64| -> Result<Value> {
        tch::Tensor::f_randint(d.vocab_size, [batch, n], (Kind::Int64, Device::Cpu))
            .map(Value::from)
            .map_err(fail)
    };
    let mask = tch::Tensor::f_ones([batch, source], (Kind::Int64, Device::Cpu)).map_err(fail)?;
    // Drawn source first, then target; listed in the Python package's order (the export binds
    // them by the signature's order either way).
    let input_ids = ids(source)?;
    Ok(vec![
        ("input_ids".to_owned(), input_ids),
        ("decoder_input_ids".to_owned(), ids(new)?),
        ("attention_mask".to_owned(), Value::from(mask)),
        ("past_key_values".to_owned(), Value::custom(cache)),
    ])
}

/// An `EncoderDecoderCache` of `cached` self-attention positions and `source`
/// cross-attention ones (the encoder's states of the source), `[batch, heads, len, head_dim]`
/// per layer, drawn from libtorch's generator.
///
/// # Errors
/// [`Error::InputOption`] when libtorch refuses a size.
pub(crate) fn encoder_decoder_cache(
    d: &Seq2SeqDims,
    batch: i64,
    cached: i64,
    source: i64,
) -> Result<EncoderDecoderCache> {
    let states = |len: i64| -> Result<Tensor> {
        tch::Tensor::f_randn(
            [batch, d.heads, len, d.head_dim],
            (Kind::Float, Device::Cpu),
        )
        .map(Tensor::from)
        .map_err(|e| Error::InputOption {
            key: "sequence_length".to_owned(),
            value: len.to_string(),
            message: format!("libtorch refused the size: {e}"),
        })
    };
    let pairs = |len: i64| -> Result<Vec<(Tensor, Tensor)>> {
        (0..d.decoder_layers)
            .map(|_| Ok((states(len)?, states(len)?)))
            .collect()
    };
    Ok(EncoderDecoderCache {
        self_attention_cache: DynamicCache::from_pairs(pairs(cached)?),
        cross_attention_cache: DynamicCache::from_pairs(pairs(source)?),
    })
}

/// The dynamic shapes of [`text2text_generation_inputs`]: the cache follows its flattened
/// form (the self-attention cache's `key_0, value_0, ...`, then the cross-attention cache's).
pub fn text2text_generation_dynamic_shapes(d: &Seq2SeqDims) -> DynamicShapes {
    let (batch, source) = (Dim::new("batch"), Dim::new("seq_length"));
    let layer_specs = |len: &Dim| {
        DynSpec::Seq(
            (0..2 * d.decoder_layers)
                .map(|_| DynSpec::dims([(0, batch.clone()), (2, len.clone())]))
                .collect(),
        )
    };
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            (
                "input_ids".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, source.clone())]),
            ),
            (
                "decoder_input_ids".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, Dim::new("seq_ids"))]),
            ),
            (
                "attention_mask".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, source.clone())]),
            ),
            (
                "past_key_values".to_owned(),
                DynSpec::Seq(vec![
                    layer_specs(&Dim::new("cache_length_key")),
                    layer_specs(&source),
                ]),
            ),
        ],
    }
}

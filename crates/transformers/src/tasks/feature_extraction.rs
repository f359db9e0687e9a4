//! Input sets of the `feature-extraction` and `summarization` tasks for encoder-decoders
//! (onnx-diagnostic 0.9.3's `tasks/feature_extraction.py` and `tasks/summarization.py`, one
//! code under two names): `input_ids` and `attention_mask` of the source, `past_key_values` an
//! `EncoderDecoderCache`; no `decoder_input_ids` (the model shifts the source right, as
//! transformers' `BartModel.forward` does when they are absent). The sets: `inputs` (batch 2,
//! 12 source tokens, 30 cached target ones) and `inputs2` (one more row, one more source
//! token); dynamic shapes named `batch`, `sequence_length`, `cache_length_key`.
//!
//! Decisions where the Python package's sizes describe no state a model reaches (as for
//! text2text-generation): the cross-attention cache holds the encoder's states of the source
//! (as many positions as `input_ids`, the head size `d_model / decoder_attention_heads`, one
//! layer per decoder layer), not `past_length2 = 4` positions of the FFN size 64: with 4
//! positions the source mask (12) does not fit the cross-attention keys, which transformers
//! only survives in eager mode by dropping an all-ones mask. Its length is then the source's
//! (`sequence_length`, the Python package's `cache_length_val` merged into it). The second set
//! also has one more cached token (the Python package keeps 30), so that every dimension
//! named dynamic changes between the sets.

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Value};
use tch::{Device, Kind};

use crate::{
    error::{Error, Result},
    tasks::{
        text_generation::{CacheChoice, TextGenerationOptions},
        text2text_generation::{Seq2SeqDims, encoder_decoder_cache},
    },
};

/// The sizes of a set: `(batch, source tokens, cached target tokens)`.
pub type Sizes = (i64, i64, i64);

/// The Python package's default source length for these tasks.
pub const SEQUENCE_LENGTH: i64 = 12;

/// The input sets of `options`: `inputs` (`batch_size`, `sequence_length` source tokens, 12
/// unless given, `past_length` cached ones) and `inputs2` (one more row, `increment` more
/// source and cached tokens); 0 gives `inputs` alone.
///
/// # Errors
/// [`Error::InputOption`] for a static cache class or a negative `increment`.
pub fn encoder_input_sets(
    options: &TextGenerationOptions,
    increment: i64,
) -> Result<Vec<(&'static str, Sizes)>> {
    if options.cls_cache != CacheChoice::Dynamic {
        return Err(Error::InputOption {
            key: "cls_cache".to_owned(),
            value: options.cls_cache.class_name().to_owned(),
            message: "the feature-extraction and summarization inputs take an \
                      EncoderDecoderCache of DynamicCaches"
                .to_owned(),
        });
    }
    if increment < 0 {
        return Err(Error::InputOption {
            key: "inputs2".to_owned(),
            value: increment.to_string(),
            message: "the second set grows, it cannot shrink".to_owned(),
        });
    }
    let source = if options.given.iter().any(|k| k == "sequence_length") {
        options.sequence_length
    } else {
        SEQUENCE_LENGTH
    };
    let (b, p) = (options.batch_size, options.past_length);
    let mut sets = vec![("inputs", (b, source, p))];
    if increment > 0 {
        sets.push(("inputs2", (b + 1, source + increment, p + increment)));
    }
    Ok(sets)
}

/// One input set: `input_ids` `[batch, source]`, its `attention_mask` (ones), and an
/// `EncoderDecoderCache` of `cached` self-attention positions and `source` cross-attention
/// ones, drawn from libtorch's generator.
///
/// # Errors
/// [`Error::InputOption`] naming a size out of range.
pub fn encoder_inputs(
    d: &Seq2SeqDims,
    (batch, source, cached): Sizes,
) -> Result<Vec<(String, Value)>> {
    for (key, v, min) in [
        ("batch_size", batch, 1),
        ("sequence_length", source, 1),
        ("past_length", cached, 0),
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
    let ids = tch::Tensor::f_randint(d.vocab_size, [batch, source], (Kind::Int64, Device::Cpu))
        .map_err(fail)?;
    let mask = tch::Tensor::f_ones([batch, source], (Kind::Int64, Device::Cpu)).map_err(fail)?;
    Ok(vec![
        ("input_ids".to_owned(), Value::from(ids)),
        ("attention_mask".to_owned(), Value::from(mask)),
        ("past_key_values".to_owned(), Value::custom(cache)),
    ])
}

/// The dynamic shapes of [`encoder_inputs`]: the cache follows its flattened form (the
/// self-attention cache's `key_0, value_0, ...`, then the cross-attention cache's).
pub fn encoder_dynamic_shapes(d: &Seq2SeqDims) -> DynamicShapes {
    let (batch, source) = (Dim::new("batch"), Dim::new("sequence_length"));
    let layer_specs = |len: &Dim| {
        DynSpec::Seq(
            (0..2 * d.decoder_layers)
                .map(|_| DynSpec::dims([(0, batch.clone()), (2, len.clone())]))
                .collect(),
        )
    };
    let tokens = || DynSpec::dims([(0, batch.clone()), (1, source.clone())]);
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            ("input_ids".to_owned(), tokens()),
            ("attention_mask".to_owned(), tokens()),
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

//! Input sets of the text-generation task, as the Python validate makes them: `inputs` (batch 2,
//! sequence 3, cache 30), `inputs2` (batch 3, sequence 4, cache 31), `inputs_empty_cache`
//! (cache 0), `inputs_batch1` (batch 1), with their dynamic shapes named `batch`, `seq_length`,
//! `cache_length` (the attention mask spans cache + sequence: `total_length`); and
//! `inputs_prompt`, a prompt of 11 tokens for batch 1 without cache or mask, which the Python
//! validate runs eagerly only (the exported model takes a cache; a prompt needs a generation
//! loop).

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Tensor, Value};
use tch::{Device, Kind};

use crate::cache_utils::DynamicCache;

/// What the input sets need to know of a decoder-only config.
#[derive(Clone, Copy, Debug)]
pub struct DecoderDims {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Decoder layers.
    pub num_layers: usize,
    /// Key/value heads.
    pub kv_heads: i64,
    /// Head size.
    pub head_dim: i64,
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
pub fn text_generation_prompt(d: &DecoderDims) -> Vec<(String, Value)> {
    let (low, high) = if d.vocab_size > 30000 {
        (1000, 30000)
    } else {
        (0, d.vocab_size)
    };
    vec![(
        "input_ids".to_owned(),
        Value::from(tch::Tensor::randint_low(
            low,
            high,
            [1, PROMPT_LENGTH],
            (Kind::Int64, Device::Cpu),
        )),
    )]
}

/// The input sets with the second one grown by `increment` (the Python validate's
/// `--inputs2 N`: `inputs2` is `inputs` with batch, sequence and cache each `N` larger); with
/// 0, `inputs` alone.
pub fn input_sets(increment: i64) -> Vec<(&'static str, (i64, i64, i64))> {
    if increment <= 0 {
        return INPUT_SETS[..1].to_vec();
    }
    INPUT_SETS
        .iter()
        .map(|(name, (b, s, c))| match *name {
            "inputs2" => (*name, (2 + increment, 3 + increment, 30 + increment)),
            _ => (*name, (*b, *s, *c)),
        })
        .collect()
}

/// Keyword inputs `input_ids`, `attention_mask`, `past_key_values` of the given sizes, drawn
/// from libtorch's generator.
pub fn text_generation_inputs(
    d: &DecoderDims,
    batch: i64,
    seq: i64,
    cache: i64,
) -> Vec<(String, Value)> {
    let opts = (Kind::Float, Device::Cpu);
    let pairs = (0..d.num_layers)
        .map(|_| {
            (
                Tensor::from(tch::Tensor::randn(
                    [batch, d.kv_heads, cache, d.head_dim],
                    opts,
                )),
                Tensor::from(tch::Tensor::randn(
                    [batch, d.kv_heads, cache, d.head_dim],
                    opts,
                )),
            )
        })
        .collect();
    vec![
        (
            "input_ids".to_owned(),
            Value::from(tch::Tensor::randint(
                d.vocab_size,
                [batch, seq],
                (Kind::Int64, Device::Cpu),
            )),
        ),
        (
            "attention_mask".to_owned(),
            Value::from(tch::Tensor::ones(
                [batch, cache + seq],
                (Kind::Int64, Device::Cpu),
            )),
        ),
        (
            "past_key_values".to_owned(),
            Value::custom(DynamicCache::from_pairs(pairs)),
        ),
    ]
}

/// The dynamic shapes of [`text_generation_inputs`].
pub fn text_generation_dynamic_shapes(d: &DecoderDims) -> DynamicShapes {
    let (batch, seq, cache) = (
        Dim::new("batch"),
        Dim::new("seq_length"),
        Dim::new("cache_length"),
    );
    // The cache follows its flattened form: key_0, value_0, key_1, ...
    let cache_spec = DynSpec::Seq(
        (0..2 * d.num_layers)
            .map(|_| DynSpec::dims([(0, batch.clone()), (2, cache.clone())]))
            .collect(),
    );
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            (
                "input_ids".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, seq)]),
            ),
            (
                "attention_mask".to_owned(),
                DynSpec::dims([(0, batch), (1, Dim::new("total_length"))]),
            ),
            ("past_key_values".to_owned(), cache_spec),
        ],
    }
}

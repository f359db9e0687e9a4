//! The `image-text-to-text` sets of Gemma3 (`Gemma3ForConditionalGeneration`): `input_ids` with
//! the image placeholders, `pixel_values` `[images, C, image_size, image_size]`,
//! `attention_mask`, `position_ids`, `token_type_ids` and a `DynamicCache` of sliding and full
//! layers.
//!
//! The Python package builds Gemma3's inputs from one recorded prompt of google/gemma-3-4b-it
//! (281 tokens, one image of 896 pixels, a `StaticCache` of 580 and 4-D masks given as
//! inputs), which fits that checkpoint's sizes only and whose `token_type_ids` index positions
//! past the cache, so its export never sees an image block. The sets here follow what the
//! Gemma3 processor and `generate` give any config. Decisions:
//! - Each row holds `text` tokens then its images, each as `<start_of_image>` (`boi`), the
//!   image token once per pooled feature (`mm_tokens_per_image`) and `<end_of_image>` (`eoi`);
//!   shorter rows end with more text. `token_type_ids` are 1 on the image tokens.
//! - After a cache, `token_type_ids` cover the cached positions too (zeros: text), as
//!   `generate` passes them for a prefill in chunks: the bidirectional blocks are indexed by
//!   absolute position.
//! - `position_ids` are the positions after the cache, as `generate` computes them.
//! - Sets: `inputs` (batch 2, one image per row, 3 text tokens, 4 cached), `inputs2` as the
//!   Python package's (one more row, one new token, one cached, no image: `pixel_values`
//!   `[0, ...]`), `inputs_images` (one row of three images, 5 cached: another number of
//!   images, and blocks next to each other). The images all have the config's size: the
//!   processor resizes every image to it, and SigLIP's position embedding is that grid. The
//!   sets stay small in tokens: each image is `mm_tokens_per_image` + 2 tokens (258 for the
//!   published configs), and the logits over a vocabulary of 262208 take 1 MiB per token in
//!   float32. The prompt set (eager only) is one image, no cache, no positions.
//! - Dynamic dims: `batch`, `seq_length`, `cache_length`, `cache+seq` (the mask and the token
//!   types), `images`.

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Value};
use tch::{Device, Kind};

use super::{option_error, tensor};
use crate::{
    cache_utils::LayerKind, error::Result, models::gemma3::Gemma3ForConditionalGeneration,
    tasks::random_past,
};

/// What the sets need to know of a Gemma3 config.
#[derive(Clone, Debug)]
pub struct Gemma3ImageDims {
    /// Text vocabulary size.
    pub vocab_size: i64,
    /// The cache layer of each decoder layer.
    pub layer_kinds: Vec<LayerKind>,
    /// Key/value heads.
    pub kv_heads: i64,
    /// Head size.
    pub head_dim: i64,
    /// Image channels and side in pixels.
    pub image: (i64, i64),
    /// Image tokens per image.
    pub tokens_per_image: i64,
    /// `image_token_index`, `boi_token_index`, `eoi_token_index`.
    pub tokens: [i64; 3],
}

/// One set: rows, text tokens per row, cached positions, the row of each image.
#[derive(Clone, Debug)]
pub struct Gemma3ImageSet {
    /// Rows.
    pub batch: i64,
    /// Text tokens before the images of a row.
    pub text: i64,
    /// Cached positions.
    pub past: i64,
    /// The row of each image, in order.
    pub image_rows: Vec<i64>,
}

/// The sets `inputs`, `inputs2`, `inputs_images` (see the module doc): `batch` rows in
/// `inputs`, `batch + increment` in the others (`inputs` alone when `increment` is 0).
pub fn gemma3_image_sets(batch: i64, increment: i64) -> Vec<(&'static str, Gemma3ImageSet)> {
    let mut sets = vec![(
        "inputs",
        Gemma3ImageSet {
            batch,
            text: 3,
            past: 4,
            image_rows: (0..batch).collect(),
        },
    )];
    if increment > 0 {
        let b2 = batch + increment;
        sets.push((
            "inputs2",
            Gemma3ImageSet {
                batch: b2,
                text: 1,
                past: 1,
                image_rows: Vec::new(),
            },
        ));
        sets.push((
            "inputs_images",
            Gemma3ImageSet {
                batch: 1,
                text: 2,
                past: 5,
                image_rows: vec![0, 0, 0],
            },
        ));
    }
    sets
}

/// The keyword inputs of one set, drawn from libtorch's generator; `with_positions` false
/// leaves `position_ids` out (the prompt set).
///
/// # Errors
/// [`crate::Error::InputOption`] for sizes out of range, an image in a row the set does not
/// have, or `<start_of_image>`/`<end_of_image>` outside the vocabulary.
pub fn gemma3_image_inputs(
    d: &Gemma3ImageDims,
    set: &Gemma3ImageSet,
    with_positions: bool,
) -> Result<Vec<(String, Value)>> {
    let [image, boi, eoi] = d.tokens;
    for (name, id) in [("boi_token_index", boi), ("eoi_token_index", eoi)] {
        if !(0..d.vocab_size).contains(&id) {
            return Err(option_error(
                name,
                id,
                format!("outside the vocabulary of {} tokens", d.vocab_size),
            ));
        }
    }
    if set.batch < 1 || set.text < 1 || set.past < 0 {
        return Err(option_error(
            "batch_size",
            set.batch,
            "a set takes at least one row of one text token".to_owned(),
        ));
    }
    if let Some(r) = set.image_rows.iter().find(|r| !(0..set.batch).contains(*r)) {
        return Err(option_error(
            "n_images",
            *r,
            format!("an image in row {r} of a set of {} rows", set.batch),
        ));
    }
    // Text tokens below every special one.
    let high = image.min(boi).min(eoi).min(d.vocab_size).max(1);
    let draw = |n: i64| -> Result<Vec<i64>> {
        let t = tch::Tensor::f_randint(high, [n], (Kind::Int64, Device::Cpu))
            .map_err(|e| option_error("sequence_length", n, e.to_string()))?;
        Vec::<i64>::try_from(&t).map_err(|e| option_error("sequence_length", n, e.to_string()))
    };
    let b = set.batch as usize;
    let n = d.tokens_per_image as usize;
    let mut rows: Vec<Vec<i64>> = Vec::with_capacity(b);
    let mut types: Vec<Vec<i64>> = vec![Vec::new(); b];
    for ty in &mut types {
        rows.push(draw(set.text)?);
        ty.extend(std::iter::repeat_n(
            0,
            set.past as usize + set.text as usize,
        ));
    }
    for r in &set.image_rows {
        let r = *r as usize;
        rows[r].push(boi);
        rows[r].extend(std::iter::repeat_n(image, n));
        rows[r].push(eoi);
        types[r].push(0);
        types[r].extend(std::iter::repeat_n(1, n));
        types[r].push(0);
    }
    let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
    for (row, ty) in rows.iter_mut().zip(&mut types) {
        let pad = seq - row.len();
        row.extend(draw(pad as i64)?);
        ty.extend(std::iter::repeat_n(0, pad));
    }
    let (bs, s, past) = (set.batch, seq as i64, set.past);
    let mut out = vec![("input_ids".to_owned(), tensor(&rows.concat(), &[bs, s])?)];
    let f = (Kind::Float, Device::Cpu);
    let (c, side) = d.image;
    let images = set.image_rows.len() as i64;
    let pixels = tch::Tensor::f_randn([images, c, side, side], f)
        .and_then(|t| t.f_clamp(-1.0, 1.0))
        .map_err(|e| option_error("n_images", images, e.to_string()))?;
    out.push(("pixel_values".to_owned(), Value::from(pixels)));
    let mask = vec![1i64; (bs * (past + s)) as usize];
    out.push(("attention_mask".to_owned(), tensor(&mask, &[bs, past + s])?));
    if with_positions {
        let positions: Vec<i64> = (0..bs).flat_map(|_| past..past + s).collect();
        out.push(("position_ids".to_owned(), tensor(&positions, &[bs, s])?));
    }
    if past > 0 || with_positions {
        let cache = random_past(&d.layer_kinds, bs, d.kv_heads, d.head_dim, past)?;
        out.push(("past_key_values".to_owned(), Value::custom(cache)));
    }
    out.push((
        "token_type_ids".to_owned(),
        tensor(&types.concat(), &[bs, past + s])?,
    ));
    Ok(out)
}

/// The dynamic shapes of [`gemma3_image_inputs`] (with positions).
pub fn gemma3_image_dynamic_shapes(d: &Gemma3ImageDims) -> DynamicShapes {
    let batch = Dim::new("batch");
    let seq = Dim::new("seq_length");
    let cache = Dim::new("cache_length");
    let total = Dim::new("cache+seq");
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            (
                "input_ids".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, seq.clone())]),
            ),
            (
                "pixel_values".to_owned(),
                DynSpec::dims([(0, Dim::new("images"))]),
            ),
            (
                "attention_mask".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, total.clone())]),
            ),
            (
                "position_ids".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, seq)]),
            ),
            (
                "past_key_values".to_owned(),
                DynSpec::Seq(
                    (0..2 * d.layer_kinds.len())
                        .map(|_| DynSpec::dims([(0, batch.clone()), (2, cache.clone())]))
                        .collect(),
                ),
            ),
            (
                "token_type_ids".to_owned(),
                DynSpec::dims([(0, batch), (1, total)]),
            ),
        ],
    }
}

impl Gemma3ForConditionalGeneration {
    /// The sizes of the task's inputs.
    pub fn image_text_dims(&self) -> Gemma3ImageDims {
        let c = &self.config;
        Gemma3ImageDims {
            vocab_size: c.text.vocab_size,
            layer_kinds: c.text.layer_kinds(),
            kv_heads: c.text.num_key_value_heads,
            head_dim: c.text.head_dim,
            image: (c.vision.num_channels, c.vision.image_size),
            tokens_per_image: c.image_tokens(),
            tokens: [c.image_token_index, c.boi_token_index, c.eoi_token_index],
        }
    }
}

impl crate::TaskModel for Gemma3ForConditionalGeneration {
    fn task(&self) -> &'static str {
        "image-text-to-text"
    }

    fn input_sets(
        &self,
        options: &crate::tasks::TextGenerationOptions,
        increment: i64,
    ) -> Result<crate::auto::InputSets> {
        let d = self.image_text_dims();
        tch::manual_seed(0);
        gemma3_image_sets(options.batch_size, increment)
            .into_iter()
            .map(|(name, set)| Ok((name, gemma3_image_inputs(&d, &set, true)?)))
            .collect()
    }

    fn dynamic_shapes(&self, _options: &crate::tasks::TextGenerationOptions) -> DynamicShapes {
        gemma3_image_dynamic_shapes(&self.image_text_dims())
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        let d = self.image_text_dims();
        tch::manual_seed(1);
        let set = Gemma3ImageSet {
            batch: 1,
            text: 3,
            past: 0,
            image_rows: vec![0],
        };
        gemma3_image_inputs(&d, &set, false)
    }
}

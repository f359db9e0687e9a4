//! The `image-text-to-text` task for Qwen2-VL (Gemma3's sets are in [`gemma3`]): `input_ids` with the image placeholders,
//! `attention_mask`, the multimodal rope `position_ids` `[3, batch, seq]`, a `DynamicCache`,
//! `pixel_values` `[patches, C*T*P*P]` (the flattened patches the Qwen2-VL processor makes)
//! and `image_grid_thw` `[images, 3]`.
//!
//! The Python package's `tasks/image_text_to_text.py` builds one generic set for every model
//! of the task (`pixel_values` `[images, C, H, W]`, `image_grid_thw` rows whose first image has
//! 0 frames): Qwen2-VL cannot run on it, so the sets follow what its processor and `generate`
//! give the model. Decisions:
//! - Each row holds `text` tokens then its images (image `i` in row `i % batch`), each as
//!   `<vision_start> <image> * (t*h*w / m^2) <vision_end>`; shorter rows end with more text.
//! - `position_ids` are [`get_rope_index`](crate::models::qwen2_vl::get_rope_index) of the new
//!   tokens shifted by the cache length, computed here as `generate` computes them before the
//!   model (the model then never reads the data).
//! - Sets: `inputs` (batch 2, one image per row of grids `(1, 4, 4)` and `(1, 4, 8)` patches,
//!   3 text tokens, 4 cached), `inputs2` as the Python package's (one more row, one new token,
//!   one cached, no image: `pixel_values` `[0, ...]`), and `inputs_images` (batch 3, three
//!   images of other sizes, one of 2 frames, 5 cached): the number and the sizes of the images
//!   differ from the export set's. The prompt set (eager only) is one image, no cache, no
//!   positions: the model computes them from `mm_token_type_ids`.
//! - Dynamic dims: `batch`, `seq_length`, `cache_length`, `cache+seq` (the mask), `patches`,
//!   `images`.

pub mod gemma3;
pub mod idefics;

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Value};
use tch::{Device, Kind};

use crate::{
    cache_utils::LayerKind,
    error::{Error, Result},
    models::qwen2_vl::{Qwen2VLForConditionalGeneration, get_rope_index},
    tasks::random_past,
};

/// What the input sets need to know of a Qwen2-VL config.
#[derive(Clone, Debug)]
pub struct ImageTextDims {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Text decoder layers.
    pub num_layers: usize,
    /// Key/value heads.
    pub kv_heads: i64,
    /// Head size.
    pub head_dim: i64,
    /// Values of a flattened patch.
    pub patch_values: i64,
    /// `spatial_merge_size`.
    pub merge: i64,
    /// `image_token_id`, `vision_start_token_id`, `vision_end_token_id`.
    pub tokens: [i64; 3],
}

/// One set's sizes: batch, text tokens per row, cached positions, image grids.
#[derive(Clone, Debug)]
pub struct ImageTextSet {
    /// Rows.
    pub batch: i64,
    /// Text tokens before the images of a row.
    pub text: i64,
    /// Cached positions.
    pub past: i64,
    /// `(t, h, w)` of each image, in patches.
    pub grids: Vec<[i64; 3]>,
}

/// The sets `inputs`, `inputs2`, `inputs_images` (see the module doc): `batch` rows in
/// `inputs`, `batch + increment` in the others (`inputs` alone when `increment` is 0).
pub fn image_text_sets(batch: i64, increment: i64) -> Vec<(&'static str, ImageTextSet)> {
    let grids = |n: i64, pool: &[[i64; 3]]| {
        (0..n.max(0) as usize)
            .map(|i| pool[i % pool.len()])
            .collect::<Vec<_>>()
    };
    let mut sets = vec![(
        "inputs",
        ImageTextSet {
            batch,
            text: 3,
            past: 4,
            grids: grids(batch, &[[1, 4, 4], [1, 4, 8]]),
        },
    )];
    if increment > 0 {
        let b2 = batch + increment;
        sets.push((
            "inputs2",
            ImageTextSet {
                batch: b2,
                text: 1,
                past: 1,
                grids: Vec::new(),
            },
        ));
        sets.push((
            "inputs_images",
            ImageTextSet {
                batch: b2,
                text: 2,
                past: 5,
                grids: grids(b2, &[[1, 4, 6], [2, 2, 2], [1, 2, 4]]),
            },
        ));
    }
    sets
}

fn option_error(key: &str, value: i64, message: String) -> Error {
    Error::InputOption {
        key: key.to_owned(),
        value: value.to_string(),
        message,
    }
}

fn tensor(values: &[i64], shape: &[i64]) -> Result<Value> {
    tch::Tensor::f_from_slice(values)
        .and_then(|t| t.f_reshape(shape))
        .map(Value::from)
        .map_err(|e| option_error("batch_size", shape[0], e.to_string()))
}

/// The keyword inputs of one set, drawn from libtorch's generator; `with_positions` false gives
/// `mm_token_type_ids` instead of `position_ids` (the prompt set).
///
/// # Errors
/// [`Error::InputOption`] for sizes out of range or special tokens outside the vocabulary.
pub fn image_text_inputs(
    d: &ImageTextDims,
    set: &ImageTextSet,
    with_positions: bool,
) -> Result<Vec<(String, Value)>> {
    let [image, start, end] = d.tokens;
    for (name, id) in [
        ("image_token_id", image),
        ("vision_start_token_id", start),
        ("vision_end_token_id", end),
    ] {
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
    // Text tokens below every special one.
    let high = image.min(start).min(end).min(d.vocab_size).max(1);
    let draw = |n: i64| -> Result<Vec<i64>> {
        let t = tch::Tensor::f_randint(high, [n], (Kind::Int64, Device::Cpu))
            .map_err(|e| option_error("sequence_length", n, e.to_string()))?;
        Vec::<i64>::try_from(&t).map_err(|e| option_error("sequence_length", n, e.to_string()))
    };
    let b = set.batch as usize;
    let mut rows: Vec<Vec<i64>> = Vec::with_capacity(b);
    let mut types: Vec<Vec<i64>> = vec![Vec::new(); b];
    for ty in &mut types {
        rows.push(draw(set.text)?);
        ty.extend(std::iter::repeat_n(0, set.text as usize));
    }
    let m2 = d.merge * d.merge;
    for (i, [t, h, w]) in set.grids.iter().enumerate() {
        let (r, n) = (i % b, t * h * w / m2);
        rows[r].push(start);
        rows[r].extend(std::iter::repeat_n(image, n as usize));
        rows[r].push(end);
        types[r].push(0);
        types[r].extend(std::iter::repeat_n(1, n as usize));
        types[r].push(0);
    }
    let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
    for (row, ty) in rows.iter_mut().zip(&mut types) {
        let pad = seq - row.len();
        row.extend(draw(pad as i64)?);
        ty.extend(std::iter::repeat_n(0, pad));
    }
    let ids: Vec<i64> = rows.concat();
    let types: Vec<i64> = types.concat();
    let (bs, s) = (set.batch, seq as i64);
    let mut out = vec![("input_ids".to_owned(), tensor(&ids, &[bs, s])?)];
    let mask = vec![1i64; (bs * (set.past + s)) as usize];
    out.push((
        "attention_mask".to_owned(),
        tensor(&mask, &[bs, set.past + s])?,
    ));
    if with_positions {
        let (positions, _) = get_rope_index(b, seq, &types, &set.grids, None, d.merge)?;
        let positions: Vec<i64> = positions.iter().map(|p| p + set.past).collect();
        out.push(("position_ids".to_owned(), tensor(&positions, &[3, bs, s])?));
    } else {
        out.push(("mm_token_type_ids".to_owned(), tensor(&types, &[bs, s])?));
    }
    let f = (Kind::Float, Device::Cpu);
    if set.past > 0 || with_positions {
        let kinds = vec![LayerKind::Dynamic; d.num_layers];
        let cache = random_past(&kinds, bs, d.kv_heads, d.head_dim, set.past)?;
        out.push(("past_key_values".to_owned(), Value::custom(cache)));
    }
    let patches: i64 = set.grids.iter().map(|[t, h, w]| t * h * w).sum();
    let pixels = tch::Tensor::f_randn([patches, d.patch_values], f)
        .map_err(|e| option_error("n_images", patches, e.to_string()))?;
    out.push(("pixel_values".to_owned(), Value::from(pixels)));
    let grid: Vec<i64> = set.grids.iter().flatten().copied().collect();
    out.push((
        "image_grid_thw".to_owned(),
        tensor(&grid, &[set.grids.len() as i64, 3])?,
    ));
    Ok(out)
}

/// The dynamic shapes of [`image_text_inputs`] (with positions).
pub fn image_text_dynamic_shapes(d: &ImageTextDims) -> DynamicShapes {
    let batch = Dim::new("batch");
    let seq = Dim::new("seq_length");
    let cache = Dim::new("cache_length");
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
                DynSpec::dims([(1, batch.clone()), (2, seq)]),
            ),
            (
                "past_key_values".to_owned(),
                DynSpec::Seq(
                    (0..2 * d.num_layers)
                        .map(|_| DynSpec::dims([(0, batch.clone()), (2, cache.clone())]))
                        .collect(),
                ),
            ),
            (
                "pixel_values".to_owned(),
                DynSpec::dims([(0, Dim::new("patches"))]),
            ),
            (
                "image_grid_thw".to_owned(),
                DynSpec::dims([(0, Dim::new("images"))]),
            ),
        ],
    }
}

impl Qwen2VLForConditionalGeneration {
    /// The sizes of the task's inputs.
    pub fn image_text_dims(&self) -> ImageTextDims {
        let c = &self.config;
        ImageTextDims {
            vocab_size: c.text.vocab_size,
            num_layers: c.text.num_hidden_layers,
            kv_heads: c.text.kv_heads(),
            head_dim: c.text.head_size(),
            patch_values: c.vision.patch_values(),
            merge: c.vision.spatial_merge_size,
            tokens: [
                c.image_token_id,
                c.vision_start_token_id,
                c.vision_end_token_id,
            ],
        }
    }
}

impl crate::TaskModel for Qwen2VLForConditionalGeneration {
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
        image_text_sets(options.batch_size, increment)
            .into_iter()
            .map(|(name, set)| Ok((name, image_text_inputs(&d, &set, true)?)))
            .collect()
    }

    fn dynamic_shapes(&self, _options: &crate::tasks::TextGenerationOptions) -> DynamicShapes {
        image_text_dynamic_shapes(&self.image_text_dims())
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        let d = self.image_text_dims();
        tch::manual_seed(1);
        let set = ImageTextSet {
            batch: 1,
            text: 3,
            past: 0,
            grids: vec![[1, 4, 4]],
        };
        image_text_inputs(&d, &set, false)
    }
}

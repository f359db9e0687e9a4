//! The `image-text-to-text` sets of Idefics (`IdeficsForVisionText2Text`), as the Python
//! package's `get_inputs_default` builds them: `input_ids`, `attention_mask` over the cached
//! and new positions, `position_ids`, a `DynamicCache`, `pixel_values` `[batch, images, C, H,
//! W]` and `image_attention_mask` `[batch, seq, images]`; `inputs` has batch 2, 43 new tokens
//! after 43 cached ones and 2 images per row, every token attending every image; `inputs2`
//! batch 3, one token after one cached, no image.
//!
//! Decisions beyond the Python package:
//! - `position_ids` are the positions after the cache, as `generate` computes them (the
//!   Python package gives `0..43` after 43 cached positions).
//! - Each image's tokens are written as the processor writes them,
//!   `<fake_token_around_image> <image> <fake_token_around_image>` (the first two additional
//!   tokens) when the config has them; the other tokens are drawn from the pretrained
//!   vocabulary. The Python package's `token_type_ids`, `image_grid_thw` and `use_cache` are
//!   not inputs of this model (transformers routes them to its ignored keyword arguments).
//! - Two more sets: `inputs_images` (one row of 3 images after 4 cached positions, each token
//!   attending the last image before it, as the processor's mask does, the first tokens none:
//!   their cross-attention gated off) and `inputs_long` (130 cached positions and 2 new ones:
//!   past `max_position_embeddings` when it is 128, the Python package's tiny config, so the
//!   rotary tables grow; 2 + `max_position_embeddings` cached positions in general).
//! - Dynamic dims: `batch`, `seq_length`, `cache_length`, `cache+seq`, `images`.

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Value};
use tch::{Device, Kind};

use super::option_error;
use crate::{
    cache_utils::LayerKind, error::Result, models::idefics::IdeficsForVisionText2Text,
    tasks::random_past,
};

/// What the sets need to know of an Idefics config.
#[derive(Clone, Debug)]
pub struct IdeficsImageDims {
    /// Pretrained vocabulary.
    pub vocab_size: i64,
    /// Additional tokens after it.
    pub additional_vocab_size: i64,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads (the cache's heads).
    pub heads: i64,
    /// Head size.
    pub head_dim: i64,
    /// Image channels and side in pixels.
    pub image: (i64, i64),
    /// The rotary tables' length.
    pub max_position_embeddings: i64,
}

/// How the tokens attend the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageMask {
    /// Every token attends every image.
    All,
    /// Each token attends the last image whose `<image>` token comes before it; the tokens
    /// before the first image attend none.
    Last,
}

/// One set's sizes.
#[derive(Clone, Copy, Debug)]
pub struct IdeficsImageSet {
    /// Rows.
    pub batch: i64,
    /// New tokens.
    pub seq: i64,
    /// Cached positions.
    pub past: i64,
    /// Images per row.
    pub images: i64,
    /// The image mask.
    pub mask: ImageMask,
}

/// The sets `inputs`, `inputs2`, `inputs_images`, `inputs_long` (see the module doc);
/// `inputs` alone when `increment` is 0.
pub fn idefics_image_sets(
    d: &IdeficsImageDims,
    batch: i64,
    increment: i64,
) -> Vec<(&'static str, IdeficsImageSet)> {
    let set = |batch, seq, past, images, mask| IdeficsImageSet {
        batch,
        seq,
        past,
        images,
        mask,
    };
    let mut sets = vec![("inputs", set(batch, 43, 43, 2, ImageMask::All))];
    if increment > 0 {
        sets.push(("inputs2", set(batch + increment, 1, 1, 0, ImageMask::All)));
        sets.push(("inputs_images", set(1, 12, 4, 3, ImageMask::Last)));
        sets.push((
            "inputs_long",
            set(1, 2, d.max_position_embeddings + 2, 1, ImageMask::All),
        ));
    }
    sets
}

/// One set, drawn from libtorch's generator.
///
/// # Errors
/// [`crate::Error::InputOption`] for a size out of range.
pub fn idefics_image_inputs(
    d: &IdeficsImageDims,
    s: &IdeficsImageSet,
) -> Result<Vec<(String, Value)>> {
    for (key, v, min) in [
        ("batch_size", s.batch, 1),
        ("sequence_length", s.seq, 1),
        ("past_length", s.past, 0),
        ("n_images", s.images, 0),
    ] {
        if v < min {
            return Err(option_error(key, v, format!("must be at least {min}")));
        }
    }
    let i64_ = (Kind::Int64, Device::Cpu);
    let ids = tch::Tensor::randint(d.vocab_size, [s.batch, s.seq], i64_);
    // Where each image's tokens start in a row: evenly over the row.
    let starts: Vec<i64> = (0..s.images)
        .map(|i| (i * s.seq) / s.images.max(1))
        .collect();
    if d.additional_vocab_size >= 2 {
        let (fake, image) = (d.vocab_size, d.vocab_size + 1);
        for &p in &starts {
            for (k, token) in [fake, image, fake].into_iter().enumerate() {
                let at = p + k as i64;
                if at < s.seq {
                    let _ = ids.narrow(1, at, 1).fill_(token);
                }
            }
        }
    }
    let mask = match s.mask {
        ImageMask::All => tch::Tensor::ones([s.batch, s.seq, s.images], i64_),
        ImageMask::Last => {
            let m = tch::Tensor::zeros([s.batch, s.seq, s.images], i64_);
            for t in 0..s.seq {
                if let Some(last) = starts.iter().rposition(|&p| p < t) {
                    let _ = m.narrow(1, t, 1).narrow(2, last as i64, 1).fill_(1);
                }
            }
            m
        }
    };
    let (c, side) = d.image;
    let pixels = tch::Tensor::randn(
        [s.batch, s.images, c, side, side],
        (Kind::Float, Device::Cpu),
    )
    .clamp(-1.0, 1.0);
    let positions = tch::Tensor::arange_start(s.past, s.past + s.seq, i64_)
        .unsqueeze(0)
        .expand([s.batch, s.seq], false)
        .contiguous();
    let kinds = vec![LayerKind::Dynamic; d.layers];
    Ok(vec![
        ("input_ids".to_owned(), Value::from(ids)),
        (
            "attention_mask".to_owned(),
            Value::from(tch::Tensor::ones([s.batch, s.past + s.seq], i64_)),
        ),
        ("position_ids".to_owned(), Value::from(positions)),
        (
            "past_key_values".to_owned(),
            Value::custom(random_past(&kinds, s.batch, d.heads, d.head_dim, s.past)?),
        ),
        ("pixel_values".to_owned(), Value::from(pixels)),
        ("image_attention_mask".to_owned(), Value::from(mask)),
    ])
}

/// The dynamic shapes of [`idefics_image_inputs`].
pub fn idefics_image_dynamic_shapes(d: &IdeficsImageDims) -> DynamicShapes {
    let batch = Dim::new("batch");
    let seq = Dim::new("seq_length");
    let cache = Dim::new("cache_length");
    let images = Dim::new("images");
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
                DynSpec::dims([(0, batch.clone()), (1, seq.clone())]),
            ),
            (
                "past_key_values".to_owned(),
                DynSpec::Seq(
                    (0..2 * d.layers)
                        .map(|_| DynSpec::dims([(0, batch.clone()), (2, cache.clone())]))
                        .collect(),
                ),
            ),
            (
                "pixel_values".to_owned(),
                DynSpec::dims([(0, batch.clone()), (1, images.clone())]),
            ),
            (
                "image_attention_mask".to_owned(),
                DynSpec::dims([(0, batch), (1, seq), (2, images)]),
            ),
        ],
    }
}

impl IdeficsForVisionText2Text {
    /// The sizes of the task's inputs.
    pub fn image_text_dims(&self) -> IdeficsImageDims {
        let c = &self.config;
        IdeficsImageDims {
            vocab_size: c.vocab_size,
            additional_vocab_size: c.additional_vocab_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            image: (c.vision_config.num_channels, c.vision_config.image_size),
            max_position_embeddings: c.max_position_embeddings,
        }
    }
}

impl crate::TaskModel for IdeficsForVisionText2Text {
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
        idefics_image_sets(&d, options.batch_size, increment)
            .into_iter()
            .map(|(name, set)| Ok((name, idefics_image_inputs(&d, &set)?)))
            .collect()
    }

    fn dynamic_shapes(&self, _options: &crate::tasks::TextGenerationOptions) -> DynamicShapes {
        idefics_image_dynamic_shapes(&self.image_text_dims())
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        let d = self.image_text_dims();
        tch::manual_seed(1);
        let set = IdeficsImageSet {
            batch: 1,
            seq: 8,
            past: 0,
            images: 1,
            mask: ImageMask::Last,
        };
        idefics_image_inputs(&d, &set)
    }
}

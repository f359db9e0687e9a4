//! The `mask-generation` task as the Python package's `tasks/mask_generation.py` builds it, for
//! [`SamModel`]: `pixel_values` `[batch, C, image_size, image_size]`, `input_points` `[batch,
//! point_batch_size, nb_points_per_image, 2]` and `input_boxes` `[batch, point_batch_size, 4]`
//! (no labels: transformers makes them ones), with the dims `batch`, `point_batch_size` and
//! `nb_points_per_image`; `inputs` has batch 2, two prompts of 10 points and a box each,
//! `inputs2` one more image.
//!
//! Decisions beyond the Python package:
//! - Points and boxes are pixel coordinates of the `image_size` input (uniform in
//!   `[0, image_size)`, a box's corners ordered), as `SamProcessor` gives them; the Python
//!   package draws them from N(0, 1), a few pixels around the corner.
//! - A third set, `inputs_points`, has another number of prompts (3) and of points (4) for one
//!   image, so that every dimension named dynamic changes between the sets (the Python
//!   package's `inputs2` keeps both).
//! - The images are the config's size: SAM refuses any other (the processor resizes and pads
//!   to it), so height and width are static.
//! - The eager-only prompt set is one image with one point and no box (the path that pads the
//!   points with a background point).

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Value};
use tch::{Device, Kind};

use crate::{
    auto::{InputSets, TaskModel},
    error::{Error, Result},
    models::sam::SamModel,
    tasks::TextGenerationOptions,
};

/// What the sets need to know of a SAM config.
#[derive(Clone, Copy, Debug)]
pub struct MaskGenerationDims {
    /// Image channels.
    pub num_channels: i64,
    /// Side of the image, in pixels.
    pub image_size: i64,
    /// The coordinate range of points and boxes (the prompt encoder's `image_size`).
    pub coordinate_size: i64,
}

/// One set's sizes.
#[derive(Clone, Copy, Debug)]
pub struct MaskGenerationSet {
    /// Images.
    pub batch: i64,
    /// Prompts per image.
    pub point_batch: i64,
    /// Points per prompt.
    pub points: i64,
    /// Whether each prompt has a box.
    pub boxes: bool,
}

/// The sets `inputs`, `inputs2` (`batch + increment` images) and `inputs_points` (see the
/// module doc); `inputs` alone when `increment` is 0.
pub fn mask_generation_sets(batch: i64, increment: i64) -> Vec<(&'static str, MaskGenerationSet)> {
    let set = |batch, point_batch, points| MaskGenerationSet {
        batch,
        point_batch,
        points,
        boxes: true,
    };
    let mut sets = vec![("inputs", set(batch, 2, 10))];
    if increment > 0 {
        sets.push(("inputs2", set(batch + increment, 2, 10)));
        sets.push(("inputs_points", set(1, 3, 4)));
    }
    sets
}

/// One set, drawn from libtorch's generator.
///
/// # Errors
/// [`Error::InputOption`] for a size below 1.
pub fn mask_generation_inputs(
    d: &MaskGenerationDims,
    set: &MaskGenerationSet,
) -> Result<Vec<(String, Value)>> {
    for (key, v) in [
        ("batch_size", set.batch),
        ("point_batch_size", set.point_batch),
        ("nb_points_per_image", set.points),
    ] {
        if v < 1 {
            return Err(Error::InputOption {
                key: key.to_owned(),
                value: v.to_string(),
                message: "must be at least 1".to_owned(),
            });
        }
    }
    let f = (Kind::Float, Device::Cpu);
    let (b, p, s) = (set.batch, set.point_batch, d.coordinate_size as f64);
    let pixels =
        tch::Tensor::randn([b, d.num_channels, d.image_size, d.image_size], f).clamp(-1.0, 1.0);
    let points = tch::Tensor::rand([b, p, set.points, 2], f) * s;
    let mut out = vec![
        ("pixel_values".to_owned(), Value::from(pixels)),
        ("input_points".to_owned(), Value::from(points)),
    ];
    if set.boxes {
        let corners = tch::Tensor::rand([b, p, 2, 2], f) * s;
        let (lo, hi) = (corners.amin(2, false), corners.amax(2, false));
        out.push((
            "input_boxes".to_owned(),
            Value::from(tch::Tensor::cat(&[lo, hi], -1)),
        ));
    }
    Ok(out)
}

/// The dynamic shapes of [`mask_generation_inputs`] (with boxes).
pub fn mask_generation_dynamic_shapes() -> DynamicShapes {
    let (batch, prompts) = (Dim::new("batch"), Dim::new("point_batch_size"));
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            (
                "pixel_values".to_owned(),
                DynSpec::dims([(0, batch.clone())]),
            ),
            (
                "input_points".to_owned(),
                DynSpec::dims([
                    (0, batch.clone()),
                    (1, prompts.clone()),
                    (2, Dim::new("nb_points_per_image")),
                ]),
            ),
            (
                "input_boxes".to_owned(),
                DynSpec::dims([(0, batch), (1, prompts)]),
            ),
        ],
    }
}

impl SamModel {
    /// The sizes of the task's inputs.
    pub fn mask_generation_dims(&self) -> MaskGenerationDims {
        MaskGenerationDims {
            num_channels: self.config.vision.num_channels,
            image_size: self.config.vision.image_size,
            coordinate_size: self.config.prompt_encoder.image_size,
        }
    }
}

impl TaskModel for SamModel {
    fn task(&self) -> &'static str {
        "mask-generation"
    }

    fn input_sets(&self, options: &TextGenerationOptions, increment: i64) -> Result<InputSets> {
        let d = self.mask_generation_dims();
        tch::manual_seed(0);
        mask_generation_sets(options.batch_size, increment)
            .into_iter()
            .map(|(name, set)| Ok((name, mask_generation_inputs(&d, &set)?)))
            .collect()
    }

    fn dynamic_shapes(&self, _options: &TextGenerationOptions) -> DynamicShapes {
        mask_generation_dynamic_shapes()
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        let d = self.mask_generation_dims();
        tch::manual_seed(1);
        let set = MaskGenerationSet {
            batch: 1,
            point_batch: 1,
            points: 1,
            boxes: false,
        };
        mask_generation_inputs(&d, &set)
    }
}

//! The `text-to-image` task as the Python package's `tasks/text_to_image.py` builds it, for
//! [`UNet2DConditionModel`]: `sample` `[batch, in_channels, sample_size, sample_size]`,
//! `timestep` `[1]` int64 (101), `encoder_hidden_states` `[batch, in_channels,
//! cross_attention_dim]` (the Python package uses `in_channels` as the text length), and
//! `inputs2` with one more image.
//!
//! Decisions beyond the Python package:
//! - Height and width are dynamic (`height`, `width`) besides `batch` and `encoder_length`:
//!   one ONNX file serves every resolution. The Python package keeps them static because the
//!   UNet's upsample-size decision specialises them; crates/patch-diffusers removes it.
//! - Two more sets check other resolutions: `inputs_resolution` at `sample_size + 8` by
//!   `sample_size + 16` (40×48 for 32: multiples of the up factor, the scale-2 path) with a
//!   longer text, and `inputs_odd_resolution` at `sample_size + 1` by `sample_size + 3` (the
//!   path through the skip sizes).
//! - The eager-only prompt set is one image at `sample_size` (the Python package has none for
//!   this task).

use onnx_diagnostic_core::{Dim, DynSpec, DynamicShapes, Value};
use onnx_diagnostic_transformers::{
    Result, TaskModel, auto::InputSets, tasks::TextGenerationOptions,
};
use tch::{Device, Kind};

use crate::UNet2DConditionModel;

/// The sizes the input sets are made of.
#[derive(Clone, Copy, Debug)]
pub struct TextToImageDims {
    /// `in_channels`.
    pub in_channels: i64,
    /// `sample_size` (its height when a pair), at most 32 as the Python package reduces it.
    pub sample_size: i64,
    /// `cross_attention_dim` (of the first block when a list).
    pub cross_attention_dim: i64,
}

impl UNet2DConditionModel {
    /// The sizes of the task's inputs.
    pub fn text_to_image_dims(&self) -> TextToImageDims {
        let c = self.config();
        let sample_size = match &c.sample_size {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::Array(v)) => v.first().and_then(serde_json::Value::as_i64),
            _ => None,
        }
        .unwrap_or(32);
        let cross = match &c.cross_attention_dim {
            crate::models::unets::unet_2d_condition::PerBlock::One(v) => *v,
            crate::models::unets::unet_2d_condition::PerBlock::Many(v) => {
                v.first().copied().unwrap_or(64)
            }
        };
        TextToImageDims {
            in_channels: c.in_channels,
            sample_size,
            cross_attention_dim: cross,
        }
    }
}

/// One set: `batch` images of `height` × `width`, a text of `length` tokens.
pub fn text_to_image_inputs(
    d: &TextToImageDims,
    batch: i64,
    (height, width): (i64, i64),
    length: i64,
) -> Vec<(String, Value)> {
    let f = (Kind::Float, Device::Cpu);
    let t = |x: tch::Tensor| Value::Tensor(x.into());
    vec![
        (
            "sample".to_owned(),
            t(tch::Tensor::randn([batch, d.in_channels, height, width], f)),
        ),
        (
            "timestep".to_owned(),
            t(tch::Tensor::from_slice(&[101_i64])),
        ),
        (
            "encoder_hidden_states".to_owned(),
            t(tch::Tensor::randn(
                [batch, length, d.cross_attention_dim],
                f,
            )),
        ),
    ]
}

/// The dynamic shapes: `batch`, `height`, `width` of the sample, `batch` and
/// `encoder_length` of the text; the timestep is static.
pub fn text_to_image_dynamic_shapes() -> DynamicShapes {
    let batch = Dim::new("batch");
    DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            (
                "sample".to_owned(),
                DynSpec::dims([
                    (0, batch.clone()),
                    (2, Dim::new("height")),
                    (3, Dim::new("width")),
                ]),
            ),
            // A tensor with no dynamic dimension, `{}` as the Python package writes it.
            ("timestep".to_owned(), DynSpec::dims([])),
            (
                "encoder_hidden_states".to_owned(),
                DynSpec::dims([(0, batch), (1, Dim::new("encoder_length"))]),
            ),
        ],
    }
}

impl TaskModel for UNet2DConditionModel {
    fn task(&self) -> &'static str {
        "text-to-image"
    }

    fn input_sets(&self, options: &TextGenerationOptions, increment: i64) -> Result<InputSets> {
        let d = self.text_to_image_dims();
        let (b, s, l) = (options.batch_size, d.sample_size, d.in_channels);
        tch::manual_seed(0);
        Ok(vec![
            ("inputs", text_to_image_inputs(&d, b, (s, s), l)),
            (
                "inputs2",
                text_to_image_inputs(&d, b + increment, (s, s), l),
            ),
            (
                "inputs_resolution",
                text_to_image_inputs(&d, b, (s + 8, s + 16), l + 1),
            ),
            (
                "inputs_odd_resolution",
                text_to_image_inputs(&d, 1, (s + 1, s + 3), l),
            ),
        ])
    }

    fn dynamic_shapes(&self, _options: &TextGenerationOptions) -> DynamicShapes {
        text_to_image_dynamic_shapes()
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        let d = self.text_to_image_dims();
        tch::manual_seed(1);
        Ok(text_to_image_inputs(
            &d,
            1,
            (d.sample_size, d.sample_size),
            d.in_channels,
        ))
    }
}

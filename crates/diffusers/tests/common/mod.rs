//! Helpers of the diffusers tests: the diffusers reference (a checkpoint and its outputs).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::{collections::HashMap, path::PathBuf};

use onnx_diagnostic_core::Value;

/// The tiny UNet of the catalog (`diffusers/tiny-torch-full-checker/unet`).
pub(crate) fn tiny_config() -> &'static str {
    onnx_diagnostic_diffusers::catalog::config_json("diffusers/tiny-torch-full-checker/unet")
        .unwrap()
}

/// diffusers' checkpoint and outputs of `config` on `sets`, in `<target tmp>/unet/<name>`
/// (see `onnx_diagnostic_testing::unet_reference`).
pub(crate) fn reference(
    name: &str,
    config: &str,
    sets: &str,
    options: &[&str],
) -> (PathBuf, HashMap<String, tch::Tensor>) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("unet")
        .join(name);
    onnx_diagnostic_testing::unet_reference(&root, config, sets, options).unwrap()
}

/// The keyword inputs of set `name`.
pub(crate) fn inputs(io: &HashMap<String, tch::Tensor>, name: &str) -> Vec<(String, Value)> {
    onnx_diagnostic_testing::unet_inputs(io, name)
}

/// The largest absolute difference of two tensors (of the same shape).
pub(crate) fn max_abs(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// The `sample` of a `UNet2DConditionOutput`.
pub(crate) fn sample_of(v: &Value) -> tch::Tensor {
    let Value::Custom(c) = v else {
        panic!("not a UNet2DConditionOutput: {v:?}")
    };
    assert_eq!(c.class_name(), "UNet2DConditionOutput");
    match c.fields().as_slice() {
        [(name, Value::Tensor(t))] if name == "sample" => t.as_tch().shallow_clone(),
        other => panic!("fields {other:?}"),
    }
}

//! Parity of SAM's image encoder (`SamVisionModel`) with transformers 5.23 on the checkpoint
//! its `save_pretrained` writes: windowed layers whose windows do not divide the grid (padded
//! and cropped), a global layer, relative positions and the neck, within 1e-4 in float32; and
//! the export with a dynamic batch matches eager in ONNX Runtime on other batch sizes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{diff, run_reference, t};
use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, ExportOptions, Inputs, Module, Value, export,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_transformers::models::sam::SamVisionModel;

/// 32-pixel images in 4-pixel patches (an 8 x 8 grid), windows of 3 (the grid padded to 9),
/// layer 1 global, 2 heads, the neck to 8 channels.
const TINY: &str = r#"{"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
  "image_size": 32, "patch_size": 4, "window_size": 3, "global_attn_indexes": [1],
  "output_channels": 8, "mlp_dim": 24}"#;

#[test]
fn sam_vision_encoder_matches_transformers_and_exports_with_a_dynamic_batch() {
    let (dir, io) = run_reference(
        "make_sam_vision_reference.py",
        "sam",
        "vision",
        TINY,
        &["--batches=2,1,3"],
    );
    let model = SamVisionModel::from_pretrained(&dir).unwrap();
    let ours: i64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.as_tch().numel() as i64)
        .sum();
    assert_eq!(ours, io["n_parameters"].int64_value(&[]), "parameter count");
    let set = |b: i64| {
        vec![(
            "pixel_values".to_owned(),
            Value::Tensor(t(&io, &format!("b{b}.pixel_values"))),
        )]
    };
    for b in [2, 1, 3] {
        let out = model
            .forward(&Inputs::bind_for(&model, &[], &set(b)).unwrap())
            .unwrap();
        let Value::Tensor(h) = &out else {
            panic!("not a tensor")
        };
        let d = diff(h, &io[&format!("b{b}.last_hidden_state")]);
        assert!(d <= 1e-4, "batch {b}: {d}");
    }
    // Another image size is refused naming the input.
    let small = vec![(
        "pixel_values".to_owned(),
        Value::from(tch::Tensor::zeros(
            [1, 3, 16, 16],
            (tch::Kind::Float, tch::Device::Cpu),
        )),
    )];
    let e = model
        .forward(&Inputs::bind_for(&model, &[], &small).unwrap())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("pixel_values has shape [1, 3, 16, 16]"),
        "{e}"
    );

    let ds = DynamicShapes {
        args: Vec::new(),
        kwargs: vec![(
            "pixel_values".to_owned(),
            DynSpec::dims([(0, Dim::new("batch"))]),
        )],
    };
    let ep = export(&model, &[], &set(2), Some(&ds), &ExportOptions::default()).unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for b in [1, 3] {
        let eager = model
            .forward(&Inputs::bind_for(&model, &[], &set(b)).unwrap())
            .unwrap();
        for (what, got) in [
            ("exported program", ep.run(&[], &set(b)).unwrap()),
            ("ORT", session.run(&[], &set(b)).unwrap()),
        ] {
            let d = max_diff(&eager, &got);
            assert!(d.abs <= 1e-4 && d.dnan == 0.0, "batch {b} {what}: {d:?}");
        }
    }
}

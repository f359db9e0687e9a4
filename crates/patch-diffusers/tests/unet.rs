//! The diffusers patches on the tiny UNet of the catalog, against diffusers 0.42.1 on the same
//! checkpoint: without them the export with dynamic batch, height and width records guards on
//! the sizes (the remainder by the up factor, the batch limit), each named by its line, and the
//! graph fails on a size that is not a multiple of the up factor; with them there is no guard
//! on the sizes and ONNX Runtime matches diffusers within 1e-4 on resolutions the export never
//! saw (40×48 and 33×35 after 32×32), `UNet2DConditionOutput` crossing the boundary as
//! `sample`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{collections::HashMap, path::PathBuf};

use onnx_diagnostic_core::{
    ExportOptions, ExportedProgram, PatchOptions, Value, export, torch_export_patches,
};
use onnx_diagnostic_diffusers::{
    UNet2DConditionModel, catalog, text_to_image::text_to_image_dynamic_shapes,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower};

const SETS: &str = "inputs:2:32:32:4,res:2:40:48:5,odd:1:33:35:4";

fn reference() -> (PathBuf, HashMap<String, tch::Tensor>) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unet_patches");
    let config = catalog::config_json("diffusers/tiny-torch-full-checker/unet").unwrap();
    onnx_diagnostic_testing::unet_reference(&root, config, SETS, &[]).unwrap()
}

fn set(io: &HashMap<String, tch::Tensor>, name: &str) -> Vec<(String, Value)> {
    onnx_diagnostic_testing::unet_inputs(io, name)
}

fn export_with(
    model: &UNet2DConditionModel,
    example: &[(String, Value)],
    diffusers: bool,
) -> ExportedProgram {
    let _g = torch_export_patches(PatchOptions {
        patch_diffusers: diffusers,
        ..PatchOptions::default()
    })
    .unwrap();
    let ds = text_to_image_dynamic_shapes();
    export(model, &[], example, Some(&ds), &ExportOptions::default()).unwrap()
}

/// The line of `needle` in a source file of crates/diffusers.
fn line_of(source: &str, needle: &str) -> usize {
    1 + source.lines().position(|l| l.contains(needle)).unwrap()
}

/// The `sample` leaf of a model output.
fn sample(v: &Value) -> tch::Tensor {
    let (leaves, _) = v.flatten("out").unwrap();
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].0, "out_sample");
    leaves[0].1.as_tch().shallow_clone()
}

fn max_abs(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn unet_exports_for_every_resolution_only_with_the_diffusers_patches() {
    assert_eq!(
        onnx_diagnostic_patch_diffusers::patches(),
        [
            "patched_UNet2DConditionModel.forward_upsample_size",
            "patched_Upsample2D.forward"
        ]
    );
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(false, true, 0);
    let (dir, io) = reference();
    let model = UNet2DConditionModel::from_pretrained(&dir).unwrap();
    let example = set(&io, "inputs");

    // Unpatched: the graph holds for even sizes and batches below 64 only.
    let ep = export_with(&model, &example, false);
    let guards: Vec<String> = ep
        .guards()
        .iter()
        .map(|g| format!("{g} at {}", g.location))
        .collect();
    let unet = include_str!("../../diffusers/src/models/unets/unet_2d_condition.rs");
    let sampling = include_str!("../../diffusers/src/models/sampling.rs");
    let at_unet = format!(
        "unet_2d_condition.rs:{}:",
        line_of(unet, "if dim.modulo(factor).compare(Rel::Ne, 0)? {")
    );
    let at_upsample = format!(
        "sampling.rs:{}:",
        line_of(sampling, "if shape[0].compare(Rel::Ge, 64)? {")
    );
    assert!(
        guards
            .iter()
            .any(|g| g.starts_with("Mod(height, 2) == 0") && g.contains(&at_unet)),
        "{guards:#?}"
    );
    assert!(
        guards
            .iter()
            .any(|g| g.starts_with("Mod(width, 2) == 0") && g.contains(&at_unet)),
        "{guards:#?}"
    );
    assert!(
        guards
            .iter()
            .any(|g| g.starts_with("batch < 64") && g.contains(&at_upsample)),
        "{guards:#?}"
    );
    let odd = set(&io, "odd");
    let e = ep.run(&[], &odd).unwrap_err().to_string();
    assert!(e.contains("Mod(height, 2) == 0"), "{e}");
    // ONNX has no guard: the graph upsamples 17 rows by 2 and concatenates them with 33.
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    assert!(session.run(&[], &odd).is_err());
    drop(session);

    // Patched: no guard on the sizes, diffusers' values on every resolution.
    let ep = export_with(&model, &example, true);
    assert!(
        ep.guards().iter().all(|g| g.lhs.symbols().is_empty()),
        "{:?}",
        ep.guards()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    let text = ep.to_string();
    assert!(
        text.contains(r#"sample: "f32[batch, 4, height, width]""#),
        "{text}"
    );
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for name in ["inputs", "res", "odd"] {
        let s = set(&io, name);
        let expected = &io[&format!("{name}.out")];
        let from_program = sample(&ep.run(&[], &s).unwrap());
        let d = max_abs(&from_program, expected);
        assert!(d <= 1e-4, "{name}: exported program {d}");
        let from_ort = sample(&session.run(&[], &s).unwrap());
        let d = max_abs(&from_ort, expected);
        assert!(d <= 1e-4, "{name}: ONNX Runtime {d}");
    }
    // The graph's output is the flattened UNet2DConditionOutput, `sample`, which the input
    // `sample` already names: the lowering's rule for a clash gives `sample_out`.
    let graph = onnx.graph.as_ref().unwrap();
    let outputs: Vec<&str> = graph
        .output
        .iter()
        .filter_map(|o| o.name.as_deref())
        .collect();
    assert_eq!(outputs, ["sample_out"]);
}

//! What the export tests of the patches share.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use onnx_diagnostic_core::{
    Error, ExportOptions, ExportedProgram, Inputs, PatchOptions, Result, Value, export,
    patches::any_active, torch_export_patches,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_transformers::{TaskModel, tasks::TextGenerationOptions};

/// The export stops with a data-dependent error at a line of `file`.
pub(crate) fn stops_in(e: &Error, file: &str) {
    match e {
        Error::DataDependent { location, .. } => {
            assert!(location.file.ends_with(file), "{e}");
        }
        other => panic!("not a data-dependent stop: {other}"),
    }
}

/// Exports `model` on its `inputs` set under the transformers patches and compares the
/// exported program and ONNX Runtime with eager (unpatched) on every set, within 1e-4.
/// Returns the sets.
pub(crate) fn export_and_compare<M: TaskModel>(
    model: &M,
) -> Vec<(&'static str, Vec<(String, Value)>)> {
    let options = TextGenerationOptions::default();
    let sets = model.input_sets(&options, 1).unwrap();
    let guard = torch_export_patches(PatchOptions {
        patch_transformers: true,
        ..PatchOptions::default()
    })
    .unwrap();
    let ep = export(
        model,
        &[],
        &sets[0].1,
        Some(&model.dynamic_shapes(&options)),
        &ExportOptions::default(),
    )
    .unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    let got: Vec<_> = sets
        .iter()
        .map(|(name, set)| {
            (
                ep.run(&[], set).unwrap_or_else(|e| panic!("{name}: {e}")),
                session
                    .run(&[], set)
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        })
        .collect();
    drop(guard);
    assert!(!any_active());
    for ((name, set), (from_ep, from_ort)) in sets.iter().zip(&got) {
        let eager = model
            .forward(&Inputs::bind_for(model, &[], set).unwrap())
            .unwrap();
        for (what, v) in [("exported program", from_ep), ("ORT", from_ort)] {
            let d = max_diff(&eager, v);
            assert!(d.abs <= 1e-4 && d.dnan == 0.0, "{name} {what}: {d:?}");
        }
    }
    sets
}

/// Exports `model` on its `inputs` set under the transformers patches but those of `skip`.
pub(crate) fn try_export<M: TaskModel>(model: &M, skip: &[&str]) -> Result<ExportedProgram> {
    let _g = torch_export_patches(PatchOptions {
        patch_transformers: true,
        patch: true,
        skip: skip.iter().map(|s| (*s).to_owned()).collect(),
        ..PatchOptions::default()
    })
    .unwrap();
    let options = TextGenerationOptions::default();
    let sets = model.input_sets(&options, 1).unwrap();
    export(
        model,
        &[],
        &sets[0].1,
        Some(&model.dynamic_shapes(&options)),
        &ExportOptions::default(),
    )
}

/// The export stopped reading the data as a bool (`to_bool`) at a line of `file` whose
/// previous line contains `above` (the Python the Rust line stands for).
pub(crate) fn stops_at_read(e: &Error, file: &str, above: &str) {
    stops_in(e, file);
    let Error::DataDependent { location, what } = e else {
        unreachable!()
    };
    assert!(what.contains("as a bool"), "{e}");
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(location.file),
    )
    .unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let at = location.line as usize - 1;
    assert!(lines[at].contains("to_bool"), "{}", lines[at]);
    assert!(lines[at - 1].contains(above), "{}", lines[at - 1]);
}

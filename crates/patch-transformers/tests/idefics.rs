//! Idefics exports with a dynamic length only with its two patches:
//! - without `patched_IdeficsAttention.forward` the export stops on the comparison of
//!   `key_len + cache_position[0]` (a value of the data) with `q_len`;
//! - without `patched_IdeficsEmbedding.forward` the export records the table-growth test as a
//!   guard on the lengths: the program refuses a set past `max_position_embeddings`, and the
//!   ONNX file (which drops guards) cannot compute it;
//! - with both, the exported program and ONNX Runtime match eager on every set: other batch,
//!   sequence and cache sizes, no image, three images, and a length past the cached tables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{export_and_compare, stops_at_read, try_export};
use onnx_diagnostic_core::{Error, Module, PatchOptions, torch_export_patches};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_transformers::{
    TaskModel,
    models::idefics::{IdeficsConfig, IdeficsForVisionText2Text},
    tasks::TextGenerationOptions,
    weights::Weights,
};

/// The perceiver, two additional tokens, rotary tables of 100 positions: the export set (43
/// cached and 43 new positions) reads the cached tables, the long set (102 + 2) grows them.
const TINY: &str = r#"{"architectures": ["IdeficsForVisionText2Text"], "model_type": "idefics",
  "vocab_size": 100, "additional_vocab_size": 2, "hidden_size": 16, "intermediate_size": 24,
  "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 100,
  "alpha_type": "vector", "alpha_initializer": "ones", "use_resampler": true,
  "perceiver_config": {"resampler_depth": 1, "resampler_n_heads": 2, "resampler_head_dim": 8,
    "resampler_n_latents": 4},
  "vision_config": {"embed_dim": 12, "image_size": 8, "patch_size": 2, "num_hidden_layers": 1,
    "num_attention_heads": 3, "intermediate_size": 20}}"#;

fn tiny() -> IdeficsForVisionText2Text {
    let cfg = IdeficsConfig::from_json(TINY).unwrap();
    let mut w = Weights::untrained("IdeficsForVisionText2Text", 7, 0.2);
    IdeficsForVisionText2Text::new(cfg, &mut w).unwrap()
}

/// The source line of `location` and the one above it.
fn lines_at(location: &onnx_diagnostic_core::Loc) -> (String, String) {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(location.file),
    )
    .unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let at = location.line as usize - 1;
    (lines[at].to_owned(), lines[at - 1].to_owned())
}

#[test]
fn idefics_exports_only_with_its_attention_and_embedding_patches() {
    let patches = onnx_diagnostic_patch_transformers::patches();
    for p in [
        "patched_IdeficsAttention.forward",
        "patched_IdeficsEmbedding.forward",
    ] {
        assert!(patches.contains(&p), "{patches:?}");
    }
    // The serializers of the cache and the output are linked.
    assert!(
        onnx_diagnostic_serialization::supported_classes()
            .contains(&"IdeficsCausalLMOutputWithPast")
    );
    let model = tiny();
    let options = TextGenerationOptions::default();
    let sets = model.input_sets(&options, 1).unwrap();
    let names: Vec<&str> = sets.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["inputs", "inputs2", "inputs_images", "inputs_long"]);

    // Without the attention patch: the comparison of a value of the data.
    let e = try_export(&model, &["patched_IdeficsAttention.forward"]).unwrap_err();
    stops_at_read(&e, "idefics/text.rs", "max(kv_seq_len, q_len)");

    // Without the embedding patch: a guard on the lengths, which the long set breaks.
    let ep = try_export(&model, &["patched_IdeficsEmbedding.forward"]).unwrap();
    let guard = ep
        .guards()
        .iter()
        .find(|g| g.location.file.ends_with("idefics/text.rs"))
        .unwrap_or_else(|| panic!("no guard from the rotary embedding: {:?}", ep.guards()));
    let (line, _) = lines_at(&guard.location);
    assert!(line.contains("compare(Rel::Gt"), "{line}");
    let long = &sets[3].1;
    let eager = model
        .forward(&onnx_diagnostic_core::Inputs::bind_for(&model, &[], &sets[1].1).unwrap())
        .unwrap();
    {
        // The serializers of the inputs' cache are registered while the programs run.
        let _g = torch_export_patches(PatchOptions {
            patch_transformers: true,
            ..PatchOptions::default()
        })
        .unwrap();
        let e = ep.run(&[], long).unwrap_err();
        assert!(matches!(e, Error::GuardViolated { .. }), "{e}");
        // The ONNX file has no guard: it cannot compute the long set (its tables are too short
        // for the positions it gathers).
        let onnx = lower(&ep, &LowerOptions::default()).unwrap();
        let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
        let e = session.run(&[], long).unwrap_err();
        assert!(e.to_string().contains("Gather"), "{e}");
        // The shorter sets still run in it and match eager.
        let d = max_diff(&eager, &session.run(&[], &sets[1].1).unwrap());
        assert!(d.abs <= 1e-4, "{d:?}");
    }

    // With both: every set, the long one included.
    export_and_compare(&model);
}

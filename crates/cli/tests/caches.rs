//! `onnx-diagnostic caches`: the classes with a serializer, as seed `002` lists them (one per
//! line, sorted), plus the output classes of the models.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

#[test]
fn caches_lists_the_seed_classes_sorted() {
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .arg("caches")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
    // Seed 002's list, every class of it.
    for class in [
        "BaseModelOutput",
        "DynamicCache",
        "EncoderDecoderCache",
        "HybridCache",
        "MambaCache",
        "SlidingWindowCache",
        "StaticCache",
        "UNet2DConditionOutput",
    ] {
        assert!(lines.contains(&class), "{class} missing from {lines:?}");
    }
    // And the output classes our models return.
    assert!(lines.contains(&"CausalLMOutputWithPast"));
    assert!(lines.contains(&"Seq2SeqLMOutput"));
    assert!(lines.contains(&"Seq2SeqModelOutput"));
    assert!(lines.contains(&"IdeficsCausalLMOutputWithPast"));
    assert!(lines.contains(&"SamImageSegmentationOutput"));
    assert_eq!(lines.len(), 13);
}

/// `onnx-diagnostic patches` lists `Class: method` as seed `002` does; `--diff` prints real
/// diffs (target's lines removed, the patch's added), `--format rst` as the seeds' pages.
#[test]
fn patches_are_listed_and_diffed() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
            .arg("patches")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = run(&[]);
    for line in [
        "LlamaRotaryEmbedding: forward",
        "MistralRotaryEmbedding: forward",
        "GemmaRotaryEmbedding: forward",
        "ShapeEnv: log_guard",
        "infer_size",
    ] {
        assert!(listed.lines().any(|l| l == line), "{line}: {listed}");
    }
    assert_eq!(
        run(&["--family", "torch"]),
        "ShapeEnv: log_guard\ninfer_size\nproduce_guards_and_solve_constraints\n"
    );
    assert_eq!(
        run(&["--family", "diffusers"]),
        "UNet2DConditionModel: forward_upsample_size\nUpsample2D: forward\n"
    );
    let diff = run(&["--diff", "--family", "diffusers"]);
    assert!(
        diff.contains("diffusers: Upsample2D.forward -> patched_Upsample2D.forward\n")
            && diff.contains("\n-    if shape[0].compare(Rel::Ge, 64)? {")
            && diff.contains("\n-        if dim.modulo(factor).compare(Rel::Ne, 0)? {"),
        "{diff}"
    );
    let diff = run(&["--diff"]);
    // Sorted by target: Gemma3's first, its `raise` replaced by a recorded check.
    assert!(
        diff.starts_with(
            "transformers: Gemma3Model.get_placeholder_mask -> patched_Gemma3Model.get_placeholder_mask\n--- original\n+++ rewritten\n@@ -"
        ),
        "{diff}"
    );
    assert!(
        diff.contains("\n-    if n_tokens.ne(&n_features)?.to_bool()? {"),
        "{diff}"
    );
    assert!(diff.contains("\n+    check(\n"), "{diff}");
    assert!(
        diff.contains(
            "transformers: LlamaRotaryEmbedding.forward -> patched_LlamaRotaryEmbedding.forward\n--- original\n+++ rewritten\n@@ -"
        ),
        "{diff}"
    );
    assert!(diff.contains("\n-    let inv_freq = self.frequencies(position_ids)?;"));
    assert!(diff.contains("\n+    let inv_freq = onnx_diagnostic_core::cond("));
    assert!(diff.contains("torch: infer_size -> patched_infer_size\n--- original\n"));
    assert!(run(&["--diff", "--format", "rst"]).contains(".. code-block:: diff"));
}

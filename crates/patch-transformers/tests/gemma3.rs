//! Gemma3's multimodal model exports only with `patched_Gemma3Model.get_placeholder_mask`:
//! without it the export stops on the `raise` of the placeholder check (an `if` on a count of
//! the data); with it the exported program and ONNX Runtime match eager on sets with another
//! number of images (and none) and other batch, sequence and cache sizes, and the check
//! recorded in the exported program refuses placeholders that do not match the images.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{export_and_compare, stops_at_read, try_export};
use onnx_diagnostic_core::{PatchOptions, Value, torch_export_patches};
use onnx_diagnostic_transformers::{
    models::gemma3::{Gemma3Config, Gemma3ForConditionalGeneration},
    weights::Weights,
};

/// Sliding and full layers (window 8, shorter than an image block), 4 x 4 patches pooled to
/// 4 tokens per image.
const TINY: &str = r#"{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
  "text_config": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
    "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]},
  "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "image_size": 28, "patch_size": 7, "vision_use_head": false},
  "mm_tokens_per_image": 4, "image_token_index": 299, "boi_token_index": 297,
  "eoi_token_index": 298}"#;

fn tiny() -> Gemma3ForConditionalGeneration {
    let cfg = Gemma3Config::from_json(TINY).unwrap();
    let mut w = Weights::untrained("Gemma3ForConditionalGeneration", 7, 0.1);
    Gemma3ForConditionalGeneration::new(cfg, &mut w).unwrap()
}

#[test]
fn gemma3_exports_only_with_its_placeholder_patch_and_matches_eager_in_ort() {
    let patches = onnx_diagnostic_patch_transformers::patches();
    assert!(
        patches.contains(&"patched_Gemma3Model.get_placeholder_mask"),
        "{patches:?}"
    );
    assert!(onnx_diagnostic_serialization::supported_classes().contains(&"DynamicCache"));
    let model = tiny();
    // Without the patch: the `if` of the `raise`, in the model's file.
    let e = try_export(&model, &["patched_Gemma3Model.get_placeholder_mask"]).unwrap_err();
    stops_at_read(&e, "gemma3/multimodal.rs", "raise ValueError");

    // With it: the exported program and ORT match eager on 2, 0 and 3 images.
    let sets = export_and_compare(&model);
    let rows = |i: usize| match &sets[i].1.iter().find(|(k, _)| k == "input_ids").unwrap().1 {
        Value::Tensor(t) => t.concrete_shape()[0],
        _ => panic!(),
    };
    let images = |i: usize| match &sets[i]
        .1
        .iter()
        .find(|(k, _)| k == "pixel_values")
        .unwrap()
        .1
    {
        Value::Tensor(t) => t.concrete_shape()[0],
        _ => panic!(),
    };
    assert_eq!((images(0), images(1), images(2)), (2, 0, 3));
    assert_eq!(rows(2), 1, "three images in one row");

    // The check recorded in the exported program refuses two images for three images'
    // placeholders (ONNX drops assertions, as torch.onnx does).
    let ep = try_export(&model, &[]).unwrap();
    let mut bad = sets[2].1.clone();
    for (k, v) in &mut bad {
        if k == "pixel_values" {
            *v = sets[0]
                .1
                .iter()
                .find(|(k, _)| k == "pixel_values")
                .unwrap()
                .1
                .clone();
        }
    }
    let e = {
        let _g = torch_export_patches(PatchOptions {
            patch_transformers: true,
            ..PatchOptions::default()
        })
        .unwrap();
        ep.run(&[], &bad).unwrap_err()
    };
    assert!(
        e.to_string()
            .contains("Image features and image tokens do not match"),
        "{e}"
    );
}

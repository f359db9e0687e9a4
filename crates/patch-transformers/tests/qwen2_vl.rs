//! Qwen2-VL's vision path exports only with its three patches, and the exported program and
//! ONNX Runtime then match eager on sets with another number and other sizes of images (and
//! none): without `patched_Qwen2VisionTransformerPretrainedModel.forward` the export stops on
//! the position ids' `grid_thw.tolist()`, without `patched_VisionAttention.forward` on the
//! attention's loop over `cu_seqlens.tolist()`, without
//! `patched_Qwen2VLModel.get_image_features` on the split per image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{export_and_compare, stops_in, try_export};
use onnx_diagnostic_core::{ExportOptions, PatchOptions, Value, export, torch_export_patches};
use onnx_diagnostic_transformers::{
    TaskModel, models::qwen2_vl::Qwen2VLForConditionalGeneration, tasks::TextGenerationOptions,
    weights::Weights,
};

const TINY: &str = r#"{"architectures": ["Qwen2VLForConditionalGeneration"],
  "model_type": "qwen2_vl",
  "text_config": {"vocab_size": 200, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]}},
  "vision_config": {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4,
    "patch_size": 4, "temporal_patch_size": 2, "spatial_merge_size": 2},
  "image_token_id": 199, "video_token_id": 198, "vision_start_token_id": 197,
  "vision_end_token_id": 196}"#;

fn tiny() -> Qwen2VLForConditionalGeneration {
    let cfg = onnx_diagnostic_transformers::models::qwen2_vl::Config::from_json(TINY).unwrap();
    let mut w = Weights::untrained("Qwen2VLForConditionalGeneration", 3, 0.02);
    Qwen2VLForConditionalGeneration::new(cfg, &mut w).unwrap()
}

#[test]
fn qwen2_vl_exports_only_with_its_vision_patches_and_matches_eager_in_ort() {
    // Both crates the guard draws on are linked (their link-time entries are kept).
    let patches = onnx_diagnostic_patch_transformers::patches();
    for p in [
        "patched_VisionAttention.forward",
        "patched_Qwen2VisionTransformerPretrainedModel.forward",
        "patched_Qwen2VLModel.get_image_features",
    ] {
        assert!(patches.contains(&p), "{patches:?}");
    }
    assert!(onnx_diagnostic_serialization::supported_classes().contains(&"DynamicCache"));
    let model = tiny();
    // Serialization only: the position ids' loop over `grid_thw.tolist()`.
    let e = {
        let _g = torch_export_patches(PatchOptions {
            patch_transformers: true,
            patch: false,
            ..PatchOptions::default()
        })
        .unwrap();
        let options = TextGenerationOptions::default();
        let sets = model.input_sets(&options, 1).unwrap();
        export(
            &model,
            &[],
            &sets[0].1,
            Some(&model.dynamic_shapes(&options)),
            &ExportOptions::default(),
        )
        .unwrap_err()
    };
    stops_in(&e, "vision_utils.rs");
    // Each patch alone missing.
    let e = try_export(&model, &["patched_VisionAttention.forward"]).unwrap_err();
    stops_in(&e, "qwen2_vl/vision.rs");
    assert!(e.to_string().contains("tolist"), "{e}");
    let e = try_export(&model, &["patched_Qwen2VLModel.get_image_features"]).unwrap_err();
    stops_in(&e, "qwen2_vl/mod.rs");
    let e = try_export(
        &model,
        &["patched_Qwen2VisionTransformerPretrainedModel.forward"],
    )
    .unwrap_err();
    stops_in(&e, "vision_utils.rs");

    // With the three: the exported program and ONNX Runtime match eager on every set.
    let sets = export_and_compare(&model);
    let names: Vec<&str> = sets.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["inputs", "inputs2", "inputs_images"]);
    // The image sets hold 2 and 3 images of other sizes than each other; inputs2 none.
    let images = |i: usize| match &sets[i]
        .1
        .iter()
        .find(|(k, _)| k == "image_grid_thw")
        .unwrap()
        .1
    {
        Value::Tensor(t) => t.concrete_shape()[0],
        _ => panic!(),
    };
    assert_eq!((images(0), images(1), images(2)), (2, 0, 3));
}

const TINY_2_5: &str = r#"{"architectures": ["Qwen2_5_VLForConditionalGeneration"],
  "model_type": "qwen2_5_vl",
  "text_config": {"vocab_size": 200, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]}},
  "vision_config": {"depth": 3, "hidden_size": 32, "out_hidden_size": 32, "intermediate_size": 48,
    "num_heads": 4, "patch_size": 2, "temporal_patch_size": 2, "spatial_merge_size": 2,
    "window_size": 8, "fullatt_block_indexes": [1]},
  "image_token_id": 199, "video_token_id": 198, "vision_start_token_id": 197,
  "vision_end_token_id": 196}"#;

/// Qwen2.5-VL's window attention exports with the same patches (its window order computed
/// from the patch index) and matches eager in ONNX Runtime on images of other numbers and
/// sizes than the export's, whose windows are cut differently at the edges; without the vision
/// patch the export stops on the position ids' loop, and with it but without the attention
/// patch on the attention's split over the windows.
#[test]
fn qwen2_5_vl_window_attention_exports_and_matches_eager_in_ort() {
    assert!(onnx_diagnostic_serialization::supported_classes().contains(&"DynamicCache"));
    let _ = onnx_diagnostic_patch_transformers::patches();
    let cfg = onnx_diagnostic_transformers::models::qwen2_vl::Config::from_json(TINY_2_5).unwrap();
    let mut w = Weights::untrained("Qwen2_5_VLForConditionalGeneration", 5, 0.02);
    let model = Qwen2VLForConditionalGeneration::new(cfg, &mut w).unwrap();
    let e = try_export(
        &model,
        &["patched_Qwen2VisionTransformerPretrainedModel.forward"],
    )
    .unwrap_err();
    stops_in(&e, "vision_utils.rs");
    let e = try_export(&model, &["patched_VisionAttention.forward"]).unwrap_err();
    stops_in(&e, "qwen2_vl/vision.rs");
    export_and_compare(&model);
}

//! Parity of `Qwen2VLForConditionalGeneration` with transformers 5.23 on the checkpoint its
//! `save_pretrained` writes: logits, the grown cache and the image features within 1e-4 in
//! float32, on sets whose images differ in number and size (one image per row, two in a row,
//! a video-like image of two frames, no image), and `get_rope_index` against transformers'.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;

use common::{check_causal_lm_output, diff, run_reference, t};
use onnx_diagnostic_core::{Module, Value};
use onnx_diagnostic_transformers::{DynamicCache, models::qwen2_vl};

/// A tiny Qwen2-VL: 2 text layers (grouped-query), 2 vision blocks, patches of 4 pixels over 2
/// frames, 2 x 2 merges, sections [2, 1, 1] of a head of 8.
pub(crate) const TINY: &str = r#"{
  "text_config": {"vocab_size": 200, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]}},
  "vision_config": {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4,
    "patch_size": 4, "temporal_patch_size": 2, "spatial_merge_size": 2},
  "image_token_id": 199, "video_token_id": 198, "vision_start_token_id": 197,
  "vision_end_token_id": 196}"#;

/// name:batch:text:past:grids (see make_qwen2_vl_reference.py).
const SETS: &str = "--sets=inputs:2:3:4:1x4x4,1x2x4;images3:3:2:5:1x4x6,2x2x2,1x2x2;\
                    twoinrow:1:2:0:1x2x2,1x4x2;text:2:4:3:-";

fn inputs(io: &HashMap<String, tch::Tensor>, name: &str, layers: usize) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = ["input_ids", "attention_mask", "position_ids"]
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                Value::Tensor(t(io, &format!("{name}.{k}"))),
            )
        })
        .collect();
    let pairs = (0..layers)
        .map(|i| {
            (
                t(io, &format!("{name}.key_{i}")),
                t(io, &format!("{name}.value_{i}")),
            )
        })
        .collect();
    v.push((
        "past_key_values".to_owned(),
        Value::custom(DynamicCache::from_pairs(pairs)),
    ));
    if io.contains_key(&format!("{name}.image_features")) {
        for k in ["pixel_values", "image_grid_thw"] {
            v.push((k.to_owned(), Value::Tensor(t(io, &format!("{name}.{k}")))));
        }
    }
    v
}

/// Loads the checkpoint transformers saved in `dir` and compares, on each of `sets`, the
/// logits, the grown cache and the image features (one piece per image) with transformers'.
fn check(dir: &std::path::Path, io: &HashMap<String, tch::Tensor>, sets: &[&str]) -> String {
    let model = qwen2_vl::Qwen2VLForConditionalGeneration::from_pretrained(dir).unwrap();
    let ours: i64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.as_tch().numel() as i64)
        .sum();
    assert_eq!(ours, io["n_parameters"].int64_value(&[]), "parameter count");
    let layers = model.config.text.num_hidden_layers;
    for name in sets {
        // Through the module's forward (the keyword inputs a task gives).
        let set = inputs(io, name, layers);
        check_causal_lm_output(&model, &set, io, name, layers);
        if let Some(expected) = io.get(&format!("{name}.image_features")) {
            let grid = t(io, &format!("{name}.image_grid_thw"));
            let feats = model
                .model
                .get_image_features(&t(io, &format!("{name}.pixel_values")), &grid)
                .unwrap();
            let refs: Vec<&onnx_diagnostic_core::Tensor> = feats.iter().collect();
            let all = onnx_diagnostic_core::Tensor::cat(&refs, 0).unwrap();
            let d = diff(&all, expected);
            assert!(d <= 1e-4, "{name}: image features differ by {d}");
            assert_eq!(feats.len() as i64, grid.concrete_shape()[0], "{name}");
        }
    }
    model.class_name()
}

#[test]
fn tiny_qwen2_vl_matches_transformers_with_any_number_and_size_of_images() {
    let (dir, io) = run_reference(
        "make_qwen2_vl_reference.py",
        "qwen2_vl",
        "tiny",
        TINY,
        &[SETS],
    );
    let class = check(&dir, &io, &["inputs", "images3", "twoinrow", "text"]);
    assert_eq!(class, "Qwen2VLForConditionalGeneration");
    // A grid that is not [images, 3] is refused naming it, not a panic.
    let model = qwen2_vl::Qwen2VLForConditionalGeneration::from_pretrained(&dir).unwrap();
    let bad =
        onnx_diagnostic_core::Tensor::from(tch::Tensor::from_slice(&[1_i64, 4]).reshape([1, 2]));
    let e = model
        .model
        .get_image_features(&t(&io, "inputs.pixel_values"), &bad)
        .unwrap_err();
    assert!(
        e.to_string().contains("image_grid_thw has shape [1, 2]"),
        "{e}"
    );
}

/// A tiny Qwen2.5-VL: the same text model; vision width 32, a gated MLP of 48, windows of
/// 8 pixels (2 merged units of 2 x 2 patches of 2 pixels), full attention in block 1 of 3.
const TINY_2_5: &str = r#"{"model_type": "qwen2_5_vl",
  "text_config": {"vocab_size": 200, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]}},
  "vision_config": {"depth": 3, "hidden_size": 32, "out_hidden_size": 32, "intermediate_size": 48,
    "num_heads": 4, "patch_size": 2, "temporal_patch_size": 2, "spatial_merge_size": 2,
    "window_size": 8, "fullatt_block_indexes": [1]},
  "image_token_id": 199, "video_token_id": 198, "vision_start_token_id": 197,
  "vision_end_token_id": 196}"#;

/// Windows of 2 x 2 merged units: images of 4 x 4 patches (one window), 4 x 8 and 6 x 4 (cut
/// windows at the edges), 8 x 8, 2 frames.
const SETS_2_5: &str = "--sets=inputs:2:3:4:1x4x4,1x4x8;images3:3:2:5:1x6x4,2x8x8,1x2x2;\
                        text:2:4:3:-";

#[test]
fn tiny_qwen2_5_vl_matches_transformers_with_its_window_attention() {
    let (dir, io) = run_reference(
        "make_qwen2_vl_reference.py",
        "qwen2_vl",
        "tiny_2_5",
        TINY_2_5,
        &[SETS_2_5],
    );
    let class = check(&dir, &io, &["inputs", "images3", "text"]);
    assert_eq!(class, "Qwen2_5_VLForConditionalGeneration");
}

#[test]
fn the_rope_index_is_transformers_one() {
    let (_, io) = run_reference(
        "make_qwen2_vl_reference.py",
        "qwen2_vl",
        "rope",
        TINY,
        &[SETS],
    );
    for name in ["inputs", "images3", "twoinrow"] {
        let types = io[&format!("{name}.mm_token_type_ids")].shallow_clone();
        let size = types.size();
        let grid = io[&format!("{name}.image_grid_thw")].shallow_clone();
        let grids: Vec<i64> = Vec::try_from(&grid.reshape([-1])).unwrap();
        let grids: Vec<[i64; 3]> = grids.chunks(3).map(|g| [g[0], g[1], g[2]]).collect();
        let types: Vec<i64> = Vec::try_from(&types.reshape([-1])).unwrap();
        let (positions, _) =
            qwen2_vl::get_rope_index(size[0] as usize, size[1] as usize, &types, &grids, None, 2)
                .unwrap();
        // The reference positions are shifted by the past length.
        let past = io[&format!("{name}.key_0")].size()[2];
        let expected: Vec<i64> =
            Vec::try_from(&(io[&format!("{name}.position_ids")].reshape([-1]) - past)).unwrap();
        assert_eq!(positions, expected, "{name}");
    }
}

//! Parity of `Gemma3ForConditionalGeneration` with transformers 5.23 on the checkpoint its
//! `save_pretrained` writes: logits, the grown cache (sliding and full layers) and the image
//! features within 1e-4 in float32, on sets whose images differ in number and placement (one
//! per row, two in a row, none), with `token_type_ids` over the cached and new positions, over
//! the new ones only, or none, and an image block cut by the sliding window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;

use common::{check_causal_lm_output, diff, run_reference, t};
use onnx_diagnostic_core::{Inputs, Module, Value};
use onnx_diagnostic_transformers::{
    cache_utils::make_dynamic_cache_with_layers, modeling_outputs::CausalLMOutputWithPast,
    models::gemma3::Gemma3ForConditionalGeneration,
};

/// A tiny Gemma3: 3 text layers (sliding, full, sliding; window 8), grouped-query attention,
/// a SigLIP tower of 2 layers on 28-pixel images in 7-pixel patches (4 x 4) with its pooling
/// head, pooled to 4 tokens per image.
const TINY: &str = r#"{
  "text_config": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
    "query_pre_attn_scalar": 16, "sliding_window": 8,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]},
  "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "image_size": 28, "patch_size": 7},
  "mm_tokens_per_image": 4, "image_token_index": 299, "boi_token_index": 297,
  "eoi_token_index": 298}"#;

/// name:batch:text:past:rows:types (see make_gemma3_reference.py). `window`: 5 cached + 3
/// text tokens, then an image block of 6 that the window of 8 cuts.
const SETS: &str = "--sets=inputs:2:3:4:0,1:all;images3:3:2:5:0,0,1:all;\
                    window:1:3:5:0:all;new:2:2:3:1:new;notypes:1:2:0:0:none;text:2:4:3:-:all";

fn inputs(
    model: &Gemma3ForConditionalGeneration,
    io: &HashMap<String, tch::Tensor>,
    name: &str,
) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = ["input_ids", "attention_mask", "position_ids"]
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                Value::Tensor(t(io, &format!("{name}.{k}"))),
            )
        })
        .collect();
    let kinds = model.config.text.layer_kinds();
    let pairs = (0..kinds.len())
        .map(|i| {
            (
                t(io, &format!("{name}.key_{i}")),
                t(io, &format!("{name}.value_{i}")),
            )
        })
        .collect();
    v.push((
        "past_key_values".to_owned(),
        Value::custom(make_dynamic_cache_with_layers(pairs, &kinds).unwrap()),
    ));
    for k in ["token_type_ids", "pixel_values"] {
        let key = format!("{name}.{k}");
        if io.contains_key(&key) && (k != "pixel_values" || io[&key].size()[0] > 0) {
            v.push((k.to_owned(), Value::Tensor(t(io, &key))));
        }
    }
    v
}

/// Loads the checkpoint transformers saved in `dir` and compares, on each of `sets`, the
/// logits, the grown cache and the image features with transformers'.
fn check(dir: &std::path::Path, io: &HashMap<String, tch::Tensor>, sets: &[&str]) {
    let model = Gemma3ForConditionalGeneration::from_pretrained(dir).unwrap();
    let ours: i64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.as_tch().numel() as i64)
        .sum();
    assert_eq!(ours, io["n_parameters"].int64_value(&[]), "parameter count");
    for name in sets {
        let set = inputs(&model, io, name);
        check_causal_lm_output(&model, &set, io, name, model.config.text.num_hidden_layers);
        if let Some(expected) = io.get(&format!("{name}.image_features")) {
            let feats = model
                .model
                .get_image_features(&t(io, &format!("{name}.pixel_values")))
                .unwrap();
            let d = diff(&feats, expected);
            assert!(d <= 1e-4, "{name}: image features differ by {d}");
        }
    }
}

#[test]
fn tiny_gemma3_matches_transformers_with_images_blocks_and_windows() {
    let (dir, io) = run_reference("make_gemma3_reference.py", "gemma3", "tiny", TINY, &[SETS]);
    check(
        &dir,
        &io,
        &["inputs", "images3", "window", "new", "notypes", "text"],
    );
    // The bidirectional block matters: without the token types the logits of the image rows
    // differ from transformers' (with them) by far more than the tolerance.
    let model = Gemma3ForConditionalGeneration::from_pretrained(&dir).unwrap();
    let set: Vec<_> = inputs(&model, &io, "inputs")
        .into_iter()
        .filter(|(k, _)| k != "token_type_ids")
        .collect();
    let out = model
        .forward(&Inputs::bind_for(&model, &[], &set).unwrap())
        .unwrap();
    let out = out.downcast_ref::<CausalLMOutputWithPast>().unwrap();
    let Some(Value::Tensor(logits)) = &out.logits else {
        panic!("no logits")
    };
    assert!(diff(logits, &io["inputs.logits"]) > 1e-3);
    // Placeholders that do not match the images are refused, naming both counts.
    let mut set = inputs(&model, &io, "images3");
    let two = t(&io, "inputs.pixel_values");
    set.retain(|(k, _)| k != "pixel_values");
    set.push(("pixel_values".to_owned(), Value::Tensor(two)));
    let e = model
        .forward(&Inputs::bind_for(&model, &[], &set).unwrap())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Image features and image tokens do not match: tokens: 12, features 8"),
        "{e}"
    );
}

/// The image token outside the vocabulary (`image_token_index` = `vocab_size`), no pooling
/// head, tied embeddings off, and a checkpoint written by transformers.
const OOV: &str = r#"{
  "text_config": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16,
    "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"]},
  "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 1, "image_size": 24, "patch_size": 4, "vision_use_head": false},
  "mm_tokens_per_image": 9, "image_token_index": 300, "boi_token_index": 298,
  "eoi_token_index": 299, "tie_word_embeddings": false}"#;

#[test]
fn gemma3_with_an_image_token_outside_the_vocabulary_matches_transformers() {
    let (dir, io) = run_reference(
        "make_gemma3_reference.py",
        "gemma3",
        "oov",
        OOV,
        &["--sets=inputs:2:3:4:0,1:all;text:1:2:1:-:all"],
    );
    check(&dir, &io, &["inputs", "text"]);
}

/// Configs that build no model are refused naming the field: transformers' own default
/// `Gemma3Config()` (14 patches per side pooled to 16 per side: a kernel of 0), heads that do
/// not divide the vision width, a non-square image size.
#[test]
fn gemma3_configs_that_build_no_model_name_the_field() {
    use onnx_diagnostic_transformers::{Error, models::gemma3::Gemma3Config};
    let field = |text: &str| match Gemma3Config::from_json(text).unwrap_err() {
        Error::ConfigField { field, .. } => field,
        other => panic!("not a field error: {other}"),
    };
    assert_eq!(field("{}"), "mm_tokens_per_image");
    assert_eq!(
        field(r#"{"vision_config": {"hidden_size": 16, "num_attention_heads": 3}}"#),
        "vision_config.num_attention_heads"
    );
    assert_eq!(
        field(r#"{"vision_config": {"image_size": [28, 14]}}"#),
        "vision_config.image_size"
    );
}

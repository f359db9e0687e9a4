//! Parity of `IdeficsForVisionText2Text` with transformers 5.23 on checkpoints its
//! `save_pretrained` writes: logits, the grown cache and the image features within 1e-4 in
//! float32, on sets with other numbers of images (none included), tokens and cached positions,
//! image masks where the first tokens attend no image (their cross-attention gated off),
//! positions computed from the attention mask, additional-vocabulary tokens, and a length past
//! `max_position_embeddings` (the rotary tables grown).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;

use common::{diff, run_reference, t};
use onnx_diagnostic_core::{Inputs, Module, Value};
use onnx_diagnostic_transformers::{
    cache_utils::{DynamicCache, make_dynamic_cache},
    models::idefics::{IdeficsCausalLMOutputWithPast, IdeficsForVisionText2Text},
};

/// The perceiver (2 blocks, 4 latents), vector gates, 2 additional tokens, rotary tables of
/// 16 positions; a CLIP tower of 2 layers on 8-pixel images in 2-pixel patches (17 tokens).
const TINY: &str = r#"{"vocab_size": 100, "additional_vocab_size": 2, "hidden_size": 16,
  "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
  "max_position_embeddings": 16, "alpha_type": "vector", "alpha_initializer": "ones",
  "use_resampler": true, "perceiver_config": {"resampler_depth": 2, "resampler_n_heads": 2,
    "resampler_head_dim": 8, "resampler_n_latents": 4},
  "vision_config": {"embed_dim": 12, "image_size": 8, "patch_size": 2, "num_hidden_layers": 2,
    "num_attention_heads": 3, "intermediate_size": 20}}"#;

/// No perceiver, float gates (transformers cannot build them drawn from a normal: its
/// `torch.normal(size=(1))` is refused; zeros here, drawn by the script), one cross-attention
/// layer every two
/// decoder layers with RMSNorms on its queries and keys, tied embeddings, GELU; queries and
/// keys of the perceiver normalised (unused here), a tower of 1 layer with 9 + 1 tokens.
const OTHER: &str = r#"{"vocab_size": 90, "hidden_size": 24, "intermediate_size": 16,
  "num_hidden_layers": 4, "num_attention_heads": 2, "max_position_embeddings": 32,
  "alpha_type": "float", "alpha_initializer": "zeros",
  "cross_layer_interval": 2, "qk_layer_norms": true, "tie_word_embeddings": true,
  "hidden_act": "gelu", "rope_parameters": {"rope_type": "default", "rope_theta": 500.0},
  "vision_config": {"embed_dim": 8, "image_size": 6, "patch_size": 2, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 12, "hidden_act": "quick_gelu"}}"#;

/// name:batch:seq:past:images:mask:positions (see make_idefics_reference.py).
const SETS: &str = "--sets=inputs:2:5:3:2:ones:given;inputs2:3:1:1:0:ones:given;\
                    causal:2:6:0:3:causal:none;long:1:5:14:1:causal:given";

fn inputs(io: &HashMap<String, tch::Tensor>, name: &str, layers: usize) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = [
        "input_ids",
        "attention_mask",
        "position_ids",
        "pixel_values",
        "image_attention_mask",
    ]
    .iter()
    .filter(|k| io.contains_key(&format!("{name}.{k}")))
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
        Value::custom(make_dynamic_cache(pairs)),
    ));
    v
}

fn check(name: &str, config: &str, sets: &[&str]) {
    let (dir, io) = run_reference(
        "make_idefics_reference.py",
        "idefics",
        name,
        config,
        &[SETS],
    );
    let model = IdeficsForVisionText2Text::from_pretrained(&dir).unwrap();
    let ours: i64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.as_tch().numel() as i64)
        .sum();
    assert_eq!(
        ours,
        io["n_parameters"].int64_value(&[]),
        "{name}: parameter count"
    );
    let layers = model.config.num_hidden_layers;
    for set in sets {
        let x = inputs(&io, set, layers);
        let out = model
            .forward(&Inputs::bind_for(&model, &[], &x).unwrap())
            .unwrap();
        let out = out.downcast_ref::<IdeficsCausalLMOutputWithPast>().unwrap();
        let tensor = |v: &Option<Value>| match v {
            Some(Value::Tensor(t)) => t.clone(),
            _ => panic!("{name} {set}: missing output"),
        };
        let d = diff(&tensor(&out.logits), &io[&format!("{set}.logits")]);
        assert!(d <= 1e-4, "{name} {set}: logits differ by {d}");
        let (image, want) = (
            tensor(&out.image_hidden_states),
            &io[&format!("{set}.image_hidden_states")],
        );
        assert_eq!(image.concrete_shape(), want.size(), "{name} {set}");
        if want.numel() > 0 {
            let d = diff(&image, want);
            assert!(d <= 1e-4, "{name} {set}: image features differ by {d}");
        }
        let cache = out
            .past_key_values
            .as_ref()
            .and_then(|c| c.downcast_ref::<DynamicCache>())
            .unwrap();
        assert_eq!(cache.layers.len(), layers);
        for (i, layer) in cache.layers.iter().enumerate() {
            let dk = diff(layer.keys().unwrap(), &io[&format!("{set}.out_key_{i}")]);
            let dv = diff(
                layer.values().unwrap(),
                &io[&format!("{set}.out_value_{i}")],
            );
            assert!(
                dk <= 1e-4 && dv <= 1e-4,
                "{name} {set} layer {i}: {dk} {dv}"
            );
        }
    }
}

#[test]
fn idefics_matches_transformers_with_images_gates_and_grown_rotary_tables() {
    let sets = ["inputs", "inputs2", "causal", "long"];
    check("tiny", TINY, &sets);
    check("other", OTHER, &sets);
}

/// Configs that build no model transformers can run are refused naming the field: an
/// interval of cross-attention layers that does not divide the layers (transformers' forward
/// reads a gated layer past the last), an unknown gate type, a rope type the cached tables do
/// not have, heads that do not divide the width.
#[test]
fn idefics_configs_that_build_no_model_name_the_field() {
    use onnx_diagnostic_transformers::models::idefics::IdeficsConfig;
    for (change, field) in [
        (
            r#""num_hidden_layers": 3, "cross_layer_interval": 2"#,
            "cross_layer_interval",
        ),
        (r#""alpha_type": "matrix""#, "alpha_type"),
        (
            r#""rope_parameters": {"rope_type": "yarn", "factor": 2.0}"#,
            "rope_parameters.rope_type",
        ),
        (r#""hidden_size": 21"#, "num_attention_heads"),
    ] {
        let text = format!(r#"{{"num_attention_heads": 2, {change}}}"#);
        let e = IdeficsConfig::from_json(&text).unwrap_err();
        assert!(
            matches!(&e, onnx_diagnostic_transformers::Error::ConfigField { field: f, .. } if f == field),
            "{change}: {e}"
        );
    }
}

//! Parity of `MistralForCausalLM` with transformers 5.23 (see `llama_parity.rs` for the
//! protocol), with a sliding window shorter than the prompt so that the window mask matters,
//! and the catalog's echarlaix/tiny-random-mistral exported to ONNX with a KV cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{check_two_steps, diff, export_and_check_in_ort, reference, t};
use onnx_diagnostic_core::Tensor;
use onnx_diagnostic_transformers::{
    catalog,
    models::{llama::Config, mistral::MistralForCausalLM},
    weights::Weights,
};

#[test]
fn mistral_sliding_window_matches_transformers() {
    let config = r#"{"architectures":["MistralForCausalLM"],"model_type":"mistral",
    "vocab_size":128,"hidden_size":32,"intermediate_size":37,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"hidden_act":"gelu",
    "max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0,
    "sliding_window":3,"tie_word_embeddings":false}"#;
    let (dir, io) = reference("mistral_window3", config);
    let model = MistralForCausalLM::from_pretrained(&dir).unwrap();
    assert_eq!(model.config().sliding_window, Some(3));
    // Both keep the last `window - 1` positions of a sliding-window layer.
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    let logits = check_two_steps("mistral", &io, &step, false);
    // Exported with its sliding layers (2 positions of 30 at export), run on caches of 2 and
    // 0 positions.
    export_and_check_in_ort(&model, &model.config().decoder_dims());

    // The window changes the result: the same weights without it give other logits.
    let mut no_window = Config::from_file(&dir.join("config.json")).unwrap();
    no_window.sliding_window = None;
    let mut w = Weights::from_dir(&dir, "MistralForCausalLM").unwrap();
    let plain = MistralForCausalLM::new(no_window, &mut w).unwrap();
    let (other, _) = plain
        .forward_with_cache(
            &t(&io, "input_ids"),
            Some(&t(&io, "attention_mask")),
            None,
            None,
        )
        .unwrap();
    assert!(diff(&other, &logits.into_tch()) > 1e-6);
}

#[test]
fn tiny_random_mistral_exports_with_a_cache_and_matches_in_ort() {
    let cfg =
        Config::from_json(catalog::config_json("echarlaix/tiny-random-mistral").unwrap()).unwrap();
    let mut w = Weights::untrained("MistralForCausalLM", 42, cfg.initializer_range);
    let model = MistralForCausalLM::new(cfg, &mut w).unwrap();
    let onnx = export_and_check_in_ort(&model, &model.config().decoder_dims());
    assert!(onnx.graph.is_some());
}

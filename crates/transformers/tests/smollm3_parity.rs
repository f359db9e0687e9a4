//! Parity of `SmolLM3ForCausalLM` with transformers 5.23 on the same weights: NoPE layers
//! (`no_rope_layers`, or every fourth layer by default), tied embeddings by default; then ONNX
//! Runtime against eager on the four validate input sets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{check_two_steps, export_and_check_in_ort, reference};
use onnx_diagnostic_core::{Module, Tensor};
use onnx_diagnostic_transformers::models::smollm3::SmolLM3ForCausalLM;

fn check(name: &str, config: &str) -> SmolLM3ForCausalLM {
    let (dir, io) = reference(name, config);
    let model = SmolLM3ForCausalLM::from_pretrained(&dir).unwrap();
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps(name, &io, &step, false);
    model
}

#[test]
fn smollm3_with_default_nope_layers_matches_transformers_and_onnx_runtime() {
    // Four layers: the fourth is NoPE (no_rope_layer_interval 4), the embeddings tied.
    let model = check(
        "smollm3_default",
        r#"{"architectures":["SmolLM3ForCausalLM"],"model_type":"smollm3","vocab_size":96,
        "hidden_size":32,"intermediate_size":48,"num_hidden_layers":4,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":64,"rope_theta":5000000.0,
        "pad_token_id":0}"#,
    );
    assert!(
        !model
            .named_parameters()
            .iter()
            .any(|(n, _)| n == "lm_head.weight"),
        "tied by default"
    );
    export_and_check_in_ort(&model, &model.config().decoder_dims());
}

#[test]
fn smollm3_with_explicit_nope_layers_matches_transformers() {
    // Without NoPE handling, the first layer would be rotated too and the logits would differ.
    let model = check(
        "smollm3_explicit",
        r#"{"architectures":["SmolLM3ForCausalLM"],"model_type":"smollm3","vocab_size":96,
        "hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":1,"max_position_embeddings":64,"no_rope_layers":[0,1],
        "tie_word_embeddings":false,"pad_token_id":0}"#,
    );
    export_and_check_in_ort(&model, &model.config().decoder_dims());
}

#[test]
fn smollm3_with_sliding_nope_layers_matches_transformers() {
    // use_sliding_window: the NoPE layer (the fourth) gets the window of 3, as
    // `SmolLM3Config` derives `layer_types`.
    let model = check(
        "smollm3_sliding",
        r#"{"architectures":["SmolLM3ForCausalLM"],"model_type":"smollm3","vocab_size":96,
        "hidden_size":32,"intermediate_size":48,"num_hidden_layers":4,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":64,"use_sliding_window":true,
        "sliding_window":3,"pad_token_id":0}"#,
    );
    assert_eq!(
        model.config().layer_types(),
        [
            "full_attention",
            "full_attention",
            "full_attention",
            "sliding_attention"
        ]
    );
    export_and_check_in_ort(&model, &model.config().decoder_dims());
}

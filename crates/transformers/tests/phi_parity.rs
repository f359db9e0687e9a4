//! Parity of `PhiForCausalLM` (phi-2's architecture) with transformers 5.23 on the same weights:
//! partial rotary embedding, parallel attention and MLP, biases, `gelu_new`, q/k LayerNorms,
//! a `head_dim` other than hidden / heads, tied embeddings with the head's own bias; then ONNX
//! Runtime against eager on the four validate input sets. And Phi-3 with a partial rotary
//! factor (Phi-4-mini's 0.75), which the shared Llama decoder now applies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{check_two_steps, export_and_check_in_ort, reference};
use onnx_diagnostic_core::Tensor;
use onnx_diagnostic_transformers::{
    AutoConfig, AutoModelForCausalLM, catalog,
    models::{phi::PhiForCausalLM, phi3::Phi3ForCausalLM},
};

fn check(name: &str, config: &str) -> PhiForCausalLM {
    let (dir, io) = reference(name, config);
    let model = PhiForCausalLM::from_pretrained(&dir).unwrap();
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps(name, &io, &step, false);
    model
}

#[test]
fn phi_matches_transformers_and_onnx_runtime() {
    let model = check(
        "phi_partial",
        r#"{"architectures":["PhiForCausalLM"],"model_type":"phi","vocab_size":96,
        "hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":64,"partial_rotary_factor":0.5,
        "hidden_act":"gelu_new","pad_token_id":0}"#,
    );
    export_and_check_in_ort(&model, &model.config.decoder_dims());
}

#[test]
fn phi_with_qk_layernorm_head_dim_and_tied_embeddings_matches_transformers() {
    check(
        "phi_qk_layernorm",
        r#"{"architectures":["PhiForCausalLM"],"model_type":"phi","vocab_size":96,
        "hidden_size":32,"intermediate_size":40,"num_hidden_layers":2,"num_attention_heads":4,
        "max_position_embeddings":64,"partial_rotary_factor":0.75,"qk_layernorm":true,
        "tie_word_embeddings":true}"#,
    );
    // phi-2's shape: head_dim 10 on hidden 32 / 4 heads, rotary on 4 of its 10.
    let model = check(
        "phi_head_dim",
        r#"{"architectures":["PhiForCausalLM"],"model_type":"phi","vocab_size":96,
        "hidden_size":32,"intermediate_size":40,"num_hidden_layers":1,"num_attention_heads":4,
        "head_dim":10,"max_position_embeddings":64,"partial_rotary_factor":0.4}"#,
    );
    export_and_check_in_ort(&model, &model.config.decoder_dims());
}

#[test]
fn phi3_with_a_partial_rotary_factor_matches_transformers() {
    let (dir, io) = reference(
        "phi3_partial",
        r#"{"architectures":["Phi3ForCausalLM"],"model_type":"phi3","vocab_size":96,
        "hidden_size":64,"intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"max_position_embeddings":64,"partial_rotary_factor":0.75,
        "pad_token_id":0}"#,
    );
    let model = Phi3ForCausalLM::from_pretrained(&dir).unwrap();
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("phi3_partial", &io, &step, false);
    export_and_check_in_ort(&model, &model.config().decoder_dims());
}

/// The catalog's Phi ids build through the registry, untrained, and export.
#[test]
fn the_catalog_phi_models_build_through_the_registry() {
    for id in ["echarlaix/tiny-random-PhiForCausalLM", "microsoft/phi-2"] {
        let config = AutoConfig::from_json(catalog::config_json(id).unwrap()).unwrap();
        assert_eq!(config.class_name(), "PhiForCausalLM");
        let model =
            AutoModelForCausalLM::untrained(&config, 42, tch::Kind::Float, tch::Device::Cpu)
                .unwrap();
        let dims = model.decoder_dims();
        if id == "microsoft/phi-2" {
            assert_eq!((dims.kv_heads, dims.head_dim), (32, 80));
        }
    }
}

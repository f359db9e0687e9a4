//! Parity of `Qwen2ForCausalLM`, `GemmaForCausalLM` and `Phi3ForCausalLM` with transformers 5.23 (the protocol of
//! `llama_parity.rs`: the same checkpoint, a prompt step then a cached step, logits and cache
//! within 1e-4), and their catalog models exported to ONNX with a KV cache and checked in ONNX
//! Runtime on the four validate input sets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{check_two_steps, export_and_check_in_ort, reference};
use onnx_diagnostic_core::{Module, Tensor};
use onnx_diagnostic_transformers::{
    LayerKind, catalog,
    models::{
        gemma::GemmaForCausalLM, llama::Config, phi3::Phi3ForCausalLM, qwen2::Qwen2ForCausalLM,
    },
    weights::Weights,
};

#[test]
fn qwen2_matches_transformers_and_exports() {
    let config = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2",
    "vocab_size":128,"hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu",
    "max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
    "sliding_window":4,"use_sliding_window":false,"max_window_layers":1,
    "tie_word_embeddings":false}"#;
    let (dir, io) = reference("qwen2", config);
    let model = Qwen2ForCausalLM::from_pretrained(&dir).unwrap();
    // The q/k/v biases are read from the checkpoint (o_proj has none).
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"model.layers.0.self_attn.q_proj.bias".to_owned()));
    assert!(!names.contains(&"model.layers.0.self_attn.o_proj.bias".to_owned()));
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("qwen2", &io, &step, false);

    let cfg = Config::from_json(catalog::config_json("fxmarty/tiny-dummy-qwen2").unwrap()).unwrap();
    let mut w = Weights::untrained("Qwen2ForCausalLM", 42, cfg.initializer_range);
    let tiny = Qwen2ForCausalLM::new(cfg, &mut w).unwrap();
    export_and_check_in_ort(&tiny, &tiny.config().decoder_dims());
}

/// `use_sliding_window` with `max_window_layers` 1: layer 0 attends to all positions, layer 1
/// to a window of 3 (a `DynamicSlidingWindowLayer`), as `Qwen2Config` derives `layer_types`;
/// exported with both kinds of layers and run across the window.
#[test]
fn qwen2_with_sliding_layers_matches_transformers_and_exports() {
    let config = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2",
    "vocab_size":128,"hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":64,
    "sliding_window":3,"use_sliding_window":true,"max_window_layers":1,
    "tie_word_embeddings":false}"#;
    let (dir, io) = reference("qwen2_sliding", config);
    let model = Qwen2ForCausalLM::from_pretrained(&dir).unwrap();
    assert_eq!(
        model.config().layer_kinds(),
        [LayerKind::Dynamic, LayerKind::DynamicSlidingWindow(3)]
    );
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("qwen2 sliding", &io, &step, false);
    export_and_check_in_ort(&model, &model.config().decoder_dims());
    // A sliding layer needs a window.
    let e = Config::from_json(
        r#"{"model_type":"qwen2","vocab_size":8,"hidden_size":8,"intermediate_size":8,
        "num_hidden_layers":1,"num_attention_heads":2,"layer_types":["sliding_attention"]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sliding_window"), "{e}");
}

#[test]
fn gemma_matches_transformers_and_exports() {
    // hidden_act "gelu" is the tanh approximation for Gemma; embeddings are tied by default.
    let config = r#"{"architectures":["GemmaForCausalLM"],"model_type":"gemma",
    "vocab_size":128,"hidden_size":32,"intermediate_size":40,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":1,"head_dim":16,"hidden_act":"gelu",
    "max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0}"#;
    let (dir, io) = reference("gemma", config);
    let model = GemmaForCausalLM::from_pretrained(&dir).unwrap();
    assert!(model.config().tie_word_embeddings);
    assert_eq!(model.config().hidden_act, "gelu_pytorch_tanh");
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("gemma", &io, &step, false);

    let cfg =
        Config::from_json(catalog::config_json("fxmarty/tiny-random-GemmaForCausalLM").unwrap())
            .unwrap();
    let mut w = Weights::untrained("GemmaForCausalLM", 42, cfg.initializer_range);
    let tiny = GemmaForCausalLM::new(cfg, &mut w).unwrap();
    export_and_check_in_ort(&tiny, &tiny.config().decoder_dims());
}

#[test]
fn phi3_fused_projections_and_window_match_transformers_and_export() {
    // A window shorter than the prompt, so that the mask matters; GQA with fused q/k/v.
    let config = r#"{"architectures":["Phi3ForCausalLM"],"model_type":"phi3",
    "vocab_size":128,"hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu",
    "max_position_embeddings":64,"original_max_position_embeddings":64,"rms_norm_eps":1e-5,
    "rope_theta":10000.0,"sliding_window":3,"partial_rotary_factor":1.0,
    "tie_word_embeddings":false,"pad_token_id":0}"#;
    let (dir, io) = reference("phi3", config);
    let model = Phi3ForCausalLM::from_pretrained(&dir).unwrap();
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"model.layers.1.self_attn.qkv_proj.weight".to_owned()));
    assert!(names.contains(&"model.layers.1.mlp.gate_up_proj.weight".to_owned()));
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("phi3", &io, &step, true);

    let cfg =
        Config::from_json(catalog::config_json("xenova/tiny-random-Phi3ForCausalLM").unwrap())
            .unwrap();
    let mut w = Weights::untrained("Phi3ForCausalLM", 42, cfg.initializer_range);
    let tiny = Phi3ForCausalLM::new(cfg, &mut w).unwrap();
    export_and_check_in_ort(&tiny, &tiny.config().decoder_dims());
}

/// The second config of each architecture: a non-default rope (Mistral linear, Qwen2 yarn,
/// Gemma linear, Phi3 longrope crossing its original length between the two steps).
#[test]
fn non_default_ropes_match_transformers_for_every_architecture() {
    use onnx_diagnostic_transformers::models::mistral::MistralForCausalLM;
    let base = |model_type: &str, arch: &str, extra: &str| {
        format!(
            r#"{{"architectures":["{arch}"],"model_type":"{model_type}","vocab_size":128,
            "hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"hidden_act":"silu",
            "max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0,
            "tie_word_embeddings":false,{extra}}}"#
        )
    };
    macro_rules! check {
        ($name:literal, $ty:ty, $config:expr, $cropped:expr) => {{
            let (dir, io) = reference($name, &$config);
            let model = <$ty>::from_pretrained(&dir).unwrap();
            let step = |ids: &Tensor, mask: &Tensor, cache| {
                model
                    .forward_with_cache(ids, Some(mask), None, cache)
                    .unwrap()
            };
            check_two_steps($name, &io, &step, $cropped);
        }};
    }
    check!(
        "mistral_linear",
        MistralForCausalLM,
        base(
            "mistral",
            "MistralForCausalLM",
            r#""sliding_window":4,"rope_scaling":{"rope_type":"linear","factor":2.0}"#
        ),
        true
    );
    check!(
        "qwen2_yarn",
        Qwen2ForCausalLM,
        base(
            "qwen2",
            "Qwen2ForCausalLM",
            r#""use_sliding_window":false,
            "rope_scaling":{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":16}"#
        ),
        false
    );
    check!(
        "gemma_linear",
        GemmaForCausalLM,
        base(
            "gemma",
            "GemmaForCausalLM",
            r#""head_dim":8,"rope_scaling":{"rope_type":"linear","factor":3.0}"#
        ),
        false
    );
    check!(
        "phi3_longrope",
        Phi3ForCausalLM,
        base(
            "phi3",
            "Phi3ForCausalLM",
            r#""original_max_position_embeddings":6,"pad_token_id":0,
            "rope_scaling":{"rope_type":"longrope","short_factor":[1.0,1.1,1.2,1.3],
            "long_factor":[2.0,3.0,4.0,5.0]}"#
        ),
        false
    );
}

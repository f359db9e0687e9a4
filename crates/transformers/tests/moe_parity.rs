//! Parity of `Qwen3ForCausalLM`, `Qwen3MoeForCausalLM` and `MixtralForCausalLM` with
//! transformers 5.23 (the protocol of `llama_parity.rs`: the checkpoint `save_pretrained`
//! writes, a prompt step then a cached step, logits and cache within 1e-4; transformers runs its
//! eager experts loop), with routings where some experts get no token and where one expert gets
//! every token (the counts come from transformers' routers and are checked against ours).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::HashMap;

use common::{Step, check_two_steps, reference, reference_with, t};
use onnx_diagnostic_core::{Module, Tensor};
use onnx_diagnostic_transformers::models::{
    mixtral::MixtralForCausalLM,
    qwen3::Qwen3ForCausalLM,
    qwen3_moe::{Qwen3MoeForCausalLM, record_expert_counts},
};

/// transformers' expert counts of `step` (`""` or `"_next"`), one list per sparse layer.
fn their_counts(io: &HashMap<String, tch::Tensor>, step: &str, layers: usize) -> Vec<Vec<i64>> {
    (0..layers)
        .map(|i| Vec::<i64>::try_from(&io[&format!("expert_counts{step}_{i}")]).unwrap())
        .collect()
}

/// Logits and caches of both steps ([`check_two_steps`]), then both steps again with our
/// expert counts of the two sparse layers checked against transformers' routers.
fn check_moe(name: &str, io: &HashMap<String, tch::Tensor>, cropped: bool, step: Step<'_>) {
    check_two_steps(name, io, step, cropped);
    let ((_, cache), first) =
        record_expert_counts(|| step(&t(io, "input_ids"), &t(io, "attention_mask"), None));
    assert_eq!(first, their_counts(io, "", 2), "{name}: prompt step");
    let (_, next) = record_expert_counts(|| {
        step(
            &t(io, "input_ids_next"),
            &t(io, "attention_mask_next"),
            Some(cache),
        )
    });
    assert_eq!(next, their_counts(io, "_next", 2), "{name}: cached step");
}

#[test]
fn qwen3_with_head_norms_matches_transformers() {
    let config = r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3",
    "vocab_size":128,"hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"hidden_act":"silu",
    "max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
    "attention_bias":true,"tie_word_embeddings":false}"#;
    let (dir, io) = reference("qwen3", config);
    let model = Qwen3ForCausalLM::from_pretrained(&dir).unwrap();
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"model.layers.1.self_attn.q_norm.weight".to_owned()));
    assert!(names.contains(&"model.layers.1.self_attn.o_proj.bias".to_owned()));
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("qwen3", &io, &step, false);
}

const QWEN3_MOE: &str = r#"{"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe",
    "vocab_size":128,"hidden_size":32,"intermediate_size":48,"moe_intermediate_size":24,
    "num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
    "num_experts":8,"num_experts_per_tok":2,"norm_topk_prob":true,"decoder_sparse_step":1,
    "mlp_only_layers":[1],"max_position_embeddings":64,"rms_norm_eps":1e-6,
    "tie_word_embeddings":false}"#;

#[test]
fn qwen3_moe_matches_transformers_with_idle_experts() {
    let (dir, io) = reference("qwen3_moe", QWEN3_MOE);
    let model = Qwen3MoeForCausalLM::from_pretrained(&dir).unwrap();
    // The checkpoint stores the experts one by one; the model holds them fused, as
    // transformers does in memory, and layer 1 keeps its dense MLP.
    let params: HashMap<String, Vec<i64>> = model
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.concrete_shape()))
        .collect();
    assert_eq!(
        params["model.layers.0.mlp.experts.gate_up_proj"],
        [8, 48, 32]
    );
    assert_eq!(params["model.layers.2.mlp.experts.down_proj"], [8, 32, 24]);
    assert_eq!(params["model.layers.0.mlp.gate.weight"], [8, 32]);
    assert_eq!(params["model.layers.1.mlp.gate_proj.weight"], [48, 32]);
    assert!(!params.keys().any(|n| n.contains("experts.0.")));
    check_moe(
        "qwen3_moe",
        &io,
        false,
        &|ids: &Tensor, mask: &Tensor, cache| {
            model
                .forward_with_cache(ids, Some(mask), None, cache)
                .unwrap()
        },
    );
    // 6 tokens of the cached step, 2 experts each, over 8 experts: some get none.
    assert!(their_counts(&io, "_next", 2).iter().any(|l| l.contains(&0)));
}

#[test]
fn qwen3_moe_matches_transformers_when_one_expert_gets_every_token() {
    // Top-1 routing, and a cached step of one token in a batch of one: its expert gets all
    // the tokens, the 7 others none.
    let config = QWEN3_MOE.replace(r#""num_experts_per_tok":2"#, r#""num_experts_per_tok":1"#);
    let (dir, io) = reference_with("qwen3_moe_top1", &config, &["--batch=1", "--next-tokens=1"]);
    let model = Qwen3MoeForCausalLM::from_pretrained(&dir).unwrap();
    check_moe(
        "qwen3_moe top-1",
        &io,
        false,
        &|ids: &Tensor, mask: &Tensor, cache| {
            model
                .forward_with_cache(ids, Some(mask), None, cache)
                .unwrap()
        },
    );
    for layer in their_counts(&io, "_next", 2) {
        assert_eq!(layer.iter().max(), Some(&1), "{layer:?}");
        assert_eq!(layer.iter().filter(|c| **c == 0).count(), 7, "{layer:?}");
    }
}

#[test]
fn mixtral_matches_transformers() {
    let config = r#"{"architectures":["MixtralForCausalLM"],"model_type":"mixtral",
    "vocab_size":128,"hidden_size":32,"intermediate_size":40,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":4,
    "num_experts_per_tok":2,"max_position_embeddings":64,"sliding_window":4,
    "tie_word_embeddings":false}"#;
    let (dir, io) = reference("mixtral", config);
    let model = MixtralForCausalLM::from_pretrained(&dir).unwrap();
    assert_eq!(model.config().rms_norm_eps, 1e-5);
    let params: HashMap<String, Vec<i64>> = model
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.concrete_shape()))
        .collect();
    assert_eq!(
        params["model.layers.1.mlp.experts.gate_up_proj"],
        [4, 80, 32]
    );
    assert_eq!(params["model.layers.1.mlp.gate.weight"], [4, 32]);
    check_moe(
        "mixtral",
        &io,
        true,
        &|ids: &Tensor, mask: &Tensor, cache| {
            model
                .forward_with_cache(ids, Some(mask), None, cache)
                .unwrap()
        },
    );
}

/// Qwen3Moe with every option the others leave at their defaults: a window of 3 on every
/// layer (`use_sliding_window`), sparse layers every second layer except the last
/// (`decoder_sparse_step` 2, `mlp_only_layers` [3]: layer 1 only), 16 experts of which 4 per
/// token, tied embeddings.
#[test]
fn qwen3_moe_with_a_window_and_sparse_steps_matches_transformers() {
    let config = r#"{"architectures":["Qwen3MoeForCausalLM"],"model_type":"qwen3_moe",
    "vocab_size":300,"hidden_size":48,"intermediate_size":40,"moe_intermediate_size":20,
    "num_hidden_layers":4,"num_attention_heads":6,"num_key_value_heads":3,"head_dim":32,
    "num_experts":16,"num_experts_per_tok":4,"norm_topk_prob":true,"decoder_sparse_step":2,
    "mlp_only_layers":[3],"use_sliding_window":true,"sliding_window":3,
    "tie_word_embeddings":true,"rope_theta":1000000.0,"max_position_embeddings":128}"#;
    let (dir, io) = reference("qwen3_moe_window", config);
    let model = Qwen3MoeForCausalLM::from_pretrained(&dir).unwrap();
    assert_eq!(
        model.config().layer_kinds(),
        [onnx_diagnostic_transformers::LayerKind::DynamicSlidingWindow(3); 4]
    );
    let sparse: Vec<bool> = (0..4).map(|i| model.config().is_sparse_layer(i)).collect();
    assert_eq!(sparse, [false, true, false, false]);
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps("qwen3_moe window", &io, &step, true);
    let (_, first) =
        record_expert_counts(|| step(&t(&io, "input_ids"), &t(&io, "attention_mask"), None));
    assert_eq!(first.len(), 1);
    assert_eq!(first, their_counts(&io, "", 1));
}

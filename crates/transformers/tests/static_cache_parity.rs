//! Static caches against transformers 5.23 and in ONNX Runtime: `StaticCache(config=...,
//! max_cache_len=...)` (a `StaticLayer` per full layer, a `StaticSlidingWindowLayer` per
//! sliding one) on Llama and Gemma2, whose window (3) is shorter than the prompt (5), so that
//! the sliding slots fill, roll and wrap; then the exported models with `StaticCache`,
//! `HybridCache` and `SlidingWindowCache` inputs and `cache_position`, at cache lengths other
//! than the export's (30 at export; 31 and 0 after), with the graph's dimensions kept symbolic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{check_two_steps, export_and_check_with, reference_with};
use onnx_diagnostic_core::{Inputs, Module, Tensor};
use onnx_diagnostic_transformers::{
    DynamicCache, LayerKind,
    models::{gemma2::Gemma2ForCausalLM, llama::LlamaForCausalLM, mistral::MistralForCausalLM},
    tasks::{CacheChoice, TextGenerationOptions},
};

const SLOTS: i64 = 12;

fn static_kinds(kinds: &[LayerKind]) -> Vec<LayerKind> {
    kinds
        .iter()
        .map(|k| match k {
            LayerKind::DynamicSlidingWindow(w) => LayerKind::StaticSlidingWindow(SLOTS, *w),
            _ => LayerKind::Static(SLOTS),
        })
        .collect()
}

const LLAMA: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
    "vocab_size":96,"hidden_size":32,"intermediate_size":48,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":64,
    "tie_word_embeddings":false}"#;

const GEMMA2: &str = r#"{"architectures":["Gemma2ForCausalLM"],"model_type":"gemma2",
    "vocab_size":96,"hidden_size":32,"intermediate_size":48,"num_hidden_layers":3,
    "num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"max_position_embeddings":64,
    "query_pre_attn_scalar":16,"sliding_window":3,"attn_logit_softcapping":2.0,
    "final_logit_softcapping":1.5,"pad_token_id":0,"tie_word_embeddings":false}"#;

fn options(cls: CacheChoice) -> TextGenerationOptions {
    TextGenerationOptions {
        cls_cache: cls,
        ..TextGenerationOptions::default()
    }
}

#[test]
fn llama_with_a_static_cache_matches_transformers_and_onnx_runtime() {
    let slots = format!("--static-cache={SLOTS}");
    let (dir, io) = reference_with("llama_static", LLAMA, &[&slots]);
    let model = LlamaForCausalLM::from_pretrained(&dir).unwrap();
    let kinds = static_kinds(&model.config.layer_kinds());
    let step = |ids: &Tensor, mask: &Tensor, cache: Option<DynamicCache>| {
        let cache = cache.unwrap_or_else(|| DynamicCache::with_layers(&kinds));
        model
            .forward_with_cache(ids, Some(mask), None, Some(cache))
            .unwrap()
    };
    check_two_steps("llama static", &io, &step, false);
    let onnx = export_and_check_with(
        &model,
        &model.config.decoder_dims(),
        &options(CacheChoice::Static),
    );
    let graph = onnx.graph.unwrap();
    assert!(
        graph
            .node
            .iter()
            .any(|n| n.op_type.as_deref() == Some("ScatterND"))
    );
    // The new tokens and the mask keep their symbolic lengths; the slots are static.
    let dims = |name: &str| -> Vec<String> {
        let i = graph
            .input
            .iter()
            .find(|i| i.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no input {name}"));
        let text = format!("{:?}", i.r#type);
        let mut out = Vec::new();
        for part in text.split("Dim").skip(1) {
            if let Some(p) = part.strip_prefix("Param(\"") {
                out.push(p.split('"').next().unwrap().to_owned());
            } else if let Some(v) = part.strip_prefix("Value(") {
                out.push(v.split(')').next().unwrap().to_owned());
            }
        }
        out
    };
    assert_eq!(dims("input_ids"), ["batch", "seq_length"]);
    assert_eq!(dims("cache_position"), ["seq_length"]);
    assert_eq!(dims("attention_mask"), ["batch", "cache+seq"]);
    assert_eq!(
        dims("past_key_values_key_0"),
        ["batch", "2", "35", "8"],
        "slots: the longest set (31 + 4)"
    );
}

#[test]
fn gemma2_with_a_static_cache_matches_transformers_and_onnx_runtime() {
    let slots = format!("--static-cache={SLOTS}");
    let (dir, io) = reference_with("gemma2_static", GEMMA2, &[&slots]);
    let model = Gemma2ForCausalLM::from_pretrained(&dir).unwrap();
    let kinds = static_kinds(&model.config.layer_kinds());
    assert_eq!(kinds[0], LayerKind::StaticSlidingWindow(SLOTS, 3));
    let step = |ids: &Tensor, mask: &Tensor, cache: Option<DynamicCache>| {
        let cache = cache.unwrap_or_else(|| DynamicCache::with_layers(&kinds));
        model
            .forward_with_cache(ids, Some(mask), None, Some(cache))
            .unwrap()
    };
    check_two_steps("gemma2 static", &io, &step, false);
    let dims = model.config.decoder_dims();
    // The sliding layers carry their kind in their names (torch.export's lower case), in a
    // StaticCache too: onnx-diagnostic 0.9.3 names a StaticCache's layers `key_<i>` whatever
    // their kind and rebuilds them all as full layers (docs/decisions.md).
    for (cls, first) in [
        (CacheChoice::Static, "past_key_values_key_x3_0"),
        (CacheChoice::Hybrid, "past_key_values_key_x3_0"),
    ] {
        let onnx = export_and_check_with(&model, &dims, &options(cls));
        let g = onnx.graph.unwrap();
        let names: Vec<&str> = g.input.iter().filter_map(|i| i.name.as_deref()).collect();
        assert!(
            names.contains(&first) && names.contains(&"past_key_values_key_s_1"),
            "{names:?}"
        );
    }
    // Every layer of a SlidingWindowCache slides: Gemma2's full layers do not.
    let e = options(CacheChoice::SlidingWindow)
        .check(&dims, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cls_cache") && e.contains("HybridCache"), "{e}");
}

#[test]
fn mistral_with_a_sliding_window_cache_exports_and_wraps_in_onnx_runtime() {
    let config = r#"{"architectures":["MistralForCausalLM"],"model_type":"mistral",
    "vocab_size":128,"hidden_size":32,"intermediate_size":37,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"hidden_act":"gelu",
    "max_position_embeddings":64,"sliding_window":3,"tie_word_embeddings":false}"#;
    let slots = format!("--static-cache={SLOTS}");
    let (dir, io) = reference_with("mistral_static", config, &[&slots]);
    let model = MistralForCausalLM::from_pretrained(&dir).unwrap();
    let kinds = static_kinds(&model.config().layer_kinds());
    let step = |ids: &Tensor, mask: &Tensor, cache: Option<DynamicCache>| {
        let cache = cache.unwrap_or_else(|| DynamicCache::with_layers(&kinds));
        model
            .forward_with_cache(ids, Some(mask), None, Some(cache))
            .unwrap()
    };
    check_two_steps("mistral static", &io, &step, false);
    let dims = model.config().decoder_dims();
    let opts = options(CacheChoice::SlidingWindow);
    export_and_check_with(&model, &dims, &opts);
    // The output is a SlidingWindowCache again.
    let set = opts.inputs(&dims, (2, 3, 30), 1).unwrap();
    let out = model
        .forward(&Inputs::bind_for(&model, &[], &set).unwrap())
        .unwrap();
    let s = onnx_diagnostic_core::string_type(&out, &Default::default());
    assert!(s.contains("SlidingWindowCache"), "{s}");
}

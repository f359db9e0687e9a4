//! float16 and bfloat16 models, as the Python validate's `--dtype` makes them (`model.to(dtype)`
//! on a float32 model, the cache of the inputs converted): transformers 5.23 converts its model
//! the same way (`make_reference.py --dtype=...`), and ours, built from the same float32
//! checkpoint with `Weights::with_dtype`, must give the same logits and cache tensors in that
//! type. Then the model is exported in that type, lowered, and ONNX Runtime must match eager on
//! the four validate input sets within the tolerance of the type (1e-2); bfloat16 runs through
//! the float32-emulating copy, ONNX Runtime's CPU provider having no bfloat16 kernels.
//!
//! Llama (the rotary buffer rounded by the conversion, the mask at the type's minimum, softmax
//! in float32) and Gemma (the embedding scale in the type, the norm in float32).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{check_two_steps_within, export_and_check_in_ort_in, reference_in};
use onnx_diagnostic_core::{Module, Tensor};
use onnx_diagnostic_onnx::proto::tensor_proto::DataType;
use onnx_diagnostic_transformers::{
    DynamicCache,
    models::{
        gemma::GemmaForCausalLM,
        llama::{Config, LlamaForCausalLM},
    },
    weights::Weights,
};
use tch::Kind;

const LLAMA: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128,
"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,
"num_key_value_heads":2,"max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0,
"tie_word_embeddings":false,"hidden_act":"silu"}"#;

const GEMMA: &str = r#"{"architectures":["GemmaForCausalLM"],"model_type":"gemma",
"vocab_size":128,"hidden_size":32,"intermediate_size":40,"num_hidden_layers":2,
"num_attention_heads":4,"num_key_value_heads":1,"head_dim":16,"hidden_act":"gelu",
"max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0}"#;

/// Builds the model of `arch` in `kind` from the float32 checkpoint of transformers' run in
/// `dtype`, checks the two steps against it within `tol_hf`, exports and checks ONNX Runtime
/// within 1e-2. Returns (discrepancy with transformers, discrepancy of ONNX Runtime, ONNX
/// element type of the graph's first input that is a float).
fn check(name: &str, config: &str, dtype: &str, kind: Kind, tol_hf: f64) -> (f64, f64, i32) {
    let (dir, io) = reference_in(name, config, Some(dtype));
    assert_eq!(io["logits"].kind(), kind, "transformers ran in {dtype}");
    let cfg = Config::from_file(&dir.join("config.json")).unwrap();
    let arch = cfg.arch.class_name();
    let mut w = Weights::from_dir(&dir, arch).unwrap().with_dtype(kind);
    // The module to export, and its cached forward for the two steps (clones share weights).
    type Step = Box<dyn Fn(&Tensor, &Tensor, Option<DynamicCache>) -> (Tensor, DynamicCache)>;
    let (module, step): (Box<dyn Module>, Step) = if arch == "GemmaForCausalLM" {
        let m = GemmaForCausalLM::new(cfg.clone(), &mut w).unwrap();
        (
            Box::new(m.clone()),
            Box::new(move |ids, mask, cache| {
                m.forward_with_cache(ids, Some(mask), None, cache).unwrap()
            }),
        )
    } else {
        let m = LlamaForCausalLM::new(cfg.clone(), &mut w).unwrap();
        (
            Box::new(m.clone()),
            Box::new(move |ids, mask, cache| {
                m.forward_with_cache(ids, Some(mask), None, cache).unwrap()
            }),
        )
    };
    let (logits, d_hf) = check_two_steps_within(name, &io, &*step, false, tol_hf);
    assert_eq!(logits.kind(), kind);

    let (onnx, d_ort) =
        export_and_check_in_ort_in(module.as_ref(), &cfg.decoder_dims(), kind, 1e-2);
    let graph = onnx.graph.unwrap();
    let cache_input = graph
        .input
        .iter()
        .find(|i| i.name.as_deref().is_some_and(|n| n.contains("key")))
        .unwrap();
    let elem = match cache_input.r#type.as_ref().unwrap().value.as_ref().unwrap() {
        onnx_diagnostic_onnx::proto::type_proto::Value::TensorType(t) => t.elem_type.unwrap(),
        _ => panic!("the cache input is not a tensor"),
    };
    eprintln!("{name}: transformers {d_hf:.3e}, ONNX Runtime {d_ort:.3e}");
    (d_hf, d_ort, elem)
}

#[test]
fn llama_in_float16_matches_transformers_and_onnx_runtime() {
    // Same libtorch, same ops in the same types: the logits and caches are equal to the bit
    // (without the rounded rotary buffer, a key differs by 3e-5).
    let (_, d_ort, elem) = check("llama_fp16", LLAMA, "float16", Kind::Half, 1e-6);
    assert_eq!(elem, DataType::Float16 as i32);
    assert!(d_ort <= 1e-2);
}

#[test]
fn llama_in_bfloat16_matches_transformers_and_onnx_runtime() {
    let (_, d_ort, elem) = check("llama_bf16", LLAMA, "bfloat16", Kind::BFloat16, 1e-6);
    assert_eq!(elem, DataType::Bfloat16 as i32);
    assert!(d_ort <= 1e-2);
}

#[test]
fn gemma_in_float16_and_bfloat16_matches_transformers_and_onnx_runtime() {
    let (_, _, elem) = check("gemma_fp16", GEMMA, "float16", Kind::Half, 1e-6);
    assert_eq!(elem, DataType::Float16 as i32);
    let (_, _, elem) = check("gemma_bf16", GEMMA, "bfloat16", Kind::BFloat16, 1e-6);
    assert_eq!(elem, DataType::Bfloat16 as i32);
}

//! arnir0/Tiny-LLM (catalog config, untrained weights): eager forward (batch 2, sequence 3, no
//! cache; transformers takes 2.17 ms on this machine), export with dynamic batch/sequence/cache,
//! and lowering to ONNX.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use onnx_diagnostic_core::{ExportOptions, Inputs, Module, Value, export};
use onnx_diagnostic_onnx::{LowerOptions, lower};
use onnx_diagnostic_transformers::{
    catalog,
    models::llama::{Config, LlamaForCausalLM},
    tasks::{text_generation_dynamic_shapes, text_generation_inputs},
    weights::Weights,
};

fn tiny_llm(c: &mut Criterion) {
    let cfg = Config::from_json(catalog::config_json("arnir0/Tiny-LLM").unwrap()).unwrap();
    let mut w = Weights::untrained("LlamaForCausalLM", 42, cfg.initializer_range);
    let model = LlamaForCausalLM::new(cfg, &mut w).unwrap();
    let dims = model.config.decoder_dims();

    let ids = tch::Tensor::randint(
        dims.vocab_size,
        [2, 3],
        (tch::Kind::Int64, tch::Device::Cpu),
    );
    let no_cache = Inputs::bind_for(&model, &[Value::from(ids)], &[]).unwrap();
    c.bench_function("tiny_llm/eager_forward_2x3_no_cache", |b| {
        b.iter(|| model.forward(&no_cache).unwrap())
    });

    // The cache crosses the export boundary through its serializer.
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    let ds = text_generation_dynamic_shapes(&dims);
    let example = text_generation_inputs(&dims, 2, 3, 30).unwrap();
    c.bench_function("tiny_llm/export", |b| {
        b.iter(|| export(&model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap())
    });
    let ep = export(&model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
    c.bench_function("tiny_llm/lower_onnx", |b| {
        b.iter(|| lower(&ep, &LowerOptions::default()).unwrap())
    });
}

criterion_group!(benches, tiny_llm);
criterion_main!(benches);

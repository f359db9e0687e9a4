//! Parity of `LlamaForCausalLM` with transformers 5.23: `tests/parity/make_reference.py` (run
//! with the project's venv) builds the model in transformers from a config and a seed, saves the
//! checkpoint and the outputs of a prompt step and of a cached step; the Rust model loads the
//! checkpoint and must give the same logits and cache tensors (≤ 1e-4). Then the model is
//! exported with dynamic batch, sequence and cache lengths, lowered to ONNX, and ONNX Runtime
//! must match eager on input sets of other shapes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{check_two_steps, export_and_check_in_ort, reference};

use onnx_diagnostic_core::{ExportOptions, Inputs, Module, Tensor, export};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff, passes};
use onnx_diagnostic_transformers::{
    catalog,
    models::llama::{Config, LlamaForCausalLM},
    tasks::{text_generation_dynamic_shapes, text_generation_inputs},
    weights::Weights,
};

const TINY: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128,
"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,
"num_key_value_heads":2,"max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000.0,
"tie_word_embeddings":false,"hidden_act":"silu"}"#;

fn check_parity(name: &str, config: &str) -> LlamaForCausalLM {
    let (dir, io) = reference(name, config);
    let model = LlamaForCausalLM::from_pretrained(&dir).unwrap();
    let step = |ids: &Tensor, mask: &Tensor, cache| {
        model
            .forward_with_cache(ids, Some(mask), None, cache)
            .unwrap()
    };
    check_two_steps(name, &io, &step, false);
    model
}

#[test]
fn llama_gqa_default_rope_matches_transformers() {
    check_parity("llama_gqa", TINY);
}

#[test]
fn llama_linear_and_llama3_ropes_match_transformers() {
    let linear = TINY.replace(
        r#""rope_theta":10000.0,"#,
        r#""rope_theta":10000.0,"rope_scaling":{"rope_type":"linear","factor":2.0},"#,
    );
    check_parity("llama_linear", &linear);
    let llama3 = TINY.replace(
        r#""rope_theta":10000.0,"#,
        r#""rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":16},"#,
    );
    check_parity("llama_llama3", &llama3);
}

#[test]
fn llama_exports_to_onnx_and_matches_eager_on_other_shapes() {
    let model = check_parity("llama_export", TINY);
    let dims = model.config.decoder_dims();
    let ds = text_generation_dynamic_shapes(&dims);
    // Without registration, the cache cannot cross the export boundary, and the error says
    // how to fix it.
    let example = text_generation_inputs(&dims, 2, 3, 30).unwrap();
    let err = export(&model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("DynamicCache")
            && err.to_string().contains("register_cache_serialization"),
        "{err}"
    );
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    let example = text_generation_inputs(&dims, 2, 3, 30).unwrap();
    let ep = export(&model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
    let text = ep.to_string();
    assert!(
        text.contains(r#"input_ids: "i64[batch, seq_length]""#),
        "{text}"
    );
    assert!(
        text.contains(r#"past_key_values_key_0: "f32[batch, 2, cache_length, 8]""#),
        "{text}"
    );
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let counts = passes::node_counts(onnx.graph.as_ref().unwrap());
    let n: usize = counts.values().sum();
    eprintln!("tiny llama (2 layers): {n} ONNX nodes: {counts:?}");
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    // Saved and loaded back (JSON + safetensors), the program runs as the exported one.
    let saved = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("llama_ep.json");
    ep.save(&saved).unwrap();
    let loaded = onnx_diagnostic_core::ExportedProgram::load(&saved).unwrap();
    assert_eq!(loaded.to_string(), ep.to_string());
    for (b, s, c) in [(2, 3, 30), (3, 4, 31), (1, 1, 5), (2, 5, 0)] {
        let set = text_generation_inputs(&dims, b, s, c).unwrap();
        let eager = model
            .forward(&Inputs::bind_for(&model, &[], &set).unwrap())
            .unwrap();
        let exported = ep.run(&[], &set).unwrap();
        let reloaded = loaded.run(&[], &set).unwrap();
        assert_eq!(
            max_diff(&exported, &reloaded).abs,
            0.0,
            "{b}x{s}+{c}: reloaded program"
        );
        let got = session.run(&[], &set).unwrap();
        let d_ep = max_diff(&eager, &exported);
        let d_ort = max_diff(&eager, &got);
        assert!(d_ep.abs <= 1e-5, "{b}x{s}+{c}: ExportedProgram {d_ep:?}");
        assert!(d_ort.abs <= 1e-4, "{b}x{s}+{c}: ONNX {d_ort:?}");
    }
}

/// arnir0/Tiny-LLM (catalog config, untrained weights from a seed, as the Python validate
/// does): exports with a KV cache, lowers within the Python exporter's 142 nodes, and ONNX
/// Runtime matches eager on the four validate input sets.
#[test]
fn tiny_llm_exports_within_142_nodes_and_matches_on_the_validate_input_sets() {
    let cfg = Config::from_json(catalog::config_json("arnir0/Tiny-LLM").unwrap()).unwrap();
    let mut w = Weights::untrained("LlamaForCausalLM", 42, cfg.initializer_range);
    let model = LlamaForCausalLM::new(cfg, &mut w).unwrap();
    let onnx = export_and_check_in_ort(&model, &model.config.decoder_dims());
    let counts = passes::node_counts(onnx.graph.as_ref().unwrap());
    let n: usize = counts.values().sum();
    eprintln!("arnir0/Tiny-LLM: {n} ONNX nodes: {counts:?}");
    assert!(n <= 142, "{n} nodes: {counts:?}");
    let graph = onnx.graph.as_ref().unwrap();
    let io = |v: &[onnx_diagnostic_onnx::proto::ValueInfoProto]| -> Vec<String> {
        v.iter()
            .map(|x| x.name.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(
        io(&graph.input),
        [
            "input_ids",
            "attention_mask",
            "position_ids",
            "past_key_values_key_0",
            "past_key_values_value_0"
        ]
    );
    assert_eq!(
        io(&graph.output),
        [
            "logits",
            "present_key_values_key_0",
            "present_key_values_value_0"
        ]
    );
}

#[test]
fn yarn_longrope_and_dynamic_ropes_match_transformers() {
    let with = |scaling: &str| {
        TINY.replace(
            r#""rope_theta":10000.0,"#,
            &format!(r#""rope_theta":10000.0,"rope_scaling":{scaling},"#),
        )
    };
    check_parity(
        "llama_yarn",
        &with(r#"{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":16}"#),
    );
    // The prompt (5 positions) stays within the original 6, the cached step (up to 8) goes
    // beyond: the short then the long factors.
    check_parity(
        "llama_longrope",
        &with(
            r#"{"rope_type":"longrope","short_factor":[1.0,1.1,1.2,1.3],
            "long_factor":[2.0,3.0,4.0,5.0],"original_max_position_embeddings":6}"#,
        ),
    );
    // Beyond max_position_embeddings (4), the base grows with the length.
    let dynamic = with(r#"{"rope_type":"dynamic","factor":2.0}"#).replace(
        r#""max_position_embeddings":64"#,
        r#""max_position_embeddings":4"#,
    );
    let model = check_parity("llama_dynamic", &dynamic);
    // transformers' dynamic update branches on the data (max(position_ids) + 1): exporting it
    // as written is a data-dependent error naming the place (what the seeds patch).
    let _g = onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    let dims = model.config.decoder_dims();
    let err = export(
        &model,
        &[],
        &text_generation_inputs(&dims, 2, 3, 5).unwrap(),
        Some(&text_generation_dynamic_shapes(&dims)),
        &ExportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, onnx_diagnostic_core::Error::DataDependent { location, .. } if location.file.ends_with("llama/rotary.rs")),
        "{err}"
    );
}

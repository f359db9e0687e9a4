//! The two export forms of a mixture-of-experts block, side by side on the catalog's
//! `tiny-random/qwen3-moe` (128 experts, 8 per token, 4 sparse layers; untrained): the patched
//! form (`patched_Qwen3MoeSparseMoeBlock.forward`: one `If` per expert, each expert on its own
//! tokens) and the dense all-experts form (`dense_moe_forward` as a custom patch: every expert
//! on every token). Prints each ONNX file's node count and size, and ONNX Runtime's median
//! latency (its default threads) on the validate `inputs` set (batch 2, 3 new tokens, 30 cached) and on
//! a one-token step (batch 1, 1 new token, 30 cached), after checking that both match eager.
//!
//! Run: `cargo bench -p onnx-diagnostic-benches --bench moe_forms` (not criterion: each ORT
//! run is long enough to time directly; 20 runs after 3 warm-up runs). With
//! `MOE_FORMS_DIR=DIR` it loads that Qwen3Moe checkpoint (in float32) instead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use onnx_diagnostic_core::{
    CustomPatch, ExportOptions, Inputs, Module, PatchOptions, Result, Tensor, Value, export,
    torch_export_patches,
};
use onnx_diagnostic_onnx::{
    ExternalData, LowerOptions, OnnxProgram, lower, max_diff, proto::GraphProto, save_model,
};
use onnx_diagnostic_transformers::{
    CausalLM, catalog,
    models::{llama::Config, qwen3_moe::Qwen3MoeForCausalLM, qwen3_moe::Qwen3MoeSparseMoeBlock},
    tasks::{text_generation_dynamic_shapes, text_generation_inputs},
    weights::Weights,
};

type BlockFn = fn(&Qwen3MoeSparseMoeBlock, &Tensor) -> Result<Tensor>;

fn dense_patch() -> CustomPatch {
    CustomPatch {
        name: "dense_moe_forward".to_owned(),
        target: "Qwen3MoeSparseMoeBlock.forward".to_owned(),
        family: onnx_diagnostic_core::patches::PatchFamily::Custom,
        doc: "every expert on every token".to_owned(),
        patch_source: "dense_moe_forward".to_owned(),
        target_source: Qwen3MoeSparseMoeBlock::__patchable_source_forward.to_owned(),
        func: Arc::new(onnx_diagnostic_patch_transformers::dense_moe_forward as BlockFn),
        plugin: None,
    }
}

/// The nodes of `g` and of its sub-graphs (`If` branches), by op type.
fn count_nodes(g: &GraphProto, counts: &mut BTreeMap<String, usize>) {
    for n in &g.node {
        *counts
            .entry(n.op_type.clone().unwrap_or_default())
            .or_default() += 1;
        for sub in n.attribute.iter().filter_map(|a| a.g.as_ref()) {
            count_nodes(sub, counts);
        }
    }
}

fn median_ms(session: &mut OnnxProgram, set: &[(String, Value)]) -> f64 {
    for _ in 0..3 {
        session.run(&[], set).unwrap();
    }
    let mut times: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            session.run(&[], set).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let _ = onnx_diagnostic_patch_transformers::patches();
    let _ = onnx_diagnostic_serialization::supported_classes();
    tch::set_num_threads(1);
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    // MOE_FORMS_DIR=DIR: a Qwen3Moe checkpoint directory instead (converted to float32), e.g.
    // the real-width one of benches/real_size (`make_checkpoint.py qwen3-moe-2l DIR`).
    let dir = std::env::var_os("MOE_FORMS_DIR").map(std::path::PathBuf::from);
    let (id, model) = match &dir {
        Some(d) => {
            let cfg = Config::from_file(&d.join("config.json")).unwrap();
            let mut w = Weights::from_dir(d, "Qwen3MoeForCausalLM")
                .unwrap()
                .with_dtype(tch::Kind::Float);
            (
                d.display().to_string(),
                Qwen3MoeForCausalLM::new(cfg, &mut w).unwrap(),
            )
        }
        None => {
            let id = "tiny-random/qwen3-moe";
            let cfg = Config::from_json(catalog::config_json(id).unwrap()).unwrap();
            let mut w = Weights::untrained("Qwen3MoeForCausalLM", 0, cfg.initializer_range);
            (
                id.to_owned(),
                Qwen3MoeForCausalLM::new(cfg, &mut w).unwrap(),
            )
        }
    };
    let dims = model.decoder_dims();
    let ds = text_generation_dynamic_shapes(&dims);
    let example = text_generation_inputs(&dims, 2, 3, 30).unwrap();
    let one_token = text_generation_inputs(&dims, 1, 1, 30).unwrap();
    println!("{id}: ONNX Runtime (default threads), median of 20 runs");
    println!(
        "| form | nodes | If | NonZero | MatMul | file MB | inputs (2x3, 30 cached) ms | one token (1x1, 30 cached) ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (form, custom) in [
        ("patched (experts hit only)", None),
        ("dense (all experts)", Some(dense_patch())),
    ] {
        let custom_form = custom.is_some();
        let guard = torch_export_patches(PatchOptions {
            patch_transformers: true,
            custom_patches: custom.into_iter().collect(),
            ..PatchOptions::default()
        })
        .unwrap();
        let ep = export(&model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
        drop(guard);
        let onnx = lower(&ep, &LowerOptions::default()).unwrap();
        let mut counts = BTreeMap::new();
        count_nodes(onnx.graph.as_ref().unwrap(), &mut counts);
        let total: usize = counts.values().sum();
        let n = |op: &str| counts.get(op).copied().unwrap_or(0);
        let (ifs, nonzeros, matmuls) = (n("If"), n("NonZero"), n("MatMul"));
        // Saved with external data and opened from the file: a real-width model is beyond
        // protobuf's 2 GB.
        let path =
            std::env::temp_dir().join(format!("moe_forms_{}.onnx", usize::from(custom_form)));
        save_model(&onnx, &path, ExternalData::Above(1024)).unwrap();
        let size = (std::fs::metadata(&path).unwrap().len()
            + std::fs::metadata(path.with_extension("onnx.data")).map_or(0, |m| m.len()))
            as f64
            / 1e6;
        drop(onnx);
        let mut session = OnnxProgram::from_file(&path, &ep).unwrap();
        for set in [&example, &one_token] {
            let eager = model
                .forward(&Inputs::bind_for(&model, &[], set).unwrap())
                .unwrap();
            let d = max_diff(&eager, &session.run(&[], set).unwrap());
            assert!(d.abs <= 1e-4, "{form}: {d:?}");
        }
        let (a, b) = (
            median_ms(&mut session, &example),
            median_ms(&mut session, &one_token),
        );
        drop(session);
        for f in [path.clone(), path.with_extension("onnx.data")] {
            let _ = std::fs::remove_file(f);
        }
        println!(
            "| {form} | {total} | {} | {} | {} | {size:.1} | {a:.2} | {b:.2} |",
            ifs, nonzeros, matmuls,
        );
    }
}

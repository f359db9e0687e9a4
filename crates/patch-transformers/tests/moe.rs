//! `patched_Qwen3MoeSparseMoeBlock.forward`: Qwen3Moe and Mixtral fail to export without it (the
//! data-dependent loop over the experts hit, named by its line) and, with it, ONNX Runtime
//! matches eager on input sets that route their tokens to other experts than the export set
//! did (one token, many tokens), each expert computed on its own tokens only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Error, ExportOptions, Inputs, PatchOptions, Value, export, torch_export_patches,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff, passes};
use onnx_diagnostic_transformers::{
    CausalLM,
    models::{
        llama::Config, mixtral::MixtralForCausalLM, qwen3_moe::Qwen3MoeForCausalLM,
        qwen3_moe::record_expert_counts,
    },
    tasks::{text_generation_dynamic_shapes, text_generation_inputs},
    weights::Weights,
};

fn qwen3_moe() -> Qwen3MoeForCausalLM {
    let cfg = Config::from_json(
        r#"{"model_type":"qwen3_moe","vocab_size":64,"hidden_size":16,"intermediate_size":24,
        "moe_intermediate_size":12,"num_hidden_layers":3,"num_attention_heads":2,
        "num_key_value_heads":1,"head_dim":8,"num_experts":8,"num_experts_per_tok":2,
        "norm_topk_prob":true,"mlp_only_layers":[1],"max_position_embeddings":64}"#,
    )
    .unwrap();
    let mut w = Weights::untrained("Qwen3MoeForCausalLM", 5, 0.3);
    Qwen3MoeForCausalLM::new(cfg, &mut w).unwrap()
}

fn mixtral() -> MixtralForCausalLM {
    let cfg = Config::from_json(
        r#"{"model_type":"mixtral","vocab_size":64,"hidden_size":16,"intermediate_size":24,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,
        "num_local_experts":4,"num_experts_per_tok":2,"max_position_embeddings":64}"#,
    )
    .unwrap();
    let mut w = Weights::untrained("MixtralForCausalLM", 9, 0.3);
    MixtralForCausalLM::new(cfg, &mut w).unwrap()
}

/// The experts each sparse layer's tokens went to for one input set, eagerly.
fn hits(model: &dyn CausalLM, set: &[(String, Value)]) -> Vec<Vec<bool>> {
    let (_, counts) = record_expert_counts(|| {
        model
            .forward(&Inputs::bind_for(model, &[], set).unwrap())
            .unwrap()
    });
    counts
        .into_iter()
        .map(|l| l.iter().map(|c| *c > 0).collect())
        .collect()
}

/// Unpatched: the data-dependent error at the loop. Patched: ORT against eager on sets whose
/// experts differ from the export set's. Returns the number of `If` nodes of the ONNX graph.
fn check(model: &dyn CausalLM) -> usize {
    // Both crates the guard draws on are linked (their link-time entries are kept).
    assert!(
        onnx_diagnostic_patch_transformers::patches()
            .contains(&"patched_Qwen3MoeSparseMoeBlock.forward")
    );
    assert!(onnx_diagnostic_serialization::supported_classes().contains(&"DynamicCache"));
    let dims = model.decoder_dims();
    let ds = text_generation_dynamic_shapes(&dims);
    let example = text_generation_inputs(&dims, 2, 3, 30).unwrap();
    {
        let _g = torch_export_patches(PatchOptions {
            patch_transformers: true,
            patch: false,
            ..PatchOptions::default()
        })
        .unwrap();
        let e = export(model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::DataDependent { .. }), "{text}");
        assert!(
            text.contains(
                "size u0 (made by nonzero at crates/transformers/src/models/qwen3_moe.rs:"
            ),
            "{text}"
        );
        let line = 1 + include_str!("../../transformers/src/models/qwen3_moe.rs")
            .lines()
            .position(|l| l.contains("let hit = expert_hit.size(0)?.guard_int()?;"))
            .unwrap();
        assert!(
            text.contains(&format!("qwen3_moe.rs:{line}:")),
            "{line}: {text}"
        );
    }
    // Sets: the validate ones of other sizes, one token, and many tokens.
    let sets: Vec<_> = [(1, 1, 0), (1, 1, 5), (3, 9, 2), (2, 4, 31)]
        .map(|(b, s, c)| text_generation_inputs(&dims, b, s, c).unwrap())
        .into_iter()
        .collect();
    let export_hits = hits(model, &example);
    let other_hits: Vec<_> = sets.iter().map(|s| hits(model, s)).collect();
    // The one-token sets route to other experts than the export set does.
    assert!(
        other_hits[..2].iter().all(|h| h != &export_hits),
        "{export_hits:?} {other_hits:?}"
    );
    // One token goes to top_k (2) experts only; many tokens reach more.
    let n_hit = |l: &Vec<bool>| l.iter().filter(|h| **h).count();
    assert!(
        other_hits[0].iter().all(|l| n_hit(l) == 2),
        "{other_hits:?}"
    );
    assert!(other_hits[2].iter().all(|l| n_hit(l) > 2), "{other_hits:?}");

    let guard = torch_export_patches(PatchOptions {
        patch_transformers: true,
        ..PatchOptions::default()
    })
    .unwrap();
    let details = guard.details().clone();
    let ep = export(model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
    let involved = details.patches_involved_in_graph(&ep);
    assert!(
        involved
            .iter()
            .any(|(p, _)| p.name == "patched_Qwen3MoeSparseMoeBlock.forward"),
        "{involved:?}"
    );
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    let got: Vec<_> = sets.iter().map(|s| session.run(&[], s).unwrap()).collect();
    drop(guard);
    for (set, got) in sets.iter().zip(&got) {
        let eager = model
            .forward(&Inputs::bind_for(model, &[], set).unwrap())
            .unwrap();
        let d = max_diff(&eager, got);
        assert!(
            d.abs <= 1e-4 && d.dnan == 0.0,
            "{}: {d:?}",
            model.class_name()
        );
    }
    let graph = onnx.graph.as_ref().unwrap();
    let counts = passes::node_counts(graph);
    // The experts' NonZero nodes are inside the branches, not in the main graph.
    assert_eq!(counts.get("NonZero"), None, "{counts:?}");
    let in_branches: usize = graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("If"))
        .flat_map(|n| n.attribute.iter())
        .filter_map(|a| a.g.as_ref())
        .map(|g| {
            g.node
                .iter()
                .filter(|n| n.op_type.as_deref() == Some("NonZero"))
                .count()
        })
        .sum();
    let ifs = counts.get("If").copied().unwrap_or(0);
    assert_eq!(in_branches, ifs, "one NonZero per expert branch");
    ifs
}

#[test]
fn qwen3_moe_exports_only_with_the_patch_and_matches_eager_on_other_experts() {
    // Two sparse layers of 8 experts: one `If` per expert.
    assert_eq!(check(&qwen3_moe()), 16);
}

#[test]
fn mixtral_shares_the_patch() {
    assert_eq!(check(&mixtral()), 8);
}

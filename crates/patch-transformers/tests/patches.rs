//! The patch guard and the transformers patches: the dynamic-rope model fails to export
//! without the patch and matches eager in ONNX Runtime with it; the guard is scoped to its
//! thread, nests, refuses conflicts, and undoes everything on panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Barrier};

use onnx_diagnostic_core::{
    CustomPatch, DiffFormat, Error, ExportOptions, ExportedProgram, Inputs, PatchDetails,
    PatchOptions, Result, Tensor, Value, export, patches::any_active, torch_export_patches,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_transformers::{
    CausalLM,
    models::llama::{Config, LlamaForCausalLM, LlamaRotaryEmbedding},
    tasks::{INPUT_SETS, text_generation_dynamic_shapes, text_generation_inputs},
    weights::Weights,
};

/// A tiny Llama with the `dynamic` rope: beyond 8 positions the base grows with the length.
fn dynamic_llama() -> LlamaForCausalLM {
    // Both crates the guard draws on are linked (their link-time entries are kept).
    assert_eq!(
        onnx_diagnostic_patch_transformers::patches(),
        [
            "patched_Gemma3Model.get_placeholder_mask",
            "patched_IdeficsAttention.forward",
            "patched_IdeficsEmbedding.forward",
            "patched_LlamaRotaryEmbedding.forward",
            "patched_Qwen2VLModel.get_image_features",
            "patched_Qwen2VisionTransformerPretrainedModel.forward",
            "patched_Qwen3MoeSparseMoeBlock.forward",
            "patched_SamMaskDecoder.forward",
            "patched_VisionAttention.forward"
        ]
    );
    assert!(onnx_diagnostic_serialization::supported_classes().contains(&"DynamicCache"));
    let cfg = Config::from_json(
        r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":64,
        "hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":2,
        "num_key_value_heads":1,"max_position_embeddings":8,"rope_theta":10000.0,
        "rope_scaling":{"rope_type":"dynamic","factor":2.0}}"#,
    )
    .unwrap();
    let mut w = Weights::untrained("LlamaForCausalLM", 7, 0.02);
    LlamaForCausalLM::new(cfg, &mut w).unwrap()
}

/// The same tiny model for another architecture (`mistral`, `qwen2`, `phi3`, `gemma`): they
/// share `LlamaRotaryEmbedding`, and so its patch.
fn dynamic_model(model_type: &str) -> LlamaForCausalLM {
    let cfg = Config::from_json(&format!(
        r#"{{"model_type":"{model_type}","vocab_size":64,"hidden_size":16,"intermediate_size":32,
        "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":8,
        "max_position_embeddings":8,"rope_theta":10000.0,
        "rope_scaling":{{"rope_type":"dynamic","factor":2.0}}}}"#
    ))
    .unwrap();
    let mut w = Weights::untrained(cfg.arch.class_name(), 11, 0.02);
    LlamaForCausalLM::new(cfg, &mut w).unwrap()
}

/// With serialization only (no patch), the export stops on the data-dependent branch.
fn fails_unpatched(model: &dyn CausalLM) {
    let _g = torch_export_patches(PatchOptions {
        patch_transformers: true,
        patch: false,
        ..PatchOptions::default()
    })
    .unwrap();
    let e = try_export(model).unwrap_err();
    assert!(matches!(e, Error::DataDependent { .. }), "{e}");
}

fn try_export(model: &dyn CausalLM) -> Result<ExportedProgram> {
    let dims = model.decoder_dims();
    export(
        model,
        &[],
        &text_generation_inputs(&dims, 2, 3, 30).unwrap(),
        Some(&text_generation_dynamic_shapes(&dims)),
        &ExportOptions::default(),
    )
}

/// Exports `model` under the transformers patches, runs the ONNX file on `sets` in ONNX
/// Runtime and, once the guard is gone, compares with eager (unpatched) within 1e-4. Returns
/// the program and what the guard applied.
fn export_patched_and_compare(
    model: &dyn CausalLM,
    sets: &[Vec<(String, Value)>],
) -> (ExportedProgram, PatchDetails) {
    let guard = torch_export_patches(PatchOptions {
        patch_transformers: true,
        ..PatchOptions::default()
    })
    .unwrap();
    let details = guard.details().clone();
    let ep = try_export(model).unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    let got: Vec<_> = sets
        .iter()
        .map(|set| session.run(&[], set).unwrap())
        .collect();
    drop(guard);
    assert!(!any_active());
    for (set, got) in sets.iter().zip(&got) {
        let eager = model
            .forward(&Inputs::bind_for(model, &[], set).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        let d = max_diff(&eager, got);
        assert!(
            d.abs <= 1e-4 && d.dnan == 0.0,
            "{}: {d:?}",
            model.class_name()
        );
    }
    (ep, details)
}

#[test]
fn the_dynamic_rope_exports_only_with_the_patch_and_matches_eager() {
    let model = dynamic_llama();
    let dims = model.config.decoder_dims();
    // Without the patch (serialization only): the data-dependent branch.
    fails_unpatched(&model);
    // With it; total lengths 33, 35, 3 and 33 cross 8 or not.
    let sets: Vec<_> = INPUT_SETS
        .iter()
        .map(|(_, (b, s, c))| text_generation_inputs(&dims, *b, *s, *c).unwrap())
        .chain([text_generation_inputs(&dims, 2, 3, 2).unwrap()])
        .collect();
    let (ep, details) = export_patched_and_compare(&model, &sets);
    let p = details
        .find("patched_LlamaRotaryEmbedding.forward")
        .unwrap();
    assert_eq!(p.target, "LlamaRotaryEmbedding.forward");
    assert!(p.doc.contains("dynamic_rope_update"));
    // The nodes the patch recorded are known.
    let involved = details.patches_involved_in_graph(&ep);
    assert_eq!(involved.len(), 1);
    assert!(
        involved[0].1.iter().any(|v| v.starts_with("cond")),
        "{involved:?}"
    );
}

#[test]
fn the_patch_covers_every_architecture_sharing_the_rotary_embedding() {
    for model_type in ["mistral", "qwen2", "phi3", "gemma", "smollm3"] {
        let model = dynamic_model(model_type);
        let dims = model.config.decoder_dims();
        fails_unpatched(&model);
        // Total lengths 33 (beyond 8: the grown base) and 5 (the original frequencies).
        let sets = [(3, 4, 29), (1, 2, 3)]
            .map(|(b, s, c)| text_generation_inputs(&dims, b, s, c).unwrap());
        let (ep, _) = export_patched_and_compare(&model, &sets);
        assert!(
            ep.to_string().contains("torch.ops.higher_order.cond"),
            "{model_type}"
        );
    }
}

/// Phi (phi-2) has its own decoder but the same rotary embedding, on part of the head: the
/// patch makes its dynamic rope export too.
#[test]
fn the_patch_covers_phi_and_its_partial_rotary_embedding() {
    let cfg = onnx_diagnostic_transformers::models::phi::Config::from_json(
        r#"{"model_type":"phi","vocab_size":64,"hidden_size":16,"intermediate_size":32,
        "num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":8,
        "partial_rotary_factor":0.5,"rope_scaling":{"rope_type":"dynamic","factor":2.0}}"#,
    )
    .unwrap();
    let mut w = Weights::untrained("PhiForCausalLM", 11, 0.02);
    let model =
        onnx_diagnostic_transformers::models::phi::PhiForCausalLM::new(cfg, &mut w).unwrap();
    let dims = model.decoder_dims();
    fails_unpatched(&model);
    let sets =
        [(3, 4, 29), (1, 2, 3)].map(|(b, s, c)| text_generation_inputs(&dims, b, s, c).unwrap());
    let (ep, _) = export_patched_and_compare(&model, &sets);
    assert!(ep.to_string().contains("torch.ops.higher_order.cond"));
}

#[test]
fn two_threads_one_patched_one_not_get_what_they_asked_for() {
    let barrier = Arc::new(Barrier::new(2));
    let run = |patched: bool, barrier: Arc<Barrier>| {
        std::thread::spawn(move || {
            let model = dynamic_llama();
            let _g = torch_export_patches(PatchOptions {
                patch_transformers: true,
                patch: patched,
                ..PatchOptions::default()
            })
            .unwrap();
            barrier.wait();
            let ok = (0..3).all(|_| try_export(&model).is_ok());
            (patched, ok, any_active())
        })
    };
    let a = run(true, barrier.clone());
    let b = run(false, barrier);
    let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(ra, (true, true, true));
    assert_eq!(rb, (false, false, false));
}

type RopeFn = fn(&LlamaRotaryEmbedding, &Tensor) -> Result<(Tensor, Tensor)>;

fn custom(name: &str, f: RopeFn) -> CustomPatch {
    CustomPatch {
        name: name.to_owned(),
        target: "LlamaRotaryEmbedding.forward".to_owned(),
        family: onnx_diagnostic_core::patches::PatchFamily::Custom,
        doc: "test".to_owned(),
        patch_source: "fn test() {}".to_owned(),
        target_source: LlamaRotaryEmbedding::__patchable_source_forward.to_owned(),
        func: Arc::new(f),
        plugin: None,
    }
}

fn boom(_: &LlamaRotaryEmbedding, _: &Tensor) -> Result<(Tensor, Tensor)> {
    panic!("a patch that panics")
}

fn refuse(_: &LlamaRotaryEmbedding, _: &Tensor) -> Result<(Tensor, Tensor)> {
    Err(Error::Model {
        model: "inner".to_owned(),
        message: "inner patch ran".to_owned(),
    })
}

#[test]
fn nesting_conflicts_and_panics() {
    let model = dynamic_llama();
    let ids = Tensor::from(tch::Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]));
    let forward = |m: &LlamaForCausalLM| m.forward_with_cache(&ids, None, None, None);
    // Outer: the transformers patch; inner: a custom patch of the same target wins while alive.
    {
        let outer = torch_export_patches(PatchOptions {
            patch_transformers: true,
            ..PatchOptions::default()
        })
        .unwrap();
        assert!(forward(&model).is_ok());
        {
            let _inner = torch_export_patches(PatchOptions {
                custom_patches: vec![custom("patched_inner", refuse)],
                ..PatchOptions::default()
            })
            .unwrap();
            let e = forward(&model).unwrap_err();
            assert!(e.to_string().contains("inner patch ran"), "{e}");
        }
        assert!(forward(&model).is_ok());
        // The rotary, the mixture-of-experts, the three Qwen2-VL, the Gemma3, the two
        // Idefics and the SAM patches.
        assert_eq!(outer.details().n_patches(), 9);
    }
    assert!(!any_active());
    // A custom patch replaces the built-in patch of its target in the same guard (the seeds
    // apply custom patches last).
    {
        let g = torch_export_patches(PatchOptions {
            patch_transformers: true,
            custom_patches: vec![custom("patched_mine", refuse)],
            ..PatchOptions::default()
        })
        .unwrap();
        assert_eq!(
            g.details().names(),
            [
                "patched_Gemma3Model.get_placeholder_mask",
                "patched_IdeficsAttention.forward",
                "patched_IdeficsEmbedding.forward",
                "patched_Qwen2VLModel.get_image_features",
                "patched_Qwen2VisionTransformerPretrainedModel.forward",
                "patched_Qwen3MoeSparseMoeBlock.forward",
                "patched_SamMaskDecoder.forward",
                "patched_VisionAttention.forward",
                "patched_mine"
            ]
        );
        let e = forward(&model).unwrap_err();
        assert!(e.to_string().contains("inner patch ran"), "{e}");
    }
    // Two custom patches of one target in one guard: refused, naming both.
    let e = torch_export_patches(PatchOptions {
        custom_patches: vec![
            custom("patched_mine", refuse),
            custom("patched_yours", refuse),
        ],
        ..PatchOptions::default()
    })
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("patched_mine and patched_yours both patch"),
        "{e}"
    );
    assert!(!any_active());
    // An unknown target is refused.
    let mut unknown = custom("patched_nothing", refuse);
    unknown.target_source = String::new();
    assert!(
        torch_export_patches(PatchOptions {
            custom_patches: vec![unknown],
            ..PatchOptions::default()
        })
        .is_err()
    );
    // A panicking patch: the panic reaches the caller as it is, and nothing stays patched.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = torch_export_patches(PatchOptions {
            custom_patches: vec![custom("patched_boom", boom)],
            ..PatchOptions::default()
        })
        .unwrap();
        let _ = forward(&model);
    }));
    let payload = r.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"a patch that panics"));
    assert!(!any_active());
    assert!(forward(&model).is_ok());
}

#[test]
fn diffs_show_the_target_and_the_patch() {
    let g = torch_export_patches(PatchOptions {
        patch_transformers: true,
        ..PatchOptions::default()
    })
    .unwrap();
    let p = g.details().find("LlamaRotaryEmbedding.forward").unwrap();
    let raw = p.format_diff(DiffFormat::Raw);
    assert!(raw.starts_with(
        "transformers: LlamaRotaryEmbedding.forward -> patched_LlamaRotaryEmbedding.forward\n--- original\n+++ rewritten\n@@ "
    ), "{raw}");
    assert!(
        raw.contains("\n-    let inv_freq = self.frequencies(position_ids)?;"),
        "{raw}"
    );
    assert!(
        raw.contains("\n+    let inv_freq = onnx_diagnostic_core::cond("),
        "{raw}"
    );
    insta::assert_snapshot!("llama_rotary_embedding_raw_diff", raw);
    let rst = p.format_diff(DiffFormat::Rst);
    assert!(rst.contains(".. code-block:: diff"), "{rst}");
    insta::assert_snapshot!("llama_rotary_embedding_rst_diff", rst);
    let md = g.details().format_diff(DiffFormat::Markdown);
    assert!(md.contains("```diff\n--- original"), "{md}");
}

/// Gemma2 and Gemma3 (text) run the same rotary embedding, Gemma3 one per layer type (the
/// dynamic rope on its full-attention layers): the patch makes both export, with their sliding
/// layers holding fewer positions than the full ones.
#[test]
fn the_patch_covers_gemma2_and_gemma3() {
    use onnx_diagnostic_transformers::models::gemma2::{Config, Gemma2ForCausalLM};
    for config in [
        r#"{"model_type":"gemma2","vocab_size":64,"hidden_size":16,"intermediate_size":32,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":8,
        "max_position_embeddings":8,"sliding_window":4,
        "rope_parameters":{"rope_type":"dynamic","factor":2.0,"rope_theta":10000.0}}"#,
        r#"{"model_type":"gemma3_text","vocab_size":64,"hidden_size":16,"intermediate_size":32,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":8,
        "max_position_embeddings":8,"sliding_window":4,"sliding_window_pattern":2,
        "rope_scaling":{"rope_type":"dynamic","factor":2.0}}"#,
    ] {
        let cfg = Config::from_json(config).unwrap();
        let class = cfg.family.class_name();
        let mut w = Weights::untrained(class, 5, 0.02);
        let model = Gemma2ForCausalLM::new(cfg, &mut w).unwrap();
        let dims = model.config.decoder_dims();
        fails_unpatched(&model);
        let sets = [(3, 4, 29), (1, 2, 3)]
            .map(|(b, s, c)| text_generation_inputs(&dims, b, s, c).unwrap());
        let (ep, _) = export_patched_and_compare(&model, &sets);
        assert!(
            ep.to_string().contains("torch.ops.higher_order.cond"),
            "{class}"
        );
    }
}

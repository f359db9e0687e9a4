//! The example plugin (plugins/example), loaded from its library file: an export that fails
//! without it succeeds with it and matches eager in ONNX Runtime; its patch is in PatchDetails
//! under its plugin's name and its ops are in the host's graph (one exporter state); its
//! serializer is used; a panic in its patch is an error naming the plugin and the patch, and
//! the host goes on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use onnx_diagnostic_core::{
    Error, ExportOptions, ExportedProgram, Inputs, Module, PatchOptions, Result, Value, export,
    patches::{PatchFamily, any_active},
    torch_export_patches,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_plugins::{Plugin, load, patch_options};
use onnx_diagnostic_transformers::{
    models::llama::{Config, LlamaForCausalLM},
    tasks::{INPUT_SETS, text_generation_dynamic_shapes, text_generation_inputs},
    weights::Weights,
};

/// The example plugin's library, built by cargo next to this test's executable (it is a
/// dev-dependency for that reason only: nothing of it is linked here).
pub fn example_path() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    deps.parent().unwrap().join(format!(
        "{}onnx_diagnostic_plugin_example{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

fn example() -> &'static Plugin {
    // The built-in crates are linked, so that "without the plugin" has them all.
    let _ = onnx_diagnostic_patch_transformers::patches();
    let _ = onnx_diagnostic_patch_torch::patches();
    let _ = onnx_diagnostic_serialization::supported_classes();
    load(example_path()).unwrap()
}

fn llama(rope: &str) -> LlamaForCausalLM {
    let cfg = Config::from_json(&format!(
        r#"{{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":64,
        "hidden_size":16,"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":2,
        "num_key_value_heads":1,"max_position_embeddings":8,"rope_theta":10000.0{rope}}}"#
    ))
    .unwrap();
    let mut w = Weights::untrained("LlamaForCausalLM", 7, 0.02);
    LlamaForCausalLM::new(cfg, &mut w).unwrap()
}

const DYNAMIC: &str = r#","rope_scaling":{"rope_type":"dynamic","factor":2.0}"#;

fn try_export(model: &LlamaForCausalLM) -> Result<ExportedProgram> {
    let dims = model.config.decoder_dims();
    export(
        model,
        &[],
        &text_generation_inputs(&dims, 2, 3, 30).unwrap(),
        Some(&text_generation_dynamic_shapes(&dims)),
        &ExportOptions::default(),
    )
}

#[test]
fn the_plugin_declares_its_patch_and_serializer() {
    let p = example();
    assert_eq!((p.name.as_str(), p.version.as_str()), ("example", "0.1.0"));
    let patches = p.custom_patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        (patches[0].name.as_str(), patches[0].target.as_str()),
        (
            "patched_LlamaRotaryEmbedding.forward",
            "LlamaRotaryEmbedding.forward"
        )
    );
    assert_eq!(patches[0].family, PatchFamily::Custom);
    assert_eq!(patches[0].plugin.as_deref(), Some("example"));
    assert!(patches[0].patch_source.contains("where_cond"));
    let classes: Vec<&str> = p
        .custom_serializers()
        .iter()
        .map(|s| s.class_name())
        .collect();
    assert_eq!(classes, ["CausalLMOutputWithPast", "DynamicCache"]);
    // Loading it again gives the same plugin.
    assert!(std::ptr::eq(p, load(example_path()).unwrap()));
    let text = p.describe();
    assert!(
        text.starts_with("plugin example 0.1.0\n")
            && text.contains(
                "    patched_LlamaRotaryEmbedding.forward -> LlamaRotaryEmbedding.forward\n"
            )
            && text.contains("  serializers: 2\n    CausalLMOutputWithPast\n    DynamicCache\n"),
        "{text}"
    );
}

#[test]
fn an_export_that_fails_without_the_plugin_succeeds_with_it_and_matches_eager() {
    let p = example();
    let model = llama(DYNAMIC);
    let dims = model.config.decoder_dims();
    // Without the plugin, and without the built-in transformers support: no serializer for
    // the cache.
    {
        let _g = torch_export_patches(PatchOptions::default()).unwrap();
        let e = try_export(&model).unwrap_err();
        assert!(e.to_string().contains("DynamicCache"), "{e}");
    }
    // With the plugin's serializer only (its patch off): the data-dependent branch.
    {
        let _g = torch_export_patches(PatchOptions {
            custom_serializers: p.custom_serializers(),
            ..PatchOptions::default()
        })
        .unwrap();
        let e = try_export(&model).unwrap_err();
        assert!(matches!(e, Error::DataDependent { .. }), "{e}");
    }
    // With the plugin: exported, the patch listed under the plugin, its ops in this graph.
    let g = torch_export_patches(patch_options(&[p])).unwrap();
    let ep = try_export(&model).unwrap();
    let details = g.details().clone();
    // ONNX Runtime on lengths beyond and within the 8 positions (the plugin's serializers
    // flatten the cache), compared below with eager without any patch.
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    let sets: Vec<_> = INPUT_SETS
        .iter()
        .map(|(_, (b, s, c))| text_generation_inputs(&dims, *b, *s, *c).unwrap())
        .chain([text_generation_inputs(&dims, 2, 3, 2).unwrap()])
        .collect();
    let got: Vec<Value> = sets
        .iter()
        .map(|set| session.run(&[], set).unwrap())
        .collect();
    drop(g);
    assert!(!any_active());
    let applied = details
        .find("patched_LlamaRotaryEmbedding.forward")
        .unwrap();
    assert_eq!(applied.plugin.as_deref(), Some("example"));
    assert_eq!(
        applied.title(),
        "custom (plugin example): LlamaRotaryEmbedding.forward -> patched_LlamaRotaryEmbedding.forward"
    );
    let involved = details.patches_involved_in_graph(&ep);
    assert_eq!(involved.len(), 1, "{involved:?}");
    let text = ep.to_string();
    for op in ["aten.pow.Tensor_Tensor", "aten.where.self"] {
        assert!(text.contains(op), "{op} not in\n{text}");
    }
    assert!(!text.contains("higher_order.cond"), "{text}");
    let _g = torch_export_patches(PatchOptions {
        patch_transformers: true,
        patch: false,
        ..PatchOptions::default()
    })
    .unwrap();
    for (set, got) in sets.iter().zip(&got) {
        let eager = model
            .forward(&Inputs::bind_for(&model, &[], set).unwrap())
            .unwrap();
        let d = max_diff(&eager, got);
        assert!(d.abs <= 1e-4 && d.dnan == 0.0, "{d:?}");
    }
    drop(_g);
    // With the built-in transformers patches on too, the plugin's patch replaces the built-in
    // one of the same target.
    let g = torch_export_patches(PatchOptions {
        patch_transformers: true,
        ..patch_options(&[p])
    })
    .unwrap();
    let names: Vec<(&str, Option<&str>)> = g
        .details()
        .patched
        .iter()
        .filter(|a| a.target == "LlamaRotaryEmbedding.forward")
        .map(|a| (a.name.as_str(), a.plugin.as_deref()))
        .collect();
    assert_eq!(
        names,
        [("patched_LlamaRotaryEmbedding.forward", Some("example"))]
    );
    assert!(
        try_export(&model)
            .unwrap()
            .to_string()
            .contains("aten.pow.Tensor_Tensor")
    );
}

#[test]
fn a_panic_in_a_plugin_patch_is_an_error_naming_both_and_the_host_goes_on() {
    let p = example();
    // The plugin handles the `dynamic` rope only; the default rope makes its patch panic.
    let model = llama("");
    {
        let _g = torch_export_patches(patch_options(&[p])).unwrap();
        let e = try_export(&model).unwrap_err();
        match &e {
            Error::PatchPanicked {
                patch,
                plugin,
                message,
            } => {
                assert_eq!(patch, "patched_LlamaRotaryEmbedding.forward");
                assert_eq!(plugin.as_deref(), Some("example"));
                assert!(message.contains("`dynamic` rope type only"), "{message}");
            }
            other => panic!("{other}"),
        }
        assert!(
            e.to_string().starts_with(
                "patch patched_LlamaRotaryEmbedding.forward of plugin example panicked: "
            ),
            "{e}"
        );
    }
    assert!(!any_active());
    // The host goes on: the same model exports with the built-in support.
    let _g = torch_export_patches(PatchOptions {
        patch_transformers: true,
        ..PatchOptions::default()
    })
    .unwrap();
    let ep = try_export(&model).unwrap();
    let args: Vec<(String, Value)> =
        text_generation_inputs(&model.config.decoder_dims(), 1, 2, 4).unwrap();
    assert!(ep.run(&[], &args).is_ok());
}

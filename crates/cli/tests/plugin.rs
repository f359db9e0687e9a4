//! `--plugin` and `onnx-diagnostic plugin`: the example plugin (plugins/example) declared,
//! listed by `patches`, and making `validate` pass where it fails without it (the dynamic rope
//! with the built-in transformers patches off); a library that is not a plugin is refused with
//! the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

/// The example plugin's library, built by cargo next to this test (a dev-dependency for that
/// reason only), in the same build as the binary: they share one build of the core.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().join(format!(
        "{}onnx_diagnostic_plugin_example{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

mod common;
use common::run;

#[test]
fn plugin_prints_the_declaration_or_the_refusal() {
    let p = example();
    let (ok, out, err) = run(&["plugin".as_ref(), p.as_os_str()]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("plugin example 0.1.0\n")
            && out.contains("\n  abi: 2\n  onnx-diagnostic-core: 0.1.0\n  rustc: rustc ")
            && out.contains("\n  patches: 1\n    patched_LlamaRotaryEmbedding.forward -> LlamaRotaryEmbedding.forward\n"),
        "{out}"
    );
    let text = std::env::temp_dir().join(format!("od-cli-not-a-plugin-{}.so", std::process::id()));
    std::fs::write(&text, "text").unwrap();
    let (ok, _, err) = run(&["plugin".as_ref(), text.as_os_str()]);
    std::fs::remove_file(&text).unwrap();
    assert!(!ok);
    assert!(err.contains("cannot load it as a dynamic library"), "{err}");
}

#[test]
fn patches_lists_the_plugin_patches() {
    let p = example();
    let (ok, out, err) = run(&["patches".as_ref(), "--plugin".as_ref(), p.as_os_str()]);
    assert!(ok, "{err}");
    assert!(
        out.ends_with("LlamaRotaryEmbedding: forward (plugin example)\n"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "patches".as_ref(),
        "--family".as_ref(),
        "custom".as_ref(),
        "--diff".as_ref(),
        "--plugin".as_ref(),
        p.as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("custom (plugin example): LlamaRotaryEmbedding.forward -> patched_LlamaRotaryEmbedding.forward\n"),
        "{out}"
    );
    assert!(
        out.contains("\n+    let inv_freq = grown.where_cond("),
        "{out}"
    );
}

#[test]
fn validate_fails_without_the_plugin_and_passes_with_it() {
    let p = example();
    // The dynamic rope, its length crossed by the input sets; the built-in transformers
    // patches off (serialization stays).
    let base: Vec<&std::ffi::OsStr> = [
        "validate",
        "-m",
        "arnir0/Tiny-LLM",
        "--run",
        "--export",
        "onnx",
        "--mop",
        r#"rope_scaling={"rope_type":"dynamic","factor":2.0}"#,
        "--mop",
        "max_position_embeddings=16",
        "--patch",
        "patch_transformers=False",
    ]
    .iter()
    .map(|s| s.as_ref())
    .collect();
    let (ok, _, err) = run(&base);
    assert!(!ok);
    assert!(
        err.contains("error: step export_export: data-dependent"),
        "{err}"
    );
    let mut with = base.clone();
    with.extend(["--plugin".as_ref(), p.as_os_str()]);
    let (ok, out, err) = run(&with);
    assert!(ok, "{err}\n{out}");
    assert!(
        out.contains(":export_patch,") && out.contains("patched_LlamaRotaryEmbedding.forward;"),
        "{out}"
    );
    for key in [
        "disc_onnx_ort_run_abs",
        "disc_onnx_ort_run22_abs",
        "disc_onnx_ort_run2_empty_cache_abs",
        "disc_onnx_ort_run2_batch1_abs",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!(":{key},")))
            .unwrap_or_else(|| panic!("{key} missing\n{out}"));
        let v: f64 = line[key.len() + 2..line.len() - 1].parse().unwrap();
        assert!(v <= 1e-4, "{key} = {v}");
    }
}

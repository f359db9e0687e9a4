//! A project outside the workspace depends on the facade (issue 26, point 2): a cargo project of
//! its own (its own `Cargo.toml` with an empty `[workspace]`, its own lock file started from
//! ours), in cargo's temporary directory for tests, with a path dependency on the facade and
//! the features `transformers` and `onnx` only. It builds (sharing this workspace's target
//! directory, so that what is already compiled is reused) and runs `tests/fixtures/outside_project.rs`:
//! Tiny-LLM exported, lowered and run in ONNX Runtime on every input set within 1e-4 of eager,
//! with the transformers patches and serializers present without any explicit linking call,
//! and the exporter fixes (feature `torch`) absent.
//!
//! The project sits under `target/`, so cargo reads this checkout's `.cargo/config.toml`
//! (`LIBTORCH`, `ORT_DYLIB_PATH`, the run path); a project elsewhere sets those itself (README,
//! "Depending on the facade").

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::{path::Path, process::Command};

/// The `[profile...]` tables of the workspace manifest: the project builds its dependencies as
/// the workspace does, so the compiled crates are shared.
fn profiles(manifest: &str) -> String {
    let start = manifest.find("\n[profile").unwrap();
    manifest[start..].to_owned()
}

#[test]
fn a_project_outside_the_workspace_exports_to_onnx_through_the_facade() {
    let facade = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = facade.join("../..").canonicalize().unwrap();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let project = tmp.join("outside-project");
    let _ = std::fs::remove_dir_all(&project);
    std::fs::create_dir_all(project.join("src")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"outside-project\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\n\n# Its own workspace, not a member of onnx-diagnostic's.\n\
             [workspace]\n\n[dependencies]\nonnx-diagnostic = {{ path = {:?}, \
             default-features = false, features = [\"transformers\", \"onnx\"] }}\n{}",
            facade.display().to_string(),
            profiles(&manifest)
        ),
    )
    .unwrap();
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    std::fs::copy(
        facade.join("tests/fixtures/outside_project.rs"),
        project.join("src/main.rs"),
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target = tmp.parent().unwrap();
    let out = Command::new(cargo)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(project.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .current_dir(&project)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
    };
    assert_eq!(line("features: "), "transformers,onnx");
    let patches: Vec<&str> = line("patches: ").split(',').collect();
    assert!(
        patches.contains(&"patched_LlamaRotaryEmbedding.forward"),
        "{patches:?}"
    );
    assert!(
        !patches.iter().any(|p| p.contains("infer_size")),
        "the exporter fixes are linked without the feature `torch`: {patches:?}"
    );
    let sets: Vec<(&str, f64)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("set ")?.split_once(": "))
        .map(|(n, d)| (n, d.parse().unwrap()))
        .collect();
    assert!(sets.len() >= 3, "{stdout}");
    for (name, diff) in sets {
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}

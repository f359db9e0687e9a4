//! Plugins built on their own (issue 26, point 3). The host is the distributed binary
//! (`scripts/dist`: dist/, which builds the workspace's crates as dependencies). The plugin is
//! plugins/example's source in a cargo project of its own (`team-rope-plugin` 0.3.0, in
//! cargo's temporary directory for tests, its own `[workspace]`, its own target directory,
//! built by a separate cargo invocation), set up as the README says: the facade with `cli` (so
//! that cargo resolves the dependencies' features as for the binary), the host's Cargo.lock,
//! dist/'s [profile] tables. It loads, lists its patch, and makes `validate` pass where the
//! export stops without it. Built again with another feature of a dependency of the core
//! (`serde_json/preserve_order`), it is refused, the refusal naming the crate and what to do.
//!
//! The project sits under `target/`, so cargo reads this checkout's `.cargo/config.toml` for
//! `LIBTORCH` (torch-sys's build needs it), as the dist build does.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Runs a command, asserts it succeeds, returns its stdout.
fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the host: (success, stdout, stderr).
fn host(bin: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `[profile...]` tables of a manifest, to its end.
fn profiles(manifest: &str) -> &str {
    &manifest[manifest.find("\n[profile").unwrap()..]
}

/// Writes the plugin's project; returns its directory.
fn plugin_project(root: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("team-rope-plugin");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dep = |name: &str, path: &str| {
        format!(
            "{name} = {{ path = {:?} }}\n",
            root.join(path).display().to_string()
        )
    };
    let dist = std::fs::read_to_string(root.join("dist/Cargo.toml")).unwrap();
    let manifest = format!(
        "[package]\nname = \"team-rope-plugin\"\nversion = \"0.3.0\"\nedition = \"2024\"\n\
         publish = false\n\n[workspace]\n\n[lib]\ncrate-type = [\"cdylib\"]\npath = {:?}\n\n\
         [dependencies]\n# Resolves the dependencies' features as the host binary does.\n\
         onnx-diagnostic = {{ path = {:?}, features = [\"cli\"] }}\n{}{}{}{}{}\
         tch = \"0.26\"\nserde_json = \"1\"\n{}",
        root.join("plugins/example/src/lib.rs")
            .display()
            .to_string(),
        root.join("crates/onnx-diagnostic").display().to_string(),
        dep("onnx-diagnostic-core", "crates/core"),
        dep("onnx-diagnostic-macros", "crates/macros"),
        dep("onnx-diagnostic-plugins", "crates/plugins"),
        dep("onnx-diagnostic-serialization", "crates/serialization"),
        dep("onnx-diagnostic-transformers", "crates/transformers"),
        profiles(&dist)
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    dir
}

/// Builds the plugin's project with `args`, in its own target directory; copies the library to
/// `name` in the project and returns that path.
fn build_plugin(dir: &Path, args: &[&str], name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    succeed(
        Command::new(cargo)
            .args(["build", "--quiet", "--target-dir", "target"])
            .args(args)
            .current_dir(dir),
    );
    let built = dir.join("target/debug").join(format!(
        "{}team_rope_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let kept = dir.join(name);
    std::fs::copy(built, &kept).unwrap();
    kept
}

#[test]
fn a_plugin_built_in_its_own_project_loads_into_the_distributed_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let bin = PathBuf::from(succeed(&mut Command::new(root.join("scripts/dist"))).trim());
    let dir = plugin_project(&root);
    let plugin = build_plugin(&dir, &[], "team.so");
    let plugin_arg = plugin.to_str().unwrap();

    let (ok, out, err) = host(&bin, &["plugin", plugin_arg]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("plugin example 0.3.0\n")
            && out.contains("\n  profile: debug-assertions-on opt-level-1\n")
            && out.contains(
                "\n  patches: 1\n    patched_LlamaRotaryEmbedding.forward -> LlamaRotaryEmbedding.forward\n"
            )
            && out.contains("\n  serializers: 2\n"),
        "{out}"
    );

    // The dynamic rope, its length crossed by the input sets, the built-in transformers
    // patches off: the export stops without the plugin, and passes with it.
    let base = [
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
        "-o",
    ];
    let dump = dir.join("dump");
    let mut without = base.to_vec();
    without.push(dump.to_str().unwrap());
    let (ok, _, err) = host(&bin, &without);
    assert!(!ok);
    assert!(
        err.contains("error: step export_export: data-dependent"),
        "{err}"
    );
    let mut with = without.clone();
    with.extend(["--plugin", plugin_arg]);
    let (ok, out, err) = host(&bin, &with);
    assert!(ok, "{err}\n{out}");
    assert!(
        out.contains("patched_LlamaRotaryEmbedding.forward;"),
        "{out}"
    );
    for sfx in ["", "22", "2_empty_cache", "2_batch1"] {
        let key = format!(":disc_onnx_ort_run{sfx}_abs,");
        let v: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix(&key)?.strip_suffix(';'))
            .unwrap_or_else(|| panic!("{key} missing\n{out}"))
            .parse()
            .unwrap();
        assert!(v <= 1e-4, "{key} {v}");
    }

    // The same plugin with another feature of one of the core's dependencies.
    let other = build_plugin(
        &dir,
        &["--features", "serde_json/preserve_order"],
        "team-other-features.so",
    );
    let (ok, _, err) = host(&bin, &["plugin", other.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(
            "plugin example links another build of onnx-diagnostic-core: its build of \
             serde_json differs"
        ) && err.contains(
            "serde_json has another version or other features there: build the plugin's \
             project with the host's Cargo.lock and the features the host enables on \
             serde_json, no others"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

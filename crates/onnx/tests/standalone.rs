//! Without features the crate builds without libtorch (issue 26, point 1): its normal and build
//! dependencies, as cargo resolves them for `cargo build -p onnx-diagnostic-onnx`, hold no `tch`
//! or `torch-sys` (whose build needs the `.venv`'s libtorch), while the workspace's crates get
//! the lowering through the feature `torch`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

/// The package names of `cargo tree -p onnx-diagnostic-onnx ARGS`, one per line.
fn tree(args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "-p",
            "onnx-diagnostic-onnx",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_crate_alone_needs_no_libtorch() {
    let alone = tree(&["-e", "normal,build"]);
    assert!(alone.iter().any(|p| p == "prost"), "{alone:?}");
    assert!(alone.iter().any(|p| p == "ort"), "{alone:?}");
    for torch in ["tch", "torch-sys", "onnx-diagnostic-core"] {
        assert!(!alone.iter().any(|p| p == torch), "{torch} in {alone:?}");
    }
    let lowering = tree(&["-e", "normal,build", "--features", "torch"]);
    assert!(lowering.iter().any(|p| p == "torch-sys"), "{lowering:?}");
}

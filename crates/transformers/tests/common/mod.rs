//! Helpers of the parity tests: the transformers reference and tensor comparisons.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::{collections::HashMap, path::PathBuf, process::Command};

use onnx_diagnostic_core::Tensor;

/// Runs `tests/parity/make_reference.py` on `config` (in `<target tmp>/parity/<name>`): the
/// checkpoint directory and the reference tensors.
pub(crate) fn reference(name: &str, config: &str) -> (PathBuf, HashMap<String, tch::Tensor>) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("parity")
        .join(name);
    std::fs::create_dir_all(&root).unwrap();
    let cfg = root.join("input_config.json");
    std::fs::write(&cfg, config).unwrap();
    let out = root.join("checkpoint");
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(manifest.join("../../.venv/bin/python"))
        .arg(manifest.join("tests/parity/make_reference.py"))
        .arg(&out)
        .arg(&cfg)
        .output()
        .expect("the venv's python runs");
    assert!(
        status.status.success(),
        "make_reference.py failed for {name}:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let io = tch::Tensor::read_safetensors(out.join("io.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    (out, io)
}

/// Largest absolute difference (shapes must match).
pub(crate) fn diff(a: &Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.concrete_shape(), b.size());
    (a.as_tch() - b).abs().max().double_value(&[])
}

/// A reference tensor by name.
pub(crate) fn t(io: &HashMap<String, tch::Tensor>, k: &str) -> Tensor {
    Tensor::from(
        io.get(k)
            .unwrap_or_else(|| panic!("{k} missing"))
            .shallow_clone(),
    )
}

//! What the CLI tests share: running the binary, reading its summary.

#![allow(dead_code)]

use std::{collections::HashMap, ffi::OsStr, path::PathBuf, process::Command};

/// Runs `onnx-diagnostic ARGS`: (success, stdout, stderr).
pub(crate) fn run<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The `:key,value;` lines of a validate summary.
pub(crate) fn summary(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(':')?.strip_suffix(';')?.split_once(','))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `onnx-diagnostic validate ARGS --run --export onnx`, asserts it succeeds, returns its
/// stdout and summary.
pub(crate) fn validate_ok(args: &[&OsStr]) -> (String, HashMap<String, String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .args(["validate", "--run", "--export", "onnx"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&stdout);
    (stdout, s)
}

/// Runs `onnx-diagnostic validate -m ID --run --export onnx ARGS`, asserts it fails, returns
/// its stderr.
pub(crate) fn tiny_fails(id: &str, args: &[&str]) -> String {
    let mut all = vec!["validate", "-m", id, "--run", "--export", "onnx"];
    all.extend_from_slice(args);
    let (ok, stdout, err) = run(&all);
    assert!(!ok, "{args:?} succeeded: {stdout}");
    err
}

/// A checkpoint directory written by transformers' `save_pretrained`: the parity script
/// `script` (crates/transformers/tests/parity) run on `config` with `args`, in a folder
/// `name` of the tests' temporary directory.
pub(crate) fn saved_checkpoint(name: &str, script: &str, config: &str, args: &[&str]) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&root).unwrap();
    let cfg = root.join("config_in.json");
    std::fs::write(&cfg, config).unwrap();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ckpt = root.join("checkpoint");
    let made = Command::new(manifest.join("../../.venv/bin/python"))
        .arg(manifest.join("../transformers/tests/parity").join(script))
        .arg(&ckpt)
        .arg(&cfg)
        .args(args)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    ckpt
}

/// The parameter count transformers reported in the checkpoint's `io.safetensors`, which is
/// then removed (it is not a weight file of the checkpoint).
pub(crate) fn take_n_parameters(ckpt: &std::path::Path) -> i64 {
    let io = tch::Tensor::read_safetensors(ckpt.join("io.safetensors")).unwrap();
    std::fs::remove_file(ckpt.join("io.safetensors")).unwrap();
    io.iter()
        .find(|(k, _)| k == "n_parameters")
        .map(|(_, t)| t.int64_value(&[]))
        .unwrap()
}

/// `validate -m DIR` on a checkpoint saved by transformers: checks that the summary names the
/// checkpoint, `class` and `task`, `n_parameters` weights, each of `patches` applied, and
/// every set of `suffixes` within 1e-4 in ONNX Runtime without NaN; returns the summary.
pub(crate) fn validate_checkpoint(
    ckpt: &std::path::Path,
    (class, task): (&str, &str),
    n_parameters: i64,
    patches: &[&str],
    suffixes: &[&str],
) -> HashMap<String, String> {
    let (_, s) = validate_ok(&["-m".as_ref(), ckpt.as_os_str()]);
    assert_eq!(s["model_source"], "checkpoint");
    assert_eq!(s["model_class"], class);
    assert_eq!(s["model_task"], task);
    assert_eq!(s["model_nweights"], n_parameters.to_string());
    for p in patches {
        assert!(s["export_patch"].contains(p), "{p}: {}", s["export_patch"]);
    }
    for sfx in suffixes {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1e-4, "{sfx}: {abs}");
        assert_eq!(s[&format!("disc_onnx_ort_run{sfx}_dnan")], "0.0");
    }
    s
}

/// Without the transformers patches, validating `ckpt` stops on a read of the data (`as a
/// bool`) at a line of `file`.
pub(crate) fn stops_without_transformers_patches(ckpt: &std::path::Path, file: &str) {
    let err = tiny_fails(
        ckpt.to_str().unwrap(),
        &["--patch", "patch_transformers=False"],
    );
    assert!(
        err.contains("as a bool") && err.contains(&format!("{file}:")),
        "{err}"
    );
}

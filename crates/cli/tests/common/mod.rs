//! What the CLI tests share: running the binary.

use std::{ffi::OsStr, process::Command};

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

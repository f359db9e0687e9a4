//! The installed binary runs from a directory outside the checkout (issue 26, point 1):
//! `scripts/install --binary <this build> PREFIX` into the temporary directory, then `doctor`
//! and a `validate` of arnir0/Tiny-LLM run from there with no `ORT_DYLIB_PATH` and no
//! `LD_LIBRARY_PATH`, taking libtorch and ONNX Runtime from `PREFIX/lib`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::{path::Path, process::Command};

/// Runs the installed binary from `cwd` with a bare environment for libraries.
fn installed(bin: &Path, cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_installed_binary_runs_doctor_and_validate_from_another_directory() {
    let prefix =
        std::env::temp_dir().join(format!("onnx-diagnostic-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install");
    let out = Command::new(&script)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_onnx-diagnostic"))
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = prefix.join("bin").join("onnx-diagnostic");
    let lib = prefix.join("lib");
    let away = prefix.join("elsewhere");
    std::fs::create_dir_all(&away).unwrap();

    let (ok, stdout, stderr) = installed(&bin, &away, &["doctor"]);
    assert!(ok, "doctor: {stdout}\n{stderr}");
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_owned()
    };
    let torch = line("libtorch: ");
    assert_eq!(
        Path::new(&torch).canonicalize().unwrap(),
        lib.join("libtorch_cpu.so").canonicalize().unwrap(),
        "{stdout}"
    );
    let ort = line("onnxruntime: ");
    let (path, origin) = ort.split_once(" (").unwrap();
    assert_eq!(origin, "next to the binary)", "{stdout}");
    assert_eq!(
        Path::new(path).canonicalize().unwrap(),
        lib.join("libonnxruntime.so").canonicalize().unwrap()
    );
    assert!(
        stdout.contains("agree on x + y: max abs diff 0e0"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = installed(
        &bin,
        &away,
        &[
            "validate",
            "-m",
            "arnir0/Tiny-LLM",
            "--run",
            "--export",
            "onnx",
            "-o",
            "dump",
        ],
    );
    assert!(ok, "validate: {stdout}\n{stderr}");
    let s = common::summary(&stdout);
    for sfx in ["", "22", "2_batch1", "2_empty_cache"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs < 1e-4, "set {sfx:?}: {abs}");
    }
    assert!(
        away.join("dump").is_dir(),
        "validate wrote nothing in {}",
        away.display()
    );
    std::fs::remove_dir_all(&prefix).unwrap();
}

//! Records, for the plugin handshake, the compiler version (`state::RUSTC_VERSION`) and the
//! build's optimisation level and target (`state::build_info`).

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
    println!("cargo:rustc-env=ONNX_DIAGNOSTIC_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    for (var, name) in [
        ("OPT_LEVEL", "ONNX_DIAGNOSTIC_OPT_LEVEL"),
        ("TARGET", "ONNX_DIAGNOSTIC_TARGET"),
    ] {
        let value = std::env::var(var).unwrap_or_else(|_| "unknown".to_owned());
        println!("cargo:rustc-env={name}={value}");
    }
}

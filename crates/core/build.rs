//! Records the compiler version for the plugin handshake (`state::RUSTC_VERSION`).

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
}

//! Generates the ONNX protobuf types from `proto/onnx.proto`, the file the pinned onnx wheel
//! (1.23.2, `scripts/requirements.txt`) ships, committed with its licence (Apache-2.0,
//! `proto/LICENSE`, `proto/NOTICE`) so that the crate builds without Python; no system
//! `protoc` (protox parses, prost-build generates). `ONNX_PROTO_DIR`, when set, names another
//! directory holding an `onnx.proto` to build from (a newer onnx); a test checks the committed
//! copy against the installed wheel's.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-env-changed=ONNX_PROTO_DIR");
    let dir = match env::var_os("ONNX_PROTO_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto"),
    };
    let proto = dir.join("onnx.proto");
    if !proto.is_file() {
        return Err(format!(
            "{} does not exist: ONNX_PROTO_DIR must name a directory holding onnx.proto (unset \
             it to build from the crate's own copy)",
            proto.display()
        )
        .into());
    }
    println!("cargo:rerun-if-changed={}", proto.display());
    let files = protox::compile(["onnx.proto"], [&dir])
        .map_err(|e| format!("cannot parse {}: {e}", proto.display()))?;
    prost_build::Config::new().compile_fds(files)?;
    Ok(())
}

//! Generates the ONNX protobuf types from the `onnx.proto` that the installed `onnx` wheel ships
//! (no copy is committed, no system `protoc`: protox parses, prost-build generates).

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-env-changed=ONNX_PROTO_DIR");
    let dir = env::var_os("ONNX_PROTO_DIR").map(PathBuf::from).ok_or(
        "ONNX_PROTO_DIR is not set: run scripts/setup, which links .venv/libs/onnx, \
         and build from the repository (its .cargo/config.toml sets the variable)",
    )?;
    let proto = dir.join("onnx.proto");
    if !proto.is_file() {
        return Err(format!(
            "{} does not exist: run scripts/setup to install the onnx wheel",
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

//! The distributed `onnx-diagnostic` binary: the command line of the facade's feature `cli`,
//! built with the workspace's crates as dependencies (see `dist/Cargo.toml`).

fn main() -> std::process::ExitCode {
    onnx_diagnostic::cli::main()
}

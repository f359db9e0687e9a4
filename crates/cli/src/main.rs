//! The `onnx-diagnostic` binary: the command line of [`onnx_diagnostic_cli`].

fn main() -> std::process::ExitCode {
    onnx_diagnostic_cli::main()
}

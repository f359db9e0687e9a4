//! Sets the run path of the `onnx-diagnostic` binary: see `../crates/cli/rpath.rs`.

include!("../crates/cli/rpath.rs");

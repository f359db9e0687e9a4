//! Sets the run path of the `onnx-diagnostic` binary: see `rpath.rs` (shared with dist/).

include!("rpath.rs");

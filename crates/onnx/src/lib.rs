//! ONNX side of onnx-diagnostic: the protobuf types of ONNX (generated at build time from the
//! `onnx.proto` of the installed `onnx` wheel) and the ONNX Runtime runner.
//!
//! The lowering of an `ExportedProgram` to ONNX, the clean-up passes and `max_diff` live here
//! too once the ONNX issue lands (DESIGN.md section 3, "ONNX").

pub mod proto;
pub mod runtime;
pub mod selfcheck;

pub use runtime::{OrtError, Session, environment};

/// The IR version that goes with an opset of the default domain (the pairs of ONNX's
/// versioning table): ONNX Runtime refuses IR versions newer than it knows, so a model declares
/// the oldest IR version its opset allows.
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

//! ONNX side of onnx-diagnostic (DESIGN.md section 3, "ONNX"): the protobuf types of ONNX
//! (generated at build time from the `onnx.proto` of the installed `onnx` wheel), the lowering
//! of an `ExportedProgram` (`lower()`), the clean-up passes, saving, the ONNX Runtime runner
//! and `max_diff`.
//!
//! Without features the crate needs no libtorch: the protobuf types, [`read_model`] /
//! [`save_model`], the passes, the float32 emulation and the runner build with cargo alone (no
//! Python, no `.venv`). The feature `torch` adds the modules that work on exported programs and
//! libtorch tensors (`convert`, `diff`, `lower`, `program`, `selfcheck`); every crate of the
//! workspace depends on it with that feature.

#[cfg(feature = "torch")]
pub mod convert;
#[cfg(feature = "torch")]
pub mod diff;
pub mod emulate;
#[cfg(feature = "torch")]
pub mod lower;
pub mod passes;
#[cfg(feature = "torch")]
pub mod program;
pub mod proto;
pub mod runtime;
pub mod save;
#[cfg(feature = "torch")]
pub mod selfcheck;

#[cfg(feature = "torch")]
pub use diff::{Diff, max_diff};
pub use emulate::{EmulateError, emulate_in_float32, emulate_in_float32_owned};
#[cfg(feature = "torch")]
pub use lower::{LowerError, LowerOptions, lower};
#[cfg(feature = "torch")]
pub use program::OnnxProgram;
pub use runtime::{OrtError, Provider, Session, available_providers, environment};
pub use save::{ExternalData, ReadError, SaveError, read_model, save_model};

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

//! What the machine running the tests is declared to have, so that a test asserts the one
//! behaviour that machine must show instead of accepting either outcome.
//!
//! `ONNX_DIAGNOSTIC_EXPECT_CUDA=1` declares a GPU that libtorch sees and ONNX Runtime's CUDA
//! provider (set it where the tests run on a GPU machine with the onnxruntime-gpu build); unset
//! or `0` declares neither, as on the CPU machines the CI runs on. A machine that does not
//! match its declaration fails the tests that depend on it, saying so.

// Test support: a bad declaration fails the calling test.
#![allow(clippy::panic)]

/// The variable that declares a GPU.
pub const EXPECT_CUDA: &str = "ONNX_DIAGNOSTIC_EXPECT_CUDA";

/// Whether the machine is declared to have CUDA (see the module doc).
///
/// # Panics
/// For a value other than `0` or `1`.
pub fn expects_cuda() -> bool {
    match std::env::var(EXPECT_CUDA).as_deref() {
        Err(_) | Ok("" | "0") => false,
        Ok("1") => true,
        Ok(other) => panic!("{EXPECT_CUDA}={other}: expected 0 or 1"),
    }
}

/// The message of a test whose machine does not match the declaration.
pub fn mismatch(what: &str) -> String {
    let declared = if expects_cuda() {
        "declares CUDA"
    } else {
        "declares no CUDA"
    };
    format!(
        "this machine {declared} ({EXPECT_CUDA}) but {what}: set {EXPECT_CUDA}=1 on a GPU machine \
         with the onnxruntime-gpu build, 0 elsewhere"
    )
}

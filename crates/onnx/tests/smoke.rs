//! Smoke test of the set-up: a libtorch op and an ONNX Runtime session in one test binary.

use onnx_diagnostic_onnx::{environment, selfcheck};

#[test]
fn libtorch_and_onnxruntime_agree_in_one_process() {
    let check = selfcheck::run().expect("self-check runs");
    // x = [0, .5, 1, 1.5, 2, 2.5], y = 1 - i/4 = [1, .75, .5, .25, 0, -.25]
    assert_eq!(check.torch, vec![1.0, 1.25, 1.5, 1.75, 2.0, 2.25]);
    assert_eq!(check.onnxruntime, check.torch);
    assert_eq!(check.max_abs_diff, 0.0);
}

#[test]
fn one_environment_per_process() {
    let a = environment().expect("environment") as *const _;
    let b = environment().expect("environment") as *const _;
    assert_eq!(
        a, b,
        "environment() must hand out the one process-wide environment"
    );
    // A second session in the same process reuses it.
    selfcheck::run().expect("second self-check runs");
}

/// The CPU provider is always there. On a machine declared without CUDA (the CPU wheel of this
/// project's venv) asking for it is a typed error saying what to install, never a silent CPU
/// run; on one declared with it (`ONNX_DIAGNOSTIC_EXPECT_CUDA=1`, the onnxruntime-gpu build)
/// the provider registers and the bytes are refused as a model.
#[test]
fn providers_follow_the_machine_and_a_missing_cuda_is_a_typed_error() {
    use onnx_diagnostic_testing::machine::{expects_cuda, mismatch};
    let providers = onnx_diagnostic_onnx::available_providers().unwrap();
    assert!(providers.contains(&"CPUExecutionProvider"), "{providers:?}");
    let has_cuda = providers.contains(&"CUDAExecutionProvider");
    // The provider is checked before the model is read: any bytes do.
    let bytes = b"not a model";
    let r =
        onnx_diagnostic_onnx::Session::from_bytes_on(bytes, onnx_diagnostic_onnx::Provider::Cuda);
    if expects_cuda() {
        assert!(
            has_cuda,
            "{}: {providers:?}",
            mismatch("ONNX Runtime has no CUDA provider")
        );
        assert!(matches!(
            r,
            Err(onnx_diagnostic_onnx::OrtError::Session { .. })
        ));
    } else {
        assert!(
            !has_cuda,
            "{}",
            mismatch("ONNX Runtime has a CUDA provider")
        );
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                onnx_diagnostic_onnx::OrtError::Provider {
                    provider: "CUDAExecutionProvider",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("onnxruntime-gpu"), "{e}");
    }
}

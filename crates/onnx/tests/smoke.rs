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

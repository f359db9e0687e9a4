//! The committed `proto/onnx.proto` that crates/onnx builds from is the one the pinned onnx
//! wheel ships (`scripts/requirements.txt`), byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

#[test]
fn the_committed_onnx_proto_is_the_pinned_wheels() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = std::fs::read(root.join("proto/onnx.proto")).unwrap();
    let wheel = std::fs::read(root.join("../../.venv/libs/onnx/onnx.proto"))
        .expect("the onnx wheel of scripts/setup");
    assert_eq!(ours.len(), wheel.len());
    assert!(ours == wheel, "proto/onnx.proto differs from the wheel's");
    let requirements =
        std::fs::read_to_string(root.join("../../scripts/requirements.txt")).unwrap();
    let version = std::fs::read_to_string(root.join("proto/VERSION")).unwrap();
    assert!(
        requirements
            .lines()
            .any(|l| l.trim() == format!("onnx=={}", version.trim())),
        "proto/VERSION {version} is not the pinned onnx"
    );
}

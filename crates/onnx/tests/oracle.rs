//! `max_diff` against the Python package's own (onnx-diagnostic 0.9.3 run on the same values by
//! `onnx_diagnostic_testing::oracle`): its formulas (NaN on one or both sides, relative
//! differences near zero, sums, counts), integer and half-precision tensors, nested tuples and
//! lists, dicts, and a tensor large enough to be compared in chunks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::Value;
use onnx_diagnostic_onnx::max_diff;
use onnx_diagnostic_testing::oracle::Oracle;
use tch::{Device, Kind};

fn t(v: &[f32]) -> Value {
    Value::from(tch::Tensor::from_slice(v))
}

/// Equal, or within a relative 1e-12 (sums over many elements may be added in another order).
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
}

#[test]
fn max_diff_follows_the_python_package() {
    tch::manual_seed(5);
    let big = tch::Tensor::randn([600, 700], (Kind::Float, Device::Cpu));
    let big2 = &big + tch::Tensor::randn([600, 700], (Kind::Float, Device::Cpu)) * 1e-3;
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "NaNs",
            t(&[1.0, -2.0, f32::NAN, 4.0]),
            t(&[1.5, -2.0, f32::NAN, f32::NAN]),
        ),
        ("near zero", t(&[0.0, 1e-4, -3.0]), t(&[1e-3, 0.0, -3.5])),
        (
            "nested",
            Value::Tuple(vec![t(&[1.0, 2.0]), t(&[0.0])]),
            Value::List(vec![t(&[1.0, 2.5]), t(&[0.25])]),
        ),
        (
            "dict",
            Value::Dict(vec![
                ("a".to_owned(), t(&[1.0])),
                ("b".to_owned(), t(&[2.0, 3.0])),
            ]),
            Value::Dict(vec![
                ("a".to_owned(), t(&[1.25])),
                ("b".to_owned(), t(&[2.0, 2.0])),
            ]),
        ),
        (
            "int64",
            Value::from(tch::Tensor::from_slice(&[3i64, 7, -1])),
            Value::from(tch::Tensor::from_slice(&[3i64, 9, -1])),
        ),
        (
            "float16",
            Value::from(tch::Tensor::from_slice(&[0.1f32, 2.0]).to_kind(Kind::Half)),
            Value::from(tch::Tensor::from_slice(&[0.125f32, 2.5]).to_kind(Kind::Half)),
        ),
        ("chunked", Value::from(big), Value::from(big2)),
    ];
    let mut oracle = Oracle::new();
    let asked: Vec<usize> = cases
        .iter()
        .map(|(_, e, g)| oracle.max_diff(e, g))
        .collect();
    let answers = oracle.run();
    for ((what, e, g), i) in cases.iter().zip(asked) {
        let (ours, py) = (max_diff(e, g), answers[i].diff());
        for (k, a, b) in [
            ("abs", ours.abs, py.abs),
            ("rel", ours.rel, py.rel),
            ("sum", ours.sum, py.sum),
            ("n", ours.n, py.n),
            ("dnan", ours.dnan, py.dnan),
        ] {
            assert!(
                close(a, b),
                "{what} {k}: ours {a}, the Python package's {b}"
            );
        }
    }
}

//! The float32-emulating copy of a bfloat16 model: ONNX Runtime's CPU provider refuses the
//! bfloat16 model, runs the copy, and the copy matches eager bfloat16 libtorch on inputs of
//! other shapes, through an If whose branches read a weight and a Loop; the copy passes the onnx
//! package's checker and strict shape inference, and keeps the bfloat16 inputs and outputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use onnx_diagnostic_core::{ExportOptions, FnModule, Inputs, Module, Tensor, Value, cond, export};
use onnx_diagnostic_onnx::{
    EmulateError, ExternalData, LowerOptions, OnnxProgram, OrtError, emulate_in_float32, lower,
    max_diff, passes, proto, proto::tensor_proto::DataType, save_model,
};
use onnx_diagnostic_testing::{dynamic_shapes, randn};
use tch::Kind;

fn elem_types(values: &[proto::ValueInfoProto]) -> Vec<i32> {
    values
        .iter()
        .map(
            |v| match v.r#type.as_ref().unwrap().value.as_ref().unwrap() {
                proto::type_proto::Value::TensorType(t) => t.elem_type.unwrap(),
                _ => panic!("not a tensor"),
            },
        )
        .collect()
}

/// `x` bfloat16 `[n, 3]`: `if x.sum() > 0 { x * w } else { w - x }`, then a cumulative
/// product over the rows (a scan).
#[test]
fn a_bfloat16_model_runs_in_ort_through_the_float32_copy() {
    let w = randn(&[3]).to_kind(Kind::BFloat16).unwrap();
    let m = FnModule::new("Bf16Flow", &["x"], {
        let w = w.clone();
        move |i: &Inputs| {
            let x = i.tensor("x")?;
            let pred = x.sum(&[], false)?.gt_scalar(0.0)?;
            let y = cond(
                &pred,
                |o: &[Tensor]| Ok(vec![o[0].mul(&w)?]),
                |o: &[Tensor]| Ok(vec![o[0].neg()?.add(&w)?]),
                std::slice::from_ref(x),
            )?;
            let y = y[0].tanh()?.add_scalar(1.0)?;
            onnx_diagnostic_testing::scan_cumprod(&y, 1.0)
        }
    })
    .with_parameters(vec![("w".to_owned(), w)]);
    let bf = |t: Tensor| t.to_kind(Kind::BFloat16).unwrap();
    let ds = dynamic_shapes(1, &[(0, 0, "rows")]);
    let ep = export(
        &m,
        &[Value::from(bf(randn(&[4, 3])))],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap();
    let model = lower(&ep, &LowerOptions::default()).unwrap();
    let refused = OnnxProgram::from_model(&model, &ep).err().unwrap();
    assert!(matches!(&refused, OrtError::NoKernel { .. }), "{refused}");

    let (copy, n) = emulate_in_float32(&model, DataType::Bfloat16).unwrap();
    assert!(n > 5, "{n} nodes rewritten");
    let (g, g0) = (copy.graph.as_ref().unwrap(), model.graph.as_ref().unwrap());
    assert_eq!(elem_types(&g.input), elem_types(&g0.input));
    assert_eq!(elem_types(&g.output), elem_types(&g0.output));
    assert_eq!(elem_types(&g.input), [DataType::Bfloat16 as i32]);
    let counts = passes::node_counts(g);
    assert_eq!(counts.get("If"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("Loop"), Some(&1), "{counts:?}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulate");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("copy.onnx");
    save_model(&copy, &path, ExternalData::Never).unwrap();
    onnx_diagnostic_testing::onnx_check(&path);

    let mut session = OnnxProgram::from_model(&copy, &ep).unwrap();
    let pos = |n: i64| bf(randn(&[n, 3]).abs().unwrap().add_scalar(0.2).unwrap());
    let neg = |n: i64| {
        bf(randn(&[n, 3])
            .abs()
            .unwrap()
            .add_scalar(0.2)
            .unwrap()
            .neg()
            .unwrap())
    };
    for x in [pos(6), neg(2), pos(1), neg(7)] {
        let args = [Value::from(x)];
        let eager = m
            .forward(&Inputs::bind_for(&m, &args, &[]).unwrap())
            .unwrap();
        let got = session.run(&args, &[]).unwrap();
        for (_, t) in got.flatten("o").unwrap().0 {
            assert_eq!(t.kind(), Kind::BFloat16);
        }
        let d = max_diff(&eager, &got);
        // bfloat16 keeps 8 bits: one rounding apart is a relative 2^-8.
        assert!(d.rel <= 1e-2 && d.dnan == 0.0, "{d:?}");
    }
}

/// An op the pass has no type rule for is an error naming it, never a guess.
#[test]
fn an_op_without_a_type_rule_is_refused_naming_it() {
    let vi = |name: &str| proto::ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(DataType::Bfloat16 as i32),
                    shape: None,
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = proto::ModelProto {
        graph: Some(proto::GraphProto {
            node: vec![proto::NodeProto {
                input: vec!["x".to_owned()],
                output: vec!["y".to_owned()],
                name: Some("/einsum".to_owned()),
                op_type: Some("Einsum".to_owned()),
                ..Default::default()
            }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = emulate_in_float32(&model, DataType::Bfloat16).unwrap_err();
    assert!(matches!(e, EmulateError::UnknownOp { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("Einsum") && text.contains("/einsum") && text.contains("BFLOAT16"),
        "{text}"
    );
}

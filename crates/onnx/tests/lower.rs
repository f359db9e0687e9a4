//! Lowering tests: programs exported by the engine are lowered to ONNX, checked by the onnx
//! package's full checker and strict shape inference (the project's venv), run in ONNX Runtime
//! on inputs of other shapes than the export ones, and compared with eager libtorch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use onnx_diagnostic_core::{
    ExportOptions, ExportedProgram, FnModule, Inputs, Module, Tensor, Value, export,
};
use onnx_diagnostic_onnx::{
    ExternalData, LowerError, LowerOptions, OnnxProgram, lower, max_diff, passes, proto, save_model,
};
use onnx_diagnostic_testing::{ToyTransformer, cases, dynamic_shapes, randn};
use prost::Message;

fn workdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn export_with(
    m: &dyn Module,
    example: Vec<Tensor>,
    dims: &[(usize, usize, &str)],
) -> ExportedProgram {
    let ds = dynamic_shapes(example.len(), dims);
    let args: Vec<Value> = example.into_iter().map(Value::from).collect();
    export(m, &args, &[], Some(&ds), &ExportOptions::default()).unwrap()
}

/// Export, lower, save, check, then run in ORT on `others` against eager (max abs ≤ `atol`).
/// Returns the model.
fn check(
    name: &str,
    m: &dyn Module,
    example: Vec<Tensor>,
    dims: &[(usize, usize, &str)],
    others: Vec<Vec<Tensor>>,
    atol: f64,
) -> proto::ModelProto {
    let ep = export_with(m, example, dims);
    let model = lower(&ep, &LowerOptions::default())
        .unwrap_or_else(|e| panic!("{name}: lowering failed: {e}\n{ep}"));
    // Lowering twice gives the same bytes.
    let again = lower(&ep, &LowerOptions::default()).unwrap();
    assert!(
        model.encode_to_vec() == again.encode_to_vec(),
        "{name}: lowering twice gave other bytes"
    );
    let path = workdir(name).join("model.onnx");
    save_model(&model, &path, ExternalData::Never).unwrap();
    onnx_diagnostic_testing::onnx_check(&path);
    let mut session = OnnxProgram::from_model(&model, &ep).unwrap();
    for set in others {
        let args: Vec<Value> = set.into_iter().map(Value::from).collect();
        let eager = m
            .forward(&Inputs::bind_for(m, &args, &[]).unwrap())
            .unwrap();
        let got = session
            .run(&args, &[])
            .unwrap_or_else(|e| panic!("{name}: ORT failed: {e}"));
        let (e, g) = (eager.flatten("o").unwrap().0, got.flatten("o").unwrap().0);
        assert_eq!(e.len(), g.len());
        for ((_, e), (_, g)) in e.iter().zip(&g) {
            assert_eq!(e.concrete_shape(), g.concrete_shape(), "{name}: shape");
            assert_eq!(e.kind(), g.kind(), "{name}: dtype");
        }
        let d = max_diff(&eager, &got);
        assert!(d.abs <= atol && d.dnan == 0.0, "{name}: {d:?}");
    }
    model
}

#[test]
fn toy_transformer_runs_in_ort_on_other_shapes() {
    let model = ToyTransformer::new(16, 4, 2);
    let onnx = check(
        "toy",
        &model,
        vec![randn(&[2, 5, 16])],
        &[(0, 0, "batch"), (0, 1, "seq_length")],
        vec![randn(&[1, 7, 16]), randn(&[3, 1, 16]), randn(&[4, 11, 16])]
            .into_iter()
            .map(|t| vec![t])
            .collect(),
        1e-5,
    );
    let graph = onnx.graph.as_ref().unwrap();
    // Inputs and outputs carry the Dim names.
    let dims = |v: &proto::ValueInfoProto| format!("{:?}", v.r#type);
    assert!(
        dims(&graph.input[0]).contains("DimParam(\"batch\")"),
        "{:?}",
        graph.input[0]
    );
    assert!(dims(&graph.output[0]).contains("DimParam(\"seq_length\")"));
    // Node names follow module paths; weights keep checkpoint names.
    let names: Vec<&str> = graph
        .node
        .iter()
        .filter_map(|n| n.name.as_deref())
        .collect();
    assert!(names.contains(&"/layers.1/self_attn/Softmax"), "{names:?}");
    assert!(names.contains(&"/layers.0/mlp/Sigmoid"), "{names:?}");
    let inits: Vec<&str> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    assert!(
        inits.contains(&"layers.0.input_layernorm.weight"),
        "{inits:?}"
    );
    assert!(
        inits.contains(&"layers.0.self_attn.q_proj.weight.T"),
        "{inits:?}"
    );
    // Shapes computed from symbols are shared: one Shape node per symbol.
    let counts = passes::node_counts(graph);
    assert_eq!(counts.get("Shape"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("MatMul"), Some(&(2 * 9)), "{counts:?}");
    assert_eq!(counts.get("Identity"), None, "{counts:?}");
}

#[test]
fn every_op_case_lowers_and_runs_in_ort_on_other_shapes() {
    for case in cases() {
        check(
            case.name,
            case.module.as_ref(),
            case.example,
            &case.dims,
            case.others,
            case.atol,
        );
    }
}

#[test]
fn every_engine_op_has_a_lowering() {
    let lowered: Vec<&str> = lower::lowered_ops().iter().map(|(n, _)| *n).collect();
    let missing: Vec<&str> = onnx_diagnostic_core::ops::all_ops()
        .iter()
        .map(|o| o.name)
        .filter(|n| !lowered.contains(n))
        .collect();
    assert!(missing.is_empty(), "ops without a lowering: {missing:?}");
}

#[test]
fn bad_opsets_and_broken_files_are_typed_errors() {
    let m = FnModule::new("Mean", &["x"], |i: &Inputs| {
        Ok(i.tensor("x")?.mean(&[1], false)?.into())
    });
    let ep = export_with(&m, vec![randn(&[2, 3])], &[(0, 0, "batch")]);
    let err = lower(
        &ep,
        &LowerOptions {
            opset: 16,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, LowerError::Opset { opset: 16 }), "{err}");
    let err = lower(
        &ep,
        &LowerOptions {
            opset: 17,
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, LowerError::OpsetTooOld { min: 18, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("aten.mean.dim") && msg.contains("mean") && msg.contains("opset 18"),
        "{msg}"
    );
    // Opset 23 works too, and ORT runs it.
    let model = lower(
        &ep,
        &LowerOptions {
            opset: 23,
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = OnnxProgram::from_model(&model, &ep).unwrap();
    let x = randn(&[5, 3]);
    let got = s.run(&[x.clone().into()], &[]).unwrap();
    assert!(max_diff(&x.mean(&[1], false).unwrap().into(), &got).abs < 1e-6);
    // A broken file: ORT's message with the path.
    let path = workdir("broken").join("model.onnx");
    std::fs::write(&path, b"not a model").unwrap();
    let err = OnnxProgram::from_file(&path, &ep).unwrap_err().to_string();
    assert!(err.contains("model.onnx"), "{err}");
}

#[test]
fn external_data_round_trips_and_files_are_byte_identical() {
    let model = ToyTransformer::new(16, 4, 1);
    let ep = export_with(
        &model,
        vec![randn(&[2, 5, 16])],
        &[(0, 0, "batch"), (0, 1, "seq_length")],
    );
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let dir = workdir("external");
    let (a, b) = (
        dir.join("model.onnx"),
        workdir("external_again").join("model.onnx"),
    );
    save_model(&onnx, &a, ExternalData::Above(512)).unwrap();
    let again = lower(&ep, &LowerOptions::default()).unwrap();
    save_model(&again, &b, ExternalData::Above(512)).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "files differ"
    );
    let data = std::fs::read(dir.join("model.onnx.data")).unwrap();
    let data_again = std::fs::read(workdir("external_again").join("model.onnx.data")).unwrap();
    assert!(data == data_again, "data files differ");
    assert!(data.len() >= 4 * 16 * 16 * 4, "{}", data.len());
    assert!(std::fs::metadata(&a).unwrap().len() < data.len() as u64);
    onnx_diagnostic_testing::onnx_check(&a);
    let mut s = OnnxProgram::from_file(&a, &ep).unwrap();
    let x = randn(&[3, 4, 16]);
    let eager = model
        .forward(&Inputs::bind_for(&model, &[x.clone().into()], &[]).unwrap())
        .unwrap();
    let got = s.run(&[x.into()], &[]).unwrap();
    assert!(max_diff(&eager, &got).abs < 1e-5);
    assert!(!dir.join("model.onnx.partial").exists());
    // Read back with its external data: the very model that was saved.
    let back = onnx_diagnostic_onnx::read_model(&a).unwrap();
    assert!(
        back == onnx,
        "the model read back differs from the one saved"
    );
    std::fs::write(dir.join("model.onnx.data"), &data[..data.len() / 2]).unwrap();
    let err = onnx_diagnostic_onnx::read_model(&a)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("past the end of") && err.contains("model.onnx.data"),
        "{err}"
    );
}

/// `if x.sum() > 0 { x.sin() * w } else { x.cos() + 3x }` (a weight and an outer value read by
/// the branches), nested in a second `cond`, and a `check`: If nodes, run on both branches.
#[test]
fn cond_lowers_to_if_and_runs_both_branches_in_ort() {
    use onnx_diagnostic_core::cond;
    let w = randn(&[3]);
    let m = FnModule::new("Branchy", &["x"], {
        let w = w.clone();
        move |i: &Inputs| {
            let x = i.tensor("x")?;
            onnx_diagnostic_core::check(&x.ne(x)?.logical_not()?.all(&[], false)?, "no NaN")?;
            let y = x.mul_scalar(3.0)?;
            let pred = x.sum(&[], false)?.gt_scalar(0.0)?;
            let out = cond(
                &pred,
                |ops: &[Tensor]| {
                    let inner = ops[0].select(1, 0)?.sum(&[], false)?.gt_scalar(1.0)?;
                    cond(
                        &inner,
                        |o: &[Tensor]| Ok(vec![o[0].sin()?.mul(&w)?]),
                        |o: &[Tensor]| Ok(vec![o[0].mul_scalar(-1.0)?]),
                        ops,
                    )
                },
                |ops: &[Tensor]| Ok(vec![ops[0].cos()?.add(&y)?]),
                std::slice::from_ref(x),
            )?;
            Ok(out[0].add_scalar(1.0)?.into())
        }
    })
    .with_parameters(vec![("w".to_owned(), w)]);
    let pos = |n: i64| randn(&[n, 3]).abs().unwrap().add_scalar(0.5).unwrap();
    let neg = |n: i64| pos(n).neg().unwrap();
    let small = |n: i64| pos(n).mul_scalar(0.01).unwrap();
    let model = check(
        "cond",
        &m,
        vec![pos(4)],
        &[(0, 0, "batch")],
        vec![vec![pos(6)], vec![neg(2)], vec![small(1)], vec![neg(5)]],
        1e-5,
    );
    let g = model.graph.as_ref().unwrap();
    let counts = passes::node_counts(g);
    assert_eq!(counts.get("If"), Some(&1), "{counts:?}");
    let meta: Vec<_> = model
        .metadata_props
        .iter()
        .map(|p| (p.key.clone().unwrap(), p.value.clone().unwrap()))
        .collect();
    assert!(
        meta.contains(&("checks".to_owned(), "no NaN".to_owned())),
        "{meta:?}"
    );
}

/// A cumulative product with `scan` over a dynamic dimension: a Loop, lengths 1, 2, 7.
#[test]
fn scan_lowers_to_loop_and_matches_eager() {
    let m = FnModule::new("CumProd", &["x"], |i: &Inputs| {
        onnx_diagnostic_testing::scan_cumprod(i.tensor("x")?, 2.0)
    });
    let model = check(
        "scan",
        &m,
        vec![randn(&[5, 3])],
        &[(0, 0, "steps")],
        vec![
            vec![randn(&[1, 3])],
            vec![randn(&[2, 3])],
            vec![randn(&[7, 3])],
        ],
        1e-5,
    );
    let counts = passes::node_counts(model.graph.as_ref().unwrap());
    assert_eq!(counts.get("Loop"), Some(&1), "{counts:?}");
}

/// float16, bfloat16, int8 and uint8 inputs and outputs go through ONNX Runtime unchanged.
#[test]
fn half_precision_and_byte_tensors_are_fed_and_fetched() {
    use tch::Kind;
    let m = FnModule::new("Casts", &["h", "b", "i", "u"], |i: &Inputs| {
        let h = i.tensor("h")?;
        let b = i.tensor("b")?;
        Ok(Value::Tuple(vec![
            h.to_kind(Kind::Float)?
                .mul_scalar(2.0)?
                .to_kind(Kind::Half)?
                .into(),
            b.to_kind(Kind::Float)?
                .add_scalar(1.0)?
                .to_kind(Kind::BFloat16)?
                .into(),
            i.tensor("i")?.to_kind(Kind::Float)?.into(),
            i.tensor("u")?.to_kind(Kind::Int64)?.into(),
        ]))
    });
    let set = |n: i64| {
        vec![
            randn(&[n, 3]).to_kind(Kind::Half).unwrap(),
            randn(&[n, 3]).to_kind(Kind::BFloat16).unwrap(),
            Tensor::from(tch::Tensor::randint(
                100,
                [n, 3],
                (Kind::Int8, tch::Device::Cpu),
            )),
            Tensor::from(tch::Tensor::randint(
                200,
                [n, 3],
                (Kind::Uint8, tch::Device::Cpu),
            )),
        ]
    };
    let all_rows: Vec<(usize, usize, &str)> = (0..4).map(|k| (k, 0, "n")).collect();
    check("casts", &m, set(4), &all_rows, vec![set(2), set(7)], 0.0);
}

//! Export engine tests: the seed example, a two-layer toy transformer checked against eager on
//! other shapes, and the errors of the engine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, Error, ExportOptions, FnModule, Inputs, Module, Tensor, Value,
    export,
};
use onnx_diagnostic_testing::ToyTransformer;
use tch::{Device, Kind};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::from(tch::Tensor::randn(shape, (Kind::Float, Device::Cpu)))
}

fn add_model() -> impl Module {
    FnModule::new("Add", &["x", "y"], |inputs: &Inputs| {
        Ok(inputs.tensor("x")?.add(inputs.tensor("y")?)?.into())
    })
}

fn add_shapes() -> DynamicShapes {
    DynamicShapes {
        args: vec![
            DynSpec::dims([(0, Dim::DYNAMIC), (1, Dim::DYNAMIC)]),
            DynSpec::dims([(1, Dim::DYNAMIC)]),
        ],
        kwargs: Vec::new(),
    }
}

#[test]
fn seed_example_prints_like_torch() {
    let args = [Value::from(randn(&[5, 6])), Value::from(randn(&[1, 6]))];
    let ep = export(
        &add_model(),
        &args,
        &[],
        Some(&add_shapes()),
        &ExportOptions::default(),
    )
    .unwrap();
    let text = ep.to_string();
    assert!(
        text.contains(r#"def forward(self, x: "f32[s0, s1]", y: "f32[1, s1]"):"#),
        "{text}"
    );
    assert!(
        text.contains(r#"add: "f32[s0, s1]" = torch.ops.aten.add.Tensor(x, y);  x = y = None"#),
        "{text}"
    );
    assert!(
        text.contains("Range constraints: {s0: VR[0, int_oo], s1: VR[0, int_oo]}"),
        "{text}"
    );
    assert!(
        text.contains("    x: USER_INPUT\n    y: USER_INPUT\n"),
        "{text}"
    );
    insta::assert_snapshot!("seed_example_dynamic_program", text);

    // Named dims print their names; static export has no constraint.
    let named = DynamicShapes {
        args: vec![
            DynSpec::dims([(0, Dim::new("batch")), (1, Dim::new("length"))]),
            DynSpec::dims([(1, Dim::new("length"))]),
        ],
        kwargs: Vec::new(),
    };
    let ep = export(
        &add_model(),
        &args,
        &[],
        Some(&named),
        &ExportOptions::default(),
    )
    .unwrap();
    assert!(
        ep.to_string()
            .contains(r#"x: "f32[batch, length]", y: "f32[1, length]""#)
    );
    let ep = export(&add_model(), &args, &[], None, &ExportOptions::default()).unwrap();
    assert!(ep.to_string().contains("Range constraints: {}"));

    // The graph runs on other shapes; inputs disagreeing on s1 are refused, naming the input.
    let ep = export(
        &add_model(),
        &args,
        &[],
        Some(&add_shapes()),
        &ExportOptions::default(),
    )
    .unwrap();
    let (x, y) = (randn(&[3, 9]), randn(&[1, 9]));
    let expected = x.add(&y).unwrap();
    let got = ep.run(&[x.clone().into(), y.into()], &[]).unwrap();
    let got = got.as_tensor().unwrap();
    assert_eq!(got.concrete_shape(), vec![3, 9]);
    assert!(got.as_tch().allclose(expected.as_tch(), 0.0, 0.0, false));
    let err = ep.run(&[x.into(), randn(&[1, 4]).into()], &[]).unwrap_err();
    assert!(
        err.to_string().contains("input y:") && err.to_string().contains("s1 is 9"),
        "{err}"
    );
}

#[test]
fn toy_transformer_matches_eager_on_other_shapes() {
    let model = ToyTransformer::new(16, 4, 2);
    let x = randn(&[2, 5, 16]);
    let ds = DynamicShapes {
        args: vec![DynSpec::dims([
            (0, Dim::new("batch")),
            (1, Dim::new("seq_length")),
        ])],
        kwargs: Vec::new(),
    };
    let ep = export(
        &model,
        &[x.into()],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap();
    let text = ep.to_string();
    assert!(
        text.contains(r#"x: "f32[batch, seq_length, 16]""#),
        "{text}"
    );
    assert!(text.contains("p_layers_0_self_attn_q_proj_weight: PARAMETER target='layers.0.self_attn.q_proj.weight'"), "{text}");
    assert!(text.contains("in layers.1.self_attn"), "{text}");
    assert!(
        ep.guards().is_empty(),
        "unexpected guards: {:?}",
        ep.guards()
    );

    for shape in [[1, 7, 16], [3, 1, 16], [4, 11, 16]] {
        let x = randn(&shape);
        let eager = model
            .forward(&Inputs::bind_for(&model, &[x.clone().into()], &[]).unwrap())
            .unwrap();
        let got = ep.run(&[x.into()], &[]).unwrap();
        let (e, g) = (
            eager.as_tensor().unwrap().as_tch(),
            got.as_tensor().unwrap().as_tch(),
        );
        assert_eq!(g.size(), shape.to_vec());
        let diff = (e - g).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "shape {shape:?}: max abs diff {diff}");
    }
}

/// A model that turns the batch size into a plain integer.
fn specializes() -> impl Module {
    FnModule::new("Specializes", &["x"], |inputs: &Inputs| {
        let x = inputs.tensor("x")?;
        let n = x.size(0)?.guard_int()?;
        Ok(x.reshape([n, -1])?.into())
    })
}

#[test]
fn specialising_a_declared_dimension_violates_its_constraint() {
    let x = randn(&[3, 4]);
    let ds = DynamicShapes {
        args: vec![DynSpec::dims([(0, Dim::new("batch"))])],
        kwargs: Vec::new(),
    };
    // torch's behaviour: the declared dimension became a constant, the export fails and
    // says where.
    let err = export(
        &specializes(),
        &[x.clone().into()],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ConstraintViolation { .. }), "{msg}");
    assert!(
        msg.contains("constraints violated (batch)")
            && msg.contains("batch = x.shape[0] was inferred to be a constant (3)")
            && msg.contains("tests/export.rs:")
            && msg.contains("catch_constraints"),
        "{msg}"
    );
    // With Dim::AUTO the specialisation is accepted: the graph is static and run checks it.
    let auto = DynamicShapes {
        args: vec![DynSpec::dims([(0, Dim::AUTO)])],
        kwargs: Vec::new(),
    };
    let ep = export(
        &specializes(),
        &[x.clone().into()],
        &[],
        Some(&auto),
        &ExportOptions::default(),
    )
    .unwrap();
    assert!(ep.to_string().contains(r#"x: "f32[3, 4]""#), "{ep}");
    let err = ep.run(&[randn(&[5, 4]).into()], &[]).unwrap_err();
    assert!(err.to_string().contains("static size 3"), "{err}");
    // stop_if_static is a torch patch: asked for without it, the export says how to get it.
    let err = export(
        &specializes(),
        &[x.into()],
        &[],
        Some(&ds),
        &ExportOptions { stop_if_static: 1 },
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Patch { .. }) && err.to_string().contains("patch_torch: true"),
        "{err}"
    );
}

fn reads_data() -> impl Module {
    FnModule::new("ReadsData", &["x"], |inputs: &Inputs| {
        let x = inputs.tensor("x")?;
        if x.sum(&[], false)?.gt_scalar(0.0)?.to_bool()? {
            Ok(x.neg()?.into())
        } else {
            Ok(x.clone().into())
        }
    })
}

#[test]
fn reading_tensor_data_is_a_data_dependent_error() {
    let x = randn(&[3, 4]);
    // Eagerly it runs.
    let m = reads_data();
    assert!(
        m.forward(&Inputs::bind_for(&m, &[x.clone().into()], &[]).unwrap())
            .is_ok()
    );
    let err = export(
        &reads_data(),
        &[x.into()],
        &[],
        None,
        &ExportOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::DataDependent { .. }), "{msg}");
    assert!(
        msg.contains("use of a tensor as a bool") && msg.contains("tests/export.rs:"),
        "{msg}"
    );
    assert!(msg.contains("cond"), "{msg}");
}

fn bad_op() -> impl Module {
    FnModule::new("BadOp", &["x"], |inputs: &Inputs| {
        Ok(inputs.tensor("x")?.matmul(&randn(&[7, 2]))?.into())
    })
}

#[test]
fn a_failing_op_names_the_op_and_location() {
    let err = export(
        &bad_op(),
        &[randn(&[3, 4]).into()],
        &[],
        None,
        &ExportOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("aten.matmul.default failed at ") && msg.contains("tests/export.rs:"),
        "{msg}"
    );

    // An op the table does not have is an UnsupportedOp error naming it and the caller; a
    // known one called by name runs and is recorded like a method call.
    let by_name = FnModule::new("ByName", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let y = Tensor::apply("aten.relu.default", &[Some(x)], Vec::new())?;
        let z = Tensor::apply("aten.erfinv.default", &[Some(&y[0])], Vec::new())?;
        Ok(z[0].clone().into())
    });
    let err = export(
        &by_name,
        &[randn(&[3, 4]).into()],
        &[],
        None,
        &ExportOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsupportedOp { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("unsupported op aten.erfinv.default at ")
            && msg.contains("tests/export.rs:"),
        "{msg}"
    );
}

#[test]
fn bad_inputs_and_specs_are_typed_errors_naming_the_path() {
    let args = [Value::from(randn(&[5, 6])), Value::from(randn(&[1, 6]))];
    let opts = ExportOptions::default();
    // Too many inputs.
    let three = [args[0].clone(), args[1].clone(), args[1].clone()];
    let err = export(&add_model(), &three, &[], None, &opts).unwrap_err();
    assert!(
        matches!(&err, Error::Input { path, .. } if path == "args[2]"),
        "{err}"
    );
    // Unknown keyword.
    let err = export(
        &add_model(),
        &args[..1],
        &[("z".to_owned(), args[1].clone())],
        None,
        &opts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no parameter \"z\""), "{err}");
    // A spec tree of another structure.
    let ds = DynamicShapes {
        args: vec![DynSpec::Seq(vec![DynSpec::Static]), DynSpec::Static],
        kwargs: Vec::new(),
    };
    let err = export(&add_model(), &args, &[], Some(&ds), &opts).unwrap_err();
    assert!(
        matches!(&err, Error::Input { path, .. } if path == "x"),
        "{err}"
    );
    // Example value outside the Dim's range.
    let ds = DynamicShapes {
        args: vec![
            DynSpec::dims([(0, Dim::with_range("batch", Some(1), Some(4)))]),
            DynSpec::Static,
        ],
        kwargs: Vec::new(),
    };
    let err = export(&add_model(), &args, &[], Some(&ds), &opts).unwrap_err();
    assert!(
        err.to_string().contains("x.shape[0]") && err.to_string().contains("outside the range"),
        "{err}"
    );
    // One Dim name with two example values.
    let ds = DynamicShapes {
        args: vec![
            DynSpec::dims([(0, Dim::new("n")), (1, Dim::new("n"))]),
            DynSpec::Static,
        ],
        kwargs: Vec::new(),
    };
    let err = export(&add_model(), &args, &[], Some(&ds), &opts).unwrap_err();
    assert!(
        err.to_string().contains("x.shape[1]")
            && err.to_string().contains("Dim \"n\" is 6 here but 5"),
        "{err}"
    );
}

#[test]
fn batch_and_sequence_of_one_stay_dynamic() {
    let model = ToyTransformer::new(8, 2, 1);
    let ds = DynamicShapes {
        args: vec![DynSpec::dims([(0, Dim::DYNAMIC), (1, Dim::DYNAMIC)])],
        kwargs: Vec::new(),
    };
    let ep = export(
        &model,
        &[randn(&[1, 1, 8]).into()],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap();
    assert!(ep.to_string().contains(r#"x: "f32[s0, s1, 8]""#), "{ep}");
    let x = randn(&[3, 6, 8]);
    let eager = model
        .forward(&Inputs::bind_for(&model, &[x.clone().into()], &[]).unwrap())
        .unwrap();
    let got = ep.run(&[x.into()], &[]).unwrap();
    let diff = (eager.as_tensor().unwrap().as_tch() - got.as_tensor().unwrap().as_tch())
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
}

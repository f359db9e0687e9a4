//! The torch patches, each with and without: relaxed broadcasting keeps a dimension of
//! example 1 dynamic (and the ONNX file matches eager on other shapes), `stop_if_static`
//! stops the export where the model specialises or ties a dimension, `catch_constraints`
//! lets an export with violated constraints go on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    DiffFormat, Dim, DynSpec, DynamicShapes, Error, ExportOptions, ExportedProgram, FnModule,
    Inputs, Module, PatchOptions, Rel, Result, Value, export, patches::any_active,
    torch_export_patches,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_testing::randn;

fn linked() {
    assert_eq!(
        onnx_diagnostic_patch_torch::patches(),
        [
            "patched_ShapeEnv.log_guard",
            "patched_infer_size",
            "patched_produce_guards_and_solve_constraints"
        ]
    );
}

fn torch_only(patch_torch: bool, catch_constraints: bool, stop_if_static: u8) -> PatchOptions {
    PatchOptions {
        patch_torch,
        catch_constraints,
        stop_if_static,
        ..PatchOptions::default()
    }
}

fn mul_model() -> impl Module {
    FnModule::new("Mul", &["x", "y"], |inputs: &Inputs| {
        Ok(inputs.tensor("x")?.mul(inputs.tensor("y")?)?.into())
    })
}

fn export_mul(x: &[i64], y: &[i64]) -> Result<ExportedProgram> {
    let ds = DynamicShapes {
        args: vec![
            DynSpec::dims([(0, Dim::new("a"))]),
            DynSpec::dims([(0, Dim::new("b"))]),
        ],
        kwargs: Vec::new(),
    };
    export(
        &mul_model(),
        &[randn(x).into(), randn(y).into()],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
}

#[test]
fn relaxed_broadcasting_keeps_a_dimension_of_one_dynamic() {
    linked();
    // x: [a, 4] with a = 1 in the example, y: [b, 4] with b = 3.
    // torch's rule: `a` is specialised to 1, a declared dimension: the export fails.
    {
        let _g = torch_export_patches(torch_only(false, false, 0)).unwrap();
        let e = export_mul(&[1, 4], &[3, 4]).unwrap_err();
        assert!(
            e.to_string()
                .contains("a = x.shape[0] was inferred to be a constant (1)"),
            "{e}"
        );
    }
    // The relaxed rule: Max(a, b), with the assumption recorded and checked.
    let g = torch_export_patches(torch_only(true, false, 0)).unwrap();
    assert!(g.details().find("patched_infer_size").is_some());
    let ep = export_mul(&[1, 4], &[3, 4]).unwrap();
    drop(g);
    let text = ep.to_string();
    assert!(
        text.contains(r#"mul: "f32[Max(a, b), 4]" = torch.ops.aten.mul.Tensor(x, y)"#),
        "{text}"
    );
    let guards: Vec<String> = ep.guards().iter().map(ToString::to_string).collect();
    assert_eq!(guards, ["a broadcasts with b"]);
    assert_eq!(ep.guards()[0].rel, Rel::Broadcast);
    // The program and its ONNX file match eager on every way the two sizes broadcast.
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for (a, b) in [(1, 5), (5, 5), (5, 1), (1, 1), (2, 2)] {
        let args: Vec<Value> = vec![randn(&[a, 4]).into(), randn(&[b, 4]).into()];
        let eager = mul_model()
            .forward(&Inputs::bind_for(&mul_model(), &args, &[]).unwrap())
            .unwrap();
        let run = ep.run(&args, &[]).unwrap();
        assert_eq!(run.as_tensor().unwrap().as_tch().size(), vec![a.max(b), 4]);
        let d = max_diff(&eager, &run);
        assert!(d.abs == 0.0, "({a}, {b}) run: {d:?}");
        let ort = session.run(&args, &[]).unwrap();
        let d = max_diff(&eager, &ort);
        assert!(d.abs <= 1e-6, "({a}, {b}) onnx: {d:?}");
    }
    // Sizes that do not broadcast break the recorded assumption.
    let e = ep
        .run(&[randn(&[2, 4]).into(), randn(&[3, 4]).into()], &[])
        .unwrap_err();
    assert!(
        matches!(e, Error::GuardViolated { .. })
            && e.to_string().contains("a broadcasts with b")
            && e.to_string().contains("relaxed broadcasting"),
        "{e}"
    );
    assert!(!any_active());
}

/// Turns the batch size into a plain integer.
fn specializes() -> impl Module {
    FnModule::new("Specializes", &["x"], |inputs: &Inputs| {
        let x = inputs.tensor("x")?;
        let n = x.size(0)?.guard_int()?;
        Ok(x.reshape([n, -1])?.into())
    })
}

/// Branches on the sequence length.
fn compares() -> impl Module {
    FnModule::new("Compares", &["x"], |inputs: &Inputs| {
        let x = inputs.tensor("x")?;
        let long = x.size(1)?.compare(Rel::Gt, 4)?;
        Ok(if long { x.mul_scalar(2.0)? } else { x.clone() }.into())
    })
}

fn export_one(model: &dyn Module, dims: Vec<(usize, Dim)>) -> Result<ExportedProgram> {
    let ds = DynamicShapes {
        args: vec![DynSpec::dims(dims)],
        kwargs: Vec::new(),
    };
    export(
        model,
        &[randn(&[3, 6]).into()],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
}

#[test]
fn stop_if_static_stops_where_the_model_specialises_or_ties() {
    linked();
    let batch = || vec![(0, Dim::AUTO)];
    // Level 0: the specialisation of an AUTO dimension is accepted silently.
    {
        let _g = torch_export_patches(torch_only(true, true, 0)).unwrap();
        let ep = export_one(&specializes(), batch()).unwrap();
        assert!(ep.to_string().contains(r#"x: "f32[3, 6]""#), "{ep}");
    }
    // Level 1: an error naming the symbol, the value and this file.
    {
        let g = torch_export_patches(torch_only(true, true, 1)).unwrap();
        assert!(g.details().find("patched_ShapeEnv.log_guard").is_some());
        let e = export_one(&specializes(), batch()).unwrap_err();
        assert!(matches!(e, Error::Specialized { value: 3, .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("dynamic dimension s0 was specialised to 3 at")
                && msg.contains("tests/torch_patches.rs:"),
            "{msg}"
        );
        // A branch on a size is a relation, not a specialisation: accepted at level 1.
        let ep = export_one(&compares(), vec![(1, Dim::AUTO)]).unwrap();
        let guards: Vec<String> = ep.guards().iter().map(ToString::to_string).collect();
        assert_eq!(guards, ["s0 > 4"]);
    }
    // Level 2: the branch stops the export too, and so do two dimensions made equal.
    {
        let _g = torch_export_patches(torch_only(true, true, 2)).unwrap();
        let e = export_one(&compares(), vec![(1, Dim::AUTO)]).unwrap_err();
        assert!(matches!(e, Error::StopIfStatic { .. }), "{e}");
        assert!(e.to_string().contains("depends on s0 > 4 at"), "{e}");
        let add = FnModule::new("Add", &["x", "y"], |inputs: &Inputs| {
            Ok(inputs.tensor("x")?.add(inputs.tensor("y")?)?.into())
        });
        let ds = DynamicShapes {
            args: vec![
                DynSpec::dims([(0, Dim::AUTO)]),
                DynSpec::dims([(0, Dim::AUTO)]),
            ],
            kwargs: Vec::new(),
        };
        let e = export(
            &add,
            &[randn(&[3, 2]).into(), randn(&[3, 2]).into()],
            &[],
            Some(&ds),
            &ExportOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("depends on s0 == s1"), "{e}");
    }
    // The torch patches off: stop_if_static cannot apply, and the export says so.
    {
        let _g = torch_export_patches(torch_only(false, true, 1)).unwrap();
        let e = export_one(&specializes(), batch()).unwrap_err();
        assert!(matches!(e, Error::Patch { .. }), "{e}");
    }
    assert!(!any_active());
}

#[test]
fn catch_constraints_lets_the_export_go_on_static() {
    linked();
    let named = || vec![(0, Dim::new("batch"))];
    // Without: torch's "Constraints violated".
    {
        let _g = torch_export_patches(torch_only(true, false, 0)).unwrap();
        let e = export_one(&specializes(), named()).unwrap_err();
        assert!(matches!(e, Error::ConstraintViolation { .. }), "{e}");
        assert!(
            e.to_string().contains("constraints violated (batch)"),
            "{e}"
        );
    }
    // With: the export goes on, batch is static, and run checks it.
    let g = torch_export_patches(torch_only(true, true, 0)).unwrap();
    assert!(
        g.details()
            .find("patched_produce_guards_and_solve_constraints")
            .is_some()
    );
    let ep = export_one(&specializes(), named()).unwrap();
    drop(g);
    assert!(ep.to_string().contains(r#"x: "f32[3, 6]""#), "{ep}");
    let e = ep.run(&[randn(&[5, 6]).into()], &[]).unwrap_err();
    assert!(e.to_string().contains("static size 3"), "{e}");
    // Two named dimensions the model ties are a violation too, caught the same way.
    let add = FnModule::new("Add", &["x", "y"], |inputs: &Inputs| {
        Ok(inputs.tensor("x")?.add(inputs.tensor("y")?)?.into())
    });
    let ds = DynamicShapes {
        args: vec![
            DynSpec::dims([(0, Dim::new("n"))]),
            DynSpec::dims([(0, Dim::new("m"))]),
        ],
        kwargs: Vec::new(),
    };
    let run = |catch: bool| {
        let _g = torch_export_patches(torch_only(true, catch, 0)).unwrap();
        export(
            &add,
            &[randn(&[3, 2]).into(), randn(&[3, 2]).into()],
            &[],
            Some(&ds),
            &ExportOptions::default(),
        )
    };
    let e = run(false).unwrap_err();
    assert!(
        e.to_string()
            .contains("m = y.shape[0] must always be equal to n"),
        "{e}"
    );
    let ep = run(true).unwrap();
    assert!(ep.to_string().contains(r#"y: "f32[n, 2]""#), "{ep}");
}

#[test]
fn the_torch_patches_have_diffs() {
    linked();
    let g = torch_export_patches(torch_only(true, true, 1)).unwrap();
    assert_eq!(g.details().n_patches(), 3);
    let d = g
        .details()
        .find("patched_infer_size")
        .unwrap()
        .format_diff(DiffFormat::Raw);
    assert!(
        d.starts_with("torch: infer_size -> patched_infer_size\n--- original\n+++ rewritten\n"),
        "{d}"
    );
    assert!(d.contains("\n+            shape.push(x.max(y));"), "{d}");
    assert!(
        d.contains("\n-        shape.push(broadcast_dim_strict(&x, &y, &mut assumptions)?);"),
        "{d}"
    );
}

//! `cond`, `check`, `check_size` and `scan`: exported with dynamic dims, printed with their
//! sub-graphs, run on inputs taking every path and compared with eager, and their errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, Error, ExportOptions, FnModule, Inputs, Module, Rel, Tensor,
    Value, check, check_size, cond, export, scan,
};
use tch::{Device, Kind};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::from(tch::Tensor::randn(shape, (Kind::Float, Device::Cpu)))
}

fn rows(name: &str) -> DynamicShapes {
    DynamicShapes {
        args: vec![DynSpec::dims([(0, Dim::new(name))])],
        kwargs: Vec::new(),
    }
}

fn close(a: &Value, b: &Value) -> bool {
    let (a, b) = (a.as_tensor().unwrap(), b.as_tensor().unwrap());
    a.concrete_shape() == b.concrete_shape() && a.as_tch().allclose(b.as_tch(), 1e-6, 1e-6, false)
}

fn eager(m: &dyn Module, x: &Tensor) -> Value {
    m.forward(&Inputs::bind_for(m, &[x.clone().into()], &[]).unwrap())
        .unwrap()
}

/// `if x.sum() > 0 { x.sin() * w } else { x.cos() + y }` with `w` a weight and `y` computed
/// before the branch (both read by the branches without being operands).
fn branchy() -> impl Module {
    let w = randn(&[3]);
    let weight = w.clone();
    FnModule::new("Branchy", &["x"], move |i: &Inputs| {
        let x = i.tensor("x")?;
        let y = x.mul_scalar(3.0)?;
        let pred = x.sum(&[], false)?.gt_scalar(0.0)?;
        let out = cond(
            &pred,
            |ops: &[Tensor]| Ok(vec![ops[0].sin()?.mul(&w)?]),
            |ops: &[Tensor]| Ok(vec![ops[0].cos()?.add(&y)?]),
            std::slice::from_ref(x),
        )?;
        Ok(out[0].add_scalar(1.0)?.into())
    })
    .with_parameters(vec![("w".to_owned(), weight)])
}

#[test]
fn cond_exports_both_branches_and_runs_the_right_one() {
    let m = branchy();
    let x = randn(&[4, 3]).abs().unwrap(); // positive: the true branch at export
    let ep = export(
        &m,
        &[x.clone().into()],
        &[],
        Some(&rows("batch")),
        &ExportOptions::default(),
    )
    .unwrap();
    let text = ep.to_string();
    for expected in [
        "torch.ops.higher_order.cond(gt, true_graph_0, false_graph_0, (x, p_w, mul))",
        "p_w: PARAMETER target='w'",
        "        class true_graph_0(torch.nn.Module):",
        "        class false_graph_0(torch.nn.Module):",
        r#"def forward(self, p_w: "f32[3]", x: "f32[batch, 3]"):"#,
        r#"cond: "f32[batch, 3]" = "#,
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    insta::assert_snapshot!("cond_program", text);
    // Positive and negative inputs of other sizes: each branch, as eager.
    for (n, sign) in [(4, 1.0), (7, -1.0), (1, 1.0), (2, -1.0)] {
        let x = randn(&[n, 3]).abs().unwrap().mul_scalar(sign).unwrap();
        let got = ep.run(&[x.clone().into()], &[]).unwrap();
        assert!(close(&got, &eager(&m, &x)), "n={n} sign={sign}");
    }
}

#[test]
fn nested_cond_and_branches_of_different_sizes() {
    // Outer: x.sum() > 0; inner (in the true branch): x[0, 0] > 0. The false branch returns
    // the first row only: the output's row count becomes a fresh symbol.
    let m = FnModule::new("Nested", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let pred = x.sum(&[], false)?.gt_scalar(0.0)?;
        let out = cond(
            &pred,
            |ops: &[Tensor]| {
                let inner = ops[0].select(0, 0)?.select(0, 0)?.gt_scalar(0.0)?;
                cond(
                    &inner,
                    |o: &[Tensor]| Ok(vec![o[0].mul_scalar(2.0)?]),
                    |o: &[Tensor]| Ok(vec![o[0].neg()?]),
                    ops,
                )
            },
            |ops: &[Tensor]| Ok(vec![ops[0].narrow(0, 0, 1)?]),
            std::slice::from_ref(x),
        )?;
        Ok(out[0].clone().into())
    });
    let x = randn(&[5, 2]).abs().unwrap();
    let ep = export(
        &m,
        &[x.into()],
        &[],
        Some(&rows("n")),
        &ExportOptions::default(),
    )
    .unwrap();
    let text = ep.to_string();
    assert!(text.contains(r#"cond_1: "f32[u0, 2]""#), "{text}");
    assert!(text.contains("u0: VR[0, int_oo]"), "{text}");
    assert!(
        text.contains("            class true_graph_0(torch.nn.Module):"),
        "the nested cond prints inside the true branch\n{text}"
    );
    let cases = [
        tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([3, 2]),
        tch::Tensor::from_slice(&[-1.0f32, 2.0, 3.0, 4.0]).view([2, 2]),
        tch::Tensor::from_slice(&[-1.0f32, -2.0, -3.0, 4.0, 0.5, -6.0, 1.0, 1.0]).view([4, 2]),
    ];
    for c in cases {
        let x = Tensor::from(c);
        let got = ep.run(&[x.clone().into()], &[]).unwrap();
        assert!(close(&got, &eager(&m, &x)), "{:?}", x.concrete_shape());
    }
}

fn cond_error(then_out: fn(&Tensor) -> Vec<Tensor>, else_out: fn(&Tensor) -> Vec<Tensor>) -> Error {
    let m = FnModule::new("Bad", &["x"], move |i: &Inputs| {
        let x = i.tensor("x")?;
        let pred = x.sum(&[], false)?.gt_scalar(0.0)?;
        let out = cond(
            &pred,
            |ops: &[Tensor]| Ok(then_out(&ops[0])),
            |ops: &[Tensor]| Ok(else_out(&ops[0])),
            std::slice::from_ref(x),
        )?;
        Ok(out[0].clone().into())
    });
    export(
        &m,
        &[randn(&[3, 2]).into()],
        &[],
        Some(&rows("n")),
        &ExportOptions::default(),
    )
    .unwrap_err()
}

#[test]
fn branches_that_disagree_are_typed_errors_naming_the_difference() {
    let e = cond_error(|x| vec![x.clone(), x.clone()], |x| vec![x.clone()]);
    assert!(
        matches!(&e, Error::ControlFlow { op: "cond", reason, location } if reason.contains("true branch returns 2 tensors, the false branch 1") && location.file.ends_with("control_flow.rs")),
        "{e}"
    );
    let e = cond_error(
        |x| vec![x.clone()],
        |x| vec![x.to_kind(Kind::Double).unwrap()],
    );
    assert!(
        e.to_string()
            .contains("output 0: the true branch returns Float, the false branch Double"),
        "{e}"
    );
    let e = cond_error(|x| vec![x.clone()], |x| vec![x.sum(&[1], false).unwrap()]);
    assert!(
        e.to_string().contains(
            "output 0: the true branch returns a tensor of rank 2, the false branch of rank 1"
        ),
        "{e}"
    );
    // A predicate that is not a boolean scalar.
    let x = randn(&[3]);
    let e = cond(
        &x,
        |o: &[Tensor]| Ok(o.to_vec()),
        |o: &[Tensor]| Ok(o.to_vec()),
        &[],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("the predicate must be a boolean scalar tensor"),
        "{e}"
    );
    // A plain bool records nothing and runs the branch.
    let out = cond(
        false,
        |_: &[Tensor]| Ok(vec![randn(&[1])]),
        |o: &[Tensor]| Ok(o.to_vec()),
        std::slice::from_ref(&x),
    )
    .unwrap();
    assert!(out[0].as_tch().equal(x.as_tch()));
}

#[test]
fn check_size_refines_the_range_and_check_asserts_at_run_time() {
    let m = FnModule::new("Checked", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        check_size(&x.size(0)?, Rel::Ge, 2, "at least two rows")?;
        let positive = x.ge_scalar(0.0)?.all(&[], false)?;
        check(&positive, "x must be non-negative")?;
        Ok(x.sqrt()?.into())
    });
    let x = randn(&[4, 3]).abs().unwrap();
    let ep = export(
        &m,
        &[x.into()],
        &[],
        Some(&rows("batch")),
        &ExportOptions::default(),
    )
    .unwrap();
    let text = ep.to_string();
    assert!(
        text.contains("Range constraints: {batch: VR[2, int_oo]}"),
        "{text}"
    );
    assert!(
        text.contains(r#"torch.ops.aten._assert_async.msg(all, "x must be non-negative")"#),
        "{text}"
    );
    // The range holds at run time...
    let e = ep
        .run(&[randn(&[1, 3]).abs().unwrap().into()], &[])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("batch = 1 is outside its range VR[2, int_oo]"),
        "{e}"
    );
    // ... and so does the assertion.
    let e = ep
        .run(&[randn(&[3, 3]).abs().unwrap().neg().unwrap().into()], &[])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("check failed: x must be non-negative"),
        "{e}"
    );
    let ok = randn(&[5, 3]).abs().unwrap();
    let got = ep.run(&[ok.clone().into()], &[]).unwrap();
    assert!(close(&got, &eager(&m, &ok)));
    // Eagerly, a failing check raises with its message and where it is.
    let m2 = FnModule::new("Checked", &["x"], |i: &Inputs| {
        check_size(&i.tensor("x")?.size(0)?, Rel::Ge, 2, "at least two rows")?;
        Ok(Value::None)
    });
    let e = m2
        .forward(&Inputs::bind_for(&m2, &[randn(&[1, 3]).into()], &[]).unwrap())
        .unwrap_err();
    assert!(
        matches!(&e, Error::CheckFailed { message, location } if message.starts_with("at least two rows") && location.file.ends_with("control_flow.rs")),
        "{e}"
    );
}

/// A cumulative product over a dynamic leading dimension, written with `scan`.
fn cumprod() -> impl Module {
    FnModule::new("CumProd", &["x"], |i: &Inputs| {
        onnx_diagnostic_testing::scan_cumprod(i.tensor("x")?, 1.0)
    })
}

#[test]
fn scan_computes_a_cumulative_product_over_a_dynamic_dim() {
    let m = cumprod();
    let ep = export(
        &m,
        &[randn(&[5, 3]).into()],
        &[],
        Some(&rows("steps")),
        &ExportOptions::default(),
    )
    .unwrap();
    let text = ep.to_string();
    assert!(
        text.contains("torch.ops.higher_order.scan(scan_combine_graph_0, [ones], [x], ())"),
        "{text}"
    );
    assert!(
        text.contains("class scan_combine_graph_0(torch.nn.Module):"),
        "{text}"
    );
    assert!(text.contains(r#""f32[steps, 3]""#), "{text}");
    for n in [1, 2, 7] {
        let x = randn(&[n, 3]);
        let got = ep.run(&[x.clone().into()], &[]).unwrap();
        let want = eager(&m, &x);
        let (Value::Tuple(g), Value::Tuple(w)) = (&got, &want) else {
            panic!("tuples expected")
        };
        assert!(close(&g[0], &w[0]) && close(&g[1], &w[1]), "n={n}");
        // And it is torch's cumprod.
        let reference = x.as_tch().cumprod(0, Kind::Float);
        assert!(
            g[1].as_tensor()
                .unwrap()
                .as_tch()
                .allclose(&reference, 1e-5, 1e-6, false)
        );
    }
}

#[test]
fn scan_refuses_sequences_of_different_lengths_and_carries_that_change() {
    let (a, b) = (randn(&[3, 2]), randn(&[4, 2]));
    let e = scan(
        |c: &[Tensor], _: &[Tensor]| Ok((c.to_vec(), vec![])),
        &[],
        &[a.clone(), b],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("xs[1] has leading dimension 4, xs[0] has 3"),
        "{e}"
    );
    let e = scan(
        |_: &[Tensor], xs: &[Tensor]| Ok((vec![xs[0].to_kind(Kind::Double)?], vec![])),
        &[randn(&[2])],
        &[a],
    );
    // Eagerly the carry may change type (it is the body's business); exported, it may not.
    assert!(e.is_ok());
    let m = FnModule::new("BadCarry", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let (c, _) = scan(
            |_: &[Tensor], xs: &[Tensor]| Ok((vec![xs[0].sum(&[], false)?], vec![])),
            &[randn(&[2])],
            std::slice::from_ref(x),
        )?;
        Ok(c[0].clone().into())
    });
    let e = export(
        &m,
        &[randn(&[3, 2]).into()],
        &[],
        Some(&rows("n")),
        &ExportOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("carry 0: the body returns Float[] for an initial Float[2]"),
        "{e}"
    );
}

/// Saved, loaded, run: the same outputs and the same printed form, sub-graphs, weights,
/// symbols, refined ranges and guards included.
#[test]
fn exported_programs_round_trip_through_json_and_safetensors() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ep_json");
    std::fs::create_dir_all(&dir).unwrap();
    let checked = FnModule::new("Checked", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        check_size(&x.size(0)?, Rel::Ge, 2, "at least two rows")?;
        check(&x.ge_scalar(0.0)?.all(&[], false)?, "non-negative")?;
        Ok(x.sqrt()?
            .masked_fill(&x.eq_scalar(0.0)?, f64::NEG_INFINITY)?
            .into())
    });
    type Case = (&'static str, Box<dyn Module>, Tensor, Vec<Tensor>);
    let models: Vec<Case> = vec![
        (
            "branchy",
            Box::new(branchy()),
            randn(&[4, 3]).abs().unwrap(),
            vec![
                randn(&[6, 3]).abs().unwrap(),
                randn(&[2, 3]).abs().unwrap().neg().unwrap(),
            ],
        ),
        (
            "cumprod",
            Box::new(cumprod()),
            randn(&[5, 3]),
            vec![randn(&[1, 3]), randn(&[7, 3])],
        ),
        (
            "checked",
            Box::new(checked),
            randn(&[4, 3]).abs().unwrap(),
            vec![randn(&[3, 3]).abs().unwrap()],
        ),
    ];
    for (name, m, example, others) in models {
        let ep = export(
            m.as_ref(),
            &[example.into()],
            &[],
            Some(&rows("n")),
            &ExportOptions::default(),
        )
        .unwrap();
        let path = dir.join(format!("{name}.json"));
        ep.save(&path).unwrap();
        assert!(path.with_extension("safetensors").exists());
        assert!(!dir.join(format!("{name}.json.partial")).exists());
        let loaded = onnx_diagnostic_core::ExportedProgram::load(&path).unwrap();
        assert_eq!(loaded.to_string(), ep.to_string(), "{name}: printed form");
        assert_eq!(loaded.symbols(), ep.symbols());
        for x in others {
            let a = ep.run(&[x.clone().into()], &[]).unwrap();
            let b = loaded.run(&[x.clone().into()], &[]).unwrap();
            let (la, lb) = (a.leaves().unwrap(), b.leaves().unwrap());
            assert_eq!(la.len(), lb.len());
            for (p, q) in la.iter().zip(&lb) {
                assert!(p.as_tch().equal(q.as_tch()), "{name}: outputs differ");
            }
        }
    }
    // A file of another format is refused with the file's name.
    let bogus = dir.join("bogus.json");
    std::fs::write(&bogus, r#"{"format":"something else"}"#).unwrap();
    let e = onnx_diagnostic_core::ExportedProgram::load(&bogus).unwrap_err();
    assert!(e.to_string().contains("bogus.json"), "{e}");
}

/// `torch._check` on a size a `cond` creates (`u0 != 1` on the rows it keeps) is not a guard
/// on the inputs: it is checked once the program has computed the size, as torch checks its
/// deferred runtime assertions; a range refined on it (`u0 <= 4`) likewise.
#[test]
fn checks_on_sizes_created_by_cond_are_checked_once_computed() {
    let m = FnModule::new("KeepRows", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let pred = x.sum(&[], false)?.gt_scalar(0.0)?;
        let out = cond(
            &pred,
            |ops: &[Tensor]| Ok(vec![ops[0].copy()?]),
            |ops: &[Tensor]| Ok(vec![ops[0].narrow(0, 0, 1)?]),
            std::slice::from_ref(x),
        )?
        .remove(0);
        let rows = out.size(0)?;
        check_size(&rows, Rel::Ne, 1, "one row is not enough")?;
        check_size(&rows, Rel::Le, 4, "at most four rows")?;
        Ok(out.mul_scalar(3.0)?.into())
    });
    let x = randn(&[3, 2]).abs().unwrap();
    let ep = export(
        &m,
        &[x.into()],
        &[],
        Some(&rows("n")),
        &ExportOptions::default(),
    )
    .unwrap();
    let text = ep.to_string();
    assert!(text.contains("u0: VR[0, 4]"), "{text}");
    // The true branch keeps 2 rows: the checks hold once u0 is known.
    let ok = Tensor::from(tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]));
    let got = ep.run(&[ok.clone().into()], &[]).unwrap();
    assert!(close(&got, &eager(&m, &ok)));
    // The false branch keeps 1 row: the check fails after the run, naming it.
    let one = Tensor::from(tch::Tensor::from_slice(&[-1.0f32, -2.0, -3.0, -4.0]).view([2, 2]));
    let e = ep.run(&[one.into()], &[]).unwrap_err();
    assert!(
        matches!(&e, Error::GuardViolated { guard, reason, .. }
            if guard == "u0 != 1" && reason.contains("one row is not enough")),
        "{e}"
    );
    // Five rows taken by the true branch: outside u0's range.
    let five = Tensor::from(tch::Tensor::ones([5, 2], (Kind::Float, Device::Cpu)));
    let e = ep.run(&[five.into()], &[]).unwrap_err();
    assert!(
        matches!(&e, Error::Input { path, reason }
            if path.contains("an output size of cond") && reason.contains("u0 = 5")),
        "{e}"
    );
}

//! Each construct the rewriter handles, rewritten at compile time by `#[rewritable]`, exported
//! with a dynamic dimension (which fails without the rewrite: a tensor read as a bool) and
//! checked against eager on inputs taking every branch; the float16 clamp of the seeds'
//! encoder layers; the dump folder; the reasons given for code it does not handle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, Error, ExportOptions, ExportedProgram, FnModule, Inputs, Module,
    PatchOptions, Result, Tensor, Value, export, patches::any_active, torch_export_patches,
};
use onnx_diagnostic_macros::rewritable;
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_rewrite::{RewriteError, RewriteOptions, or_into_bitor, transform_method};
use tch::{Device, Kind};

pub struct Toy {
    scale: f64,
}

#[rewritable(returns, assigns, checks, loops)]
impl Toy {
    /// Both branches return.
    pub fn returns(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.mul_scalar(self.scale)?;
        if x.amax(&[], false)?.gt_scalar(0.0)?.to_bool()? {
            let z = y.add(x)?;
            return Ok(z);
        } else {
            return y.neg();
        }
    }

    /// Each branch assigns one variable; the other keeps its value.
    pub fn assigns(&self, x: &Tensor) -> Result<Tensor> {
        let mut a = x.mul_scalar(self.scale)?;
        let mut b = x.add_scalar(1.0)?;
        if x.amax(&[], false)?.gt_scalar(0.5)?.to_bool()? {
            a = a.add(&b)?;
        } else {
            b = b.mul_scalar(3.0)?;
        }
        a.mul(&b)
    }

    /// An error exit becomes a check.
    pub fn checks(&self, x: &Tensor) -> Result<Tensor> {
        if x.amin(&[], false)?.lt_scalar(0.0)?.to_bool()? {
            return Err(Error::Model {
                model: "Toy".to_owned(),
                message: "negative input".to_owned(),
            });
        }
        x.sqrt()
    }

    /// A loop over the rows of `x` (the seeds' `for i in range(x.shape[0])`): row `i` of
    /// `dist` is the scaled squared distance from `x[i]` to every row, and `total` sums the
    /// rows seen so far; two carries, the index used by `select` and `select_scatter`, and a
    /// tensor test inside the body.
    pub fn loops(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.size(0)?;
        let mut dist = Tensor::zeros([n.clone(), n], Kind::Float, Device::Cpu)?;
        let mut total = x.sum(&[0], false)?.mul_scalar(0.0)?;
        for i in 0..x.size(0)?.guard_int()? {
            let row = x.select(0, i)?;
            let d = x.sub(&row)?.pow_scalar(2.0)?.sum(&[-1], false)?;
            dist = dist.select_scatter(&d.mul_scalar(self.scale)?, 0, i)?;
            if row.sum(&[], false)?.gt_scalar(0.0)?.to_bool()? {
                total = total.add(&row)?;
            } else {
                total = total.sub(&row)?;
            }
        }
        dist.add(&total.sum(&[], false)?)
    }
}

fn t(v: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from(tch::Tensor::from_slice(v).view(shape))
}

type Method = fn(&Toy, &Tensor) -> Result<Tensor>;

fn module(method: Method) -> impl Module {
    FnModule::new("Toy", &["x"], move |inputs: &Inputs| {
        Ok(method(&Toy { scale: 2.0 }, inputs.tensor("x")?)?.into())
    })
}

fn export_1d(m: &dyn Module, x: &Tensor) -> Result<ExportedProgram> {
    let ds = DynamicShapes {
        args: vec![DynSpec::dims([(0, Dim::new("n"))])],
        kwargs: Vec::new(),
    };
    export(
        m,
        &[x.clone().into()],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
}

/// Exports `method` without the rewrite (a data-dependent error, or for a loop the length
/// made constant) and with it, then checks the diff, and the program and its ONNX file
/// against eager on each input.
fn check_construct(
    method: Method,
    target: &str,
    inputs: &[Tensor],
    diff_has: &[&str],
    graph_has: &str,
) {
    let m = module(method);
    let e = export_1d(&m, &inputs[0]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DataDependent { .. } | Error::ConstraintViolation { .. }
        ),
        "{target}: {e}"
    );
    let g = torch_export_patches(PatchOptions {
        rewrite: vec![target.to_owned()],
        ..PatchOptions::default()
    })
    .unwrap();
    // Only the rewritten method (no patch crate is linked here).
    assert_eq!(g.details().names(), [format!("rewritten_{target}")]);
    let diff = g.details().patched[0].diff();
    for want in diff_has {
        assert!(diff.contains(want), "{want:?} not in\n{diff}");
    }
    let name = target.replace('.', "_");
    insta::assert_snapshot!(format!("{name}_diff"), diff);
    let ep = export_1d(&m, &inputs[0]).unwrap();
    drop(g);
    assert!(ep.to_string().contains(graph_has), "{ep}");
    insta::assert_snapshot!(format!("{name}_program"), ep.to_string());
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for x in inputs {
        let args: Vec<Value> = vec![x.clone().into()];
        let eager = m
            .forward(&Inputs::bind_for(&m, &args, &[]).unwrap())
            .unwrap();
        let run = ep.run(&args, &[]).unwrap();
        assert!(max_diff(&eager, &run).abs <= 1e-6, "{target} {x:?}");
        let ort = session.run(&args, &[]).unwrap();
        assert!(max_diff(&eager, &ort).abs <= 1e-6, "{target} onnx {x:?}");
    }
}

#[test]
fn returns_in_both_branches_become_cond() {
    check_construct(
        Toy::returns,
        "Toy.returns",
        &[
            t(&[1.0, 2.0, -3.0], &[3]),
            t(&[-1.0, -2.0], &[2]),
            t(&[0.5, -2.0, 4.0, 1.0, 0.0], &[5]),
        ],
        &[
            "\n-    if x.amax(&[], false)?",
            "\n+    return ::onnx_diagnostic_core::cond_value(",
        ],
        "torch.ops.higher_order.cond",
    );
}

#[test]
fn assignments_become_cond_returning_the_assigned_variables() {
    check_construct(
        Toy::assigns,
        "Toy.assigns",
        &[
            t(&[1.0, 2.0, -3.0], &[3]),
            t(&[0.1, 0.2], &[2]),
            t(&[0.3, -2.0, 0.4, 0.1, 0.0, -1.0], &[6]),
        ],
        &[
            "\n-    if x.amax(&[], false)?",
            "\n+    let (a, b) = ::onnx_diagnostic_core::cond_value::<",
        ],
        "torch.ops.higher_order.cond",
    );
}

#[test]
fn loops_over_a_dimension_become_scan() {
    let rows = |n: i64, seed: f32| {
        let v: Vec<f32> = (0..n * 3)
            .map(|k| ((k as f32 + seed) * 0.7).sin())
            .collect();
        t(&v, &[n, 3])
    };
    check_construct(
        Toy::loops,
        "Toy.loops",
        // The export length, then longer, shorter, one row and no row.
        &[
            rows(4, 0.0),
            rows(7, 1.0),
            rows(2, 2.0),
            rows(1, 3.0),
            rows(0, 0.0),
        ],
        &[
            "\n-    for i in 0..x.size(0)?.guard_int()? {",
            "\n+    let (mut dist, mut total) = ::onnx_diagnostic_core::for_range::<",
            "\n+        |i, __carries| {",
            "let (mut dist, mut total) = __carries;",
            "cond_value",
        ],
        "torch.ops.higher_order.scan",
    );
}

#[test]
fn error_exits_become_checks() {
    let m = module(Toy::checks);
    let x = t(&[1.0, 4.0, 9.0], &[3]);
    assert!(matches!(
        export_1d(&m, &x).unwrap_err(),
        Error::DataDependent { .. }
    ));
    let g = torch_export_patches(PatchOptions {
        rewrite: vec!["Toy".to_owned()],
        ..PatchOptions::default()
    })
    .unwrap();
    assert_eq!(
        g.details().find("rewritten_Toy.checks").unwrap().target,
        "Toy.checks"
    );
    let ep = export_1d(&m, &x).unwrap();
    drop(g);
    assert!(ep.to_string().contains("aten._assert_async.msg"), "{ep}");
    let good = t(&[16.0, 25.0], &[2]);
    let got = ep.run(&[good.clone().into()], &[]).unwrap();
    let eager = m
        .forward(&Inputs::bind_for(&m, &[good.into()], &[]).unwrap())
        .unwrap();
    assert_eq!(max_diff(&eager, &got).abs, 0.0);
    // A negative input: eager returns the error, the program fails its check with the
    // message.
    let bad: Vec<Value> = vec![t(&[1.0, -1.0], &[2]).into()];
    assert!(
        m.forward(&Inputs::bind_for(&m, &bad, &[]).unwrap())
            .is_err()
    );
    let e = ep.run(&bad, &[]).unwrap_err();
    assert!(
        e.to_string().contains("check failed: Toy: negative input"),
        "{e}"
    );
}

/// The seeds' encoder-layer clamp (`BartEncoderLayer.forward`): in float16, values that
/// overflowed to inf are clamped; the test mixes a dtype test (decided while tracing) and two
/// tensor tests, joined into one by `or_into_bitor`.
pub struct ToyEncoderLayer {
    weight: Tensor,
}

#[rewritable(forward, or_into_bitor)]
impl ToyEncoderLayer {
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let mut hidden_states = h.matmul(&self.weight)?;
        if hidden_states.kind() == Kind::Half
            && (hidden_states.isinf()?.any(&[], false)?.to_bool()?
                || hidden_states.isnan()?.any(&[], false)?.to_bool()?)
        {
            let clamp_value = 65504.0 - 1000.0;
            hidden_states = hidden_states.clamp(Some(-clamp_value), Some(clamp_value))?;
        }
        Ok(hidden_states)
    }
}

#[test]
fn the_float16_clamp_exports_only_with_the_rewrite_and_matches_eager() {
    let layer = ToyEncoderLayer {
        weight: Tensor::from(tch::Tensor::eye(4, (Kind::Half, Device::Cpu)).g_mul_scalar(100.0)),
    };
    let m = FnModule::new("ToyEncoderLayer", &["h"], move |inputs: &Inputs| {
        Ok(layer.forward(inputs.tensor("h")?)?.into())
    });
    let h = |v: f64, rows: i64| {
        Tensor::from(tch::Tensor::full([rows, 4], v, (Kind::Half, Device::Cpu)))
    };
    let ds = DynamicShapes {
        args: vec![DynSpec::dims([(0, Dim::new("batch"))])],
        kwargs: Vec::new(),
    };
    let go = |x: &Tensor| {
        export(
            &m,
            &[x.clone().into()],
            &[],
            Some(&ds),
            &ExportOptions::default(),
        )
    };
    let e = go(&h(1.0, 3)).unwrap_err();
    assert!(matches!(e, Error::DataDependent { .. }), "{e}");
    let g = torch_export_patches(PatchOptions {
        rewrite: vec!["ToyEncoderLayer.forward".to_owned()],
        ..PatchOptions::default()
    })
    .unwrap();
    let ep = go(&h(1.0, 3)).unwrap();
    drop(g);
    assert!(
        ep.to_string().contains("torch.ops.higher_order.cond"),
        "{ep}"
    );
    // 1000 * 100 overflows float16 (inf, clamped to 64504, 64512 in float16); 1 * 100 does
    // not.
    for (v, rows, want) in [
        (1000.0, 2, 64512.0),
        (1.0, 5, 100.0),
        (-1000.0, 1, -64512.0),
    ] {
        let x: Vec<Value> = vec![h(v, rows).into()];
        let eager = m.forward(&Inputs::bind_for(&m, &x, &[]).unwrap()).unwrap();
        let got = ep.run(&x, &[]).unwrap();
        let g = got.as_tensor().unwrap().as_tch().to_kind(Kind::Float);
        assert_eq!(g.size(), [rows, 4]);
        assert_eq!(
            g.max()
                .double_value(&[])
                .abs()
                .max(g.min().double_value(&[]).abs()),
            f64::abs(want)
        );
        assert_eq!(max_diff(&eager, &got).abs, 0.0);
    }
    assert!(!any_active());
}

#[test]
fn the_guard_dumps_the_rewritings() {
    let dir = std::env::temp_dir().join(format!("od-rewrite-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let _g = torch_export_patches(PatchOptions {
            rewrite: vec!["Toy.assigns".to_owned()],
            dump_rewriting: Some(dir.clone()),
            ..PatchOptions::default()
        })
        .unwrap();
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let original = read("Toy.assigns.original.rs");
    let rewritten = read("Toy.assigns.rewritten.rs");
    let diff = read("Toy.assigns.diff");
    assert!(
        original.contains("if x.amax(&[], false)?.gt_scalar(0.5)?.to_bool()? {"),
        "{original}"
    );
    assert!(
        rewritten.contains("::onnx_diagnostic_core::cond_value"),
        "{rewritten}"
    );
    assert!(
        diff.starts_with("--- original\n+++ rewritten\n@@ "),
        "{diff}"
    );
    assert!(
        diff.contains("\n-    if x.amax(&[], false)?.gt_scalar(0.5)?.to_bool()? {"),
        "{diff}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // An unknown target is refused.
    let e = torch_export_patches(PatchOptions {
        rewrite: vec!["Nothing.forward".to_owned()],
        ..PatchOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("#[rewritable"), "{e}");
}

#[test]
fn unsupported_code_is_reported_with_the_reason() {
    let o = RewriteOptions::default();
    let both = "fn f(x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        if x.to_bool()? { y = x.neg()?; return Ok(y); }
        Ok(y)
    }";
    let e = transform_method(both, &o).unwrap_err();
    assert!(
        matches!(e, RewriteError::Unsupported { line: 3, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("both assigns variables and returns"),
        "{e}"
    );
    let w = "fn f(x: &Tensor) -> Result<Tensor> { while x.to_bool()? { } Ok(x.clone()) }";
    assert!(
        transform_method(w, &o)
            .unwrap_err()
            .to_string()
            .contains("cannot rewrite while")
    );
    let nested = "fn f(x: &Tensor) -> Result<Tensor> { if g(x.to_bool()?) { return Ok(x.clone()); } Ok(x.neg()?) }";
    assert!(
        transform_method(nested, &o)
            .unwrap_err()
            .to_string()
            .contains("inside another expression")
    );
    // Loops over a dynamic size: what scan cannot express, with the line.
    let body = |b: &str| {
        format!(
            "fn f(x: &Tensor) -> Result<Tensor> {{\n    let mut z = x.clone();\n    let n = x.size(0)?.guard_int()?;\n    for i in 0..n {{\n        {b}\n    }}\n    Ok(z)\n}}"
        )
    };
    for (b, want) in [
        (
            "z = z.narrow(0, i, 1)?;",
            "line 5: cannot rewrite for: the loop index `i` is used as a number",
        ),
        (
            "if i == 2 { break; } z = z.neg()?;",
            "line 5: cannot rewrite for: `break`, `continue` or `return` in the loop",
        ),
        (
            "rows.push(x.select(0, i)?);",
            "line 5: cannot rewrite for: `rows` declared before the loop is changed in place",
        ),
        (
            "let y = x.select(0, i)?;",
            "line 4: cannot rewrite for: the loop assigns no tensor declared before it",
        ),
    ] {
        let e = transform_method(&body(b), &o).unwrap_err().to_string();
        assert!(e.starts_with(want), "{b}: {e}");
    }
    // A loop to a plain number, or filtered out, is left alone.
    let r = transform_method(&body("z = z.neg()?;").replace("0..n", "0..3"), &o).unwrap();
    assert_eq!(r.n_rewritten, 0);
    let keep_loops = RewriteOptions {
        filter_loop: Some(|_| false),
        ..RewriteOptions::default()
    };
    let r = transform_method(&body("z = z.neg()?;"), &keep_loops).unwrap();
    assert_eq!(r.n_rewritten, 0);
    let r = transform_method(&body("z = z.neg()?;"), &o).unwrap();
    assert_eq!(r.n_rewritten, 1);
    assert!(
        r.code
            .contains(">(\n        x.size(0)?,\n        z,\n        |i, __carries| {\n            let mut z = __carries;\n            z = z.neg()?;\n            Ok(z)\n"),
        "{}",
        r.code
    );
    // Tests on other values are left alone.
    let plain = "fn f(x: &Tensor, flag: bool) -> Result<Tensor> { if flag { return Ok(x.neg()?); } Ok(x.clone()) }";
    let r = transform_method(plain, &o).unwrap();
    assert_eq!((r.n_rewritten, r.diff.as_str()), (0, ""));
    // or_into_bitor joins two tensor tests into one.
    let or = "fn f(x: &Tensor) -> Result<Tensor> { if a.to_bool()? || b.to_bool()? { return Ok(x.neg()?); } Ok(x.clone()) }";
    let r = transform_method(
        or,
        &RewriteOptions {
            pre_rewriter: Some(or_into_bitor),
            ..RewriteOptions::default()
        },
    )
    .unwrap();
    assert!(
        r.code.contains("Cond::tensor(&((a).logical_or(&(b))?))"),
        "{}",
        r.code
    );
}

/// `code_needing_rewriting` is the Python package's (onnx-diagnostic 0.9.3, run by
/// `onnx_diagnostic_testing::oracle`): the same known classes, and for each of them and for
/// the architectures of this workspace, the same methods in the same order, each with a
/// filter and with the `or` → `|` pre-rewriter (`ast_or_into_bitor` there).
#[test]
fn code_needing_rewriting_is_the_python_packages() {
    use onnx_diagnostic_rewrite::{code_needing_rewriting, known_transformers_rewritings};
    use onnx_diagnostic_testing::oracle::Oracle;
    let ours = known_transformers_rewritings();
    let mut names: Vec<&str> = ours.keys().copied().collect();
    names.extend([
        "LlamaForCausalLM",
        "Gemma2ForCausalLM",
        "Qwen2VLForConditionalGeneration",
        "T5ForConditionalGeneration",
        "UNet2DConditionModel",
    ]);
    let mut o = Oracle::new();
    let i = o.code_needing_rewriting(&names);
    let answers = o.run();
    let py = answers[i].json();
    let known: Vec<&str> = py["known"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(ours.keys().copied().collect::<Vec<_>>(), known);
    let rewrites = py["rewrites"].as_object().unwrap();
    assert!(rewrites.len() >= names.len());
    for (name, expected) in rewrites {
        let got = code_needing_rewriting(name);
        let expected: Vec<(String, Option<String>, bool)> = expected
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap().to_owned(),
                            r[1].as_str()
                                .map(|p| p.trim_start_matches("ast_").to_owned()),
                            r[2].as_bool().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let got: Vec<(String, Option<String>, bool)> = got
            .iter()
            .map(|r| {
                (
                    r.function.clone(),
                    r.pre_rewriter.map(str::to_owned),
                    !r.filter_node.is_empty(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{name}");
    }
}

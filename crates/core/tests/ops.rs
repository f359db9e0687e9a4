//! Op-level export tests: each op case of `onnx-diagnostic-testing` is exported with dynamic
//! dims, then the recorded graph is run on inputs of other shapes and compared with the eager
//! result; the printed graph is checked where the symbolic sizes are worth seeing (negative and
//! symbolic slice bounds, pooling, chunk, casts, creation ops with symbolic sizes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{Error, ExportOptions, ExportedProgram, Inputs, Value, export};
use onnx_diagnostic_testing::{Case, cases, dynamic_shapes, randn};
use tch::{Device, Kind};

fn case(name: &str) -> Case {
    cases().into_iter().find(|c| c.name == name).unwrap()
}

fn leaves(v: &Value) -> Vec<onnx_diagnostic_core::Tensor> {
    v.flatten("out")
        .unwrap()
        .0
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// Exports the case, then checks that the graph gives the eager result, exactly in shape and
/// dtype and within 1e-6 in value, on every other input set. Returns the program.
fn check(case: Case) -> ExportedProgram {
    let m = case.module.as_ref();
    let ds = dynamic_shapes(case.example.len(), &case.dims);
    let args: Vec<Value> = case.example.into_iter().map(Value::from).collect();
    let ep = export(m, &args, &[], Some(&ds), &ExportOptions::default())
        .unwrap_or_else(|e| panic!("{}: export failed: {e}", case.name));
    for set in case.others {
        let args: Vec<Value> = set.into_iter().map(Value::from).collect();
        let eager = m
            .forward(&Inputs::bind_for(m, &args, &[]).unwrap())
            .unwrap();
        let got = ep
            .run(&args, &[])
            .unwrap_or_else(|e| panic!("{}: run failed: {e}\n{ep}", case.name));
        let (e, g) = (leaves(&eager), leaves(&got));
        assert_eq!(e.len(), g.len(), "{}: number of outputs", case.name);
        for (k, (e, g)) in e.iter().zip(&g).enumerate() {
            assert_eq!(e.concrete_shape(), g.concrete_shape(), "output {k}\n{ep}");
            assert_eq!(e.kind(), g.kind(), "output {k}");
            let (e, g) = (
                e.as_tch().to_kind(Kind::Double),
                g.as_tch().to_kind(Kind::Double),
            );
            if e.numel() > 0 {
                let diff = (&e - &g).abs().max().double_value(&[]);
                assert!(diff <= 1e-6, "{}: output {k}: {diff}", case.name);
            }
        }
    }
    ep
}

#[test]
fn slices_with_negative_and_symbolic_bounds() {
    let text = check(case("slices")).to_string();
    assert!(text.contains(r#""f32[batch, 3]""#), "{text}");
    assert!(text.contains(r#""f32[batch, len - 2]""#), "{text}");
    assert!(text.contains(r#""f32[batch, (len//2)]""#), "{text}");
    assert!(text.contains(r#""f32[len]""#), "{text}");
}

#[test]
fn gather_scatter_index_select_index_put() {
    let text = check(case("indexing")).to_string();
    assert!(text.contains("aten.gather.default"), "{text}");
    assert!(text.contains("aten.scatter.src"), "{text}");
    assert!(text.contains(r#"index_select: "f32[batch, k]""#), "{text}");
    assert!(text.contains(r#"index: "f32[r, len]""#), "{text}");
}

#[test]
fn select_and_select_scatter_take_sizes_and_index_tensors_as_torch_does() {
    let c = case("select_scatter");
    let (x, i) = (c.example[0].as_tch().shallow_clone(), c.example[1].clone());
    let m = c.module.as_ref();
    let args: Vec<Value> = c.example.iter().cloned().map(Value::from).collect();
    let got = leaves(
        &m.forward(&Inputs::bind_for(m, &args, &[]).unwrap())
            .unwrap(),
    );
    // libtorch's own select / select_scatter on the same values.
    let k = i.as_tch().int64_value(&[]);
    let want = [
        x.select(1, k),
        x.select_scatter(&(x.select(0, 0) * 2.0), 0, -1),
        x.select_scatter(&(-x.select(1, 0)), 1, x.size()[1] - 1),
        x.select_scatter(&(x.select(2, k) + 1.0), 2, k),
    ];
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_tch(), w);
    }
    let text = check(c).to_string();
    assert!(text.contains("aten.index_put.default"), "{text}");
    assert!(
        text.contains(r#"index_select: "f32[batch, 1, 4]""#),
        "{text}"
    );
}

#[test]
fn conv_pool_upsample_follow_symbolic_spatial_sizes() {
    let text = check(case("conv")).to_string();
    assert!(
        text.contains(r#"avg_pool2d: "f32[batch, 4, (height//2), (width//2)]""#),
        "{text}"
    );
    assert!(
        text.contains(r#"upsample_nearest2d: "f32[batch, 4, 2*(height//2), 2*(width//2)]""#),
        "{text}"
    );
    assert!(
        text.contains(r#"conv2d_1: "f32[batch, 2, ((height - 3)//2) + 1, ((width - 3)//2) + 1]""#),
        "{text}"
    );
    assert!(text.contains("p_conv_weight: PARAMETER"), "{text}");
}

#[test]
fn topk_cumsum_chunk_reductions_casts() {
    let ep = check(case("reduce"));
    let text = ep.to_string();
    assert!(
        text.contains(r#"topk_result = torch.ops.aten.topk.default(x, 3, -1, True, True)"#),
        "{text}"
    );
    assert!(text.contains(r#""f32[batch, ((len + 1)//2)]""#), "{text}");
    assert!(
        text.contains(r#""f32[batch, len - ((len + 1)//2)]""#),
        "{text}"
    );
    assert!(
        text.contains("torch.ops.aten._to_copy.default(_to_copy, None, 'cpu')"),
        "{text}"
    );
    // chunk's number of pieces is guarded: a length of 1 gives one piece, so it is refused,
    // naming where the model called chunk.
    let err = ep.run(&[randn(&[2, 1]).into()], &[]).unwrap_err();
    assert!(matches!(err, Error::GuardViolated { .. }), "{err}");
    assert!(
        err.to_string().contains("crates/testing/src/lib.rs"),
        "{err}"
    );
}

#[test]
fn creation_ops_and_gqa_attention_with_symbolic_sizes() {
    let text = check(case("attention")).to_string();
    assert!(
        text.contains("torch.ops.aten.arange.start_step(-seq + total, total, 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"scaled_dot_product_attention: "f32[batch, 4, seq, 8]""#),
        "{text}"
    );
}

#[test]
fn a_device_move_follows_the_machine() {
    use onnx_diagnostic_testing::machine::{expects_cuda, mismatch};
    let x = randn(&[2, 2]);
    let moved = x.to_device(Device::Cuda(0));
    if expects_cuda() {
        // A GPU machine: the tensor arrives there with its values.
        assert!(
            tch::Cuda::is_available(),
            "{}",
            mismatch("libtorch sees no GPU")
        );
        let y = moved.unwrap();
        assert_eq!(y.device(), Device::Cuda(0));
        assert!(y.as_tch().to_device(Device::Cpu).equal(x.as_tch()));
    } else {
        // Without CUDA the move fails in the kernel: the error names the op and the caller, it
        // does not panic.
        assert!(
            !tch::Cuda::is_available(),
            "{}",
            mismatch("libtorch sees a GPU")
        );
        let text = moved.unwrap_err().to_string();
        assert!(text.contains("aten._to_copy.default"), "{text}");
        assert!(text.contains("tests/ops.rs"), "{text}");
    }
}

#[test]
fn routing_ops_one_hot_index_add_scatter_add_sort_repeat_interleave() {
    let text = check(case("routing")).to_string();
    assert!(text.contains(r#"one_hot: "i64[n, 2, 4]""#), "{text}");
    assert!(
        text.contains(r#"repeat_interleave: "f32[2*n, 3]""#),
        "{text}"
    );
    assert!(text.contains("aten.index_add.default"), "{text}");
    assert!(text.contains("aten.scatter_add.default"), "{text}");
    assert!(
        text.contains(r#"sort_2_result = torch.ops.aten.sort.default(x, 0, False)"#),
        "{text}"
    );
}

#[test]
fn nonzero_masked_select_bincount_give_unbacked_sizes_bound_at_run_time() {
    let text = check(case("data_dependent")).to_string();
    // Fresh unbacked symbols, printed and ranged as torch prints them.
    assert!(text.contains(r#"nonzero: "i64[u0, 2]""#), "{text}");
    assert!(text.contains(r#"index_select: "f32[u1, 4]""#), "{text}");
    assert!(text.contains(r#"bincount: "i64[u2]""#), "{text}");
    assert!(text.contains(r#"masked_select: "f32[u3]""#), "{text}");
    assert!(text.contains("u0: VR[0, int_oo]"), "{text}");
    assert!(text.contains(r#""f32[4*u1]""#), "{text}");
}

/// A module that branches on the number of selected rows.
fn branch_on_count(bound_first: bool) -> impl onnx_diagnostic_core::Module {
    onnx_diagnostic_core::FnModule::new("BranchOnCount", &["x"], move |i: &Inputs| {
        let x = i.tensor("x")?;
        let rows = x.gt_scalar(0.0)?.nonzero()?;
        let n = rows.size(0)?;
        if bound_first {
            onnx_diagnostic_core::check_size(&n, onnx_diagnostic_core::Rel::Ge, 1, "a row")?;
        }
        if n.compare(onnx_diagnostic_core::Rel::Eq, 0)? {
            return Ok(Value::from(x.clone()));
        }
        Ok(Value::from(x.index_select(0, &rows.select(1, 0)?)?))
    })
}

#[test]
fn a_decision_on_an_unbacked_size_is_a_data_dependent_error_unless_its_range_settles_it() {
    let x = Value::from(randn(&[3, 4]).abs().unwrap());
    let ds = dynamic_shapes(1, &[(0, 0, "batch")]);
    let err = export(
        &branch_on_count(false),
        std::slice::from_ref(&x),
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::DataDependent { .. }), "{text}");
    assert!(
        text.contains("size u0 (made by nonzero at crates/core/tests/ops.rs:"),
        "{text}"
    );
    assert!(text.contains("range [0, inf]"), "{text}");
    assert!(text.contains("`u0 != 0`"), "{text}");
    // The line of the comparison in the model code.
    let line = 1 + include_str!("ops.rs")
        .lines()
        .position(|l| l.contains("if n.compare(onnx_diagnostic_core::Rel::Eq, 0)?"))
        .unwrap();
    assert!(
        text.contains(&format!("crates/core/tests/ops.rs:{line}:")),
        "{line}: {text}"
    );
    // check_size(u0 >= 1) settles `u0 == 0`: the export goes through, and runs on other counts.
    let ep = export(
        &branch_on_count(true),
        &[x],
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap();
    let printed = ep.to_string();
    assert!(printed.contains("u0: VR[1, int_oo]"), "{printed}");
    let other = tch::Tensor::from_slice(&[
        1.0f32, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 2.0, 3.0, -1.0, -1.0,
    ])
    .reshape([3, 4]);
    let got = ep
        .run(
            &[Value::from(onnx_diagnostic_core::Tensor::from(
                other.shallow_clone(),
            ))],
            &[],
        )
        .unwrap();
    let got = leaves(&got)[0].as_tch().shallow_clone();
    assert_eq!(got.size(), vec![3, 4]);
    let rows: Vec<f32> = Vec::try_from(got.select(1, 0)).unwrap();
    assert_eq!(rows, vec![1.0, 2.0, 2.0]);
}

#[test]
fn resampling_sizes_follow_size_and_scale_factors() {
    let text = check(case("resampling")).to_string();
    for shape in [
        r#"upsample_nearest2d: "f32[batch, 3, skip_height, skip_width]""#,
        r#"upsample_nearest2d_1: "f32[batch, 3, 2*height, 2*width]""#,
        r#"upsample_nearest2d_2: "f32[batch, 3, ((3*height)//2), ((3*width)//2)]""#,
        r#"upsample_bilinear2d_1: "f32[batch, 3, skip_height, skip_width]""#,
        r#"upsample_bilinear2d_2: "f32[batch, 3, (height//2), ((5*width)//4)]""#,
        r#"constant_pad_nd: "f32[batch, 3, height + 1, width + 1]""#,
        r#"constant_pad_nd_1: "f32[batch, 3, height, width + 1]""#,
    ] {
        assert!(text.contains(shape), "{shape} missing from\n{text}");
    }
}

/// Our `interpolate` and `pad` give what torch's `F.interpolate` and `F.pad` give (run by the
/// venv's Python on the same tensor): the sizes of scale factors and the coordinate mapping
/// through them, both bilinear alignments, a crop and a fill value.
#[test]
fn interpolate_and_pad_match_torch_functional() {
    use onnx_diagnostic_core::{InterpolateMode as M, Resize as R, SymInt, Tensor};
    let x = Tensor::from(tch::Tensor::randn([2, 3, 5, 7], (Kind::Float, Device::Cpu)));
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interpolate");
    std::fs::create_dir_all(&dir).unwrap();
    tch::Tensor::write_safetensors(&[("x", x.as_tch())], dir.join("x.safetensors")).unwrap();
    let script = r#"
import sys, torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
d = sys.argv[1]
x = load_file(d + "/x.safetensors")["x"]
out = {
    "size_nearest": F.interpolate(x, size=(9, 11), mode="nearest"),
    "scale_nearest": F.interpolate(x, scale_factor=1.5, mode="nearest"),
    "scale_nearest_2": F.interpolate(x, scale_factor=(0.6, 1.7), mode="nearest"),
    "size_bilinear": F.interpolate(x, size=(8, 13), mode="bilinear", align_corners=False),
    "size_bilinear_ac": F.interpolate(x, size=(8, 13), mode="bilinear", align_corners=True),
    "scale_bilinear": F.interpolate(x, scale_factor=(0.5, 1.25), mode="bilinear"),
    "pad": F.pad(x, (0, 1, 0, 1)),
    "pad_value": F.pad(x, (-1, 2, 3, 0), mode="constant", value=-3.5),
}
save_file({k: v.contiguous() for k, v in out.items()}, d + "/out.safetensors")
"#;
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let status = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let expected: std::collections::HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(dir.join("out.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let size = |h: i64, w: i64| R::Size([SymInt::new(h), SymInt::new(w)]);
    let bilinear = |align_corners| M::Bilinear { align_corners };
    let ours = [
        (
            "size_nearest",
            x.interpolate(&size(9, 11), M::Nearest).unwrap(),
        ),
        (
            "scale_nearest",
            x.interpolate(&R::Scale([1.5, 1.5]), M::Nearest).unwrap(),
        ),
        (
            "scale_nearest_2",
            x.interpolate(&R::Scale([0.6, 1.7]), M::Nearest).unwrap(),
        ),
        (
            "size_bilinear",
            x.interpolate(&size(8, 13), bilinear(false)).unwrap(),
        ),
        (
            "size_bilinear_ac",
            x.interpolate(&size(8, 13), bilinear(true)).unwrap(),
        ),
        (
            "scale_bilinear",
            x.interpolate(&R::Scale([0.5, 1.25]), bilinear(false))
                .unwrap(),
        ),
        ("pad", x.pad(&[0, 1, 0, 1], 0.0).unwrap()),
        ("pad_value", x.pad(&[-1, 2, 3, 0], -3.5).unwrap()),
    ];
    for (name, got) in ours {
        let e = &expected[name];
        assert_eq!(got.as_tch().size(), e.size(), "{name}");
        let d = (got.as_tch() - e).abs().max().double_value(&[]);
        assert!(d <= 1e-6, "{name}: {d}");
    }
    // A scale that is no small ratio on a dynamic size is refused when exporting; eagerly the
    // size is static and the scale is taken as torch takes it.
    let e = x
        .interpolate(&R::Scale([f64::NAN, 1.0]), M::Nearest)
        .unwrap_err()
        .to_string();
    assert!(e.contains("scale factor NaN"), "{e}");
}

/// The vision ops export with dynamic patches, images and batch (the data-dependent length of
/// `repeat_interleave` with tensor counts included), and the eager values are libtorch's own:
/// `masked_scatter` (written as a cumsum-indexed gather) against `Tensor.masked_scatter`,
/// `floor_divide` and `remainder` against Python's `//` and `%` on negative values, and
/// `repeat_interleave` against `torch.repeat_interleave`.
#[test]
fn vision_ops_export_and_match_libtorch() {
    let ep = check(case("vision"));
    let text = ep.to_string();
    assert!(
        text.contains("aten.repeat_interleave.self_Tensor"),
        "{text}"
    );
    assert!(text.contains("aten.conv3d.default"), "{text}");
    for (shape, ratio) in [([2, 5, 4], 0.5), ([1, 7, 3], 0.0), ([3, 2, 6], 1.0)] {
        let x = tch::Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let mask = tch::Tensor::rand([shape[0], shape[1], 1], (Kind::Float, Device::Cpu)).lt(ratio);
        let n = mask.sum(Kind::Int64).int64_value(&[]) * shape[2];
        let source = tch::Tensor::randn([n.max(1) + 3], (Kind::Float, Device::Cpu));
        let expected = x.masked_scatter(&mask, &source);
        let got = onnx_diagnostic_core::Tensor::from(x.shallow_clone())
            .masked_scatter(
                &onnx_diagnostic_core::Tensor::from(mask.shallow_clone()),
                &onnx_diagnostic_core::Tensor::from(source.shallow_clone()),
            )
            .unwrap();
        assert!(got.as_tch().equal(&expected), "{shape:?} {ratio}");
    }
    let a = tch::Tensor::from_slice(&[-7_i64, -6, -1, 0, 1, 5, 7]);
    let b = tch::Tensor::from_slice(&[3_i64, 3, 3, 3, -3, -3, 2]);
    let (ta, tb) = (
        onnx_diagnostic_core::Tensor::from(a.shallow_clone()),
        onnx_diagnostic_core::Tensor::from(b.shallow_clone()),
    );
    let q: Vec<i64> = Vec::try_from(ta.floor_divide(&tb).unwrap().as_tch()).unwrap();
    let r: Vec<i64> = Vec::try_from(ta.remainder(&tb).unwrap().as_tch()).unwrap();
    // Python's `a // b` rounds down, and `a % b = a - (a // b) * b` has the sign of b.
    let (av, bv): (Vec<i64>, Vec<i64>) = (Vec::try_from(&a).unwrap(), Vec::try_from(&b).unwrap());
    let floor: Vec<i64> = av
        .iter()
        .zip(&bv)
        .map(|(x, y)| (*x as f64 / *y as f64).floor() as i64)
        .collect();
    let rem: Vec<i64> = av
        .iter()
        .zip(&bv)
        .zip(&floor)
        .map(|((x, y), f)| x - f * y)
        .collect();
    assert_eq!(q, floor);
    assert_eq!(r, rem);
    assert!(
        r.iter()
            .zip(&bv)
            .all(|(r, b)| *r == 0 || (*r < 0) == (*b < 0))
    );
    let reps = onnx_diagnostic_core::Tensor::from(tch::Tensor::from_slice(&[2_i64, 0, 3]));
    let vals = onnx_diagnostic_core::Tensor::from(tch::Tensor::from_slice(&[4_i64, 5, 6]));
    let out: Vec<i64> =
        Vec::try_from(vals.repeat_interleave_tensor(&reps).unwrap().as_tch()).unwrap();
    assert_eq!(out, [4, 4, 6, 6, 6]);
}

/// `conv_transpose2d` (SAM's upscaling, and with padding, output padding, dilation and groups)
/// exports with symbolic output sizes that the runs on other shapes confirm.
#[test]
fn transposed_convolutions_export_with_symbolic_sizes() {
    let text = check(case("upscaling")).to_string();
    assert!(text.contains("aten.conv_transpose2d.input"), "{text}");
    assert!(
        text.contains("\"f32[batch, 2, 4*height, 4*width]\""),
        "{text}"
    );
    assert!(
        text.contains("\"f32[batch, 6, 2*height + 2, 3*width - 2]\""),
        "{text}"
    );
}

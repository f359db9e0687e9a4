//! Op-level export tests: each group of ops is exported with dynamic dims, then the recorded
//! graph is run on inputs of other shapes and compared with the eager result. The toy
//! transformer of `export.rs` covers the LLM ops; these cover the others (slicing with
//! negative and symbolic bounds, gather/scatter/index_put, convolution and pooling, topk,
//! cumsum, chunk, reductions, casts, creation ops, GQA attention).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, Error, ExportOptions, ExportedProgram, FnModule, Inputs, Module,
    Result, SymInt, Tensor, Value, export,
};
use tch::{Device, Kind};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::from(tch::Tensor::randn(shape, (Kind::Float, Device::Cpu)))
}

fn randint(high: i64, shape: &[i64]) -> Tensor {
    Tensor::from(tch::Tensor::randint(
        high,
        shape,
        (Kind::Int64, Device::Cpu),
    ))
}

fn leaves(v: &Value) -> Vec<Tensor> {
    v.flatten("out").0.into_iter().map(|(_, t)| t).collect()
}

/// Exports `m` on `example` with `dims` (`(input, dim, name)`), then checks that the graph
/// gives the eager result, exactly in shape and dtype and within 1e-6 in value, on every set
/// of `others`. Returns the program for further assertions.
fn check<F: Fn(&Inputs) -> Result<Value>>(
    m: &FnModule<F>,
    example: Vec<Tensor>,
    dims: &[(usize, usize, &str)],
    others: Vec<Vec<Tensor>>,
) -> ExportedProgram {
    let mut specs = vec![DynSpec::Static; example.len()];
    for (input, dim, name) in dims {
        if let DynSpec::Tensor(map) = &mut specs[*input] {
            map.insert(*dim, Dim::new(name));
        } else {
            specs[*input] = DynSpec::dims([(*dim, Dim::new(name))]);
        }
    }
    let ds = DynamicShapes {
        args: specs,
        kwargs: Vec::new(),
    };
    let args: Vec<Value> = example.into_iter().map(Value::from).collect();
    let ep = export(
        m,
        &args,
        &[],
        Some(&ds),
        &ExportOptions { stop_if_static: 1 },
    )
    .unwrap_or_else(|e| panic!("{}: export failed: {e}", m.class_name()));
    for set in others {
        let args: Vec<Value> = set.into_iter().map(Value::from).collect();
        let eager = m
            .forward(&Inputs::bind_for(m, &args, &[]).unwrap())
            .unwrap();
        let got = ep
            .run(&args, &[])
            .unwrap_or_else(|e| panic!("{}: run failed: {e}\n{ep}", m.class_name()));
        let (e, g) = (leaves(&eager), leaves(&got));
        assert_eq!(e.len(), g.len(), "{}: number of outputs", m.class_name());
        for (k, (e, g)) in e.iter().zip(&g).enumerate() {
            assert_eq!(e.concrete_shape(), g.concrete_shape(), "output {k}\n{ep}");
            assert_eq!(e.kind(), g.kind(), "output {k}");
            let (e, g) = (
                e.as_tch().to_kind(Kind::Double),
                g.as_tch().to_kind(Kind::Double),
            );
            if e.numel() > 0 {
                let diff = (&e - &g).abs().max().double_value(&[]);
                assert!(diff <= 1e-6, "{}: output {k}: {diff}", m.class_name());
            }
        }
    }
    ep
}

#[test]
fn slices_with_negative_and_symbolic_bounds() {
    let m = FnModule::new("Slices", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let n = x.size(1)?;
        let tail = x.slice(1, Some(SymInt::new(-3)), None, 1)?; // x[:, -3:]
        let inner = x.slice(1, Some(SymInt::new(1)), Some(SymInt::new(-1)), 1)?; // x[:, 1:-1]
        let strided = x.slice(1, None, Some(&n - 1), 2)?; // x[:, :n-1:2]
        let last_two = x.narrow(1, &n - 2, 2)?;
        let row = x.select(0, -1)?;
        Ok(Value::Tuple(vec![
            tail.into(),
            inner.into(),
            strided.into(),
            last_two.into(),
            row.into(),
        ]))
    });
    let ep = check(
        &m,
        vec![randn(&[4, 10])],
        &[(0, 0, "batch"), (0, 1, "len")],
        vec![
            vec![randn(&[3, 7])],
            vec![randn(&[1, 5])],
            vec![randn(&[2, 3])],
        ],
    );
    let text = ep.to_string();
    assert!(text.contains(r#""f32[batch, 3]""#), "{text}");
    assert!(text.contains(r#""f32[batch, len - 2]""#), "{text}");
    assert!(text.contains(r#""f32[batch, (len//2)]""#), "{text}");
    assert!(text.contains(r#""f32[len]""#), "{text}");
}

#[test]
fn gather_scatter_index_select_index_put() {
    let m = FnModule::new(
        "Indexing",
        &["x", "idx", "cols", "rows", "vals"],
        |i: &Inputs| {
            let x = i.tensor("x")?;
            let idx = i.tensor("idx")?;
            let g = x.gather(1, idx)?;
            let s = x.scatter(1, idx, &g.mul_scalar(2.0)?)?;
            let sel = x.index_select(1, i.tensor("cols")?)?;
            let rows = i.tensor("rows")?;
            let put = x.index_put(&[Some(rows)], i.tensor("vals")?, false)?;
            let acc = x.index_put(&[Some(rows)], i.tensor("vals")?, true)?;
            let picked = x.index(&[rows])?;
            Ok(Value::Tuple(vec![
                g.into(),
                s.into(),
                sel.into(),
                put.into(),
                acc.into(),
                picked.into(),
            ]))
        },
    );
    // rows index only row 0, so they stay valid for every batch size.
    let set = |b: i64, k: i64, r: i64| {
        vec![
            randn(&[b, 6]),
            randint(6, &[b, 3]),
            randint(6, &[k]),
            randint(1, &[r]),
            randn(&[r, 6]),
        ]
    };
    let ep = check(
        &m,
        set(4, 5, 2),
        &[
            (0, 0, "batch"),
            (1, 0, "batch"),
            (2, 0, "k"),
            (3, 0, "r"),
            (4, 0, "r"),
        ],
        vec![set(2, 3, 1), set(1, 1, 3), set(6, 9, 2)],
    );
    let text = ep.to_string();
    assert!(text.contains("aten.gather.default"), "{text}");
    assert!(text.contains("aten.scatter.src"), "{text}");
    assert!(text.contains(r#"index_select: "f32[batch, k]""#), "{text}");
    assert!(text.contains(r#"index: "f32[r, 6]""#), "{text}");
}

#[test]
fn conv_pool_upsample_follow_symbolic_spatial_sizes() {
    tch::manual_seed(1);
    let (w, b, w2) = (randn(&[4, 3, 3, 3]), randn(&[4]), randn(&[2, 4, 3, 3]));
    let (wc, bc, w2c) = (w.clone(), b.clone(), w2.clone());
    let m = FnModule::new("Conv", &["x"], move |i: &Inputs| {
        let x = i.tensor("x")?;
        let y = x
            .conv2d(&wc, Some(&bc), [1, 1], [1, 1], [1, 1], 1)?
            .relu()?;
        let z = y.avg_pool2d([2, 2], [2, 2], [0, 0])?;
        let u = z.upsample_nearest2d(2)?;
        let strided = y.conv2d(&w2c, None, [2, 2], [0, 0], [1, 1], 1)?;
        let gn = y.group_norm(2, None, None, 1e-5)?;
        Ok(Value::Tuple(vec![u.into(), strided.into(), gn.into()]))
    })
    .with_parameters(vec![
        ("conv.weight".to_owned(), w),
        ("conv.bias".to_owned(), b),
        ("conv2.weight".to_owned(), w2),
    ]);
    let ep = check(
        &m,
        vec![randn(&[2, 3, 8, 12])],
        &[(0, 0, "batch"), (0, 2, "height"), (0, 3, "width")],
        vec![
            vec![randn(&[1, 3, 10, 6])],
            vec![randn(&[3, 3, 7, 9])],
            vec![randn(&[1, 3, 3, 4])],
        ],
    );
    let text = ep.to_string();
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
    let m = FnModule::new("Reduce", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let (values, indices) = x.topk(3, -1, true, true)?;
        let c = x.cumsum(1)?;
        let parts = x.chunk(2, 1)?;
        let (mx, amx) = x.max_dim(1, false)?;
        let (mn, _) = x.min_dim(0, true)?;
        let arg = x.argmax(1, true)?;
        let pos = x.gt_scalar(0.0)?;
        let any = pos.any(&[1], false)?;
        let all = pos.all(&[], false)?;
        let s = x.sum(&[0, 1], false)?;
        let mean = x.mean(&[1], true)?;
        let amin = x.amin(&[0], false)?;
        let half = x.to_kind(Kind::Double)?.to_device(Device::Cpu)?;
        let ls = x.log_softmax(-1)?;
        let gelu = x.gelu("tanh")?.add(&x.gelu("none")?)?;
        let clamped = x.clamp(Some(-0.5), None)?.clamp(None, Some(0.5))?;
        let mut out: Vec<Value> = vec![values.into(), indices.into(), c.into()];
        out.extend(parts.into_iter().map(Value::from));
        out.extend(
            [
                mx, amx, mn, arg, any, all, s, mean, amin, half, ls, gelu, clamped,
            ]
            .into_iter()
            .map(Value::from),
        );
        Ok(Value::Tuple(out))
    });
    let ep = check(
        &m,
        vec![randn(&[3, 8])],
        &[(0, 0, "batch"), (0, 1, "len")],
        vec![
            vec![randn(&[1, 5])],
            vec![randn(&[4, 3])],
            vec![randn(&[2, 9])],
        ],
    );
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
    // chunk's number of pieces is guarded: a length of 1 gives one piece, so it is refused.
    let err = ep.run(&[randn(&[2, 1]).into()], &[]).unwrap_err();
    assert!(matches!(err, Error::GuardViolated { .. }), "{err}");
    assert!(err.to_string().contains("tests/ops.rs"), "{err}");
}

#[test]
fn creation_ops_and_gqa_attention_with_symbolic_sizes() {
    let m = FnModule::new("Attention", &["q", "k", "v"], |i: &Inputs| {
        let (q, k, v) = (i.tensor("q")?, i.tensor("k")?, i.tensor("v")?);
        let (sq, sk) = (q.size(2)?, k.size(2)?);
        // A causal mask for a query block at the end of the keys (a KV cache of sk - sq).
        let rows = Tensor::arange(&sk - &sq, sk.clone(), 1, Kind::Int64, Device::Cpu)?;
        let cols = Tensor::arange(0, sk.clone(), 1, Kind::Int64, Device::Cpu)?;
        let allowed = cols.unsqueeze(0)?.le(&rows.unsqueeze(1)?)?;
        let zeros = Tensor::zeros(vec![sq.clone(), sk.clone()], Kind::Float, Device::Cpu)?;
        let mask = zeros.masked_fill(&allowed.logical_not()?, f64::NEG_INFINITY)?;
        let with_mask =
            Tensor::scaled_dot_product_attention(q, k, v, Some(&mask), false, None, true)?;
        let causal = Tensor::scaled_dot_product_attention(q, q, q, None, true, Some(0.5), false)?;
        let ones = Tensor::ones(vec![sq.clone()], Kind::Float, Device::Cpu)?;
        let tri = Tensor::full(vec![sq.clone(), sq], 1.0, Kind::Float, Device::Cpu)?
            .tril(0)?
            .add(&ones)?;
        Ok(Value::Tuple(vec![
            with_mask.into(),
            causal.into(),
            tri.into(),
        ]))
    });
    // 4 query heads share 2 key/value heads.
    let set = |b: i64, sq: i64, sk: i64| {
        vec![
            randn(&[b, 4, sq, 8]),
            randn(&[b, 2, sk, 8]),
            randn(&[b, 2, sk, 8]),
        ]
    };
    let ep = check(
        &m,
        set(2, 3, 7),
        &[
            (0, 0, "batch"),
            (1, 0, "batch"),
            (2, 0, "batch"),
            (0, 2, "seq"),
            (1, 2, "total"),
            (2, 2, "total"),
        ],
        vec![set(1, 1, 1), set(3, 2, 9), set(1, 5, 5)],
    );
    let text = ep.to_string();
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
fn a_device_move_works_or_names_the_op() {
    // Without CUDA the move fails in the kernel: the error names the op and the caller, it
    // does not panic. With CUDA the tensor arrives there.
    let x = randn(&[2, 2]);
    match x.to_device(Device::Cuda(0)) {
        Ok(y) => {
            assert!(tch::Cuda::is_available());
            assert_eq!(y.device(), Device::Cuda(0));
        }
        Err(err) => {
            assert!(!tch::Cuda::is_available());
            let text = err.to_string();
            assert!(text.contains("aten._to_copy.default"), "{text}");
            assert!(text.contains("tests/ops.rs"), "{text}");
        }
    }
}

//! Models and op cases shared by the tests of several crates (a dev-dependency only): the
//! engine's tests check them against eager libtorch, the ONNX tests against ONNX Runtime, on the
//! same definitions.
//!
//! - [`cases`]: groups of ops, each a module with example inputs, dynamic dims and input sets of
//!   other shapes (batch and sequence of 1 included).
//! - [`ToyTransformer`]: a decoder block stack (causal attention, RMSNorm, gated MLP) with
//!   checkpoint-style weight names.

pub mod machine;
pub mod oracle;

use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, FnModule, Inputs, Module, Result, SymInt, Tensor, Value, scope,
};
use tch::{Device, Kind};

/// A float32 tensor from N(0, 1).
pub fn randn(shape: &[i64]) -> Tensor {
    Tensor::from(tch::Tensor::randn(shape, (Kind::Float, Device::Cpu)))
}

/// An int64 tensor uniform in `[0, high)`.
pub fn randint(high: i64, shape: &[i64]) -> Tensor {
    Tensor::from(tch::Tensor::randint(
        high,
        shape,
        (Kind::Int64, Device::Cpu),
    ))
}

/// Dynamic shapes for positional inputs from `(input, dim, name)` triples.
pub fn dynamic_shapes(n_inputs: usize, dims: &[(usize, usize, &str)]) -> DynamicShapes {
    let mut specs = vec![DynSpec::Static; n_inputs];
    for (input, dim, name) in dims {
        match &mut specs[*input] {
            DynSpec::Tensor(map) => {
                map.insert(*dim, Dim::new(name));
            }
            other => *other = DynSpec::dims([(*dim, Dim::new(name))]),
        }
    }
    DynamicShapes {
        args: specs,
        kwargs: Vec::new(),
    }
}

/// A group of ops to export and check.
pub struct Case {
    /// Short name (`slices`).
    pub name: &'static str,
    /// The module.
    pub module: Box<dyn Module>,
    /// Export inputs.
    pub example: Vec<Tensor>,
    /// Dynamic dims: `(input, dim, name)`.
    pub dims: Vec<(usize, usize, &'static str)>,
    /// Input sets of other shapes.
    pub others: Vec<Vec<Tensor>>,
    /// Tolerance of the ONNX Runtime comparison.
    pub atol: f64,
}

fn tuple(values: Vec<Tensor>) -> Value {
    Value::Tuple(values.into_iter().map(Value::from).collect())
}

fn slices() -> Case {
    let m = FnModule::new("Slices", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let n = x.size(1)?;
        Ok(tuple(vec![
            x.slice(1, Some(SymInt::new(-3)), None, 1)?, // x[:, -3:]
            x.slice(1, Some(SymInt::new(1)), Some(SymInt::new(-1)), 1)?, // x[:, 1:-1]
            x.slice(1, None, Some(&n - 1), 2)?,          // x[:, :n-1:2]
            x.narrow(1, &n - 2, 2)?,
            x.select(0, -1)?,
        ]))
    });
    Case {
        name: "slices",
        module: Box::new(m),
        example: vec![randn(&[4, 10])],
        dims: vec![(0, 0, "batch"), (0, 1, "len")],
        others: vec![
            vec![randn(&[3, 7])],
            vec![randn(&[1, 5])],
            vec![randn(&[2, 3])],
        ],
        atol: 1e-6,
    }
}

fn indexing() -> Case {
    let m = FnModule::new(
        "Indexing",
        &["x", "idx", "cols", "rows", "vals"],
        |i: &Inputs| {
            let x = i.tensor("x")?;
            let idx = i.tensor("idx")?;
            let g = x.gather(1, idx)?;
            let rows = i.tensor("rows")?;
            let vals = i.tensor("vals")?;
            Ok(tuple(vec![
                g.clone(),
                x.scatter(1, idx, &g.mul_scalar(2.0)?)?,
                x.index_select(1, i.tensor("cols")?)?,
                x.index_put(&[Some(rows)], vals, false)?,
                x.index_put(&[Some(rows)], vals, true)?,
                x.index(&[rows])?,
            ]))
        },
    );
    // rows index only row 0, so they stay valid for every batch size.
    let set = |b: i64, l: i64, k: i64, r: i64| {
        vec![
            randn(&[b, l]),
            randint(l, &[b, 3]),
            randint(l, &[k]),
            randint(1, &[r]),
            randn(&[r, l]),
        ]
    };
    Case {
        name: "indexing",
        module: Box::new(m),
        example: set(4, 6, 5, 2),
        dims: vec![
            (0, 0, "batch"),
            (0, 1, "len"),
            (1, 0, "batch"),
            (2, 0, "k"),
            (3, 0, "r"),
            (4, 0, "r"),
            (4, 1, "len"),
        ],
        others: vec![set(2, 7, 3, 1), set(1, 5, 1, 3), set(6, 3, 9, 2)],
        atol: 1e-6,
    }
}

fn conv() -> Case {
    let (w, b, w2) = (randn(&[4, 3, 3, 3]), randn(&[4]), randn(&[2, 4, 3, 3]));
    let (gw, gb) = (randn(&[4]), randn(&[4]));
    let params = vec![
        ("conv.weight".to_owned(), w.clone()),
        ("conv.bias".to_owned(), b.clone()),
        ("conv2.weight".to_owned(), w2.clone()),
        ("norm.weight".to_owned(), gw.clone()),
        ("norm.bias".to_owned(), gb.clone()),
    ];
    let m = FnModule::new("Conv", &["x"], move |i: &Inputs| {
        let x = i.tensor("x")?;
        let y = x.conv2d(&w, Some(&b), [1, 1], [1, 1], [1, 1], 1)?.relu()?;
        Ok(tuple(vec![
            y.avg_pool2d([2, 2], [2, 2], [0, 0])?
                .upsample_nearest2d(2)?,
            y.conv2d(&w2, None, [2, 2], [0, 0], [1, 1], 1)?,
            y.group_norm(2, Some(&gw), Some(&gb), 1e-5)?,
            y.group_norm(2, None, None, 1e-5)?,
            y.permute(&[0, 2, 3, 1])?
                .layer_norm(&[4], None, None, 1e-5)?,
        ]))
    })
    .with_parameters(params);
    Case {
        name: "conv",
        module: Box::new(m),
        example: vec![randn(&[2, 3, 8, 12])],
        dims: vec![(0, 0, "batch"), (0, 2, "height"), (0, 3, "width")],
        others: vec![
            vec![randn(&[1, 3, 10, 6])],
            vec![randn(&[3, 3, 7, 9])],
            vec![randn(&[1, 3, 3, 4])],
        ],
        atol: 1e-4,
    }
}

fn reduce() -> Case {
    let m = FnModule::new("Reduce", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let (values, indices) = x.topk(3, -1, true, true)?;
        let (mx, amx) = x.max_dim(1, false)?;
        let (mn, amn) = x.min_dim(0, true)?;
        let pos = x.gt_scalar(0.0)?;
        let mut out = vec![values, indices];
        out.extend(x.chunk(2, 1)?);
        out.extend([
            x.cumsum(1)?,
            mx,
            amx,
            mn,
            amn,
            x.argmax(1, true)?,
            pos.any(&[1], false)?,
            pos.all(&[], false)?,
            pos.sum(&[1], false)?,
            x.sum(&[0, 1], false)?,
            x.mean(&[1], true)?,
            x.amin(&[0], false)?,
            x.to_kind(Kind::Double)?.to_device(Device::Cpu)?,
            x.log_softmax(-1)?,
            x.gelu("tanh")?,
            x.gelu("none")?,
            x.clamp(Some(-0.5), None)?.clamp(None, Some(0.5))?,
            x.sigmoid()?
                .tanh()?
                .abs()?
                .sqrt()?
                .exp()?
                .log()?
                .neg()?
                .sin()?
                .cos()?,
            x.ne_scalar(0.0)?
                .logical_and(&x.lt_scalar(1.0)?)?
                .logical_or(&x.ge_scalar(2.0)?)?,
            x.masked_fill(&x.le_scalar(0.0)?, -1.0)?
                .maximum(x)?
                .minimum(&x.relu()?)?,
            x.rsub_scalar(1.0)?.div_scalar(2.0)?.pow_scalar(2.0)?,
        ]);
        Ok(tuple(out))
    });
    Case {
        name: "reduce",
        module: Box::new(m),
        example: vec![randn(&[3, 8])],
        dims: vec![(0, 0, "batch"), (0, 1, "len")],
        others: vec![
            vec![randn(&[1, 5])],
            vec![randn(&[4, 3])],
            vec![randn(&[2, 9])],
        ],
        atol: 1e-5,
    }
}

fn attention() -> Case {
    let m = FnModule::new("Attention", &["q", "k", "v"], |i: &Inputs| {
        let (q, k, v) = (i.tensor("q")?, i.tensor("k")?, i.tensor("v")?);
        let (sq, sk) = (q.size(2)?, k.size(2)?);
        // A causal mask for a query block at the end of the keys (a KV cache of sk - sq).
        let rows = Tensor::arange(&sk - &sq, sk.clone(), 1, Kind::Int64, Device::Cpu)?;
        let cols = Tensor::arange(0, sk.clone(), 1, Kind::Int64, Device::Cpu)?;
        let allowed = cols.unsqueeze(0)?.le(&rows.unsqueeze(1)?)?;
        let zeros = Tensor::zeros(vec![sq.clone(), sk.clone()], Kind::Float, Device::Cpu)?;
        let mask = zeros.masked_fill(&allowed.logical_not()?, f64::NEG_INFINITY)?;
        let square = vec![sq.clone(), sq.clone()];
        let bool_mask = Tensor::ones(square.clone(), Kind::Bool, Device::Cpu)?.tril(0)?;
        let tri = Tensor::full(square, 1.0, Kind::Float, Device::Cpu)?.tril(0)?;
        let ones = Tensor::ones(vec![sq.clone()], Kind::Float, Device::Cpu)?;
        Ok(tuple(vec![
            Tensor::scaled_dot_product_attention(q, k, v, Some(&mask), false, None, true)?,
            Tensor::scaled_dot_product_attention(q, q, q, Some(&bool_mask), false, None, false)?,
            Tensor::scaled_dot_product_attention(q, q, q, None, true, Some(0.5), false)?,
            Tensor::stack(&[&tri, &tri], 0)?,
            Tensor::cat(&[&tri, &tri.triu(1)?], 1)?,
            tri.add(&ones)?,
            rows.unsqueeze(0)?
                .expand(vec![SymInt::new(3), sq.clone()])?,
            q.permute(&[0, 2, 1, 3])?.flatten(2, 3)?,
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
    Case {
        name: "attention",
        module: Box::new(m),
        example: set(2, 3, 7),
        dims: vec![
            (0, 0, "batch"),
            (1, 0, "batch"),
            (2, 0, "batch"),
            (0, 2, "seq"),
            (1, 2, "total"),
            (2, 2, "total"),
        ],
        others: vec![set(1, 1, 1), set(3, 2, 9), set(1, 5, 5)],
        atol: 1e-5,
    }
}

/// `select` with a 0-d index tensor and `select_scatter` on each dimension, with a plain, a
/// negative, a symbolic and a tensor index (what a loop rewritten into `for_range` runs).
fn select_scatter() -> Case {
    let m = FnModule::new("SelectScatter", &["x", "i"], |inputs: &Inputs| {
        let x = inputs.tensor("x")?;
        let i = inputs.tensor("i")?;
        let n = x.size(1)?;
        Ok(tuple(vec![
            x.select(1, i)?,
            x.select_scatter(&x.select(0, 0)?.mul_scalar(2.0)?, 0, -1)?,
            x.select_scatter(&x.select(1, 0)?.neg()?, 1, &n - 1)?,
            x.select_scatter(&x.select(2, i)?.add_scalar(1.0)?, 2, i)?,
        ]))
    });
    // The index stays below 3, the smallest length and the last dimension.
    let set = |b: i64, l: i64, i: i64| vec![randn(&[b, l, 4]), Tensor::from(tch::Tensor::from(i))];
    Case {
        name: "select_scatter",
        module: Box::new(m),
        example: set(2, 5, 1),
        dims: vec![(0, 0, "batch"), (0, 1, "len")],
        others: vec![set(3, 3, 2), set(1, 6, 0), set(4, 4, 1)],
        atol: 1e-6,
    }
}

/// The ops of the vision encoders (Qwen2-VL): `conv3d` over flattened patches, `floor_divide`
/// and `remainder` (negative values included: Python's signs), `repeat_interleave` with tensor
/// counts (a data-dependent length), integer sums over the last axis, and `masked_scatter`;
/// one set without any image (`grid` `[0, 3]`: empty counts and sums).
fn vision() -> Case {
    let w = randn(&[8, 3, 2, 2, 2]);
    let params = vec![("proj.weight".to_owned(), w.clone())];
    let m = FnModule::new("Vision", &["x", "grid", "ids"], move |i: &Inputs| {
        let (x, grid, ids) = (i.tensor("x")?, i.tensor("grid")?, i.tensor("ids")?);
        let n = x.size(0)?;
        let patches = x
            .view(vec![
                n.clone(),
                SymInt::new(3),
                SymInt::new(2),
                SymInt::new(2),
                SymInt::new(2),
            ])?
            .conv3d(&w, None, [2, 2, 2], [0, 0, 0], [1, 1, 1], 1)?
            .view(vec![n, SymInt::new(8)])?;
        let three = Tensor::full(Vec::<SymInt>::new(), 3_i64, Kind::Int64, ids.device())?;
        let shifted = ids.sub_scalar(5_i64)?;
        let counts = grid
            .select(1, 1)?
            .mul(&grid.select(1, 2)?)?
            .repeat_interleave_tensor(&grid.select(1, 0)?)?;
        let emb = ids
            .unsqueeze(-1)?
            .expand(vec![ids.size(0)?, ids.size(1)?, SymInt::new(4)])?;
        let emb = emb.to_kind(Kind::Float)?;
        let mask = ids.remainder(&three)?.eq_scalar(0_i64)?.unsqueeze(-1)?;
        Ok(tuple(vec![
            patches,
            shifted.floor_divide(&three)?,
            shifted.remainder(&three)?,
            counts.cumsum(0)?,
            grid.sum(&[-1], false)?,
            emb.masked_scatter(&mask, &emb.mul_scalar(-2.0)?.add_scalar(0.5)?)?,
        ]))
    })
    .with_parameters(params);
    let set = |n: i64, grid: &[i64], b: i64, s: i64| {
        let g = tch::Tensor::from_slice(grid).reshape([-1, 3]);
        vec![randn(&[n, 24]), Tensor::from(g), randint(11, &[b, s])]
    };
    Case {
        name: "vision",
        module: Box::new(m),
        example: set(5, &[1, 2, 2, 2, 1, 3], 2, 4),
        dims: vec![
            (0, 0, "patches"),
            (1, 0, "images"),
            (2, 0, "batch"),
            (2, 1, "seq"),
        ],
        others: vec![
            set(3, &[1, 4, 2, 1, 1, 1, 3, 2, 2], 3, 5),
            set(0, &[], 1, 2),
            set(7, &[2, 1, 1], 1, 6),
        ],
        atol: 1e-4,
    }
}

/// The ops of SAM's mask upscaling: `conv_transpose2d` (kernel 2, stride 2, as
/// `SamMaskDecoder.upscale_conv1/2`; and one with padding, output padding, dilation and
/// groups), the layer norm over channels of `SamLayerNorm` (`channels_first`), GELU.
fn upscaling() -> Case {
    let (w1, b1) = (randn(&[8, 4, 2, 2]), randn(&[4]));
    let (w2, b2) = (randn(&[4, 2, 2, 2]), randn(&[2]));
    let (nw, nb) = (randn(&[4]), randn(&[4]));
    let wg = randn(&[8, 3, 3, 3]);
    let params = vec![
        ("upscale_conv1.weight".to_owned(), w1.clone()),
        ("upscale_conv1.bias".to_owned(), b1.clone()),
        ("upscale_conv2.weight".to_owned(), w2.clone()),
        ("upscale_conv2.bias".to_owned(), b2.clone()),
        ("upscale_layer_norm.weight".to_owned(), nw.clone()),
        ("upscale_layer_norm.bias".to_owned(), nb.clone()),
        ("grouped.weight".to_owned(), wg.clone()),
    ];
    let m = FnModule::new("Upscaling", &["x"], move |i: &Inputs| {
        let x = i.tensor("x")?;
        let y = x.conv_transpose2d(&w1, Some(&b1), [2, 2], [0, 0], [0, 0], 1, [1, 1])?;
        // SamLayerNorm, channels first.
        let u = y.mean(&[1], true)?;
        let c = y.sub(&u)?;
        let var = c.pow_scalar(2.0)?.mean(&[1], true)?;
        let per_channel = |t: &Tensor| t.unsqueeze(-1)?.unsqueeze(-1);
        let n = c
            .div(&var.add_scalar(1e-6)?.sqrt()?)?
            .mul(&per_channel(&nw)?)?
            .add(&per_channel(&nb)?)?;
        let z = n.gelu("none")?;
        let z = z
            .conv_transpose2d(&w2, Some(&b2), [2, 2], [0, 0], [0, 0], 1, [1, 1])?
            .gelu("none")?;
        let g = x.conv_transpose2d(&wg, None, [2, 3], [1, 2], [1, 2], 2, [2, 1])?;
        Ok(tuple(vec![z, g]))
    })
    .with_parameters(params);
    Case {
        name: "upscaling",
        module: Box::new(m),
        example: vec![randn(&[2, 8, 4, 6])],
        dims: vec![(0, 0, "batch"), (0, 2, "height"), (0, 3, "width")],
        others: vec![
            vec![randn(&[1, 8, 7, 3])],
            vec![randn(&[3, 8, 2, 2])],
            vec![randn(&[1, 8, 1, 5])],
        ],
        atol: 1e-4,
    }
}

/// The ops of SAM's prompt encoder and the shapes of its mask decoder, over `b` images, `p`
/// prompts of `n` points: the padding point appended (`cat` with `zeros` / `full` of symbolic
/// sizes), the random Fourier features (`matmul`, `sin`, `cos`), the label `where`s, the box
/// corners, the per-prompt copy of the image (unsqueeze-expand-reshape over a symbolic
/// count), the window padding (`pad`), the relative-position gather (`index_select` of a
/// constant index) and the grid of cell centres (`cumsum`).
fn prompts() -> Case {
    let scaled = |shape: &[i64], by: f64| {
        Tensor::from(tch::Tensor::randn(shape, (Kind::Float, Device::Cpu)) * by)
    };
    let g = scaled(&[2, 3], 4.0);
    let (w_na, w0, w1) = (randn(&[1, 6]), randn(&[1, 6]), randn(&[1, 6]));
    let corners = randn(&[2, 6]);
    let table = randn(&[5, 4]);
    let index = Tensor::from(tch::Tensor::from_slice(&[2_i64, 1, 0, 3, 2, 1, 4, 3, 2]));
    let m = FnModule::new(
        "Prompts",
        &["points", "labels", "boxes", "image"],
        move |i: &Inputs| {
            let (points, labels) = (i.tensor("points")?, i.tensor("labels")?);
            let (boxes, image) = (i.tensor("boxes")?, i.tensor("image")?);
            let s = points.shape();
            let (b, p) = (s[0].clone(), s[1].clone());
            let one = SymInt::new(1);
            let pad_point = Tensor::zeros(
                vec![b.clone(), p.clone(), one.clone(), SymInt::new(2)],
                Kind::Float,
                Device::Cpu,
            )?;
            let pad_label = Tensor::full(
                vec![b.clone(), p.clone(), one],
                -1,
                Kind::Int64,
                Device::Cpu,
            )?;
            let pts = Tensor::cat(&[&points.add_scalar(0.5)?, &pad_point], 2)?;
            let labels = Tensor::cat(&[labels, &pad_label], 2)?;
            let features = |c: &Tensor| -> Result<Tensor> {
                let c = c
                    .div_scalar(64.0)?
                    .mul_scalar(2.0)?
                    .sub_scalar(1.0)?
                    .matmul(&g)?
                    .mul_scalar(2.0 * std::f64::consts::PI)?;
                Tensor::cat(&[&c.sin()?, &c.cos()?], -1)
            };
            let e = features(&pts)?;
            let l = labels.unsqueeze(-1)?;
            let zero = Tensor::zeros(Vec::<SymInt>::new(), Kind::Float, Device::Cpu)?;
            let e = w_na.where_cond(&l.eq_scalar(-1)?, &e)?;
            let e = e.where_cond(&l.ne_scalar(-10)?, &zero)?;
            let e = e.add(&w0)?.where_cond(&l.eq_scalar(0)?, &e)?;
            let e = e.add(&w1)?.where_cond(&l.eq_scalar(1)?, &e)?;
            let bs = boxes.shape();
            let c = boxes.reshape(vec![
                bs[0].clone(),
                bs[1].clone(),
                SymInt::new(2),
                SymInt::new(2),
            ])?;
            let c = features(&c.add_scalar(0.5)?)?.add(&corners)?;
            let is = image.shape();
            let per_prompt = image
                .unsqueeze(1)?
                .expand(vec![
                    is[0].clone(),
                    p.clone(),
                    is[1].clone(),
                    is[2].clone(),
                    is[3].clone(),
                ])?
                .reshape(vec![
                    &is[0] * &p,
                    is[1].clone(),
                    is[2].clone(),
                    is[3].clone(),
                ])?;
            let windows = image
                .permute(&[0, 2, 3, 1])?
                .pad(&[0, 0, 0, 1, 0, 1], 0.0)?;
            let rel = table.index_select(0, &index)?.reshape(vec![3, 3, 4])?;
            let grid = Tensor::ones([4, 5], Kind::Float, Device::Cpu)?;
            let centres = Tensor::stack(
                &[
                    &grid.cumsum(1)?.sub_scalar(0.5)?,
                    &grid.cumsum(0)?.sub_scalar(0.5)?,
                ],
                -1,
            )?;
            Ok(tuple(vec![e, c, per_prompt, windows, rel, centres]))
        },
    );
    let set = |b: i64, p: i64, n: i64| {
        let labels = tch::Tensor::from_slice(&[1_i64, 0, -1, -10])
            .index_select(
                0,
                &tch::Tensor::randint(4, [b * p * n], (Kind::Int64, Device::Cpu)),
            )
            .reshape([b, p, n]);
        vec![
            scaled(&[b, p, n, 2], 30.0),
            Tensor::from(labels),
            scaled(&[b, p, 4], 30.0),
            randn(&[b, 3, 3, 5]),
        ]
    };
    Case {
        name: "prompts",
        module: Box::new(m),
        example: set(2, 2, 5),
        dims: vec![
            (0, 0, "batch"),
            (0, 1, "prompts"),
            (0, 2, "points"),
            (1, 0, "batch"),
            (1, 1, "prompts"),
            (1, 2, "points"),
            (2, 0, "batch"),
            (2, 1, "prompts"),
            (3, 0, "batch"),
        ],
        others: vec![set(1, 3, 1), set(3, 1, 4), set(1, 1, 2)],
        atol: 1e-4,
    }
}

/// Every op case (the generator is seeded first, so weights and inputs repeat).
pub fn cases() -> Vec<Case> {
    tch::manual_seed(1);
    vec![
        slices(),
        indexing(),
        select_scatter(),
        conv(),
        reduce(),
        attention(),
        routing(),
        data_dependent(),
        resampling(),
        vision(),
        upscaling(),
        prompts(),
    ]
}

/// The ops of mixture-of-experts routing: `one_hot`, `index_add` (along 0 and 1),
/// `repeat_interleave`, `scatter_add`, `sort` both ways, `argsort`, over `n` tokens routed to
/// `k` of `e` experts.
fn routing() -> Case {
    const E: i64 = 4;
    const K: i64 = 2;
    let m = FnModule::new("Routing", &["x", "idx", "w"], |i: &Inputs| {
        let (x, idx, w) = (i.tensor("x")?, i.tensor("idx")?, i.tensor("w")?);
        let n = x.size(0)?;
        let h = x.size(1)?;
        let flat = idx.reshape(vec![SymInt::new(-1)])?;
        let per_expert = Tensor::zeros(vec![SymInt::new(E), h.clone()], Kind::Float, Device::Cpu)?
            .index_add(0, &flat, &x.repeat_interleave(K, 0)?)?;
        let per_expert_t = Tensor::zeros(vec![h, SymInt::new(E)], Kind::Float, Device::Cpu)?
            .index_add(1, &flat, &x.transpose(0, 1)?.repeat_interleave(K, 1)?)?;
        let scores = Tensor::zeros(vec![n, SymInt::new(E)], Kind::Float, Device::Cpu)?
            .scatter_add(1, idx, w)?;
        let (desc, desc_i) = w.sort(1, true)?;
        let (asc, asc_i) = x.sort(0, false)?;
        Ok(tuple(vec![
            idx.one_hot(E)?,
            per_expert,
            per_expert_t,
            scores,
            desc,
            desc_i,
            asc,
            asc_i,
            x.argsort(-1, true)?,
        ]))
    });
    let set = |n: i64| vec![randn(&[n, 3]), randint(E, &[n, K]), randn(&[n, K])];
    Case {
        name: "routing",
        module: Box::new(m),
        example: set(5),
        dims: vec![(0, 0, "n"), (1, 0, "n"), (2, 0, "n")],
        others: vec![set(1), set(3), set(9)],
        atol: 1e-5,
    }
}

/// Data-dependent sizes: `nonzero` (and its tuple form) whose rows then index another tensor,
/// `masked_select`, `bincount` (also of an empty tensor); the other sets select no row, one
/// row and many rows.
fn data_dependent() -> Case {
    let m = FnModule::new("DataDependent", &["x", "y"], |i: &Inputs| {
        let (x, y) = (i.tensor("x")?, i.tensor("y")?);
        let mask = x.gt_scalar(0.5)?;
        let nz = mask.nonzero()?;
        let rc = mask.nonzero_tuple()?;
        let rows = y.index_select(0, &rc[0])?;
        let picked = x.index(&[&rc[0], &rc[1]])?;
        let counts = mask.to_kind(Kind::Int64)?.sum(&[1], false)?.bincount(2)?;
        Ok(tuple(vec![
            nz,
            rows.mul(&picked.unsqueeze(1)?)?,
            rows.reshape(vec![SymInt::new(-1)])?,
            x.masked_select(&mask)?,
            counts,
            // Empty when no element is selected: bincount of an empty tensor.
            x.masked_select(&mask)?.to_kind(Kind::Int64)?.bincount(2)?,
        ]))
    });
    let set = |x: Tensor, b: i64| vec![x, randn(&[b, 4])];
    let only = |b: i64, l: i64, at: &[(i64, i64)]| {
        let x = tch::Tensor::zeros([b, l], (Kind::Float, Device::Cpu));
        for (r, c) in at {
            let _ = x.get(*r).get(*c).fill_(1.0);
        }
        Tensor::from(x)
    };
    Case {
        name: "data_dependent",
        module: Box::new(m),
        example: set(randn(&[4, 6]), 4),
        dims: vec![(0, 0, "batch"), (0, 1, "len"), (1, 0, "batch")],
        others: vec![
            set(only(3, 5, &[]), 3),
            set(only(2, 7, &[(1, 3)]), 2),
            set(
                Tensor::from(tch::Tensor::randn([6, 9], (Kind::Float, Device::Cpu)) + 0.5),
                6,
            ),
        ],
        atol: 1e-6,
    }
}

/// `F.interpolate` as the diffusion models and the vision encoders use it: nearest to a
/// symbolic `size=` (a skip connection's), nearest by 2 and by 1.5, bilinear to a size with
/// and without `align_corners`, bilinear by 0.5 and 1.25; and `F.pad` with a constant
/// (Downsample2D's `(0, 1, 0, 1)`, a crop, a value).
fn resampling() -> Case {
    use onnx_diagnostic_core::{InterpolateMode as M, Resize as R};
    let m = FnModule::new("Resampling", &["x", "skip"], |i: &Inputs| {
        let (x, skip) = (i.tensor("x")?, i.tensor("skip")?);
        let to_skip = R::Size([skip.size(2)?, skip.size(3)?]);
        let bilinear = |align_corners| M::Bilinear { align_corners };
        Ok(tuple(vec![
            x.interpolate(&to_skip, M::Nearest)?,
            x.upsample_nearest2d(2)?,
            x.interpolate(&R::Scale([1.5, 1.5]), M::Nearest)?,
            x.interpolate(&to_skip, bilinear(false))?,
            x.interpolate(&to_skip, bilinear(true))?,
            x.interpolate(&R::Scale([0.5, 1.25]), bilinear(false))?,
            x.pad(&[0, 1, 0, 1], 0.0)?,
            x.pad(&[-1, 2], -3.5)?,
        ]))
    });
    let set = |b: i64, h: i64, w: i64, sh: i64, sw: i64| {
        vec![randn(&[b, 3, h, w]), randn(&[b, 2, sh, sw])]
    };
    Case {
        name: "resampling",
        module: Box::new(m),
        example: set(2, 4, 6, 8, 12),
        dims: vec![
            (0, 0, "batch"),
            (0, 2, "height"),
            (0, 3, "width"),
            (1, 0, "batch"),
            (1, 2, "skip_height"),
            (1, 3, "skip_width"),
        ],
        others: vec![set(1, 5, 7, 9, 13), set(3, 2, 2, 3, 5), set(1, 8, 4, 16, 8)],
        atol: 1e-5,
    }
}

/// Runs diffusers (crates/diffusers/tests/parity/make_unet_reference.py, in the project's
/// venv) on a `UNet2DConditionModel` `config` in `root`: the checkpoint directory its
/// `save_pretrained` writes, and per input set of `sets` (`name:batch:height:width:length,...`)
/// the tensors `NAME.sample`, `NAME.timestep`, `NAME.encoder_hidden_states` and diffusers'
/// output `NAME.out`. `options`: `--dtype=float16`.
///
/// # Errors
/// The script's failure with its standard error, or unreadable outputs.
pub fn unet_reference(
    root: &std::path::Path,
    config: &str,
    sets: &str,
    options: &[&str],
) -> std::result::Result<
    (
        std::path::PathBuf,
        std::collections::HashMap<String, tch::Tensor>,
    ),
    String,
> {
    let script = "diffusers/tests/parity/make_unet_reference.py";
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let cfg = root.join("input_config.json");
    std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(manifest.join("../../.venv/bin/python"))
        .arg(manifest.join("..").join(script))
        .arg(root)
        .arg(&cfg)
        .arg(sets)
        .args(options)
        .output()
        .map_err(|e| format!("the venv's python does not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let io = tch::Tensor::read_safetensors(root.join("io.safetensors"))
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    Ok((root.join("checkpoint"), io))
}

/// The keyword inputs of set `name` of an [`unet_reference`].
pub fn unet_inputs(
    io: &std::collections::HashMap<String, tch::Tensor>,
    name: &str,
) -> Vec<(String, Value)> {
    ["sample", "timestep", "encoder_hidden_states"]
        .iter()
        .filter_map(|k| {
            let t = io.get(&format!("{name}.{k}"))?.shallow_clone();
            Some(((*k).to_owned(), Value::Tensor(Tensor::from(t))))
        })
        .collect()
}

/// RMSNorm as transformers writes it: `x * rsqrt(mean(x^2) + eps) * weight`.
///
/// # Errors
/// Any error of the ops.
pub fn rms_norm(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let var = x.pow_scalar(2.0)?.mean(&[-1], true)?;
    x.mul(&var.add_scalar(1e-6)?.rsqrt()?)?.mul(weight)
}

/// A stack of decoder blocks: causal multi-head attention built the eager way (a `-inf` upper
/// triangle), RMSNorm, a gated SiLU MLP; weights named as a Llama checkpoint names them.
pub struct ToyTransformer {
    weights: Vec<(String, Tensor)>,
    layers: usize,
    heads: i64,
    head_dim: i64,
}

impl ToyTransformer {
    /// `layers` blocks of width `hidden` with `heads` heads, weights from seed 0.
    pub fn new(hidden: i64, heads: i64, layers: usize) -> Self {
        tch::manual_seed(0);
        let mut weights = Vec::new();
        for i in 0..layers {
            let mut w = |n: &str, shape: &[i64], scale: f64| {
                let t = Tensor::from(tch::Tensor::randn(shape, (Kind::Float, Device::Cpu)) * scale);
                weights.push((format!("layers.{i}.{n}"), t));
            };
            w("input_layernorm.weight", &[hidden], 1.0);
            for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                w(&format!("self_attn.{p}.weight"), &[hidden, hidden], 0.2);
            }
            w("post_attention_layernorm.weight", &[hidden], 1.0);
            w("mlp.gate_proj.weight", &[2 * hidden, hidden], 0.2);
            w("mlp.up_proj.weight", &[2 * hidden, hidden], 0.2);
            w("mlp.down_proj.weight", &[hidden, 2 * hidden], 0.2);
        }
        Self {
            weights,
            layers,
            heads,
            head_dim: hidden / heads,
        }
    }

    fn w(&self, i: usize, n: &str) -> Result<&Tensor> {
        let key = format!("layers.{i}.{n}");
        self.weights
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t)
            .ok_or_else(|| onnx_diagnostic_core::Error::Model {
                model: "ToyTransformer".to_owned(),
                message: format!("no weight {key}"),
            })
    }

    fn attention(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let _a = scope("self_attn");
        let (b, s) = (x.size(0)?, x.size(1)?);
        let split = |t: Tensor| -> Result<Tensor> {
            let shape = vec![
                b.clone(),
                s.clone(),
                SymInt::new(self.heads),
                SymInt::new(self.head_dim),
            ];
            t.view(shape)?.transpose(1, 2)
        };
        let q = split(x.linear(self.w(i, "self_attn.q_proj.weight")?, None)?)?;
        let k = split(x.linear(self.w(i, "self_attn.k_proj.weight")?, None)?)?;
        let v = split(x.linear(self.w(i, "self_attn.v_proj.weight")?, None)?)?;
        let square = vec![s.clone(), s.clone()];
        let mask = Tensor::full(square, f64::NEG_INFINITY, Kind::Float, Device::Cpu)?.triu(1)?;
        let scores = q
            .matmul(&k.transpose(2, 3)?)?
            .mul_scalar(1.0 / (self.head_dim as f64).sqrt())?
            .add(&mask)?;
        let a = scores.softmax(-1)?.matmul(&v)?;
        a.transpose(1, 2)?
            .reshape(vec![b, s, SymInt::new(-1)])?
            .linear(self.w(i, "self_attn.o_proj.weight")?, None)
    }
}

impl Module for ToyTransformer {
    fn class_name(&self) -> String {
        "ToyTransformer".to_owned()
    }
    fn forward_signature(&self) -> Vec<String> {
        vec!["x".to_owned()]
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.weights.clone()
    }
    fn forward(&self, inputs: &Inputs) -> Result<Value> {
        let mut h = inputs.tensor("x")?.clone();
        for i in 0..self.layers {
            let _l = scope(&format!("layers.{i}"));
            let x = rms_norm(&h, self.w(i, "input_layernorm.weight")?)?;
            h = h.add(&self.attention(i, &x)?)?;
            let _m = scope("mlp");
            let n = rms_norm(&h, self.w(i, "post_attention_layernorm.weight")?)?;
            let act = n
                .linear(self.w(i, "mlp.gate_proj.weight")?, None)?
                .silu()?
                .mul(&n.linear(self.w(i, "mlp.up_proj.weight")?, None)?)?;
            h = h.add(&act.linear(self.w(i, "mlp.down_proj.weight")?, None)?)?;
        }
        Ok(h.into())
    }
}

/// A cumulative product over the leading dimension of `x` written with `scan`: the last product
/// (the final carry) and every step's product times `scale` (the stacked outputs), as a tuple.
///
/// # Errors
/// Any error of the ops.
pub fn scan_cumprod(x: &Tensor, scale: f64) -> Result<Value> {
    let init = Tensor::ones(x.shape()[1..].to_vec(), x.kind(), Device::Cpu)?;
    let (carry, ys) = onnx_diagnostic_core::scan(
        |c: &[Tensor], xs: &[Tensor]| {
            let next = c[0].mul(&xs[0])?;
            let y = if scale == 1.0 {
                next.clone()
            } else {
                next.mul_scalar(scale)?
            };
            Ok((vec![next], vec![y]))
        },
        &[init],
        std::slice::from_ref(x),
    )?;
    Ok(Value::Tuple(vec![
        carry[0].clone().into(),
        ys[0].clone().into(),
    ]))
}

/// Checks a saved ONNX model with the onnx package of the project's venv: the full checker and
/// strict shape inference with type checks. Panics with the checker's message when it refuses
/// the model (a test helper).
#[allow(clippy::panic, clippy::expect_used)]
pub fn onnx_check(path: &std::path::Path) {
    let python =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let script = "import sys, onnx\n\
                  m = onnx.load(sys.argv[1])\n\
                  onnx.checker.check_model(m, full_check=True)\n\
                  onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)\n\
                  print('ok')";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("the venv's python runs");
    assert!(
        out.status.success(),
        "onnx checker refused {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Lowering tests: programs exported by the engine are lowered to ONNX, checked by the onnx
//! package's full checker and strict shape inference (the project's venv), run in ONNX Runtime
//! on inputs of other shapes than the export ones, and compared with eager libtorch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{path::PathBuf, process::Command};

use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, ExportOptions, ExportedProgram, FnModule, Inputs, Module, Result,
    SymInt, Tensor, Value, export, scope,
};
use onnx_diagnostic_onnx::{
    ExternalData, LowerError, LowerOptions, OnnxProgram, lower, max_diff, passes, proto, save_model,
};
use prost::Message;
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

fn workdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// onnx.checker (full) and strict shape inference, from the project's venv.
fn python_check(path: &std::path::Path) {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let script = "import sys, onnx\n\
                  m = onnx.load(sys.argv[1])\n\
                  onnx.checker.check_model(m, full_check=True)\n\
                  onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)\n\
                  print('ok')";
    let out = Command::new(python)
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

fn export_with(
    m: &dyn Module,
    example: Vec<Tensor>,
    dims: &[(usize, usize, &str)],
) -> ExportedProgram {
    let mut specs = vec![DynSpec::Static; example.len()];
    for (input, dim, name) in dims {
        match &mut specs[*input] {
            DynSpec::Tensor(map) => {
                map.insert(*dim, Dim::new(name));
            }
            other => *other = DynSpec::dims([(*dim, Dim::new(name))]),
        }
    }
    let ds = DynamicShapes {
        args: specs,
        kwargs: Vec::new(),
    };
    let args: Vec<Value> = example.into_iter().map(Value::from).collect();
    export(
        m,
        &args,
        &[],
        Some(&ds),
        &ExportOptions { stop_if_static: 1 },
    )
    .unwrap()
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
    python_check(&path);
    let mut session = OnnxProgram::from_model(&model, &ep).unwrap();
    for set in others {
        let args: Vec<Value> = set.into_iter().map(Value::from).collect();
        let eager = m
            .forward(&Inputs::bind_for(m, &args, &[]).unwrap())
            .unwrap();
        let got = session
            .run(&args, &[])
            .unwrap_or_else(|e| panic!("{name}: ORT failed: {e}"));
        let (e, g) = (eager.flatten("o").0, got.flatten("o").0);
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

// ---- the toy transformer of the engine issue ----

fn rms_norm(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let var = x.pow_scalar(2.0)?.mean(&[-1], true)?;
    x.mul(&var.add_scalar(1e-6)?.rsqrt()?)?.mul(weight)
}

struct Toy {
    weights: Vec<(String, Tensor)>,
    layers: usize,
    heads: i64,
    head_dim: i64,
}

impl Toy {
    fn new(hidden: i64, heads: i64, layers: usize) -> Self {
        tch::manual_seed(0);
        let mut weights = Vec::new();
        for i in 0..layers {
            let mut w = |n: &str, shape: &[i64]| {
                weights.push((
                    format!("layers.{i}.{n}"),
                    randn(shape).mul_scalar(0.2).unwrap(),
                ));
            };
            w("input_layernorm.weight", &[hidden]);
            for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                w(&format!("self_attn.{p}.weight"), &[hidden, hidden]);
            }
            w("post_attention_layernorm.weight", &[hidden]);
            w("mlp.gate_proj.weight", &[2 * hidden, hidden]);
            w("mlp.up_proj.weight", &[2 * hidden, hidden]);
            w("mlp.down_proj.weight", &[hidden, 2 * hidden]);
        }
        Self {
            weights,
            layers,
            heads,
            head_dim: hidden / heads,
        }
    }

    fn w(&self, i: usize, n: &str) -> &Tensor {
        let key = format!("layers.{i}.{n}");
        &self.weights.iter().find(|(k, _)| *k == key).unwrap().1
    }
}

impl Module for Toy {
    fn class_name(&self) -> String {
        "Toy".to_owned()
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
            let x = rms_norm(&h, self.w(i, "input_layernorm.weight"))?;
            let attn = {
                let _a = scope("self_attn");
                let (b, s) = (x.size(0)?, x.size(1)?);
                let split = |t: Tensor| -> Result<Tensor> {
                    t.view(vec![
                        b.clone(),
                        s.clone(),
                        SymInt::new(self.heads),
                        SymInt::new(self.head_dim),
                    ])?
                    .transpose(1, 2)
                };
                let q = split(x.linear(self.w(i, "self_attn.q_proj.weight"), None)?)?;
                let k = split(x.linear(self.w(i, "self_attn.k_proj.weight"), None)?)?;
                let v = split(x.linear(self.w(i, "self_attn.v_proj.weight"), None)?)?;
                let mask = Tensor::full(
                    vec![s.clone(), s.clone()],
                    f64::NEG_INFINITY,
                    Kind::Float,
                    Device::Cpu,
                )?
                .triu(1)?;
                let scores = q
                    .matmul(&k.transpose(2, 3)?)?
                    .mul_scalar(1.0 / (self.head_dim as f64).sqrt())?
                    .add(&mask)?;
                let a = scores.softmax(-1)?.matmul(&v)?;
                a.transpose(1, 2)?
                    .reshape(vec![b, s, SymInt::new(-1)])?
                    .linear(self.w(i, "self_attn.o_proj.weight"), None)?
            };
            h = h.add(&attn)?;
            let _m = scope("mlp");
            let n = rms_norm(&h, self.w(i, "post_attention_layernorm.weight"))?;
            let act = n
                .linear(self.w(i, "mlp.gate_proj.weight"), None)?
                .silu()?
                .mul(&n.linear(self.w(i, "mlp.up_proj.weight"), None)?)?;
            h = h.add(&act.linear(self.w(i, "mlp.down_proj.weight"), None)?)?;
        }
        Ok(h.into())
    }
}

#[test]
fn toy_transformer_runs_in_ort_on_other_shapes() {
    let model = Toy::new(16, 4, 2);
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
fn slices_and_indexing_lower() {
    let m = FnModule::new(
        "Slices",
        &["x", "idx", "cols", "rows", "vals"],
        |i: &Inputs| {
            let x = i.tensor("x")?;
            let n = x.size(1)?;
            let idx = i.tensor("idx")?;
            let g = x.gather(1, idx)?;
            let rows = i.tensor("rows")?;
            Ok(Value::Tuple(vec![
                x.slice(1, Some(SymInt::new(-3)), None, 1)?.into(),
                x.slice(1, Some(SymInt::new(1)), Some(SymInt::new(-1)), 1)?
                    .into(),
                x.slice(1, None, Some(&n - 1), 2)?.into(),
                x.narrow(1, &n - 2, 2)?.into(),
                x.select(0, -1)?.into(),
                g.clone().into(),
                x.scatter(1, idx, &g.mul_scalar(2.0)?)?.into(),
                x.index_select(1, i.tensor("cols")?)?.into(),
                x.index_put(&[Some(rows)], i.tensor("vals")?, false)?.into(),
                x.index_put(&[Some(rows)], i.tensor("vals")?, true)?.into(),
                x.index(&[rows])?.into(),
            ]))
        },
    );
    let set = |b: i64, l: i64, k: i64, r: i64| {
        vec![
            randn(&[b, l]),
            randint(l, &[b, 3]),
            randint(l, &[k]),
            randint(1, &[r]),
            randn(&[r, l]),
        ]
    };
    check(
        "slices",
        &m,
        set(4, 10, 5, 2),
        &[
            (0, 0, "batch"),
            (0, 1, "len"),
            (1, 0, "batch"),
            (2, 0, "k"),
            (3, 0, "r"),
            (4, 0, "r"),
            (4, 1, "len"),
        ],
        vec![set(3, 7, 3, 1), set(1, 5, 1, 3), set(2, 3, 4, 2)],
        1e-6,
    );
}

#[test]
fn convolution_pooling_upsampling_lower() {
    tch::manual_seed(1);
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
        Ok(Value::Tuple(vec![
            y.avg_pool2d([2, 2], [2, 2], [0, 0])?
                .upsample_nearest2d(2)?
                .into(),
            y.conv2d(&w2, None, [2, 2], [0, 0], [1, 1], 1)?.into(),
            y.group_norm(2, Some(&gw), Some(&gb), 1e-5)?.into(),
            y.layer_norm(&[4], None, None, 1e-5)?.into(),
        ]))
    })
    .with_parameters(params);
    check(
        "conv",
        &m,
        vec![randn(&[2, 3, 8, 4])],
        &[(0, 0, "batch"), (0, 2, "height")],
        vec![vec![randn(&[1, 3, 10, 4])], vec![randn(&[3, 3, 7, 4])]],
        1e-4,
    );
}

#[test]
fn reductions_topk_chunk_casts_lower() {
    let m = FnModule::new("Reduce", &["x"], |i: &Inputs| {
        let x = i.tensor("x")?;
        let (values, indices) = x.topk(3, -1, true, true)?;
        let (mx, amx) = x.max_dim(1, false)?;
        let (mn, amn) = x.min_dim(0, true)?;
        let pos = x.gt_scalar(0.0)?;
        let mut out: Vec<Value> = vec![values.into(), indices.into()];
        out.extend(x.chunk(2, 1)?.into_iter().map(Value::from));
        out.extend(
            [
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
                x.to_kind(Kind::Double)?,
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
            ]
            .into_iter()
            .map(Value::from),
        );
        Ok(Value::Tuple(out))
    });
    check(
        "reduce",
        &m,
        vec![randn(&[3, 8])],
        &[(0, 0, "batch"), (0, 1, "len")],
        vec![
            vec![randn(&[1, 6])],
            vec![randn(&[4, 3])],
            vec![randn(&[2, 9])],
        ],
        1e-5,
    );
}

#[test]
fn attention_and_creation_ops_lower() {
    let m = FnModule::new("Attention", &["q", "k", "v"], |i: &Inputs| {
        let (q, k, v) = (i.tensor("q")?, i.tensor("k")?, i.tensor("v")?);
        let (sq, sk) = (q.size(2)?, k.size(2)?);
        let rows = Tensor::arange(&sk - &sq, sk.clone(), 1, Kind::Int64, Device::Cpu)?;
        let cols = Tensor::arange(0, sk.clone(), 1, Kind::Int64, Device::Cpu)?;
        let allowed = cols.unsqueeze(0)?.le(&rows.unsqueeze(1)?)?;
        let zeros = Tensor::zeros(vec![sq.clone(), sk.clone()], Kind::Float, Device::Cpu)?;
        let mask = zeros.masked_fill(&allowed.logical_not()?, f64::NEG_INFINITY)?;
        let gqa = Tensor::scaled_dot_product_attention(q, k, v, Some(&mask), false, None, true)?;
        let bool_mask = Tensor::scaled_dot_product_attention(
            q,
            q,
            q,
            Some(&Tensor::ones(vec![sq.clone(), sq.clone()], Kind::Bool, Device::Cpu)?.tril(0)?),
            false,
            None,
            false,
        )?;
        let causal = Tensor::scaled_dot_product_attention(q, q, q, None, true, Some(0.5), false)?;
        let tri =
            Tensor::full(vec![sq.clone(), sq.clone()], 1.0, Kind::Float, Device::Cpu)?.tril(0)?;
        let stacked = Tensor::stack(&[&tri, &tri], 0)?;
        let catted = Tensor::cat(&[&tri, &tri.triu(1)?], 1)?;
        let expanded = rows
            .unsqueeze(0)?
            .expand(vec![SymInt::new(3), sq.clone()])?;
        let perm = q.permute(&[0, 2, 1, 3])?.flatten(2, 3)?;
        Ok(Value::Tuple(vec![
            gqa.into(),
            bool_mask.into(),
            causal.into(),
            stacked.into(),
            catted.into(),
            expanded.into(),
            perm.into(),
        ]))
    });
    let set = |b: i64, sq: i64, sk: i64| {
        vec![
            randn(&[b, 4, sq, 8]),
            randn(&[b, 2, sk, 8]),
            randn(&[b, 2, sk, 8]),
        ]
    };
    check(
        "attention",
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
        1e-5,
    );
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
    let model = Toy::new(16, 4, 1);
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
    python_check(&a);
    let mut s = OnnxProgram::from_file(&a, &ep).unwrap();
    let x = randn(&[3, 4, 16]);
    let eager = model
        .forward(&Inputs::bind_for(&model, &[x.clone().into()], &[]).unwrap())
        .unwrap();
    let got = s.run(&[x.into()], &[]).unwrap();
    assert!(max_diff(&eager, &got).abs < 1e-5);
    assert!(!dir.join("model.onnx.partial").exists());
}

//! A checking copy of a model for runtimes without kernels for its element type: ONNX
//! Runtime's CPU provider has no bfloat16 `Add`, `Mul`, `MatMul`, ... ("Could not find an
//! implementation for Mul(14)"), so a bfloat16 export cannot be run on a machine without a GPU.
//!
//! [`emulate_in_float32`] rewrites the model so that every value of that type is computed in
//! float32 and rounded back to it after each node: `y = Op(a, b)` becomes
//! `y_raw = Op(a, b); y_low = Cast<to=bfloat16>(y_raw); y = Cast<to=float>(y_low)`. Graph inputs
//! and initializers keep their type and are cast to float32 once; graph outputs keep their type
//! and names. That is what libtorch does on a CPU for bfloat16 (each op computes in float32 and
//! rounds its result), so the copy checks the exported graph against eager with the rounding of
//! the type kept, where running everything in float32 would hide it.
//!
//! Decisions: the copy is for checking only (validate runs it and says so in its summary, the
//! saved model is left as exported); the types of values are propagated from the graph's
//! inputs with the rules of the ops the lowering emits, and an op without a rule is an error
//! naming it, never a guess.

use std::collections::{HashMap, HashSet};

use crate::proto::{self, tensor_proto::DataType};

/// Why a model cannot be emulated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmulateError {
    /// An op whose output types the pass does not know.
    #[error(
        "cannot emulate {dtype} in float32: no type rule for op {op} (node {node}); run the model \
         on a provider with {dtype} kernels (--device cuda) or export in float32/float16"
    )]
    UnknownOp {
        /// The op type.
        op: String,
        /// The node's name.
        node: String,
        /// The emulated type.
        dtype: &'static str,
    },
    /// A value read before anything defines it.
    #[error("cannot emulate {dtype} in float32: node {node} reads {name}, which has no type")]
    Untyped {
        /// The value's name.
        name: String,
        /// The node reading it.
        node: String,
        /// The emulated type.
        dtype: &'static str,
    },
    /// The model has no graph.
    #[error("the model has no graph")]
    NoGraph,
}

/// A copy of `model` computing its `dtype` values in float32, rounded back to `dtype` after
/// each node (see the module doc). Returns the copy and the number of nodes rewritten; a model
/// without `dtype` values is returned as it is, with 0.
///
/// # Errors
/// [`EmulateError`] naming the op or value the pass cannot type.
pub fn emulate_in_float32(
    model: &proto::ModelProto,
    dtype: DataType,
) -> Result<(proto::ModelProto, usize), EmulateError> {
    emulate_in_float32_owned(model.clone(), dtype)
}

/// [`emulate_in_float32`] rewriting `model` itself: no copy of its initializers, for models
/// whose weights fill the memory.
///
/// # Errors
/// As [`emulate_in_float32`].
pub fn emulate_in_float32_owned(
    mut out: proto::ModelProto,
    dtype: DataType,
) -> Result<(proto::ModelProto, usize), EmulateError> {
    let graph = out.graph.as_mut().ok_or(EmulateError::NoGraph)?;
    let mut names = HashSet::new();
    collect_names(graph, &mut names);
    let mut pass = Pass {
        low: dtype as i32,
        label: dtype.as_str_name(),
        names,
        rewritten: 0,
    };
    pass.graph(graph, &HashMap::new(), &HashMap::new(), true)?;
    Ok((out, pass.rewritten))
}

struct Pass {
    /// The emulated type.
    low: i32,
    label: &'static str,
    /// Every name in use, so that new names are fresh.
    names: HashSet<String>,
    rewritten: usize,
}

const FLOAT: i32 = DataType::Float as i32;
const BOOL: i32 = DataType::Bool as i32;
const INT64: i32 = DataType::Int64 as i32;

fn elem_type(v: &proto::ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        proto::type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

fn set_elem_type(v: &mut proto::ValueInfoProto, to: i32) {
    if let Some(proto::type_proto::Value::TensorType(t)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(to);
    }
}

fn collect_names(g: &proto::GraphProto, names: &mut HashSet<String>) {
    names.extend(g.input.iter().filter_map(|i| i.name.clone()));
    names.extend(g.output.iter().filter_map(|i| i.name.clone()));
    names.extend(g.initializer.iter().filter_map(|i| i.name.clone()));
    for n in &g.node {
        names.extend(n.output.iter().cloned());
        names.extend(n.name.clone());
        for a in &n.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                collect_names(sub, names);
            }
        }
    }
}

fn cast(input: &str, output: &str, to: i32, name: String) -> proto::NodeProto {
    proto::NodeProto {
        input: vec![input.to_owned()],
        output: vec![output.to_owned()],
        name: Some(name),
        op_type: Some("Cast".to_owned()),
        attribute: vec![proto::AttributeProto {
            name: Some("to".to_owned()),
            r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
            i: Some(i64::from(to)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn attr<'a>(n: &'a proto::NodeProto, name: &str) -> Option<&'a proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

impl Pass {
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_owned();
        let mut k = 0;
        while self.names.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.names.insert(name.clone());
        name
    }

    /// The element types of `n`'s outputs, from the (original) types of its inputs.
    fn output_types(
        &self,
        n: &proto::NodeProto,
        types: &HashMap<String, i32>,
    ) -> Result<Vec<i32>, EmulateError> {
        let op = n.op_type.as_deref().unwrap_or("");
        let node = n.name.clone().unwrap_or_default();
        let input = |k: usize| -> Result<i32, EmulateError> {
            let name = n.input.get(k).cloned().unwrap_or_default();
            types
                .get(&name)
                .copied()
                .ok_or_else(|| EmulateError::Untyped {
                    name,
                    node: node.clone(),
                    dtype: self.label,
                })
        };
        let k = n.output.len();
        let same = |t: i32| vec![t; k];
        Ok(match op {
            "And" | "Or" | "Not" | "Equal" | "Greater" | "GreaterOrEqual" | "Less"
            | "LessOrEqual" | "IsInf" | "IsNaN" => same(BOOL),
            "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" => same(INT64),
            "Cast" => same(attr(n, "to").and_then(|a| a.i).unwrap_or(0) as i32),
            "ConstantOfShape" => same(
                attr(n, "value")
                    .and_then(|a| a.t.as_ref())
                    .and_then(|t| t.data_type)
                    .unwrap_or(FLOAT),
            ),
            "Where" => same(input(1)?),
            "TopK" => vec![input(0)?, INT64],
            "LayerNormalization" => {
                let mut t = vec![FLOAT; k];
                if let Some(first) = t.first_mut() {
                    *first = input(0)?;
                }
                t
            }
            "If" => attr(n, "then_branch")
                .and_then(|a| a.g.as_ref())
                .map(|g| g.output.iter().map(|o| elem_type(o).unwrap_or(0)).collect())
                .unwrap_or_default(),
            // The body's outputs are the condition, then the carried and scanned values.
            "Loop" => attr(n, "body")
                .and_then(|a| a.g.as_ref())
                .map(|g| {
                    g.output
                        .iter()
                        .skip(1)
                        .map(|o| elem_type(o).unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default(),
            "Abs"
            | "Add"
            | "AveragePool"
            | "BitwiseAnd"
            | "BitwiseNot"
            | "BitwiseOr"
            | "Clip"
            | "Concat"
            | "Conv"
            | "ConvTranspose"
            | "Cos"
            | "CumSum"
            | "Div"
            | "Erf"
            | "Exp"
            | "Expand"
            | "Gather"
            | "GatherElements"
            | "GatherND"
            | "Gelu"
            | "Identity"
            | "InstanceNormalization"
            | "Log"
            | "LogSoftmax"
            | "MatMul"
            | "Max"
            | "Min"
            | "Mod"
            | "Mul"
            | "Neg"
            | "Pad"
            | "Pow"
            | "Range"
            | "Reciprocal"
            | "ReduceMax"
            | "ReduceMean"
            | "ReduceMin"
            | "ReduceSum"
            | "Relu"
            | "Reshape"
            | "Resize"
            | "ScatterElements"
            | "ScatterND"
            | "Sigmoid"
            | "Sin"
            | "Slice"
            | "Softmax"
            | "Split"
            | "Sqrt"
            | "Squeeze"
            | "Sub"
            | "Tanh"
            | "Tile"
            | "Transpose"
            | "Trilu"
            | "Unsqueeze" => same(input(0)?),
            _ => {
                return Err(EmulateError::UnknownOp {
                    op: op.to_owned(),
                    node,
                    dtype: self.label,
                });
            }
        })
    }

    /// Rewrites `g`: `outer` holds the original types of the enclosing scopes' values and
    /// `renamed` the names their float32 copies have there.
    fn graph(
        &mut self,
        g: &mut proto::GraphProto,
        outer: &HashMap<String, i32>,
        renamed: &HashMap<String, String>,
        main: bool,
    ) -> Result<(), EmulateError> {
        let mut types = outer.clone();
        let mut renamed = renamed.clone();
        let mut nodes = Vec::with_capacity(g.node.len());
        // Initializers keep their type and are cast once; so are the main graph's inputs (the
        // caller feeds them). A sub-graph's inputs are values of the enclosing graph, which are
        // float32 now.
        let mut entry = |name: &str, t: i32, this: &mut Self, nodes: &mut Vec<proto::NodeProto>| {
            if t == this.low {
                let f = this.fresh(&format!("{name}__f32"));
                let node_name = this.fresh(&format!("emulate_{name}"));
                nodes.push(cast(name, &f, FLOAT, node_name));
                renamed.insert(name.to_owned(), f);
            }
        };
        for t in &g.initializer {
            let name = t.name.clone().unwrap_or_default();
            let ty = t.data_type.unwrap_or(0);
            types.insert(name.clone(), ty);
            entry(&name, ty, self, &mut nodes);
        }
        for i in &mut g.input {
            let name = i.name.clone().unwrap_or_default();
            let ty = elem_type(i).unwrap_or(0);
            types.insert(name.clone(), ty);
            if main {
                entry(&name, ty, self, &mut nodes);
            } else if ty == self.low {
                set_elem_type(i, FLOAT);
            }
        }
        let main_outputs: HashSet<String> = if main {
            g.output.iter().filter_map(|o| o.name.clone()).collect()
        } else {
            HashSet::new()
        };
        for mut n in std::mem::take(&mut g.node) {
            let out_types = self.output_types(&n, &types)?;
            for i in n.input.iter_mut() {
                if let Some(f) = renamed.get(i) {
                    i.clone_from(f);
                }
            }
            let low = self.low;
            let touches = out_types.contains(&low)
                || n.attribute
                    .iter()
                    .any(|a| a.g.is_some() || !a.graphs.is_empty());
            if n.op_type.as_deref() == Some("Cast") {
                for a in &mut n.attribute {
                    if a.name.as_deref() == Some("to") && a.i == Some(i64::from(low)) {
                        a.i = Some(i64::from(FLOAT));
                    }
                }
            }
            if n.op_type.as_deref() == Some("ConstantOfShape") {
                for a in &mut n.attribute {
                    if let Some(t) = a.t.as_mut().filter(|t| t.data_type == Some(low)) {
                        to_float(t);
                    }
                }
            }
            for a in &mut n.attribute {
                for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                    self.graph(sub, &types, &renamed, false)?;
                    for o in &mut sub.output {
                        if elem_type(o) == Some(low) {
                            set_elem_type(o, FLOAT);
                        }
                    }
                }
            }
            let mut after = Vec::new();
            for (k, ty) in out_types.iter().enumerate() {
                let Some(y) = n.output.get(k).cloned().filter(|y| !y.is_empty()) else {
                    continue;
                };
                types.insert(y.clone(), *ty);
                if *ty != low {
                    continue;
                }
                // A node that only moves values (a weight's Transpose, a Reshape) gives values
                // its inputs had, already rounded: no rounding after it, and no transient
                // copies (a tied embedding's Transpose is 2.4 GB in float32 for gemma-2-2b).
                let moves = MOVES.contains(&n.op_type.as_deref().unwrap_or_default());
                if moves && !main_outputs.contains(&y) {
                    continue;
                }
                let raw = self.fresh(&format!("{y}__f32"));
                n.output[k].clone_from(&raw);
                let (c1, c2) = (
                    self.fresh(&format!("emulate_round_{y}")),
                    self.fresh(&format!("emulate_back_{y}")),
                );
                if main_outputs.contains(&y) {
                    // The output keeps its name and type; readers take a float32 copy.
                    let f = self.fresh(&format!("{y}__r"));
                    after.push(cast(&raw, &y, low, c1));
                    after.push(cast(&y, &f, FLOAT, c2));
                    renamed.insert(y, f);
                } else {
                    let l = self.fresh(&format!("{y}__{}", self.label.to_lowercase()));
                    after.push(cast(&raw, &l, low, c1));
                    after.push(cast(&l, &y, FLOAT, c2));
                }
            }
            if touches {
                self.rewritten += 1;
            }
            nodes.push(n);
            nodes.extend(after);
        }
        g.node = nodes;
        if !main {
            // A sub-graph output may be an enclosing value passed through.
            for o in &mut g.output {
                if let Some(f) = o.name.as_ref().and_then(|n| renamed.get(n)) {
                    o.name = Some(f.clone());
                }
            }
        }
        Ok(())
    }
}

/// Ops whose outputs are values of their inputs, moved: exact in any type, so their float32
/// results need no rounding.
const MOVES: &[&str] = &[
    "Concat",
    "Expand",
    "Flatten",
    "Gather",
    "Identity",
    "Pad",
    "Reshape",
    "Slice",
    "Split",
    "Squeeze",
    "Transpose",
    "Unsqueeze",
];

/// A tensor of bfloat16 or float16 values as float32 (exact: both widen without rounding).
fn to_float(t: &mut proto::TensorProto) {
    let bits: Vec<u16> = if let Some(raw) = t.raw_data.as_ref() {
        raw.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    } else {
        t.int32_data.iter().map(|v| *v as u16).collect()
    };
    let values: Vec<f32> = match t.data_type {
        Some(x) if x == DataType::Bfloat16 as i32 => bits
            .into_iter()
            .map(|b| half::bf16::from_bits(b).to_f32())
            .collect(),
        _ => bits
            .into_iter()
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect(),
    };
    t.data_type = Some(FLOAT);
    t.int32_data.clear();
    t.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
}

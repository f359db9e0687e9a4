//! Lowering of an [`ExportedProgram`] to an ONNX [`proto::ModelProto`] (torch.onnx.export's
//! counterpart).
//!
//! - Each engine op has one lowering in the tables of `lower/ops.rs` and its sub-modules, with the oldest opset it needs; a
//!   missing lowering or a too old opset is an error naming the op, the node and the opset.
//! - Symbols become `dim_param`s with the Dim names (`batch`, `seq_length`); a size computed from
//!   symbols (`seq_length + 1`) is computed at run time from `Shape` nodes of the inputs where
//!   the symbols first appear, once per expression, and shared by every node that needs it.
//!   Static sizes are constants: no Shape node is made for them.
//! - Parameters, buffers and constants become initializers named by their checkpoint names.
//! - Node names follow module paths: `/layers.0/self_attn/MatMul`.
//! - The model's guards are not checked by the ONNX file (neither does torch.onnx's): they are
//!   listed in the metadata (`guards`), with the patches that were active (`patches`).
//! - Everything is ordered by the graph, never by a hash map: exporting twice gives
//!   byte-identical files.

use std::collections::HashMap;

use onnx_diagnostic_core::Graph;
use onnx_diagnostic_core::{ExportedProgram, InputKind, SymInt, ValueInfo};

use crate::{convert, passes, proto};

mod builder;
mod ops;

use builder::{A, Builder, SymbolSource};

/// The opsets of the default domain the lowering accepts.
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=23;

/// The default opset.
pub const DEFAULT_OPSET: i64 = 18;

/// Options of [`lower`].
#[derive(Clone, Debug)]
pub struct LowerOptions {
    /// Opset of the default domain (17 to 23).
    pub opset: i64,
    /// Run the clean-up passes (identity and dead-node removal, unused initializers).
    pub optimize: bool,
    /// Names of the patches that were active during the export, kept in the metadata.
    pub patches: Vec<String>,
}

impl Default for LowerOptions {
    fn default() -> Self {
        Self {
            opset: DEFAULT_OPSET,
            optimize: true,
            patches: Vec::new(),
        }
    }
}

/// Errors of the lowering; each names the op, the node and what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LowerError {
    /// The opset is outside what the lowering supports.
    #[error("opset {opset} is not supported: choose one of 17 to 23 (18 is the default)")]
    Opset {
        /// The requested opset.
        opset: i64,
    },
    /// No lowering exists for an op.
    #[error(
        "no ONNX lowering for {op} (node {node}) at opset {opset}: add one to \
         crates/onnx/src/lower/ops.rs, or write the model with supported ops"
    )]
    NoLowering {
        /// The engine op.
        op: String,
        /// The node (its first output and module).
        node: String,
        /// The requested opset.
        opset: i64,
    },
    /// The opset is too old for an op.
    #[error("{op} (node {node}) needs opset {min} or newer, the export asked for opset {opset}")]
    OpsetTooOld {
        /// The engine op.
        op: String,
        /// The node.
        node: String,
        /// The requested opset.
        opset: i64,
        /// The oldest opset that works.
        min: i64,
    },
    /// A node cannot be lowered as recorded.
    #[error("cannot lower {op} (node {node}): {message}")]
    Op {
        /// The engine op.
        op: &'static str,
        /// The node.
        node: String,
        /// Why.
        message: String,
    },
    /// A size needs a symbol that no input dimension carries.
    #[error(
        "symbol {symbol} (node {node}) is not the size of any input dimension, so the ONNX \
         graph cannot compute it"
    )]
    Symbol {
        /// The symbol or expression.
        symbol: String,
        /// The node.
        node: String,
    },
    /// A weight or constant cannot be stored.
    #[error("cannot store tensor {name}: {message}")]
    Tensor {
        /// Its name.
        name: String,
        /// Why.
        message: String,
    },
}

/// `layers.0.self_attn` → `/layers.0/self_attn`: a numeric segment stays with the one before,
/// as torch names nodes.
fn module_prefix(module: &str) -> String {
    let mut out = String::new();
    for part in module.split('.').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push('.');
        } else {
            out.push('/');
        }
        out.push_str(part);
    }
    out
}

/// An output name that no input has: `past_*` becomes `present_*` (the cache an LLM returns, as
/// ONNX Runtime GenAI names it), any other clash gets `_out`.
fn output_name(want: &str, inputs: &std::collections::HashSet<String>) -> String {
    if !inputs.contains(want) {
        return want.to_owned();
    }
    match want.strip_prefix("past_") {
        Some(rest) => format!("present_{rest}"),
        None => format!("{want}_out"),
    }
}

fn dim_proto(size: &SymInt) -> proto::tensor_shape_proto::Dimension {
    use proto::tensor_shape_proto::dimension::Value;
    proto::tensor_shape_proto::Dimension {
        value: Some(match size.as_static() {
            Some(v) => Value::DimValue(v),
            None => Value::DimParam(size.expr().to_string()),
        }),
        ..Default::default()
    }
}

fn value_info(name: &str, info: &ValueInfo) -> Result<proto::ValueInfoProto, LowerError> {
    let dt = convert::data_type(info.kind).ok_or_else(|| LowerError::Tensor {
        name: name.to_owned(),
        message: format!("element type {:?} has no ONNX type", info.kind),
    })?;
    Ok(proto::ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(dt as i32),
                    shape: Some(proto::TensorShapeProto {
                        dim: info.shape.iter().map(dim_proto).collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn metadata(key: &str, value: String) -> proto::StringStringEntryProto {
    proto::StringStringEntryProto {
        key: Some(key.to_owned()),
        value: Some(value),
    }
}

/// The engine ops that have a lowering, with the oldest opset each needs.
pub fn lowered_ops() -> Vec<(&'static str, i64)> {
    ops::tables().map(|e| (e.op, e.min_opset)).collect()
}

/// Lowers an exported program to ONNX.
///
/// # Errors
/// [`LowerError`] naming the op, the node and the opset when a node cannot be lowered.
pub fn lower(
    ep: &ExportedProgram,
    options: &LowerOptions,
) -> Result<proto::ModelProto, LowerError> {
    if !OPSETS.contains(&options.opset) {
        return Err(LowerError::Opset {
            opset: options.opset,
        });
    }
    let graph = ep.graph();
    let mut b = Builder::new(options.opset);
    let mut names: Vec<String> = graph.values.iter().map(|v| v.name.clone()).collect();
    for v in &graph.values {
        b.reserve(&v.name);
    }

    // Inputs: captured tensors become initializers named by their targets; user inputs are
    // graph inputs, and the first dimension carrying each symbol is its run-time source.
    let mut captured = ep.captured().iter();
    let mut inputs = Vec::new();
    for (id, kind) in &graph.inputs {
        let info = graph.value(*id);
        match kind {
            InputKind::Parameter(target)
            | InputKind::Buffer(target)
            | InputKind::Constant(target) => {
                let (_, tensor) = captured.next().ok_or_else(|| LowerError::Tensor {
                    name: target.clone(),
                    message: "the program holds no tensor for it".to_owned(),
                })?;
                b.reserve(target);
                names[id.index()] = target.clone();
                b.add_weight(target, tensor)?;
            }
            InputKind::User => {
                for (d, size) in info.shape.iter().enumerate() {
                    if let Some(symbol) = size.expr().as_symbol() {
                        b.sources
                            .entry(symbol.into())
                            .or_insert_with(|| SymbolSource {
                                input: info.name.clone(),
                                dim: d as i64,
                            });
                    }
                }
                inputs.push(value_info(&info.name, info)?);
            }
        }
    }

    lower_nodes(&mut b, graph, &names)?;

    // Outputs are named from the output structure (`logits`, `present_key_values_key_0`):
    // each is an Identity of the computed value, which the clean-up folds into its producer.
    b.prefix = String::new();
    let mut outputs = Vec::new();
    let input_names: std::collections::HashSet<String> = graph
        .inputs
        .iter()
        .map(|(id, _)| names[id.index()].clone())
        .collect();
    let mut wanted = ep.output_spec().leaf_names("");
    if wanted.len() != graph.outputs.len() {
        wanted = (0..graph.outputs.len())
            .map(|k| format!("output_{k}"))
            .collect();
    }
    for (id, want) in graph.outputs.iter().zip(wanted) {
        let name = b.fresh(&output_name(&want, &input_names));
        b.emit(
            "Identity",
            &[&names[id.index()]],
            std::slice::from_ref(&name),
            Vec::new(),
        );
        outputs.push(value_info(&name, graph.value(*id))?);
    }

    let mut graph_proto = proto::GraphProto {
        name: Some(ep.class_name().to_owned()),
        node: std::mem::take(&mut b.nodes),
        initializer: std::mem::take(&mut b.initializers),
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    if options.optimize {
        passes::optimize(&mut graph_proto);
    }
    passes::share_tied_transposes(&mut graph_proto, &b.transposed);
    fill_weights(&mut graph_proto, &b.weights)?;
    let guards: Vec<String> = ep
        .guards()
        .iter()
        .map(|g| format!("{} {} {}", g.lhs, g.rel, g.rhs))
        .collect();
    Ok(proto::ModelProto {
        ir_version: Some(crate::ir_version_for_opset(options.opset)),
        producer_name: Some("onnx-diagnostic".to_owned()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(options.opset),
        }],
        metadata_props: vec![
            metadata("patches", options.patches.join(",")),
            metadata("guards", guards.join("; ")),
            metadata("checks", checks(graph).join("; ")),
        ],
        graph: Some(graph_proto),
        ..Default::default()
    })
}

/// The messages of the `check`s of the graph and its sub-graphs (dropped from the ONNX graph).
fn checks(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for node in &graph.nodes {
        for a in &node.attrs {
            match a {
                onnx_diagnostic_core::Attr::Text(m) if node.op.name == "aten._assert_async.msg" => {
                    out.push(m.clone());
                }
                onnx_diagnostic_core::Attr::Graph(g) => out.extend(checks(&g.graph)),
                _ => {}
            }
        }
    }
    out
}

/// Lowers the nodes of `graph` (whose values have the ONNX names `names`) into the builder.
fn lower_nodes(b: &mut Builder, graph: &Graph, names: &[String]) -> Result<(), LowerError> {
    let table: HashMap<&str, &ops::Entry> = ops::tables().map(|e| (e.op, e)).collect();
    for node in &graph.nodes {
        b.prefix = module_prefix(&node.module);
        let first = node
            .outputs
            .first()
            .map_or("?", |id| graph.value(*id).name.as_str());
        b.current = if node.module.is_empty() {
            first.to_owned()
        } else {
            format!("{first} in {}", node.module)
        };
        let entry = table
            .get(node.op.name)
            .ok_or_else(|| LowerError::NoLowering {
                op: node.op.name.to_owned(),
                node: b.current.clone(),
                opset: b.opset,
            })?;
        if b.opset < entry.min_opset {
            return Err(LowerError::OpsetTooOld {
                op: node.op.name.to_owned(),
                node: b.current.clone(),
                opset: b.opset,
                min: entry.min_opset,
            });
        }
        let mut ctx = ops::Ctx {
            b,
            graph,
            node,
            names,
        };
        (entry.lower)(&mut ctx)?;
        // Sizes no input carries (`nonzero`'s count, a `cond` output size) are read from
        // the first output that carries them.
        for id in &node.outputs {
            for (d, size) in graph.value(*id).shape.iter().enumerate() {
                if let Some(symbol) = size.expr().as_symbol()
                    && !b.sources.contains_key(symbol)
                {
                    b.sources.insert(
                        symbol.into(),
                        SymbolSource {
                            input: names[id.index()].clone(),
                            dim: d as i64,
                        },
                    );
                }
            }
        }
    }
    Ok(())
}

/// Lowers a sub-graph (a branch of `cond`, the body of `scan`) into an ONNX graph attribute:
/// its inputs take the names `inputs` (outer-scope values, or the body's own inputs), its
/// nodes are lowered with the enclosing graph's builder (sizes computed inside stay inside),
/// and each output is an Identity named after the value.
pub(crate) fn lower_subgraph(
    b: &mut Builder,
    name: &str,
    sub: &Graph,
    inputs: &[String],
    body_inputs: Vec<proto::ValueInfoProto>,
    prologue: &mut dyn FnMut(&mut Builder) -> Result<(), LowerError>,
    extra_outputs: Vec<proto::ValueInfoProto>,
) -> Result<proto::GraphProto, LowerError> {
    let mut names: Vec<String> = sub.values.iter().map(|v| v.name.clone()).collect();
    for v in &sub.values {
        b.reserve(&v.name);
    }
    for ((id, _), n) in sub.inputs.iter().zip(inputs) {
        names[id.index()] = n.clone();
    }
    let outer_nodes = std::mem::take(&mut b.nodes);
    let outer_syms = b.save_syms();
    let (prefix, current) = (b.prefix.clone(), b.current.clone());
    let result = (|| {
        prologue(b)?;
        lower_nodes(b, sub, &names)?;
        let mut outputs = extra_outputs;
        for id in &sub.outputs {
            let out = b.fresh(&format!("{}_{name}", names[id.index()]));
            b.emit(
                "Identity",
                &[&names[id.index()]],
                std::slice::from_ref(&out),
                Vec::new(),
            );
            outputs.push(value_info(&out, sub.value(*id))?);
        }
        Ok(outputs)
    })();
    let body = std::mem::replace(&mut b.nodes, outer_nodes);
    b.restore_syms(outer_syms);
    b.prefix = prefix;
    b.current = current;
    Ok(proto::GraphProto {
        name: Some(name.to_owned()),
        node: body,
        input: body_inputs,
        output: result?,
        ..Default::default()
    })
}

/// The type of a value for a sub-graph's declared inputs.
pub(crate) fn typed(name: &str, info: &ValueInfo) -> Result<proto::ValueInfoProto, LowerError> {
    value_info(name, info)
}

/// Copies the bytes of the weights [`Builder::add_weight`] registered into their initializers
/// (those the clean-up passes kept).
fn fill_weights(
    graph: &mut proto::GraphProto,
    weights: &HashMap<String, tch::Tensor>,
) -> Result<(), LowerError> {
    for t in &mut graph.initializer {
        if t.raw_data.is_some() {
            continue;
        }
        let name = t.name.clone().unwrap_or_default();
        let Some(w) = weights.get(&name) else {
            continue;
        };
        let full = convert::tensor_proto(w, &name).map_err(|message| LowerError::Tensor {
            name: name.clone(),
            message,
        })?;
        t.raw_data = full.raw_data;
    }
    Ok(())
}

impl Builder {
    /// Registers a weight as an initializer under `name`. Its bytes are copied into the model
    /// only at the end of the lowering ([`fill_weights`]), once the clean-up passes have
    /// dropped the initializers nothing reads (a linear weight read only transposed): a model
    /// whose weights fill the memory is not copied twice.
    fn add_weight(&mut self, name: &str, tensor: &tch::Tensor) -> Result<(), LowerError> {
        let data_type = convert::data_type(tensor.kind()).ok_or_else(|| LowerError::Tensor {
            name: name.to_owned(),
            message: format!("element type {:?} has no ONNX type", tensor.kind()),
        })?;
        self.initializers.push(proto::TensorProto {
            dims: tensor.size(),
            data_type: Some(data_type as i32),
            name: Some(name.to_owned()),
            ..Default::default()
        });
        self.weights.insert(name.to_owned(), tensor.shallow_clone());
        Ok(())
    }

    /// `name` with its two dims swapped: a transposed initializer for a weight (made once,
    /// its bytes written at once and the transposed copy dropped), a Transpose node otherwise.
    pub(crate) fn transposed(&mut self, name: &str) -> Result<String, LowerError> {
        if let Some(done) = self.transposed.get(name) {
            return Ok(done.clone());
        }
        if let Some(w) = self.weights.get(name) {
            let key = format!("{name}.T");
            let t =
                w.f_t_copy()
                    .and_then(|t| t.f_contiguous())
                    .map_err(|e| LowerError::Tensor {
                        name: name.to_owned(),
                        message: e.to_string(),
                    })?;
            let out = self.fresh(&key);
            let proto = convert::tensor_proto(&t, &out).map_err(|message| LowerError::Tensor {
                name: out.clone(),
                message,
            })?;
            self.initializers.push(proto);
            self.transposed.insert(name.to_owned(), out.clone());
            return Ok(out);
        }
        Ok(self.op("Transpose", &[name], vec![("perm", A::Ints(vec![1, 0]))]))
    }
}

//! The graph IR: values with a dtype and a symbolic shape, nodes calling registered ops.
//!
//! A node names its op (an [`OpDef`] of the op table), its tensor inputs (optional ones may be
//! absent, as `bias=None`), its non-tensor arguments ([`Attr`], sizes as [`SymInt`]s), its
//! outputs, the Rust location of the call and the module path. Sub-graphs (`cond`, `scan`) are
//! attributes holding a [`Graph`] ([`SubGraph`]).

use std::{fmt, sync::Arc};

use tch::Kind;

use crate::{error::Loc, ops::OpDef, sym::SymInt};

/// Index of a value in its [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(crate) u32);

impl ValueId {
    /// The position in [`Graph::values`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A value of the graph: a tensor with a name, an element type and a symbolic shape.
#[derive(Clone, Debug)]
pub struct ValueInfo {
    /// Unique name in the graph (`x`, `add_1`, `p_lm_head_weight`).
    pub name: String,
    /// Element type.
    pub kind: Kind,
    /// Symbolic shape (with the hints of the example inputs).
    pub shape: Vec<SymInt>,
}

/// A non-tensor argument of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// An integer, possibly symbolic (a size, a dim, an index).
    Int(SymInt),
    /// A list of integers, possibly symbolic (a shape).
    Ints(Vec<SymInt>),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// An element type.
    Kind(Kind),
    /// An absent optional argument.
    None,
    /// A string (an approximation mode, a reduction).
    Str(&'static str),
    /// A message (of an assertion).
    Text(String),
    /// A sub-graph (a branch of `cond`, the body of `scan`).
    Graph(SubGraph),
}

/// A sub-graph attribute: its name in the printed program (`true_graph_0`) and the graph.
#[derive(Clone, Debug)]
pub struct SubGraph {
    /// The name torch gives it (`true_graph_0`, `false_graph_0`, `scan_combine_graph_0`).
    pub name: String,
    /// The graph; its inputs are the node's operands then the captured outer values.
    pub graph: Arc<Graph>,
}

impl PartialEq for SubGraph {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.graph, &other.graph)
    }
}

impl Attr {
    /// The integer value (the hint for symbolic ones).
    pub(crate) fn int(&self) -> Result<i64, String> {
        match self {
            Attr::Int(v) => Ok(v.hint()),
            other => Err(format!("expected an integer, got {other}")),
        }
    }

    pub(crate) fn sym(&self) -> Result<&SymInt, String> {
        match self {
            Attr::Int(v) => Ok(v),
            other => Err(format!("expected an integer, got {other}")),
        }
    }

    pub(crate) fn ints(&self) -> Result<Vec<i64>, String> {
        match self {
            Attr::Ints(v) => Ok(v.iter().map(SymInt::hint).collect()),
            other => Err(format!("expected a list of integers, got {other}")),
        }
    }

    pub(crate) fn syms(&self) -> Result<&[SymInt], String> {
        match self {
            Attr::Ints(v) => Ok(v),
            other => Err(format!("expected a list of integers, got {other}")),
        }
    }

    pub(crate) fn float(&self) -> Result<f64, String> {
        match self {
            Attr::Float(v) => Ok(*v),
            Attr::Int(v) => Ok(v.hint() as f64),
            other => Err(format!("expected a float, got {other}")),
        }
    }

    pub(crate) fn opt_float(&self) -> Result<Option<f64>, String> {
        match self {
            Attr::None => Ok(None),
            other => other.float().map(Some),
        }
    }

    pub(crate) fn bool(&self) -> Result<bool, String> {
        match self {
            Attr::Bool(v) => Ok(*v),
            other => Err(format!("expected a bool, got {other}")),
        }
    }

    pub(crate) fn kind(&self) -> Result<Kind, String> {
        match self {
            Attr::Kind(v) => Ok(*v),
            other => Err(format!("expected a dtype, got {other}")),
        }
    }

    pub(crate) fn str(&self) -> Result<&'static str, String> {
        match self {
            Attr::Str(v) => Ok(v),
            other => Err(format!("expected a string, got {other}")),
        }
    }

    /// The same attribute with its symbolic integers evaluated by `f`.
    pub(crate) fn map_syms(
        &self,
        f: &mut impl FnMut(&SymInt) -> Result<SymInt, String>,
    ) -> Result<Attr, String> {
        Ok(match self {
            Attr::Int(v) => Attr::Int(f(v)?),
            Attr::Ints(v) => Attr::Ints(v.iter().map(&mut *f).collect::<Result<_, _>>()?),
            other => other.clone(),
        })
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Ints(v) => {
                write!(f, "[")?;
                for (i, d) in v.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{d}")?;
                }
                write!(f, "]")
            }
            Attr::Float(v) => {
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
                    write!(f, "{v:.1}")
                } else if v.is_infinite() {
                    write!(f, "{}inf", if *v < 0.0 { "-" } else { "" })
                } else {
                    write!(f, "{v}")
                }
            }
            Attr::Bool(v) => write!(f, "{}", if *v { "True" } else { "False" }),
            Attr::Kind(k) => write!(f, "torch.{}", kind_name(*k)),
            Attr::None => write!(f, "None"),
            Attr::Str(s) => write!(f, "'{s}'"),
            Attr::Text(s) => write!(f, "{s:?}"),
            Attr::Graph(g) => write!(f, "{}", g.name),
        }
    }
}

/// torch's name of an element type (`float32`).
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Uint8 => "uint8",
        Kind::Int8 => "int8",
        Kind::Int16 => "int16",
        Kind::Int => "int32",
        Kind::Int64 => "int64",
        Kind::Half => "float16",
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::Bool => "bool",
        Kind::BFloat16 => "bfloat16",
        Kind::ComplexFloat => "complex64",
        Kind::ComplexDouble => "complex128",
        _ => "unknown",
    }
}

/// The element type of torch's name (`float32`), the inverse of [`kind_name`].
pub fn kind_from_name(name: &str) -> Option<Kind> {
    [
        Kind::Uint8,
        Kind::Int8,
        Kind::Int16,
        Kind::Int,
        Kind::Int64,
        Kind::Half,
        Kind::Float,
        Kind::Double,
        Kind::Bool,
        Kind::BFloat16,
        Kind::ComplexFloat,
        Kind::ComplexDouble,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

/// torch's short name of an element type in printed shapes (`f32`, `i64`, `b8`).
pub fn kind_short(kind: Kind) -> &'static str {
    match kind {
        Kind::Uint8 => "u8",
        Kind::Int8 => "i8",
        Kind::Int16 => "i16",
        Kind::Int => "i32",
        Kind::Int64 => "i64",
        Kind::Half => "f16",
        Kind::Float => "f32",
        Kind::Double => "f64",
        Kind::Bool => "b8",
        Kind::BFloat16 => "bf16",
        Kind::ComplexFloat => "c64",
        Kind::ComplexDouble => "c128",
        _ => "?",
    }
}

/// A call of an op.
#[derive(Clone, Debug)]
pub struct Node {
    /// The op.
    pub op: &'static OpDef,
    /// Tensor inputs; `None` for an absent optional tensor.
    pub inputs: Vec<Option<ValueId>>,
    /// Non-tensor arguments.
    pub attrs: Vec<Attr>,
    /// Outputs.
    pub outputs: Vec<ValueId>,
    /// Where the model code called the op.
    pub location: Loc,
    /// The module path (`model.layers.0.self_attn`), empty at the top.
    pub module: String,
    /// The patch whose code recorded the node, if any (`patched_LlamaRotaryEmbedding.forward`).
    pub patch: Option<Arc<str>>,
}

/// What a graph input is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A weight of the module, by checkpoint name.
    Parameter(String),
    /// A buffer of the module, by name.
    Buffer(String),
    /// A tensor captured by the model code, lifted to an input, by constant name.
    Constant(String),
    /// A flattened user input.
    User,
}

/// A graph: values, nodes in execution order, inputs and outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Every value, indexed by [`ValueId`].
    pub values: Vec<ValueInfo>,
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// Inputs: parameters, buffers, constants, then user inputs (torch's order).
    pub inputs: Vec<(ValueId, InputKind)>,
    /// Outputs.
    pub outputs: Vec<ValueId>,
}

impl Graph {
    /// The value behind an id.
    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.index()]
    }

    /// The sub-graphs of the nodes (not recursively).
    pub fn subgraphs(&self) -> impl Iterator<Item = &SubGraph> {
        self.nodes.iter().flat_map(|n| {
            n.attrs.iter().filter_map(|a| match a {
                Attr::Graph(g) => Some(g),
                _ => None,
            })
        })
    }
}

//! The graph under construction: names, nodes, initializers, shared constants and the
//! run-time computation of symbolic sizes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use onnx_diagnostic_core::{Atom, SymExpr, SymInt};
use tch::Kind;

use super::LowerError;
use crate::{convert, proto};

/// An attribute of an ONNX node.
#[derive(Clone)]
pub(crate) enum A {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
    Tensor(Box<proto::TensorProto>),
    Graph(Box<proto::GraphProto>),
}

fn attribute(name: &str, value: A) -> proto::AttributeProto {
    use proto::attribute_proto::AttributeType as T;
    let mut a = proto::AttributeProto {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    match value {
        A::Int(v) => {
            a.r#type = Some(T::Int as i32);
            a.i = Some(v);
        }
        A::Ints(v) => {
            a.r#type = Some(T::Ints as i32);
            a.ints = v;
        }
        A::Float(v) => {
            a.r#type = Some(T::Float as i32);
            a.f = Some(v);
        }
        A::Str(v) => {
            a.r#type = Some(T::String as i32);
            a.s = Some(v.as_bytes().to_vec());
        }
        A::Tensor(v) => {
            a.r#type = Some(T::Tensor as i32);
            a.t = Some(*v);
        }
        A::Graph(v) => {
            a.r#type = Some(T::Graph as i32);
            a.g = Some(*v);
        }
    }
    a
}

/// Where a symbol can be read at run time: a graph input and one of its dimensions.
#[derive(Clone, Debug)]
pub(crate) struct SymbolSource {
    pub(crate) input: String,
    pub(crate) dim: i64,
}

/// The graph being built.
pub(crate) struct Builder {
    pub(crate) nodes: Vec<proto::NodeProto>,
    pub(crate) initializers: Vec<proto::TensorProto>,
    used: HashSet<String>,
    node_names: HashMap<String, usize>,
    /// Constants by (type, dims, bytes), so that equal constants are one initializer.
    consts: HashMap<(i32, Vec<i64>, Vec<u8>), String>,
    /// Run-time sizes, computed once each: `e:<expr>` (1-D, one element), `shape:<exprs>`
    /// (1-D), `scalar:<expr>` (0-D).
    syms: BTreeMap<String, String>,
    pub(crate) sources: HashMap<Arc<str>, SymbolSource>,
    /// Module path of the node being lowered, as a name prefix (`/layers.0/self_attn`).
    pub(crate) prefix: String,
    /// Where the current engine node's lowering is (its name, for errors).
    pub(crate) current: String,
    /// The opset of the default domain.
    pub(crate) opset: i64,
    /// Weights (initializers from the program's parameters, buffers, constants) by name.
    pub(crate) weights: HashMap<String, tch::Tensor>,
    /// The transposed initializer made for a weight, by the weight's name.
    pub(crate) transposed: HashMap<String, String>,
}

impl Builder {
    pub(crate) fn new(opset: i64) -> Self {
        Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            used: HashSet::new(),
            node_names: HashMap::new(),
            consts: HashMap::new(),
            syms: BTreeMap::new(),
            sources: HashMap::new(),
            prefix: String::new(),
            current: String::new(),
            transposed: HashMap::new(),
            opset,
            weights: HashMap::new(),
        }
    }

    /// The cache of run-time sizes, to restore after a sub-graph (sizes computed inside a
    /// sub-graph are not visible outside it).
    pub(crate) fn save_syms(&self) -> BTreeMap<String, String> {
        self.syms.clone()
    }

    /// Restores the cache saved by [`Builder::save_syms`].
    pub(crate) fn restore_syms(&mut self, syms: BTreeMap<String, String>) {
        self.syms = syms;
    }

    /// Reserves a name (graph input, value, initializer) so that no fresh name takes it.
    pub(crate) fn reserve(&mut self, name: &str) {
        self.used.insert(name.to_owned());
    }

    /// A fresh value name from `base`.
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        if self.used.insert(base.to_owned()) {
            return base.to_owned();
        }
        let mut i = 1;
        loop {
            let name = format!("{base}_{i}");
            if self.used.insert(name.clone()) {
                return name;
            }
            i += 1;
        }
    }

    fn node_name(&mut self, op_type: &str) -> String {
        let base = format!("{}/{op_type}", self.prefix);
        let n = self.node_names.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base
        } else {
            format!("{base}_{}", *n - 1)
        }
    }

    /// Appends a node with the given output names.
    pub(crate) fn emit(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[String],
        attrs: Vec<(&str, A)>,
    ) {
        let name = self.node_name(op_type);
        let mut attrs = attrs;
        let computed_shape = inputs
            .get(1)
            .is_some_and(|s| !self.consts.values().any(|c| c == s));
        if op_type == "Reshape"
            && self.opset >= 14
            && computed_shape
            && !attrs.iter().any(|(n, _)| *n == "allowzero")
        {
            // A shape computed at run time holds torch's sizes: a 0 there is a size of 0 (a step
            // without images), never ONNX's "copy the input's dim". Constant shapes keep ONNX's
            // meaning (the lowerings write `[0, groups, -1]` for "this dim, unchanged").
            attrs.push(("allowzero", A::Int(1)));
        }
        self.nodes.push(proto::NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.to_vec(),
            name: Some(name),
            op_type: Some(op_type.to_owned()),
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
    }

    /// Appends a node with one fresh output and returns its name.
    pub(crate) fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, A)>) -> String {
        let out = self.fresh(&format!("_{}", op_type.to_lowercase()));
        self.emit(op_type, inputs, std::slice::from_ref(&out), attrs);
        out
    }

    /// An initializer holding `tensor` (shared with any equal constant).
    pub(crate) fn constant(
        &mut self,
        tensor: &tch::Tensor,
        base: &str,
    ) -> Result<String, LowerError> {
        let proto = convert::tensor_proto(tensor, "").map_err(|message| LowerError::Tensor {
            name: base.to_owned(),
            message,
        })?;
        let key = (
            proto.data_type.unwrap_or_default(),
            proto.dims.clone(),
            proto.raw_data.clone().unwrap_or_default(),
        );
        if let Some(name) = self.consts.get(&key) {
            return Ok(name.clone());
        }
        let name = self.fresh(base);
        let mut proto = proto;
        proto.name = Some(name.clone());
        self.initializers.push(proto);
        self.consts.insert(key, name.clone());
        Ok(name)
    }

    /// A 1-D int64 constant.
    pub(crate) fn ints(&mut self, values: &[i64]) -> Result<String, LowerError> {
        self.constant(&tch::Tensor::from_slice(values), "const_i64")
    }

    /// A 0-D constant of `kind` holding `value`.
    pub(crate) fn scalar(&mut self, value: f64, kind: Kind) -> Result<String, LowerError> {
        let t = tch::Tensor::from(value)
            .f_to_kind(kind)
            .map_err(|e| LowerError::Tensor {
                name: "scalar".to_owned(),
                message: e.to_string(),
            })?;
        self.constant(&t, &format!("const_{}", convert::kind_suffix(kind)))
    }

    /// A run-time size as a 1-D int64 tensor of one element.
    pub(crate) fn sym(&mut self, size: &SymInt) -> Result<String, LowerError> {
        self.sym_expr(size.expr())
    }

    pub(crate) fn sym_expr(&mut self, expr: &SymExpr) -> Result<String, LowerError> {
        if let Some(c) = expr.as_const() {
            return self.ints(&[c]);
        }
        let key = format!("e:{expr}");
        if let Some(name) = self.syms.get(&key) {
            return Ok(name.clone());
        }
        let name = if let Some(symbol) = expr.as_symbol() {
            let source = self
                .sources
                .get(symbol)
                .cloned()
                .ok_or_else(|| LowerError::Symbol {
                    symbol: symbol.to_owned(),
                    node: self.current.clone(),
                })?;
            let out = self.fresh(&format!("sym_{symbol}"));
            self.emit(
                "Shape",
                &[&source.input],
                std::slice::from_ref(&out),
                vec![
                    ("start", A::Int(source.dim)),
                    ("end", A::Int(source.dim + 1)),
                ],
            );
            out
        } else {
            self.polynomial(expr)?
        };
        self.syms.insert(key, name.clone());
        Ok(name)
    }

    fn atom(&mut self, atom: &Atom) -> Result<String, LowerError> {
        let binary = |b: &mut Self, op: &str, x: &SymExpr, y: &SymExpr, extra: Vec<(&str, A)>| {
            let (x, y) = (b.sym_expr(x)?, b.sym_expr(y)?);
            Ok::<_, LowerError>(b.op(op, &[&x, &y], extra))
        };
        match atom {
            Atom::Sym(s) => self.sym_expr(&SymExpr::symbol(s)),
            // Sizes are non-negative: integer Div (truncation) is floor division there.
            Atom::FloorDiv(x, y) => binary(self, "Div", x, y, Vec::new()),
            Atom::Mod(x, y) => binary(self, "Mod", x, y, vec![("fmod", A::Int(0))]),
            Atom::Min(x, y) => binary(self, "Min", x, y, Vec::new()),
            Atom::Max(x, y) => binary(self, "Max", x, y, Vec::new()),
        }
    }

    /// A polynomial: products of atoms, scaled, summed (constant term last).
    fn polynomial(&mut self, expr: &SymExpr) -> Result<String, LowerError> {
        let mut acc: Option<String> = None;
        let mut constant = 0;
        for (mono, coef) in expr.terms() {
            if mono.is_empty() {
                constant = coef;
                continue;
            }
            let mut product: Option<String> = None;
            for atom in mono {
                let a = self.atom(atom)?;
                product = Some(match product {
                    None => a,
                    Some(p) => self.op("Mul", &[&p, &a], Vec::new()),
                });
            }
            let Some(mut term) = product else { continue };
            let (op, magnitude) = match &acc {
                Some(_) if coef < 0 => ("Sub", -coef),
                _ => ("Add", coef),
            };
            if magnitude != 1 {
                let c = self.ints(&[magnitude])?;
                term = self.op("Mul", &[&term, &c], Vec::new());
            }
            acc = Some(match acc {
                None => term,
                Some(a) => self.op(op, &[&a, &term], Vec::new()),
            });
        }
        let acc = acc.ok_or_else(|| LowerError::Symbol {
            symbol: expr.to_string(),
            node: self.current.clone(),
        })?;
        Ok(match constant {
            0 => acc,
            c if c < 0 => {
                let k = self.ints(&[-c])?;
                self.op("Sub", &[&acc, &k], Vec::new())
            }
            c => {
                let k = self.ints(&[c])?;
                self.op("Add", &[&acc, &k], Vec::new())
            }
        })
    }

    /// A shape (or any list of sizes) as a 1-D int64 tensor: a constant when every size is
    /// static, else the concatenation of the run-time sizes.
    pub(crate) fn shape(&mut self, sizes: &[SymInt]) -> Result<String, LowerError> {
        if let Some(values) = sizes
            .iter()
            .map(SymInt::as_static)
            .collect::<Option<Vec<_>>>()
        {
            return self.ints(&values);
        }
        let key = format!(
            "shape:{}",
            sizes
                .iter()
                .map(|s| s.expr().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(name) = self.syms.get(&key) {
            return Ok(name.clone());
        }
        let parts = sizes
            .iter()
            .map(|s| self.sym(s))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let out = self.op("Concat", &refs, vec![("axis", A::Int(0))]);
        self.syms.insert(key, out.clone());
        Ok(out)
    }

    /// A size as a 0-D int64 tensor (for Range, Gather indices).
    pub(crate) fn sym_scalar(&mut self, size: &SymInt) -> Result<String, LowerError> {
        if let Some(c) = size.as_static() {
            return self.constant(&tch::Tensor::from(c), "const_i64");
        }
        let key = format!("scalar:{}", size.expr());
        if let Some(name) = self.syms.get(&key) {
            return Ok(name.clone());
        }
        let one = self.sym(size)?;
        let axes = self.ints(&[0])?;
        let out = self.op("Squeeze", &[&one, &axes], Vec::new());
        self.syms.insert(key, out.clone());
        Ok(out)
    }
}

//! The lowering of each engine op to standard ONNX, one entry per op in [`TABLE`], with the
//! oldest opset of the default domain it needs.
//!
//! Decisions worth knowing:
//! - Element types follow the engine's outputs: inputs of another type are cast first, which
//!   is libtorch's type promotion made explicit (ONNX ops take one type).
//! - Weights of `linear` are transposed at lowering time when they are initializers (torch's
//!   exporter folds the same Transpose), so `linear` is one MatMul (+ Add for a bias).
//! - `silu`, `rsqrt`, `gelu` and `scaled_dot_product_attention` are decomposed (opset 18 has no
//!   single op for them); `group_norm` goes through InstanceNormalization, because
//!   GroupNormalization-18 scales per group, not per channel.
//! - The resampling ops (`upsample_nearest2d`, `upsample_bilinear2d`, `constant_pad_nd`) are
//!   in `ops/resample.rs`, the data-dependent and routing ops in `ops/routing.rs`.
//! - `cond` is `If` (its branches read the operands from the enclosing scope), `scan` is `Loop`
//!   (the body gathers the slice of the step; the step outputs are the Loop's scan outputs),
//!   `check` on a tensor is dropped (ONNX has no assertion; the messages go to the metadata).

use onnx_diagnostic_core::{Attr, Graph, Node, SymInt, ValueInfo, graph::SubGraph};
use tch::Kind;

use super::{
    LowerError,
    builder::{A, Builder},
};
use crate::convert;

mod resample;
mod routing;

/// Every lowering: the table of this file and those of its sub-modules.
pub(crate) fn tables() -> impl Iterator<Item = &'static Entry> {
    TABLE
        .iter()
        .chain(routing::TABLE.iter())
        .chain(resample::TABLE.iter())
}

/// What a lowering sees: the builder, the engine node and the ONNX names of its values.
pub(crate) struct Ctx<'a> {
    pub(crate) b: &'a mut Builder,
    pub(crate) graph: &'a Graph,
    pub(crate) node: &'a Node,
    pub(crate) names: &'a [String],
}

type Lowering = fn(&mut Ctx<'_>) -> Result<(), LowerError>;

/// One entry of the lowering table.
pub(crate) struct Entry {
    pub(crate) op: &'static str,
    pub(crate) min_opset: i64,
    pub(crate) lower: Lowering,
}

impl Ctx<'_> {
    fn fail(&self, message: impl Into<String>) -> LowerError {
        LowerError::Op {
            op: self.node.op.name,
            node: self.b.current.clone(),
            message: message.into(),
        }
    }

    fn info(&self, i: usize) -> Result<&ValueInfo, LowerError> {
        match self.node.inputs.get(i) {
            Some(Some(id)) => Ok(self.graph.value(*id)),
            _ => Err(self.fail(format!("tensor input {i} is missing"))),
        }
    }

    fn has(&self, i: usize) -> bool {
        matches!(self.node.inputs.get(i), Some(Some(_)))
    }

    fn input(&self, i: usize) -> Result<String, LowerError> {
        match self.node.inputs.get(i) {
            Some(Some(id)) => Ok(self.names[id.index()].clone()),
            _ => Err(self.fail(format!("tensor input {i} is missing"))),
        }
    }

    fn kind(&self, i: usize) -> Result<Kind, LowerError> {
        Ok(self.info(i)?.kind)
    }

    fn shape(&self, i: usize) -> Result<Vec<SymInt>, LowerError> {
        Ok(self.info(i)?.shape.clone())
    }

    /// The ONNX names of the inputs from `from` on.
    fn inputs_from(&self, from: usize) -> Result<Vec<String>, LowerError> {
        (from..self.node.inputs.len())
            .map(|i| self.input(i))
            .collect()
    }

    /// The ONNX names of every output.
    fn outs(&self) -> Result<Vec<String>, LowerError> {
        (0..self.node.outputs.len()).map(|i| self.out(i)).collect()
    }

    fn out(&self, i: usize) -> Result<String, LowerError> {
        self.node
            .outputs
            .get(i)
            .map(|id| self.names[id.index()].clone())
            .ok_or_else(|| self.fail(format!("output {i} is missing")))
    }

    fn out_info(&self, i: usize) -> Result<&ValueInfo, LowerError> {
        self.node
            .outputs
            .get(i)
            .map(|id| self.graph.value(*id))
            .ok_or_else(|| self.fail(format!("output {i} is missing")))
    }

    fn out_kind(&self) -> Result<Kind, LowerError> {
        Ok(self.out_info(0)?.kind)
    }

    fn attr(&self, i: usize) -> Result<&Attr, LowerError> {
        self.node
            .attrs
            .get(i)
            .ok_or_else(|| self.fail(format!("attribute {i} is missing")))
    }

    /// A static integer attribute (a dim, a flag).
    fn int(&self, i: usize) -> Result<i64, LowerError> {
        match self.attr(i)? {
            Attr::Int(v) => v
                .as_static()
                .ok_or_else(|| self.fail(format!("attribute {i} is symbolic ({v})"))),
            Attr::Bool(v) => Ok(i64::from(*v)),
            other => Err(self.fail(format!("attribute {i} is {other}, expected an integer"))),
        }
    }

    fn sym(&self, i: usize) -> Result<SymInt, LowerError> {
        match self.attr(i)? {
            Attr::Int(v) => Ok(v.clone()),
            other => Err(self.fail(format!("attribute {i} is {other}, expected an integer"))),
        }
    }

    fn syms(&self, i: usize) -> Result<Vec<SymInt>, LowerError> {
        match self.attr(i)? {
            Attr::Ints(v) => Ok(v.clone()),
            other => Err(self.fail(format!("attribute {i} is {other}, expected a list"))),
        }
    }

    fn static_ints(&self, i: usize) -> Result<Vec<i64>, LowerError> {
        self.syms(i)?
            .iter()
            .map(|v| {
                v.as_static()
                    .ok_or_else(|| self.fail(format!("attribute {i} holds a symbolic size ({v})")))
            })
            .collect()
    }

    fn bool(&self, i: usize) -> Result<bool, LowerError> {
        match self.attr(i)? {
            Attr::Bool(v) => Ok(*v),
            other => Err(self.fail(format!("attribute {i} is {other}, expected a bool"))),
        }
    }

    fn float(&self, i: usize) -> Result<Option<f64>, LowerError> {
        match self.attr(i)? {
            Attr::None => Ok(None),
            Attr::Float(v) => Ok(Some(*v)),
            Attr::Int(v) if v.is_static() => Ok(Some(v.hint() as f64)),
            other => Err(self.fail(format!("attribute {i} is {other}, expected a float"))),
        }
    }

    /// A dimension normalised against the rank of input `i`.
    fn dim(&self, attr: usize, rank: usize) -> Result<i64, LowerError> {
        let d = self.int(attr)?;
        let r = rank as i64;
        let n = if d < 0 { d + r } else { d };
        if n < 0 || n >= r.max(1) {
            return Err(self.fail(format!("dimension {d} out of range for rank {rank}")));
        }
        Ok(n)
    }

    /// `name` cast from `from` to `to` (itself when equal).
    fn cast(&mut self, name: &str, from: Kind, to: Kind) -> Result<String, LowerError> {
        if from == to {
            return Ok(name.to_owned());
        }
        let dt = convert::data_type(to)
            .ok_or_else(|| self.fail(format!("element type {to:?} has no ONNX type")))?;
        Ok(self
            .b
            .op("Cast", &[name], vec![("to", A::Int(dt as i32 as i64))]))
    }

    /// Input `i` cast to `kind`.
    fn input_as(&mut self, i: usize, kind: Kind) -> Result<String, LowerError> {
        let (name, from) = (self.input(i)?, self.kind(i)?);
        self.cast(&name, from, kind)
    }

    /// A scalar attribute as a 0-D tensor of `kind` (symbolic integers computed at run time).
    fn scalar_attr(&mut self, i: usize, kind: Kind) -> Result<String, LowerError> {
        match self.attr(i)?.clone() {
            Attr::Int(v) if !v.is_static() => {
                let s = self.b.sym_scalar(&v)?;
                self.cast(&s, Kind::Int64, kind)
            }
            Attr::Int(v) => self.b.scalar(v.hint() as f64, kind),
            Attr::Float(v) => self.b.scalar(v, kind),
            Attr::Bool(v) => self.b.scalar(f64::from(u8::from(v)), kind),
            other => Err(self.fail(format!("attribute {i} is {other}, expected a scalar"))),
        }
    }

    /// Writes `op_type(inputs)` to output 0.
    fn emit_out(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<(&str, A)>,
    ) -> Result<(), LowerError> {
        let out = self.out(0)?;
        self.b.emit(op_type, inputs, &[out], attrs);
        Ok(())
    }

    /// Writes `name` cast to the output's kind into output 0 (an Identity when equal).
    fn finish_as(&mut self, name: &str, from: Kind) -> Result<(), LowerError> {
        let to = self.out_kind()?;
        if from == to {
            return self.emit_out("Identity", &[name], Vec::new());
        }
        let dt = convert::data_type(to)
            .ok_or_else(|| self.fail(format!("element type {to:?} has no ONNX type")))?;
        self.emit_out("Cast", &[name], vec![("to", A::Int(dt as i32 as i64))])
    }
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// torch's promotion of two tensor types (dimension categories aside).
fn promote(a: Kind, b: Kind) -> Kind {
    fn rank(k: Kind) -> i32 {
        match k {
            Kind::Bool => 0,
            Kind::Uint8 => 1,
            Kind::Int8 => 2,
            Kind::Int16 => 3,
            Kind::Int => 4,
            Kind::Int64 => 5,
            Kind::BFloat16 | Kind::Half => 6,
            Kind::Float => 7,
            _ => 8,
        }
    }
    if rank(a) >= rank(b) { a } else { b }
}

// ---- elementwise ----

fn arith(c: &mut Ctx<'_>, op_type: &str) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let (x, y) = (c.input_as(0, k)?, c.input_as(1, k)?);
    c.emit_out(op_type, &[&x, &y], Vec::new())
}

/// torch's `floor_divide` and `remainder` (Python's `//` and `%`). On integers ONNX's `Mod`
/// with `fmod=0` is Python's `%`, and `a - a % b` is an exact multiple of `b`, so `Div` of it
/// is the floored quotient whatever the signs (`Div` alone truncates toward zero). On floats:
/// `floor(a / b)`, and `a - floor(a / b) * b`.
fn floor_div_or_remainder(c: &mut Ctx<'_>, remainder: bool) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let (x, y) = (c.input_as(0, k)?, c.input_as(1, k)?);
    if is_float(k) {
        let q = c.b.op("Div", &[&x, &y], Vec::new());
        let q = c.b.op("Floor", &[&q], Vec::new());
        if !remainder {
            return c.emit_out("Identity", &[&q], Vec::new());
        }
        let qy = c.b.op("Mul", &[&q, &y], Vec::new());
        return c.emit_out("Sub", &[&x, &qy], Vec::new());
    }
    let m = c.b.op("Mod", &[&x, &y], vec![("fmod", A::Int(0))]);
    if remainder {
        return c.emit_out("Identity", &[&m], Vec::new());
    }
    let exact = c.b.op("Sub", &[&x, &m], Vec::new());
    c.emit_out("Div", &[&exact, &y], Vec::new())
}

fn arith_scalar(c: &mut Ctx<'_>, op_type: &str, reversed: bool) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let x = c.input_as(0, k)?;
    let s = c.scalar_attr(0, k)?;
    let (a, b) = if reversed { (&s, &x) } else { (&x, &s) };
    c.emit_out(op_type, &[a, b], Vec::new())
}

fn compare(c: &mut Ctx<'_>, op_type: &str, negate: bool) -> Result<(), LowerError> {
    let k = promote(c.kind(0)?, c.kind(1)?);
    let (x, y) = (c.input_as(0, k)?, c.input_as(1, k)?);
    compare_finish(c, op_type, &x, &y, negate)
}

fn compare_scalar(c: &mut Ctx<'_>, op_type: &str, negate: bool) -> Result<(), LowerError> {
    let xk = c.kind(0)?;
    let k = match c.attr(0)? {
        Attr::Float(_) if !is_float(xk) => Kind::Float,
        _ if xk == Kind::Bool => Kind::Int64,
        _ => xk,
    };
    let x = c.input_as(0, k)?;
    let s = c.scalar_attr(0, k)?;
    compare_finish(c, op_type, &x, &s, negate)
}

fn compare_finish(
    c: &mut Ctx<'_>,
    op_type: &str,
    x: &str,
    y: &str,
    negate: bool,
) -> Result<(), LowerError> {
    if negate {
        let eq = c.b.op(op_type, &[x, y], Vec::new());
        c.emit_out("Not", &[&eq], Vec::new())
    } else {
        c.emit_out(op_type, &[x, y], Vec::new())
    }
}

fn unary(c: &mut Ctx<'_>, op_type: &str) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let x = c.input_as(0, k)?;
    c.emit_out(op_type, &[&x], Vec::new())
}

fn bitwise(c: &mut Ctx<'_>, logical: &str, bitwise: &str) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let op = if k == Kind::Bool { logical } else { bitwise };
    if c.node.inputs.len() == 1 {
        return unary(c, op);
    }
    arith(c, op)
}

fn logical(c: &mut Ctx<'_>, op_type: &str) -> Result<(), LowerError> {
    let x = c.input_as(0, Kind::Bool)?;
    if c.node.inputs.len() == 1 {
        return c.emit_out(op_type, &[&x], Vec::new());
    }
    let y = c.input_as(1, Kind::Bool)?;
    c.emit_out(op_type, &[&x, &y], Vec::new())
}

/// `IsInf` / `IsNaN` on float or double (other float types are cast to double first: exact,
/// and the opset-10/13 kernels of ONNX Runtime's CPU provider take no 2-byte floats).
fn float_test(c: &mut Ctx<'_>, op_type: &str) -> Result<(), LowerError> {
    let x = match c.kind(0)? {
        Kind::Float | Kind::Double => c.input(0)?,
        _ => c.input_as(0, Kind::Double)?,
    };
    c.emit_out(op_type, &[&x], Vec::new())
}

fn silu(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    let s = c.b.op("Sigmoid", &[&x], Vec::new());
    c.emit_out("Mul", &[&x, &s], Vec::new())
}

fn rsqrt(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    let s = c.b.op("Sqrt", &[&x], Vec::new());
    c.emit_out("Reciprocal", &[&s], Vec::new())
}

fn gelu(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let x = c.input(0)?;
    let approximate = match c.attr(0)? {
        Attr::Str(s) => *s,
        _ => "none",
    };
    if c.b.opset >= 20 {
        return c.emit_out("Gelu", &[&x], vec![("approximate", A::Str(approximate))]);
    }
    let half = c.b.scalar(0.5, k)?;
    let one = c.b.scalar(1.0, k)?;
    let inner = if approximate == "tanh" {
        // 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
        let three = c.b.scalar(3.0, k)?;
        let coef = c.b.scalar(0.044715, k)?;
        let scale = c.b.scalar((2.0 / std::f64::consts::PI).sqrt(), k)?;
        let cube = c.b.op("Pow", &[&x, &three], Vec::new());
        let term = c.b.op("Mul", &[&cube, &coef], Vec::new());
        let sum = c.b.op("Add", &[&x, &term], Vec::new());
        let scaled = c.b.op("Mul", &[&sum, &scale], Vec::new());
        c.b.op("Tanh", &[&scaled], Vec::new())
    } else {
        // 0.5 * x * (1 + erf(x / sqrt(2)))
        let sqrt2 = c.b.scalar(std::f64::consts::SQRT_2, k)?;
        let div = c.b.op("Div", &[&x, &sqrt2], Vec::new());
        c.b.op("Erf", &[&div], Vec::new())
    };
    let plus = c.b.op("Add", &[&inner, &one], Vec::new());
    let xh = c.b.op("Mul", &[&x, &half], Vec::new());
    c.emit_out("Mul", &[&xh, &plus], Vec::new())
}

fn clamp(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let x = c.input_as(0, k)?;
    let lo = match c.attr(0)? {
        Attr::None => String::new(),
        _ => c.scalar_attr(0, k)?,
    };
    let hi = match c.attr(1)? {
        Attr::None => String::new(),
        _ => c.scalar_attr(1, k)?,
    };
    let mut inputs = vec![x.as_str(), lo.as_str(), hi.as_str()];
    while inputs.last() == Some(&"") {
        inputs.pop();
    }
    c.emit_out("Clip", &inputs, Vec::new())
}

fn to_copy(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (x, from) = (c.input(0)?, c.kind(0)?);
    c.finish_as(&x, from)
}

fn where_self(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let cond = c.input_as(0, Kind::Bool)?;
    let (x, y) = (c.input_as(1, k)?, c.input_as(2, k)?);
    c.emit_out("Where", &[&cond, &x, &y], Vec::new())
}

fn masked_fill(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let x = c.input_as(0, k)?;
    let mask = c.input_as(1, Kind::Bool)?;
    let v = c.scalar_attr(0, k)?;
    c.emit_out("Where", &[&mask, &v, &x], Vec::new())
}

fn softmax_like(c: &mut Ctx<'_>, op_type: &str) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let x = c.input(0)?;
    c.emit_out(op_type, &[&x], vec![("axis", A::Int(axis))])
}

fn cumsum(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let k = c.out_kind()?;
    let x = c.input_as(0, k)?;
    let a = c.b.constant(&tch::Tensor::from(axis), "const_i64")?;
    c.emit_out("CumSum", &[&x, &a], Vec::new())
}

fn trilu(c: &mut Ctx<'_>, upper: i64) -> Result<(), LowerError> {
    let x = c.input(0)?;
    let k = c.b.constant(&tch::Tensor::from(c.int(0)?), "const_i64")?;
    c.emit_out("Trilu", &[&x, &k], vec![("upper", A::Int(upper))])
}

fn identity(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    c.emit_out("Identity", &[&x], Vec::new())
}

// ---- shapes ----

fn reshape(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    // The output shape is known symbolically: use it rather than the -1 of the call, so that
    // the ONNX shape is explicit (and shared with other nodes computing the same sizes).
    let target = c.out_info(0)?.shape.clone();
    let shape = c.b.shape(&target)?;
    c.emit_out("Reshape", &[&x, &shape], Vec::new())
}

fn transpose(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let (d0, d1) = (c.dim(0, rank)?, c.dim(1, rank)?);
    let mut perm: Vec<i64> = (0..rank as i64).collect();
    perm.swap(d0 as usize, d1 as usize);
    let x = c.input(0)?;
    c.emit_out("Transpose", &[&x], vec![("perm", A::Ints(perm))])
}

fn permute(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len() as i64;
    let perm = c
        .static_ints(0)?
        .into_iter()
        .map(|d| if d < 0 { d + rank } else { d })
        .collect();
    let x = c.input(0)?;
    c.emit_out("Transpose", &[&x], vec![("perm", A::Ints(perm))])
}

fn unsqueeze(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let d = c.dim(0, rank + 1)?;
    let x = c.input(0)?;
    let axes = c.b.ints(&[d])?;
    c.emit_out("Unsqueeze", &[&x, &axes], Vec::new())
}

fn squeeze(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    if rank == c.out_info(0)?.shape.len() {
        return identity(c);
    }
    let d = c.dim(0, rank)?;
    let x = c.input(0)?;
    let axes = c.b.ints(&[d])?;
    c.emit_out("Squeeze", &[&x, &axes], Vec::new())
}

fn expand(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    let target = c.out_info(0)?.shape.clone();
    let shape = c.b.shape(&target)?;
    c.emit_out("Expand", &[&x, &shape], Vec::new())
}

fn cat(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.out_info(0)?.shape.len();
    let axis = c.dim(0, rank)?;
    let k = c.out_kind()?;
    let mut inputs = Vec::new();
    for i in 0..c.node.inputs.len() {
        let shape = c.shape(i)?;
        // torch skips legacy empty 1-D tensors in cat.
        if shape.len() == 1 && shape[0].as_static() == Some(0) && rank != 1 {
            continue;
        }
        inputs.push(c.input_as(i, k)?);
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    c.emit_out("Concat", &refs, vec![("axis", A::Int(axis))])
}

fn stack(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.out_info(0)?.shape.len();
    let axis = c.dim(0, rank)?;
    let axes = c.b.ints(&[axis])?;
    let k = c.out_kind()?;
    let mut inputs = Vec::new();
    for i in 0..c.node.inputs.len() {
        let x = c.input_as(i, k)?;
        inputs.push(c.b.op("Unsqueeze", &[&x, &axes], Vec::new()));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    c.emit_out("Concat", &refs, vec![("axis", A::Int(axis))])
}

fn split_with_sizes(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(1, rank)?;
    let sizes = c.syms(0)?;
    let split = c.b.shape(&sizes)?;
    let x = c.input(0)?;
    let outs = c.outs()?;
    c.b.emit("Split", &[&x, &split], &outs, vec![("axis", A::Int(axis))]);
    Ok(())
}

fn slice_like(
    c: &mut Ctx<'_>,
    axis: i64,
    start: &SymInt,
    end: &SymInt,
    step: i64,
) -> Result<(), LowerError> {
    let x = c.input(0)?;
    let starts = c.b.sym(start)?;
    let ends = c.b.sym(end)?;
    let axes = c.b.ints(&[axis])?;
    let steps = c.b.ints(&[step])?;
    c.emit_out("Slice", &[&x, &starts, &ends, &axes, &steps], Vec::new())
}

fn slice(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let (start, end) = (c.sym(1)?, c.sym(2)?);
    let step = c.int(3)?;
    // ONNX Slice normalises negative bounds and clamps as Python does.
    slice_like(c, axis, &start, &end, step)
}

fn narrow(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let shape = c.shape(0)?;
    let axis = c.dim(0, shape.len())?;
    let (mut start, length) = (c.sym(1)?, c.sym(2)?);
    if start.hint() < 0 {
        start = &shape[axis as usize] + &start;
    }
    let end = &start + &length;
    slice_like(c, axis, &start, &end, 1)
}

fn select(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let index = c.sym(1)?;
    let x = c.input(0)?;
    let idx = c.b.sym_scalar(&index)?;
    c.emit_out("Gather", &[&x, &idx], vec![("axis", A::Int(axis))])
}

fn index_select(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let (x, idx) = (c.input(0)?, c.input(1)?);
    let idx = if c.shape(1)?.is_empty() {
        let axes = c.b.ints(&[0])?;
        c.b.op("Unsqueeze", &[&idx, &axes], Vec::new())
    } else {
        idx
    };
    c.emit_out("Gather", &[&x, &idx], vec![("axis", A::Int(axis))])
}

fn gather(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let (x, idx) = (c.input(0)?, c.input(1)?);
    c.emit_out("GatherElements", &[&x, &idx], vec![("axis", A::Int(axis))])
}

fn scatter(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    scatter_with(c, None)
}

/// `scatter` (no reduction) and `scatter_add` (`reduction="add"`): ScatterElements.
fn scatter_with(c: &mut Ctx<'_>, reduction: Option<&'static str>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let out_kind = c.out_kind()?;
    let k = match reduction {
        Some(_) => routing::accumulation_kind(out_kind),
        None => out_kind,
    };
    let x = c.input_as(0, k)?;
    let idx = c.input(1)?;
    let mut src = c.input_as(2, k)?;
    let (idx_shape, src_shape) = (c.shape(1)?, c.shape(2)?);
    if idx_shape
        .iter()
        .map(SymInt::expr)
        .ne(src_shape.iter().map(SymInt::expr))
    {
        // torch reads src only where index has elements: take that corner.
        let zeros = c.b.ints(&vec![0; idx_shape.len()])?;
        let ends = c.b.shape(&idx_shape)?;
        src = c.b.op("Slice", &[&src, &zeros, &ends], Vec::new());
    }
    let mut attrs = vec![("axis", A::Int(axis))];
    if let Some(r) = reduction {
        attrs.push(("reduction", A::Str(r)));
    }
    if k == out_kind {
        return c.emit_out("ScatterElements", &[&x, &idx, &src], attrs);
    }
    let y = c.b.op("ScatterElements", &[&x, &idx, &src], attrs);
    c.finish_as(&y, k)
}

/// The index tensors of `index`/`index_put` (inputs from `first`) broadcast and stacked on a
/// last axis, as ScatterND/GatherND take them.
fn stacked_indices(c: &mut Ctx<'_>, first: usize) -> Result<(String, Vec<SymInt>), LowerError> {
    let n = c.node.inputs.len() - first;
    if (first..c.node.inputs.len()).any(|i| !c.has(i)) {
        return Err(c.fail("indexing with `:` before an index tensor has no lowering yet"));
    }
    let shapes = (first..first + n)
        .map(|i| c.shape(i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut bshape: Vec<SymInt> = Vec::new();
    for s in &shapes {
        let rank = bshape.len().max(s.len());
        let mut out = Vec::with_capacity(rank);
        for j in 0..rank {
            let a = (j + bshape.len())
                .checked_sub(rank)
                .map(|k| bshape[k].clone());
            let b = (j + s.len()).checked_sub(rank).map(|k| s[k].clone());
            out.push(match (a, b) {
                (Some(a), Some(b)) if a.as_static() == Some(1) => b,
                (Some(a), _) => a,
                (None, Some(b)) => b,
                (None, None) => SymInt::new(1),
            });
        }
        bshape = out;
    }
    let axes = c.b.ints(&[-1])?;
    let mut parts = Vec::new();
    for (k, s) in shapes.iter().enumerate() {
        let mut idx = c.input_as(first + k, Kind::Int64)?;
        if n > 1
            && s.iter()
                .map(SymInt::expr)
                .ne(bshape.iter().map(SymInt::expr))
        {
            let shape = c.b.shape(&bshape)?;
            idx = c.b.op("Expand", &[&idx, &shape], Vec::new());
        }
        parts.push(c.b.op("Unsqueeze", &[&idx, &axes], Vec::new()));
    }
    let stacked = if parts.len() == 1 {
        parts.remove(0)
    } else {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        c.b.op("Concat", &refs, vec![("axis", A::Int(-1))])
    };
    Ok((stacked, bshape))
}

fn index(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    if c.node.inputs.len() == 2 {
        let idx = c.input_as(1, Kind::Int64)?;
        return c.emit_out("Gather", &[&x, &idx], vec![("axis", A::Int(0))]);
    }
    let (idx, _) = stacked_indices(c, 1)?;
    c.emit_out("GatherND", &[&x, &idx], Vec::new())
}

fn index_put(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let x = c.input(0)?;
    let n = c.node.inputs.len() - 2;
    let (idx, bshape) = stacked_indices(c, 2)?;
    // values broadcast to index shape + the remaining dims of x.
    let mut target = bshape;
    target.extend(c.shape(0)?.into_iter().skip(n));
    let mut values = c.input_as(1, k)?;
    if c.shape(1)?
        .iter()
        .map(SymInt::expr)
        .ne(target.iter().map(SymInt::expr))
    {
        let shape = c.b.shape(&target)?;
        values = c.b.op("Expand", &[&values, &shape], Vec::new());
    }
    let reduction = if c.bool(0)? { "add" } else { "none" };
    c.emit_out(
        "ScatterND",
        &[&x, &idx, &values],
        vec![("reduction", A::Str(reduction))],
    )
}

// ---- neural-network ops ----

fn matmul(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (x, y) = (c.input(0)?, c.input(1)?);
    c.emit_out("MatMul", &[&x, &y], Vec::new())
}

fn linear(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    let w = c.input(1)?;
    let wt = c.b.transposed(&w)?;
    if !c.has(2) {
        return c.emit_out("MatMul", &[&x, &wt], Vec::new());
    }
    let mm = c.b.op("MatMul", &[&x, &wt], Vec::new());
    let b = c.input(2)?;
    c.emit_out("Add", &[&mm, &b], Vec::new())
}

fn embedding(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (w, idx) = (c.input(0)?, c.input(1)?);
    c.emit_out("Gather", &[&w, &idx], vec![("axis", A::Int(0))])
}

fn layer_norm(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let normalized = c.static_ints(0)?;
    let eps = c.float(1)?.unwrap_or(1e-5);
    let x = c.input(0)?;
    let scale = if c.has(1) {
        c.input(1)?
    } else {
        let ones = tch::Tensor::f_ones(normalized.as_slice(), (k, tch::Device::Cpu))
            .map_err(|e| c.fail(e.to_string()))?;
        c.b.constant(&ones, "ones")?
    };
    let mut inputs = vec![x, scale];
    if c.has(2) {
        inputs.push(c.input(2)?);
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    c.emit_out(
        "LayerNormalization",
        &refs,
        vec![
            ("axis", A::Int(-(normalized.len() as i64))),
            ("epsilon", A::Float(eps as f32)),
        ],
    )
}

fn group_norm(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let shape = c.shape(0)?;
    let groups = c.int(0)?;
    let eps = c.float(1)?.unwrap_or(1e-5);
    let x = c.input(0)?;
    // [N, C, ...] -> [N, G, -1], instance-normalised per group, back to the input shape.
    let grouped_shape = c.b.ints(&[0, groups, -1])?;
    let grouped = c.b.op("Reshape", &[&x, &grouped_shape], Vec::new());
    let ones =
        tch::Tensor::f_ones([groups], (k, tch::Device::Cpu)).map_err(|e| c.fail(e.to_string()))?;
    let zeros =
        tch::Tensor::f_zeros([groups], (k, tch::Device::Cpu)).map_err(|e| c.fail(e.to_string()))?;
    let (ones, zeros) = (c.b.constant(&ones, "ones")?, c.b.constant(&zeros, "zeros")?);
    let normed = c.b.op(
        "InstanceNormalization",
        &[&grouped, &ones, &zeros],
        vec![("epsilon", A::Float(eps as f32))],
    );
    let back_shape = c.b.shape(&shape)?;
    let mut y = c.b.op("Reshape", &[&normed, &back_shape], Vec::new());
    // weight and bias per channel: [C] -> [C, 1, ..., 1].
    let trailing = vec![1i64; shape.len().saturating_sub(2)];
    let per_channel = |c: &mut Ctx<'_>, i: usize| -> Result<String, LowerError> {
        let w = c.input(i)?;
        let axes: Vec<i64> = (1..=trailing.len() as i64).collect();
        if axes.is_empty() {
            return Ok(w);
        }
        let axes = c.b.ints(&axes)?;
        Ok(c.b.op("Unsqueeze", &[&w, &axes], Vec::new()))
    };
    let has_bias = c.has(2);
    if c.has(1) {
        let w = per_channel(c, 1)?;
        if has_bias {
            y = c.b.op("Mul", &[&y, &w], Vec::new());
        } else {
            return c.emit_out("Mul", &[&y, &w], Vec::new());
        }
    }
    if has_bias {
        let b = per_channel(c, 2)?;
        return c.emit_out("Add", &[&y, &b], Vec::new());
    }
    c.emit_out("Identity", &[&y], Vec::new())
}

/// Emits `op_type` on the op's inputs `0..n` (those present) with `attrs`. The ONNX ops of
/// windows (`Conv`, `ConvTranspose`, `AveragePool`) and `Sin` / `Cos` take no bfloat16 before
/// opset 22: there the inputs are cast to float32 and the result back (torch computes
/// bfloat16 in float32 too, rounding the result).
fn emit_widened(
    c: &mut Ctx<'_>,
    op_type: &str,
    n: usize,
    attrs: Vec<(&'static str, A)>,
) -> Result<(), LowerError> {
    let out = c.out_kind()?;
    let k = if out == Kind::BFloat16 && c.b.opset < 22 {
        Kind::Float
    } else {
        out
    };
    let mut inputs = Vec::with_capacity(n);
    for i in 0..n {
        if i < 2 || c.has(i) {
            inputs.push(c.input_as(i, k)?);
        }
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    if k == out {
        return c.emit_out(op_type, &refs, attrs);
    }
    let y = c.b.op(op_type, &refs, attrs);
    c.finish_as(&y, k)
}

/// Symmetric ONNX `pads` (begins then ends) from torch's per-dimension padding.
fn onnx_pads(padding: Vec<i64>) -> Vec<i64> {
    let mut pads = padding.clone();
    pads.extend(padding);
    pads
}

/// `conv2d` and `conv3d` as ONNX `Conv` (any spatial rank).
fn conv2d(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (stride, padding, dilation) = (c.static_ints(0)?, c.static_ints(1)?, c.static_ints(2)?);
    let groups = c.int(3)?;
    let attrs = vec![
        ("strides", A::Ints(stride)),
        ("pads", A::Ints(onnx_pads(padding))),
        ("dilations", A::Ints(dilation)),
        ("group", A::Int(groups)),
    ];
    emit_widened(c, "Conv", 3, attrs)
}

/// `conv_transpose2d` as ONNX `ConvTranspose` (the same weight layout, `[in, out / groups,
/// kh, kw]`).
fn conv_transpose2d(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (stride, padding, output_padding) =
        (c.static_ints(0)?, c.static_ints(1)?, c.static_ints(2)?);
    let (groups, dilation) = (c.int(3)?, c.static_ints(4)?);
    let attrs = vec![
        ("strides", A::Ints(stride)),
        ("pads", A::Ints(onnx_pads(padding))),
        ("output_padding", A::Ints(output_padding)),
        ("dilations", A::Ints(dilation)),
        ("group", A::Int(groups)),
    ];
    emit_widened(c, "ConvTranspose", 3, attrs)
}

/// `avg_pool2d` as ONNX `AveragePool`.
fn avg_pool2d(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (kernel, stride, padding) = (c.static_ints(0)?, c.static_ints(1)?, c.static_ints(2)?);
    let attrs = vec![
        ("kernel_shape", A::Ints(kernel)),
        ("strides", A::Ints(stride)),
        ("pads", A::Ints(onnx_pads(padding))),
        ("count_include_pad", A::Int(1)),
    ];
    emit_widened(c, "AveragePool", 1, attrs)
}

fn sdpa(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let (qs, ks) = (c.shape(0)?, c.shape(1)?);
    let (q, mut key, mut value) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let is_causal = c.bool(1)?;
    let head = qs
        .last()
        .and_then(SymInt::as_static)
        .ok_or_else(|| c.fail("the head size must be static"))?;
    let scale = c.float(2)?.unwrap_or(1.0 / (head as f64).sqrt());
    if c.bool(3)? && qs.len() == 4 && ks.len() == 4 {
        let (hq, hk) = (qs[1].as_static(), ks[1].as_static());
        if let (Some(hq), Some(hk)) = (hq, hk)
            && hq != hk
        {
            // Grouped-query attention: repeat each key/value head hq/hk times.
            let axes = c.b.ints(&[2])?;
            let reps = c.b.ints(&[1, 1, hq / hk, 1, 1])?;
            let merged = c.b.ints(&[0, hq, -1, head])?;
            let vhead = c
                .shape(2)?
                .last()
                .and_then(SymInt::as_static)
                .unwrap_or(head);
            let merged_v = c.b.ints(&[0, hq, -1, vhead])?;
            for (t, m) in [(&mut key, &merged), (&mut value, &merged_v)] {
                let u = c.b.op("Unsqueeze", &[t.as_str(), &axes], Vec::new());
                let e = c.b.op("Expand", &[&u, &reps], Vec::new());
                *t = c.b.op("Reshape", &[&e, m], Vec::new());
            }
        }
    }
    let rank = ks.len() as i64;
    let mut perm: Vec<i64> = (0..rank).collect();
    perm.swap(rank as usize - 2, rank as usize - 1);
    let kt = c.b.op("Transpose", &[&key], vec![("perm", A::Ints(perm))]);
    let s = c.b.scalar(scale, k)?;
    let qk = c.b.op("MatMul", &[&q, &kt], Vec::new());
    let mut scores = c.b.op("Mul", &[&qk, &s], Vec::new());
    let neg_inf = c.b.scalar(f64::NEG_INFINITY, k)?;
    if c.has(3) {
        let mask = c.input(3)?;
        scores = if c.kind(3)? == Kind::Bool {
            c.b.op("Where", &[&mask, &scores, &neg_inf], Vec::new())
        } else {
            let m = c.input_as(3, k)?;
            c.b.op("Add", &[&scores, &m], Vec::new())
        };
    }
    if is_causal {
        // torch: ones(L, S).tril(0) aligned top-left.
        let (l, sk) = (qs[qs.len() - 2].clone(), ks[ks.len() - 2].clone());
        let shape = c.b.shape(&[l, sk])?;
        let one = tch::Tensor::from_slice(&[1.0f32]);
        let proto = convert::tensor_proto(&one, "").map_err(|m| c.fail(m))?;
        let ones = c.b.op(
            "ConstantOfShape",
            &[&shape],
            vec![("value", A::Tensor(Box::new(proto)))],
        );
        let zero = c.b.constant(&tch::Tensor::from(0i64), "const_i64")?;
        let lower = c.b.op("Trilu", &[&ones, &zero], vec![("upper", A::Int(0))]);
        let zf = c.b.scalar(0.0, Kind::Float)?;
        let masked = c.b.op("Equal", &[&lower, &zf], Vec::new());
        scores = c.b.op("Where", &[&masked, &neg_inf, &scores], Vec::new());
    }
    let attn = c.b.op("Softmax", &[&scores], vec![("axis", A::Int(-1))]);
    c.emit_out("MatMul", &[&attn, &value], Vec::new())
}

fn topk(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(1, rank)?;
    let kk = c.sym(0)?;
    let x = c.input(0)?;
    let kname = c.b.sym(&kk)?;
    let outs = vec![c.out(0)?, c.out(1)?];
    c.b.emit(
        "TopK",
        &[&x, &kname],
        &outs,
        vec![
            ("axis", A::Int(axis)),
            ("largest", A::Int(i64::from(c.bool(2)?))),
            ("sorted", A::Int(i64::from(c.bool(3)?))),
        ],
    );
    Ok(())
}

// ---- reductions ----

fn reduce(c: &mut Ctx<'_>, op_type: &str) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len() as i64;
    let dims: Vec<i64> = c
        .static_ints(0)?
        .into_iter()
        .map(|d| if d < 0 { d + rank } else { d })
        .collect();
    let keep = i64::from(c.bool(1)?);
    let k = c.out_kind()?;
    let dynamic = c.shape(0)?.iter().any(|d| !d.is_static());
    let last_or_all = dims.is_empty() || dims == [rank - 1];
    if op_type == "ReduceSum" && matches!(k, Kind::Int64 | Kind::Int) && dynamic && last_or_all {
        return integer_sum(c, dims.is_empty(), keep != 0, rank);
    }
    // any/all reduce booleans as integers (ReduceMax/Min take bool from opset 20 only).
    let compute = if k == Kind::Bool { Kind::Int64 } else { k };
    let x = c.input_as(0, compute)?;
    let mut inputs = vec![x];
    if !dims.is_empty() {
        inputs.push(c.b.ints(&dims)?);
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    if compute == k {
        return c.emit_out(op_type, &refs, vec![("keepdims", A::Int(keep))]);
    }
    let r = c.b.op(op_type, &refs, vec![("keepdims", A::Int(keep))]);
    c.finish_as(&r, compute)
}

/// An integer sum over the last axis (or all of them) of a dynamic shape, as a MatMul with a
/// column of ones: ONNX Runtime 1.31's CPU ReduceSum returns its input unchanged when the input
/// has no element (a `[2, 0]` sum over the last axis gives `[2, 0]`, not `[2]` of zeros), and
/// counts over data-dependent or image-less dims (Qwen2-VL's patches without images) meet empty
/// inputs. The MatMul is exact on integers and handles empty dims.
fn integer_sum(c: &mut Ctx<'_>, all: bool, keep: bool, rank: i64) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let mut x = c.input_as(0, k)?;
    if all {
        let flat = c.b.ints(&[-1])?;
        x = c.b.op("Reshape", &[&x, &flat], Vec::new());
    }
    let y = sum_last_keepdim(c, &x, k)?;
    let target: Vec<SymInt> = c.out_info(0)?.shape.clone();
    if all {
        let out = c.b.shape(&target)?;
        return c.emit_out("Reshape", &[&y, &out], Vec::new());
    }
    if keep {
        return c.emit_out("Identity", &[&y], Vec::new());
    }
    let last = c.b.ints(&[rank - 1])?;
    c.emit_out("Squeeze", &[&y, &last], Vec::new())
}

/// `x.sum(-1, keepdim=True)` of an integer `x` of type `k` as `x @ ones([K, 1])` (see
/// [`integer_sum`]).
pub(super) fn sum_last_keepdim(c: &mut Ctx<'_>, x: &str, k: Kind) -> Result<String, LowerError> {
    let shape = c.b.op("Shape", &[x], vec![("start", A::Int(-1))]);
    let one = c.b.ints(&[1])?;
    let wshape = c.b.op("Concat", &[&shape, &one], vec![("axis", A::Int(0))]);
    let unit = c.b.scalar(1.0, k)?;
    let ones = c.b.op("Expand", &[&unit, &wshape], Vec::new());
    Ok(c.b.op("MatMul", &[x, &ones], Vec::new()))
}

fn reduce_with_index(c: &mut Ctx<'_>, value_op: &str, index_op: &str) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let keep = i64::from(c.bool(1)?);
    let x = c.input(0)?;
    let axes = c.b.ints(&[axis])?;
    let (v, i) = (c.out(0)?, c.out(1)?);
    c.b.emit(
        value_op,
        &[&x, &axes],
        &[v],
        vec![("keepdims", A::Int(keep))],
    );
    c.b.emit(
        index_op,
        &[&x],
        &[i],
        vec![("axis", A::Int(axis)), ("keepdims", A::Int(keep))],
    );
    Ok(())
}

fn argmax(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let axis = c.dim(0, rank)?;
    let keep = i64::from(c.bool(1)?);
    let x = c.input(0)?;
    c.emit_out(
        "ArgMax",
        &[&x],
        vec![("axis", A::Int(axis)), ("keepdims", A::Int(keep))],
    )
}

// ---- creation ----

fn arange(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let start = c.scalar_attr(0, k)?;
    let end = c.scalar_attr(1, k)?;
    let step = c.scalar_attr(2, k)?;
    c.emit_out("Range", &[&start, &end, &step], Vec::new())
}

fn filled(c: &mut Ctx<'_>, value: Option<f64>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    if value.is_none()
        && let Attr::Int(v) = c.attr(1)?
        && !v.is_static()
    {
        // A symbolic fill value (`torch.full(shape, x.shape[0])`): the size computed at run time,
        // cast and expanded to the shape.
        let v = v.clone();
        let one = c.b.shape(std::slice::from_ref(&v))?;
        let one = c.cast(&one, Kind::Int64, k)?;
        let sizes = c.syms(0)?;
        let shape = c.b.shape(&sizes)?;
        let empty = c.b.ints(&[])?;
        let scalar = c.b.op("Reshape", &[&one, &empty], Vec::new());
        return c.emit_out("Expand", &[&scalar, &shape], Vec::new());
    }
    let value = match value {
        Some(v) => v,
        None => c.float(1)?.ok_or_else(|| c.fail("fill value is missing"))?,
    };
    let sizes = c.syms(0)?;
    if let Some(static_sizes) = sizes
        .iter()
        .map(SymInt::as_static)
        .collect::<Option<Vec<_>>>()
    {
        let t = tch::Tensor::f_full(static_sizes.as_slice(), value, (k, tch::Device::Cpu))
            .map_err(|e| c.fail(e.to_string()))?;
        let name = c.b.constant(&t, "const")?;
        return c.emit_out("Identity", &[&name], Vec::new());
    }
    let shape = c.b.shape(&sizes)?;
    let one = tch::Tensor::f_full([1], value, (k, tch::Device::Cpu))
        .map_err(|e| c.fail(e.to_string()))?;
    let proto = convert::tensor_proto(&one, "").map_err(|m| c.fail(m))?;
    c.emit_out(
        "ConstantOfShape",
        &[&shape],
        vec![("value", A::Tensor(Box::new(proto)))],
    )
}

macro_rules! table {
    ($($name:literal, $opset:literal => $f:expr;)*) => {
        /// Every lowering, by engine op name.
        pub(crate) static TABLE: &[Entry] = &[$(Entry { op: $name, min_opset: $opset, lower: $f },)*];
    };
}

table! {
    "higher_order.cond", 16 => cond;
    "higher_order.scan", 16 => scan;
    "aten._assert_async.msg", 1 => assert_dropped;
    "aten.add.Tensor", 14 => |c| arith(c, "Add");
    "aten.sub.Tensor", 14 => |c| arith(c, "Sub");
    "aten.mul.Tensor", 14 => |c| arith(c, "Mul");
    "aten.div.Tensor", 14 => |c| arith(c, "Div");
    "aten.floor_divide.default", 14 => |c| floor_div_or_remainder(c, false);
    "aten.remainder.Tensor", 14 => |c| floor_div_or_remainder(c, true);
    "aten.pow.Tensor_Tensor", 15 => |c| arith(c, "Pow");
    "aten.maximum.default", 13 => |c| arith(c, "Max");
    "aten.minimum.default", 13 => |c| arith(c, "Min");
    "aten.eq.Tensor", 13 => |c| compare(c, "Equal", false);
    "aten.ne.Tensor", 13 => |c| compare(c, "Equal", true);
    "aten.lt.Tensor", 13 => |c| compare(c, "Less", false);
    "aten.le.Tensor", 16 => |c| compare(c, "LessOrEqual", false);
    "aten.gt.Tensor", 13 => |c| compare(c, "Greater", false);
    "aten.ge.Tensor", 16 => |c| compare(c, "GreaterOrEqual", false);
    "aten.logical_and.default", 7 => |c| logical(c, "And");
    "aten.logical_or.default", 7 => |c| logical(c, "Or");
    "aten.logical_not.default", 1 => |c| logical(c, "Not");
    "aten.isinf.default", 10 => |c| float_test(c, "IsInf");
    "aten.isnan.default", 13 => |c| float_test(c, "IsNaN");
    "aten.bitwise_and.Tensor", 18 => |c| bitwise(c, "And", "BitwiseAnd");
    "aten.bitwise_or.Tensor", 18 => |c| bitwise(c, "Or", "BitwiseOr");
    "aten.bitwise_not.default", 18 => |c| bitwise(c, "Not", "BitwiseNot");
    "aten.add.Scalar", 14 => |c| arith_scalar(c, "Add", false);
    "aten.sub.Scalar", 14 => |c| arith_scalar(c, "Sub", false);
    "aten.mul.Scalar", 14 => |c| arith_scalar(c, "Mul", false);
    "aten.div.Scalar", 14 => |c| arith_scalar(c, "Div", false);
    "aten.rsub.Scalar", 14 => |c| arith_scalar(c, "Sub", true);
    "aten.pow.Tensor_Scalar", 15 => |c| arith_scalar(c, "Pow", false);
    "aten.eq.Scalar", 13 => |c| compare_scalar(c, "Equal", false);
    "aten.ne.Scalar", 13 => |c| compare_scalar(c, "Equal", true);
    "aten.lt.Scalar", 13 => |c| compare_scalar(c, "Less", false);
    "aten.le.Scalar", 16 => |c| compare_scalar(c, "LessOrEqual", false);
    "aten.gt.Scalar", 13 => |c| compare_scalar(c, "Greater", false);
    "aten.ge.Scalar", 16 => |c| compare_scalar(c, "GreaterOrEqual", false);
    "aten.neg.default", 13 => |c| unary(c, "Neg");
    "aten.exp.default", 13 => |c| unary(c, "Exp");
    "aten.log.default", 13 => |c| unary(c, "Log");
    "aten.sqrt.default", 13 => |c| unary(c, "Sqrt");
    "aten.rsqrt.default", 13 => rsqrt;
    "aten.sin.default", 7 => |c| emit_widened(c, "Sin", 1, Vec::new());
    "aten.cos.default", 7 => |c| emit_widened(c, "Cos", 1, Vec::new());
    "aten.abs.default", 13 => |c| unary(c, "Abs");
    "aten.tanh.default", 13 => |c| unary(c, "Tanh");
    "aten.sigmoid.default", 13 => |c| unary(c, "Sigmoid");
    "aten.relu.default", 14 => |c| unary(c, "Relu");
    "aten.silu.default", 13 => silu;
    "aten.gelu.default", 13 => gelu;
    "aten.clamp.default", 13 => clamp;
    "aten._to_copy.default", 13 => to_copy;
    "aten.contiguous.default", 14 => identity;
    "aten.clone.default", 14 => identity;
    "aten.where.self", 16 => where_self;
    "aten.masked_fill.Scalar", 16 => masked_fill;
    "aten.softmax.int", 13 => |c| softmax_like(c, "Softmax");
    "aten.log_softmax.int", 13 => |c| softmax_like(c, "LogSoftmax");
    "aten.cumsum.default", 14 => cumsum;
    "aten.triu.default", 14 => |c| trilu(c, 1);
    "aten.tril.default", 14 => |c| trilu(c, 0);
    "aten.view.default", 14 => reshape;
    "aten.reshape.default", 14 => reshape;
    "aten.transpose.int", 13 => transpose;
    "aten.permute.default", 13 => permute;
    "aten.unsqueeze.default", 13 => unsqueeze;
    "aten.squeeze.dim", 13 => squeeze;
    "aten.expand.default", 13 => expand;
    "aten.cat.default", 13 => cat;
    "aten.stack.default", 13 => stack;
    "aten.split_with_sizes.default", 13 => split_with_sizes;
    "aten.slice.Tensor", 13 => slice;
    "aten.narrow.default", 13 => narrow;
    "aten.select.int", 13 => select;
    "aten.index_select.default", 13 => index_select;
    "aten.gather.default", 13 => gather;
    "aten.scatter.src", 18 => scatter;
    "aten.index_put.default", 18 => index_put;
    "aten.index.Tensor", 13 => index;
    "aten.linear.default", 13 => linear;
    "aten.matmul.default", 13 => matmul;
    "aten.bmm.default", 13 => matmul;
    "aten.embedding.default", 13 => embedding;
    "aten.layer_norm.default", 17 => layer_norm;
    "aten.group_norm.default", 13 => group_norm;
    "aten.conv2d.default", 11 => conv2d;
    "aten.conv3d.default", 11 => conv2d;
    "aten.conv_transpose2d.input", 11 => conv_transpose2d;
    "aten.avg_pool2d.default", 11 => avg_pool2d;
    "aten.scaled_dot_product_attention.default", 14 => sdpa;
    "aten.topk.default", 11 => topk;
    "aten.sum.dim_IntList", 13 => |c| reduce(c, "ReduceSum");
    "aten.mean.dim", 18 => |c| reduce(c, "ReduceMean");
    "aten.amax.default", 18 => |c| reduce(c, "ReduceMax");
    "aten.amin.default", 18 => |c| reduce(c, "ReduceMin");
    "aten.any.dims", 18 => |c| reduce(c, "ReduceMax");
    "aten.all.dims", 18 => |c| reduce(c, "ReduceMin");
    "aten.max.dim", 18 => |c| reduce_with_index(c, "ReduceMax", "ArgMax");
    "aten.min.dim", 18 => |c| reduce_with_index(c, "ReduceMin", "ArgMin");
    "aten.argmax.default", 13 => argmax;
    "aten.arange.start_step", 11 => arange;
    "aten.zeros.default", 9 => |c| filled(c, Some(0.0));
    "aten.ones.default", 9 => |c| filled(c, Some(1.0));
    "aten.full.default", 9 => |c| filled(c, None);
}

// ---- control flow ----

fn subgraph<'a>(c: &Ctx<'a>, k: usize) -> Result<&'a SubGraph, LowerError> {
    match c.node.attrs.get(k) {
        Some(Attr::Graph(g)) => Ok(g),
        _ => Err(c.fail(format!("attribute {k} is not a sub-graph"))),
    }
}

/// `cond` → `If`: each branch a sub-graph reading the operands and the captured values from
/// the enclosing scope.
fn cond(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (t, e) = (subgraph(c, 0)?, subgraph(c, 1)?);
    let pred = c.input(0)?;
    let inputs = c.inputs_from(1)?;
    let then_g = super::lower_subgraph(
        c.b,
        &t.name,
        &t.graph,
        &inputs,
        Vec::new(),
        &mut |_| Ok(()),
        Vec::new(),
    )?;
    let else_g = super::lower_subgraph(
        c.b,
        &e.name,
        &e.graph,
        &inputs,
        Vec::new(),
        &mut |_| Ok(()),
        Vec::new(),
    )?;
    let outs = c.outs()?;
    c.b.emit(
        "If",
        &[&pred],
        &outs,
        vec![
            ("then_branch", A::Graph(Box::new(then_g))),
            ("else_branch", A::Graph(Box::new(else_g))),
        ],
    );
    Ok(())
}

/// `scan` → `Loop` over the leading dimension: the body gathers slice `i` of each scanned
/// tensor, carries the state, and its step outputs are stacked by the Loop (ONNX's scan
/// outputs).
fn scan(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let body = subgraph(c, 0)?;
    let count = |k: usize| match c.node.attrs.get(k) {
        Some(Attr::Int(v)) => usize::try_from(v.hint()).map_err(|e| c.fail(e.to_string())),
        _ => Err(c.fail(format!("attribute {k} is not a count"))),
    };
    let (n_init, n_xs) = (count(1)?, count(2)?);
    let len = c
        .shape(n_init)?
        .first()
        .cloned()
        .ok_or_else(|| c.fail("the scanned tensor is a scalar"))?;
    let trip = c.b.sym_scalar(&len)?;
    let keep_going = c.b.constant(&tch::Tensor::from(true), "const_true")?;
    let all = c.inputs_from(0)?;
    let g = &body.graph;
    let iter = c.b.fresh(&format!("{}_iter", body.name));
    let cond_in = c.b.fresh(&format!("{}_cond_in", body.name));
    let cond_out = c.b.fresh(&format!("{}_cond_out", body.name));
    let scalar = |kind: Kind| ValueInfo {
        name: String::new(),
        kind,
        shape: Vec::new(),
    };
    let mut body_inputs = vec![
        super::typed(&iter, &scalar(Kind::Int64))?,
        super::typed(&cond_in, &scalar(Kind::Bool))?,
    ];
    let mut names: Vec<String> = Vec::new();
    for (id, _) in &g.inputs[..n_init] {
        let info = g.value(*id);
        let n = c.b.fresh(&info.name);
        body_inputs.push(super::typed(&n, info)?);
        names.push(n);
    }
    let mut slices = Vec::new();
    for _ in 0..n_xs {
        slices.push(c.b.fresh(&format!("{}_slice", body.name)));
    }
    names.extend(slices.iter().cloned());
    names.extend(all[n_init + n_xs..].iter().cloned());
    let xs: Vec<String> = all[n_init..n_init + n_xs].to_vec();
    let (iter_p, cond_in_p, cond_out_p, slices_p) = (
        iter.clone(),
        cond_in.clone(),
        cond_out.clone(),
        slices.clone(),
    );
    let body_g = super::lower_subgraph(
        c.b,
        &body.name,
        g,
        &names,
        body_inputs,
        &mut |b| {
            for (x, s) in xs.iter().zip(&slices_p) {
                b.emit(
                    "Gather",
                    &[x, &iter_p],
                    std::slice::from_ref(s),
                    vec![("axis", A::Int(0))],
                );
            }
            b.emit(
                "Identity",
                &[&cond_in_p],
                std::slice::from_ref(&cond_out_p),
                Vec::new(),
            );
            Ok(())
        },
        vec![super::typed(&cond_out, &scalar(Kind::Bool))?],
    )?;
    let mut inputs: Vec<&str> = vec![&trip, &keep_going];
    inputs.extend(all[..n_init].iter().map(String::as_str));
    let outs = c.outs()?;
    c.b.emit(
        "Loop",
        &inputs,
        &outs,
        vec![("body", A::Graph(Box::new(body_g)))],
    );
    Ok(())
}

/// `check` on a tensor: ONNX has no assertion op; the check is dropped from the ONNX graph
/// (torch.onnx drops `_assert_async` too) and its message kept in the model's metadata
/// (`checks`), like the guards.
fn assert_dropped(_: &mut Ctx<'_>) -> Result<(), LowerError> {
    Ok(())
}

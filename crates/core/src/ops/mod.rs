//! The op table. Each op is registered in one place ([`op!`]): its torch name, its eager kernel
//! over libtorch tensors and its shape rule over symbolic sizes. The same kernel runs the model
//! eagerly, during an export, and in `ExportedProgram::run`; the shape rule gives the symbolic
//! shapes of the outputs during an export and is checked against what the kernel computed.
//!
//! Element types are not computed by rules: they are read from the kernel's outputs, which is
//! what libtorch's type promotion gives.

use std::{collections::HashMap, fmt};

use tch::TchError;

use crate::{
    graph::Attr,
    sym::{SymExpr, SymInt},
};

mod control;
mod creation;
mod data_dependent;
mod elementwise;
mod indexing;
mod nn;
mod reduce;
mod shape;

pub(crate) use control::*;
pub(crate) use creation::*;
pub(crate) use data_dependent::*;
pub(crate) use elementwise::*;
pub(crate) use indexing::*;
pub(crate) use nn::*;
pub(crate) use reduce::*;
pub(crate) use shape::*;

/// Eager kernel: tensor inputs (absent optional ones are `None`) and attributes whose symbolic
/// integers already hold the values to use (their hints).
pub(crate) type Kernel = fn(&[Option<&tch::Tensor>], &[Attr]) -> Result<Vec<tch::Tensor>, String>;

/// Shape rule: input shapes (absent optional inputs are `None`), attributes, and a context to
/// record the assumptions (guards) the rule had to make.
pub(crate) type ShapeRule =
    fn(&[Option<&[SymInt]>], &[Attr], &mut ShapeCtx) -> Result<Vec<Vec<SymInt>>, String>;

/// An op of the table.
pub struct OpDef {
    /// torch's name, `aten.<op>.<overload>` (`aten.add.Tensor`).
    pub name: &'static str,
    pub(crate) kernel: Kernel,
    pub(crate) shape: ShapeRule,
    /// The tensor inputs are printed as one list (`cat([a, b], 1)`).
    pub(crate) list_input: bool,
    /// Output sizes depend on the input values (its shape rule asks for
    /// [`ShapeCtx::data_dependent`] sizes): `ExportedProgram::run` binds their symbols from
    /// every run's actual outputs (a loop body runs the node many times).
    pub(crate) data_dependent: bool,
}

impl OpDef {
    /// The name without namespace and overload (`add`), used to name output values.
    pub fn short_name(&self) -> &'static str {
        let rest = self
            .name
            .strip_prefix("aten.")
            .or_else(|| self.name.strip_prefix("higher_order."))
            .unwrap_or(self.name);
        rest.split('.').next().unwrap_or(rest)
    }
}

impl fmt::Debug for OpDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpDef({})", self.name)
    }
}

/// A registered op, collected at link time.
pub(crate) struct OpRef(pub(crate) &'static OpDef);
inventory::collect!(OpRef);

/// The op of the table with this name (`aten.add.Tensor`).
pub fn op_by_name(name: &str) -> Option<&'static OpDef> {
    use std::sync::OnceLock;
    static TABLE: OnceLock<HashMap<&'static str, &'static OpDef>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            inventory::iter::<OpRef>
                .into_iter()
                .map(|r| (r.0.name, r.0))
                .collect()
        })
        .get(name)
        .copied()
}

/// Every registered op, sorted by name.
pub fn all_ops() -> Vec<&'static OpDef> {
    let mut ops: Vec<_> = inventory::iter::<OpRef>.into_iter().map(|r| r.0).collect();
    ops.sort_by_key(|o| o.name);
    ops
}

/// Defines an op: `op!(STATIC = "aten.x.y", kernel, shape_rule)`, optionally `list` after the
/// rule when the tensor inputs print as a list, or `data_dependent` when its output sizes
/// depend on the input values.
macro_rules! op {
    ($id:ident = $name:literal, $kernel:expr, $shape:expr) => {
        op!(@ $id, $name, $kernel, $shape, false, false);
    };
    ($id:ident = $name:literal, $kernel:expr, $shape:expr, list) => {
        op!(@ $id, $name, $kernel, $shape, true, false);
    };
    ($id:ident = $name:literal, $kernel:expr, $shape:expr, data_dependent) => {
        op!(@ $id, $name, $kernel, $shape, false, true);
    };
    (@ $id:ident, $name:literal, $kernel:expr, $shape:expr, $list:expr, $dd:expr) => {
        pub(crate) static $id: $crate::ops::OpDef = $crate::ops::OpDef {
            name: $name,
            kernel: $kernel,
            shape: $shape,
            list_input: $list,
            data_dependent: $dd,
        };
        inventory::submit! { $crate::ops::OpRef(&$id) }
    };
}
pub(crate) use op;

/// A relation between two symbolic sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Rel {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// Broadcast: equal, or one of them is 1 (what the relaxed broadcasting rule of
    /// crates/patch-torch assumes).
    Broadcast,
}

impl Rel {
    /// Whether `a rel b`.
    pub fn holds(self, a: i64, b: i64) -> bool {
        match self {
            Rel::Eq => a == b,
            Rel::Ne => a != b,
            Rel::Lt => a < b,
            Rel::Le => a <= b,
            Rel::Gt => a > b,
            Rel::Ge => a >= b,
            Rel::Broadcast => a == b || a == 1 || b == 1,
        }
    }

    /// The relation that holds when this one does not. `Broadcast` has no such relation: its
    /// negation gives `!=`, which holds whenever it does not (a weaker guard).
    pub fn negate(self) -> Rel {
        match self {
            Rel::Eq => Rel::Ne,
            Rel::Ne => Rel::Eq,
            Rel::Lt => Rel::Ge,
            Rel::Le => Rel::Gt,
            Rel::Gt => Rel::Le,
            Rel::Ge => Rel::Lt,
            Rel::Broadcast => Rel::Ne,
        }
    }
}

impl fmt::Display for Rel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rel::Eq => "==",
            Rel::Ne => "!=",
            Rel::Lt => "<",
            Rel::Le => "<=",
            Rel::Gt => ">",
            Rel::Ge => ">=",
            Rel::Broadcast => "broadcasts with",
        })
    }
}

/// An assumption a shape rule made (`s1 == s2` when broadcasting two equal symbolic sizes),
/// recorded as a guard.
#[derive(Clone, Debug, PartialEq)]
pub struct Assumption {
    /// Left side.
    pub lhs: SymExpr,
    /// Relation.
    pub rel: Rel,
    /// Right side.
    pub rhs: SymExpr,
    /// Why the rule assumed it.
    pub reason: String,
}

/// What a shape rule can record besides its result.
#[derive(Default, Debug)]
pub(crate) struct ShapeCtx {
    pub(crate) assumptions: Vec<Assumption>,
    /// The largest value (if known) of each data-dependent size the rule asked for with
    /// [`ShapeCtx::data_dependent`].
    pub(crate) data_dependent: Vec<Option<i64>>,
}

/// The prefix of the placeholder symbols of data-dependent sizes (no symbol name has it).
const PLACEHOLDER: &str = "?dd";

impl ShapeCtx {
    /// A size that depends on the values of the inputs (`nonzero`'s count), at most `max`:
    /// a placeholder the recording replaces by a fresh unbacked symbol (`u0`) whose example
    /// value is what the kernel computed. Outside a recording the rule's result is not used.
    pub(crate) fn data_dependent(&mut self, max: Option<i64>) -> SymInt {
        let k = self.data_dependent.len();
        self.data_dependent.push(max);
        SymInt::symbolic(SymExpr::symbol(&format!("{PLACEHOLDER}{k}")), -1)
    }

    /// The index of a placeholder made by [`ShapeCtx::data_dependent`].
    pub(crate) fn placeholder_index(d: &SymInt) -> Option<usize> {
        d.expr()
            .as_symbol()?
            .strip_prefix(PLACEHOLDER)?
            .parse()
            .ok()
    }

    /// Records `a == b` when the two sizes are different expressions (their hints are equal).
    pub(crate) fn assume_eq(&mut self, a: &SymInt, b: &SymInt, reason: &str) {
        if a.expr() != b.expr() {
            self.assumptions.push(Assumption {
                lhs: a.expr().clone(),
                rel: Rel::Eq,
                rhs: b.expr().clone(),
                reason: reason.to_owned(),
            });
        }
    }
}

// ---- helpers shared by the op families ----

/// libtorch's message without the C++ stack trace it appends.
pub(crate) fn err(e: TchError) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("Internal torch error: ").unwrap_or(&text);
    text.split("\nException raised from")
        .next()
        .unwrap_or(text)
        .trim()
        .to_owned()
}

/// The i-th tensor input, which must be present.
pub(crate) fn t<'a>(
    inputs: &[Option<&'a tch::Tensor>],
    i: usize,
) -> Result<&'a tch::Tensor, String> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("tensor input {i} is missing"))
}

/// The i-th input shape, which must be present.
pub(crate) fn s<'a>(shapes: &[Option<&'a [SymInt]>], i: usize) -> Result<&'a [SymInt], String> {
    shapes
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("tensor input {i} is missing"))
}

/// The i-th attribute.
pub(crate) fn a(attrs: &[Attr], i: usize) -> Result<&Attr, String> {
    attrs
        .get(i)
        .ok_or_else(|| format!("attribute {i} is missing"))
}

/// A dimension index normalised against a rank (negative counts from the end).
pub(crate) fn norm_dim(d: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let n = if d < 0 { d + r } else { d };
    if n < 0 || n >= r.max(1) {
        return Err(format!(
            "dimension {d} is out of range for a tensor of rank {rank}"
        ));
    }
    Ok(n as usize)
}

/// Broadcasts two sizes as libtorch does, recording an assumption when two different symbolic
/// sizes meet (their hints must then be equal, or one is 1). Used by `expand`, and by
/// [`crate::shape_env::infer_size`] unpatched.
pub(crate) fn broadcast_dim(x: &SymInt, y: &SymInt, ctx: &mut ShapeCtx) -> Result<SymInt, String> {
    broadcast_dim_strict(x, y, &mut ctx.assumptions)
}

/// [`broadcast_dim`] on a list of assumptions: torch's rule (a size 1 specialises, two equal
/// example sizes become one).
pub(crate) fn broadcast_dim_strict(
    x: &SymInt,
    y: &SymInt,
    assumptions: &mut Vec<Assumption>,
) -> Result<SymInt, String> {
    let mut assume_eq = |a: &SymInt, b: &SymInt, reason: &str| {
        if a.expr() != b.expr() {
            assumptions.push(Assumption {
                lhs: a.expr().clone(),
                rel: Rel::Eq,
                rhs: b.expr().clone(),
                reason: reason.to_owned(),
            });
        }
    };
    if x.expr() == y.expr() {
        return Ok(x.clone());
    }
    match (x.as_static(), y.as_static()) {
        (Some(1), _) => return Ok(y.clone()),
        (_, Some(1)) => return Ok(x.clone()),
        _ => {}
    }
    if x.hint() == y.hint() {
        // Prefer the symbolic side; both must stay equal.
        let (keep, other) = if x.is_static() { (y, x) } else { (x, y) };
        assume_eq(keep, other, "broadcasting requires equal sizes");
        return Ok(keep.clone());
    }
    if x.hint() == 1 {
        assume_eq(x, &SymInt::new(1), "broadcasting a dimension of size 1");
        return Ok(y.clone());
    }
    if y.hint() == 1 {
        assume_eq(y, &SymInt::new(1), "broadcasting a dimension of size 1");
        return Ok(x.clone());
    }
    Err(format!("sizes {x} and {y} cannot be broadcast"))
}

/// Broadcasts shapes (right-aligned), pairwise through the patchable
/// [`crate::shape_env::infer_size`].
pub(crate) fn broadcast(shapes: &[&[SymInt]], ctx: &mut ShapeCtx) -> Result<Vec<SymInt>, String> {
    let mut acc: Vec<SymInt> = Vec::new();
    for sh in shapes {
        let b = crate::shape_env::infer_size(&acc, sh)?;
        ctx.assumptions.extend(b.assumptions);
        acc = b.shape;
    }
    Ok(acc)
}

/// The product of sizes.
pub(crate) fn numel(shape: &[SymInt]) -> SymInt {
    shape.iter().fold(SymInt::new(1), |acc, d| acc * d)
}

/// One output with the shape of input 0.
pub(crate) fn same_as_first(
    shapes: &[Option<&[SymInt]>],
    _: &[Attr],
    _: &mut ShapeCtx,
) -> Result<Vec<Vec<SymInt>>, String> {
    Ok(vec![s(shapes, 0)?.to_vec()])
}

/// One output with the broadcast shape of every present input.
pub(crate) fn broadcast_all(
    shapes: &[Option<&[SymInt]>],
    _: &[Attr],
    ctx: &mut ShapeCtx,
) -> Result<Vec<Vec<SymInt>>, String> {
    let present: Vec<&[SymInt]> = shapes.iter().flatten().copied().collect();
    Ok(vec![broadcast(&present, ctx)?])
}

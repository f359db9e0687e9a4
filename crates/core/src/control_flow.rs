//! Control flow that exports: [`cond`] (torch's `torch.cond`), [`check`] / [`check_size`]
//! (`torch._check`) and [`scan`] (`torch.ops.higher_order.scan`).
//!
//! Outside an export they run eagerly: `cond` calls the branch the predicate selects, `check`
//! fails when its condition is false, `scan` loops over the leading dimension.
//!
//! During an export, `cond` records both branches as sub-graphs taking the operands (plus
//! every value of the enclosing graph or weight they read, passed in as extra inputs, as torch
//! lifts them), and one node choosing between them at run time; the eager result is the taken
//! branch's. Output sizes the branches disagree on become fresh symbols (`u0`, `u1`, ... torch's
//! unbacked symbols), bound when the program runs. `scan` records its body once and computes
//! the eager result by looping with the recording paused. `check` on a tensor records an
//! assertion node (`aten._assert_async.msg`); `check_size` on symbolic sizes refines the range
//! of a symbol (`s0 >= 2` makes its range `[2, inf]`) or records a guard when the relation is
//! between symbols.

use crate::{
    context::{self, Guard, with_recorder},
    error::{Error, Loc, Result},
    export::Bindings,
    graph::{Attr, Graph, InputKind, Node, SubGraph, ValueId},
    ops::{self, Rel},
    program::eval_graph,
    sym::SymInt,
    tensor::{Tensor, Traced},
};
use std::sync::Arc;

/// The predicate of [`cond`]: a plain boolean (no sub-graph is recorded, as torch does for a
/// Python bool) or a boolean scalar tensor.
#[derive(Clone, Copy, Debug)]
pub enum Pred<'a> {
    /// Known while tracing.
    Bool(bool),
    /// A boolean tensor with one element.
    Tensor(&'a Tensor),
}

impl From<bool> for Pred<'_> {
    fn from(b: bool) -> Self {
        Pred::Bool(b)
    }
}

impl<'a> From<&'a Tensor> for Pred<'a> {
    fn from(t: &'a Tensor) -> Self {
        Pred::Tensor(t)
    }
}

fn cf_error(op: &'static str, location: Loc, reason: String) -> Error {
    Error::ControlFlow {
        op,
        location,
        reason,
    }
}

/// The boolean value of a one-element boolean tensor.
fn scalar_bool(t: &Tensor, op: &'static str, location: Loc) -> Result<bool> {
    if t.kind() != tch::Kind::Bool || t.as_tch().numel() != 1 {
        return Err(cf_error(
            op,
            location,
            format!(
                "the predicate must be a boolean scalar tensor, got {:?} of shape {:?}",
                t.kind(),
                t.concrete_shape()
            ),
        ));
    }
    t.as_tch()
        .f_int64_value(&vec![0; t.rank()])
        .map(|v| v != 0)
        .map_err(|e| cf_error(op, location, e.to_string()))
}

/// A recorded sub-graph: the graph (inputs: the placeholders, then the captures), the outer
/// values it captured, and the eager outputs.
struct Traced_ {
    graph: Graph,
    captures: Vec<ValueId>,
    outputs: Vec<Tensor>,
    /// The symbolic shapes of the outputs (read before the sub-frame closes).
    shapes: Vec<Vec<SymInt>>,
}

/// Pops the sub-frame when dropped (error or panic inside a branch).
struct FrameGuard {
    active: bool,
}

impl Drop for FrameGuard {
    fn drop(&mut self) {
        if self.active {
            with_recorder(context::Recorder::pop_frame);
        }
    }
}

/// Records `f` on placeholders shaped like `args` (values `data`) in a new frame.
fn trace_sub(
    args: &[(String, tch::Kind, Vec<SymInt>, tch::Tensor)],
    f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Traced_> {
    let placeholders = with_recorder(|r| {
        r.push_frame();
        args.iter()
            .map(|(name, kind, shape, data)| {
                let name = r.fresh_name(name);
                let id = r.add_value(name, *kind, shape.clone());
                r.graph.inputs.push((id, InputKind::User));
                Tensor {
                    t: data.shallow_clone(),
                    traced: Some(Traced { graph: r.id, id }),
                }
            })
            .collect::<Vec<_>>()
    })
    .unwrap_or_default();
    let mut guard = FrameGuard { active: true };
    let outputs = f(&placeholders)?;
    let shapes: Vec<Vec<SymInt>> = outputs.iter().map(context::shape_of).collect();
    let frame = with_recorder(|r| {
        let ids: Vec<ValueId> = outputs.iter().map(|t| r.value_of(t)).collect();
        r.graph.outputs = ids;
        r.pop_frame()
    })
    .flatten();
    guard.active = false;
    let frame = frame.ok_or_else(|| Error::Model {
        model: String::new(),
        message: "the recording ended inside a sub-graph".to_owned(),
    })?;
    Ok(Traced_ {
        graph: frame.graph,
        captures: frame.captures.iter().map(|(outer, _)| *outer).collect(),
        outputs,
        shapes,
    })
}

/// Reorders a sub-graph's inputs to `n_args` placeholders then one per `all` capture (an
/// unused placeholder for a capture this sub-graph does not read).
fn align_captures(
    t: &mut Traced_,
    n_args: usize,
    all: &[ValueId],
    name_of: &dyn Fn(ValueId) -> (String, tch::Kind, Vec<SymInt>),
) {
    let own: Vec<(ValueId, ValueId)> = t
        .captures
        .iter()
        .copied()
        .zip(t.graph.inputs[n_args..].iter().map(|(id, _)| *id))
        .collect();
    let mut inputs = t.graph.inputs[..n_args].to_vec();
    for outer in all {
        let inner = match own.iter().find(|(o, _)| o == outer) {
            Some((_, inner)) => *inner,
            None => {
                let (name, kind, shape) = name_of(*outer);
                let id = ValueId(t.graph.values.len() as u32);
                t.graph.values.push(crate::graph::ValueInfo {
                    name: format!("{name}_unused"),
                    kind,
                    shape,
                });
                id
            }
        };
        inputs.push((inner, InputKind::User));
    }
    t.graph.inputs = inputs;
}

fn placeholder_args(
    operands: &[Tensor],
    names: &str,
) -> Vec<(String, tch::Kind, Vec<SymInt>, tch::Tensor)> {
    operands
        .iter()
        .enumerate()
        .map(|(i, o)| {
            (
                format!("{names}{i}"),
                o.kind(),
                context::shape_of(o),
                o.as_tch().shallow_clone(),
            )
        })
        .collect()
}

fn outer_info(id: ValueId) -> (String, tch::Kind, Vec<SymInt>) {
    with_recorder(|r| {
        let v = r.graph.value(id);
        (v.name.clone(), v.kind, v.shape.clone())
    })
    .unwrap_or_else(|| (String::new(), tch::Kind::Float, Vec::new()))
}

/// A name `<base>_<n>` not used yet by the sub-graphs of the current graph.
fn subgraph_name(base: &str) -> String {
    with_recorder(|r| {
        let used: Vec<String> = r.graph.subgraphs().map(|g| g.name.clone()).collect();
        (0..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !used.contains(n))
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// `torch.cond(pred, then_fn, else_fn, operands)`: the outputs of `then_fn(operands)` when
/// `pred` holds, of `else_fn(operands)` otherwise; exported as both sub-graphs and a choice at
/// run time (see the module doc). Branches may read weights and other tensors of the
/// enclosing code; nested `cond`s work.
///
/// # Errors
/// [`Error::ControlFlow`] when the predicate is not a boolean scalar, or when the branches'
/// outputs differ in count, dtype or rank (naming the first difference); any error of a
/// branch.
#[track_caller]
pub fn cond<'p>(
    pred: impl Into<Pred<'p>>,
    then_fn: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
    else_fn: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
    operands: &[Tensor],
) -> Result<Vec<Tensor>> {
    let location = Loc::caller();
    let p = match pred.into() {
        Pred::Bool(true) => return then_fn(operands),
        Pred::Bool(false) => return else_fn(operands),
        Pred::Tensor(t) => t,
    };
    let taken = scalar_bool(p, "cond", location)?;
    if !context::recording() {
        return if taken {
            then_fn(operands)
        } else {
            else_fn(operands)
        };
    }
    let pred_id = with_recorder(|r| r.value_of(p));
    let operand_ids: Vec<ValueId> = operands
        .iter()
        .filter_map(|o| with_recorder(|r| r.value_of(o)))
        .collect();
    let args = placeholder_args(operands, "arg");
    let mut then_t = trace_sub(&args, then_fn)?;
    let mut else_t = trace_sub(&args, else_fn)?;

    let (a, b) = (&then_t.outputs, &else_t.outputs);
    if a.len() != b.len() {
        return Err(cf_error(
            "cond",
            location,
            format!(
                "the true branch returns {} tensors, the false branch {}",
                a.len(),
                b.len()
            ),
        ));
    }
    let mut shapes = Vec::with_capacity(a.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.kind() != y.kind() {
            return Err(cf_error(
                "cond",
                location,
                format!(
                    "output {i}: the true branch returns {:?}, the false branch {:?}",
                    x.kind(),
                    y.kind()
                ),
            ));
        }
        let (sx, sy) = (then_t.shapes[i].clone(), else_t.shapes[i].clone());
        if sx.len() != sy.len() {
            return Err(cf_error(
                "cond",
                location,
                format!(
                    "output {i}: the true branch returns a tensor of rank {}, the false branch of rank {}",
                    sx.len(),
                    sy.len()
                ),
            ));
        }
        let taken_shape = if taken { &sx } else { &sy };
        let shape: Vec<SymInt> = sx
            .iter()
            .zip(&sy)
            .zip(taken_shape)
            .map(|((dx, dy), d)| {
                if dx.expr() == dy.expr() {
                    dx.clone()
                } else {
                    fresh_unbacked(d.hint(), location)
                }
            })
            .collect();
        shapes.push(shape);
    }

    let mut all = then_t.captures.clone();
    for c in &else_t.captures {
        if !all.contains(c) {
            all.push(*c);
        }
    }
    align_captures(&mut then_t, operands.len(), &all, &outer_info);
    align_captures(&mut else_t, operands.len(), &all, &outer_info);

    let outputs = if taken {
        then_t.outputs
    } else {
        else_t.outputs
    };
    let (tname, fname) = (subgraph_name("true_graph"), subgraph_name("false_graph"));
    let mut inputs = vec![pred_id];
    inputs.extend(operand_ids.into_iter().map(Some));
    inputs.extend(all.into_iter().map(Some));
    let attrs = vec![
        Attr::Graph(SubGraph {
            name: tname,
            graph: Arc::new(then_t.graph),
        }),
        Attr::Graph(SubGraph {
            name: fname,
            graph: Arc::new(else_t.graph),
        }),
    ];
    let outs: Vec<(tch::Tensor, Vec<SymInt>)> = outputs
        .into_iter()
        .map(|t| t.into_tch())
        .zip(shapes)
        .collect();
    Ok(
        with_recorder(|r| r.push_node(&ops::COND, inputs, attrs, outs, location))
            .unwrap_or_default(),
    )
}

fn fresh_unbacked(hint: i64, location: Loc) -> SymInt {
    with_recorder(|r| r.fresh_unbacked(hint, None, "an output size of cond", location))
        .unwrap_or_else(|| SymInt::new(hint))
}

/// `torch._check(cond, message)` on a boolean tensor: fails with `message` when it is false;
/// during an export it also records an assertion node checked whenever the program runs.
///
/// # Errors
/// [`Error::CheckFailed`] when the condition is false (for the example inputs during an
/// export); [`Error::ControlFlow`] when it is not a boolean tensor.
#[track_caller]
pub fn check(condition: &Tensor, message: &str) -> Result<()> {
    let location = Loc::caller();
    if condition.kind() != tch::Kind::Bool {
        return Err(cf_error(
            "check",
            location,
            format!(
                "the condition must be a boolean tensor, got {:?}",
                condition.kind()
            ),
        ));
    }
    let holds = ops::all_true(condition.as_tch()).map_err(|e| cf_error("check", location, e))?;
    if !holds {
        return Err(Error::CheckFailed {
            message: message.to_owned(),
            location,
        });
    }
    if context::recording() {
        with_recorder(|r| {
            let id = r.value_of(condition);
            r.push_node(
                &ops::ASSERT,
                vec![Some(id)],
                vec![Attr::Text(message.to_owned())],
                Vec::new(),
                location,
            );
        });
    }
    Ok(())
}

/// `torch._check(a rel b)` on sizes: fails with `message` when the relation does not hold for
/// the current values. During an export, a relation between a symbol and a constant refines
/// the symbol's range (shown in the range constraints and checked by `run`); any other
/// relation on symbolic sizes is recorded as a guard.
///
/// # Errors
/// [`Error::CheckFailed`] when the relation does not hold.
#[track_caller]
pub fn check_size(a: &SymInt, rel: Rel, b: impl Into<SymInt>, message: &str) -> Result<()> {
    let location = Loc::caller();
    let b = b.into();
    if !rel.holds(a.hint(), b.hint()) {
        return Err(Error::CheckFailed {
            message: format!(
                "{message} ({a} {rel} {b} is false: {} {rel} {})",
                a.hint(),
                b.hint()
            ),
            location,
        });
    }
    if a.is_static() && b.is_static() {
        return Ok(());
    }
    with_recorder(|r| {
        // Symbol on the left, constant on the right.
        let (sym, rel, c) = match (
            a.expr().as_symbol(),
            b.as_static(),
            b.expr().as_symbol(),
            a.as_static(),
        ) {
            (Some(s), Some(c), _, _) => (Some(s.to_owned()), rel, c),
            (_, _, Some(s), Some(c)) => (Some(s.to_owned()), flip(rel), c),
            _ => (None, rel, 0),
        };
        match (sym, rel) {
            (Some(s), Rel::Ge) => r.refinements.push((s, Some(c), None)),
            (Some(s), Rel::Gt) => r.refinements.push((s, Some(c + 1), None)),
            (Some(s), Rel::Le) => r.refinements.push((s, None, Some(c))),
            (Some(s), Rel::Lt) => r.refinements.push((s, None, Some(c - 1))),
            (Some(s), Rel::Eq) => r.refinements.push((s, Some(c), Some(c))),
            _ => {
                let g = Guard {
                    lhs: a.expr().clone(),
                    rel,
                    rhs: b.expr().clone(),
                    location,
                    reason: format!("check: {message}"),
                };
                if !r.guards.contains(&g) {
                    r.guards.push(g);
                }
            }
        }
    });
    Ok(())
}

/// The relation seen from the other side (`a < b` is `b > a`).
pub(crate) fn flip(rel: Rel) -> Rel {
    match rel {
        Rel::Lt => Rel::Gt,
        Rel::Le => Rel::Ge,
        Rel::Gt => Rel::Lt,
        Rel::Ge => Rel::Le,
        other => other,
    }
}

/// The result of [`scan`]: the final carries and the stacked per-step outputs.
pub type ScanOutput = (Vec<Tensor>, Vec<Tensor>);

/// `scan(body, init, xs)`: loops over the leading dimension of `xs` (possibly symbolic);
/// step `i` calls `body(carries, [x[i] for x in xs])`, which returns the new carries and the
/// step's outputs; the result is the final carries and the step outputs stacked along a new
/// leading dimension. Recorded once as a sub-graph during an export (see the module doc).
///
/// # Errors
/// [`Error::ControlFlow`] when `xs` is empty, their leading dimensions differ, or the body
/// returns carries of another count, dtype or shape than `init`; any error of the body.
#[track_caller]
pub fn scan<F>(body: F, init: &[Tensor], xs: &[Tensor]) -> Result<ScanOutput>
where
    F: Fn(&[Tensor], &[Tensor]) -> Result<(Vec<Tensor>, Vec<Tensor>)>,
{
    let location = Loc::caller();
    let first = xs.first().ok_or_else(|| {
        cf_error(
            "scan",
            location,
            "no tensor to scan over (xs is empty)".to_owned(),
        )
    })?;
    let shapes: Vec<Vec<SymInt>> = xs.iter().map(context::shape_of).collect();
    let len = shapes[0].first().cloned().ok_or_else(|| {
        cf_error(
            "scan",
            location,
            "xs[0] is a scalar, it has no dimension to scan".to_owned(),
        )
    })?;
    for (i, s) in shapes.iter().enumerate().skip(1) {
        match s.first() {
            Some(d) if d.expr() == len.expr() => {}
            other => {
                return Err(cf_error(
                    "scan",
                    location,
                    format!(
                        "xs[{i}] has leading dimension {}, xs[0] has {len}: every scanned tensor must have the same length",
                        other.map_or("none (a scalar)".to_owned(), ToString::to_string)
                    ),
                ));
            }
        }
    }
    let _ = first;
    if !context::recording() {
        return eager_scan(&body, init, xs, location);
    }

    // Record the body once, on the first slices (zeros when the length is 0).
    let mut args = placeholder_args(init, "carry");
    for (x, s) in xs.iter().zip(&shapes) {
        let data = if x.as_tch().size()[0] > 0 {
            x.as_tch().select(0, 0)
        } else {
            tch::Tensor::zeros(&x.as_tch().size()[1..], (x.kind(), x.as_tch().device()))
        };
        args.push(("x".to_owned(), x.kind(), s[1..].to_vec(), data));
    }
    let n_init = init.len();
    let mut ys_shapes = Vec::new();
    let traced = trace_sub(&args, |ph| {
        let (carries, ys) = body(&ph[..n_init], &ph[n_init..])?;
        if carries.len() != n_init {
            return Err(cf_error(
                "scan",
                location,
                format!(
                    "the body returns {} carries for {} initial ones",
                    carries.len(),
                    n_init
                ),
            ));
        }
        for (i, (c, p)) in carries.iter().zip(&ph[..n_init]).enumerate() {
            let (sc, sp) = (context::shape_of(c), context::shape_of(p));
            if c.kind() != p.kind() || sc.iter().map(SymInt::expr).ne(sp.iter().map(SymInt::expr)) {
                return Err(cf_error(
                    "scan",
                    location,
                    format!(
                        "carry {i}: the body returns {:?}{} for an initial {:?}{}",
                        c.kind(),
                        shape_str(&sc),
                        p.kind(),
                        shape_str(&sp)
                    ),
                ));
            }
        }
        ys_shapes = ys.iter().map(context::shape_of).collect();
        let mut all = carries;
        all.extend(ys);
        Ok(all)
    })?;
    let mut traced = traced;
    let captures = traced.captures.clone();
    align_captures(&mut traced, args.len(), &captures, &outer_info);

    // The eager result, with the recording paused.
    let paused = context::take();
    let eager = eager_scan(&body, init, xs, location);
    if let Some(r) = paused {
        context::restore(r);
    }
    let (carries, ys) = eager?;

    let mut inputs: Vec<Option<ValueId>> = Vec::new();
    for t in init.iter().chain(xs) {
        inputs.push(with_recorder(|r| r.value_of(t)));
    }
    inputs.extend(captures.into_iter().map(Some));
    let mut outs: Vec<(tch::Tensor, Vec<SymInt>)> = carries
        .into_iter()
        .zip(init)
        .map(|(c, i)| (c.into_tch(), context::shape_of(i)))
        .collect();
    for (y, s) in ys.into_iter().zip(ys_shapes) {
        let mut shape = vec![len.clone()];
        shape.extend(s);
        outs.push((y.into_tch(), shape));
    }
    let attrs = vec![
        Attr::Graph(SubGraph {
            name: subgraph_name("scan_combine_graph"),
            graph: Arc::new(traced.graph),
        }),
        Attr::Int(SymInt::new(n_init as i64)),
        Attr::Int(SymInt::new(xs.len() as i64)),
    ];
    let result = with_recorder(|r| r.push_node(&ops::SCAN, inputs, attrs, outs, location))
        .unwrap_or_default();
    let ys = result[n_init..].to_vec();
    let carries = result[..n_init].to_vec();
    Ok((carries, ys))
}

fn shape_str(s: &[SymInt]) -> String {
    let dims: Vec<String> = s.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The loop of `scan`, run eagerly.
fn eager_scan<F>(body: &F, init: &[Tensor], xs: &[Tensor], location: Loc) -> Result<ScanOutput>
where
    F: Fn(&[Tensor], &[Tensor]) -> Result<(Vec<Tensor>, Vec<Tensor>)>,
{
    let n = xs[0].as_tch().size()[0];
    let mut carries = init.to_vec();
    let mut steps: Vec<Vec<tch::Tensor>> = Vec::new();
    for i in 0..n {
        let slices: Vec<Tensor> = xs
            .iter()
            .map(|x| Tensor::from(x.as_tch().select(0, i)))
            .collect();
        let (c, ys) = body(&carries, &slices)?;
        carries = c;
        steps.push(ys.into_iter().map(Tensor::into_tch).collect());
    }
    let ys = if steps.is_empty() {
        // No step: run the body once on zeros to learn the outputs' shapes, stack none.
        let slices: Vec<Tensor> = xs
            .iter()
            .map(|x| {
                Tensor::from(tch::Tensor::zeros(
                    &x.as_tch().size()[1..],
                    (x.kind(), x.as_tch().device()),
                ))
            })
            .collect();
        let (_, ys) = body(init, &slices)?;
        ys.iter()
            .map(|y| {
                let mut shape = vec![0];
                shape.extend(y.as_tch().size());
                Tensor::from(tch::Tensor::zeros(&shape, (y.kind(), y.as_tch().device())))
            })
            .collect()
    } else {
        (0..steps[0].len())
            .map(|k| {
                let parts: Vec<&tch::Tensor> = steps.iter().map(|s| &s[k]).collect();
                tch::Tensor::f_stack(&parts, 0)
                    .map(Tensor::from)
                    .map_err(|e| cf_error("scan", location, format!("step output {k}: {e}")))
            })
            .collect::<Result<_>>()?
    };
    Ok((carries, ys))
}

// ---- evaluation in `ExportedProgram::run` ----

fn subgraph(node: &Node, k: usize) -> Result<&Graph> {
    match node.attrs.get(k) {
        Some(Attr::Graph(g)) => Ok(&g.graph),
        _ => Err(Error::Torch {
            op: node.op.name,
            location: node.location,
            message: format!("attribute {k} is not a sub-graph"),
        }),
    }
}

/// Binds the unbound symbols of `shape` from the sizes of `t` (sizes control flow created).
fn bind_outputs(node: &Node, graph: &Graph, outs: &[tch::Tensor], bindings: &mut Bindings) {
    for (id, t) in node.outputs.iter().zip(outs) {
        for (d, size) in graph.value(*id).shape.iter().zip(t.size()) {
            if let Some(s) = d.expr().as_symbol()
                && !bindings.contains_key(s)
            {
                bindings.insert(Arc::from(s), size);
            }
        }
    }
}

/// The error of a control-flow node at run time.
fn node_error(node: &Node, message: String) -> Error {
    Error::Torch {
        op: node.op.name,
        location: node.location,
        message,
    }
}

/// Owned copies (shallow) of a node's inputs, all present.
fn owned_inputs(node: &Node, inputs: &[Option<&tch::Tensor>]) -> Result<Vec<tch::Tensor>> {
    inputs
        .iter()
        .map(|t| {
            t.map(tch::Tensor::shallow_clone)
                .ok_or_else(|| node_error(node, "missing input".to_owned()))
        })
        .collect()
}

/// Runs a `cond` node: the chosen branch on the operands and captures.
pub(crate) fn eval_cond(
    node: &Node,
    inputs: &[Option<&tch::Tensor>],
    bindings: &mut Bindings,
) -> Result<Vec<tch::Tensor>> {
    let err = |message: String| node_error(node, message);
    let pred = inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| err("no predicate".to_owned()))?;
    let taken = ops::all_true(pred).map_err(err)?;
    let g = subgraph(node, if taken { 0 } else { 1 })?;
    eval_graph(g, owned_inputs(node, &inputs[1..])?, bindings)
}

/// Runs a `scan` node: the body once per slice of the leading dimension.
pub(crate) fn eval_scan(
    graph: &Graph,
    node: &Node,
    inputs: &[Option<&tch::Tensor>],
    bindings: &mut Bindings,
) -> Result<Vec<tch::Tensor>> {
    let err = |message: String| node_error(node, message);
    let body = subgraph(node, 0)?;
    let count = |k: usize| -> Result<usize> {
        match node.attrs.get(k) {
            Some(Attr::Int(v)) => usize::try_from(v.hint()).map_err(|e| err(e.to_string())),
            _ => Err(err(format!("attribute {k} is not a count"))),
        }
    };
    let (n_init, n_xs) = (count(1)?, count(2)?);
    let tensors = owned_inputs(node, inputs)?;
    let (init, rest) = tensors.split_at(n_init);
    let (xs, captures) = rest.split_at(n_xs);
    let len = match xs.first().map(tch::Tensor::size) {
        Some(size) => size
            .first()
            .copied()
            .ok_or_else(|| err("xs[0] is a scalar".to_owned()))?,
        None => 0,
    };
    let mut carries: Vec<tch::Tensor> = init.iter().map(tch::Tensor::shallow_clone).collect();
    let mut steps: Vec<Vec<tch::Tensor>> = Vec::new();
    for i in 0..len {
        let mut args: Vec<tch::Tensor> = carries.iter().map(tch::Tensor::shallow_clone).collect();
        args.extend(xs.iter().map(|x| x.select(0, i)));
        args.extend(captures.iter().map(tch::Tensor::shallow_clone));
        let mut out = eval_graph(body, args, bindings)?;
        let ys = out.split_off(n_init);
        carries = out;
        steps.push(ys);
    }
    let n_ys = node.outputs.len() - n_init;
    let mut outs = carries;
    for k in 0..n_ys {
        let y = if steps.is_empty() {
            let info = graph.value(node.outputs[n_init + k]);
            let shape = info
                .shape
                .iter()
                .map(|d| match d.as_static() {
                    Some(v) => Ok(v),
                    None => d.expr().eval(bindings),
                })
                .collect::<std::result::Result<Vec<i64>, String>>()
                .map_err(err)?;
            tch::Tensor::zeros(&shape, (info.kind, tch::Device::Cpu))
        } else {
            let parts: Vec<&tch::Tensor> = steps.iter().map(|s| &s[k]).collect();
            tch::Tensor::f_stack(&parts, 0).map_err(|e| err(e.to_string()))?
        };
        outs.push(y);
    }
    bind_outputs(node, graph, &outs, bindings);
    Ok(outs)
}

/// Binds the sizes of a `cond` node's outputs (called by the evaluator after the node).
pub(crate) fn bind_cond_outputs(
    node: &Node,
    graph: &Graph,
    outs: &[tch::Tensor],
    bindings: &mut Bindings,
) {
    bind_outputs(node, graph, outs, bindings);
}

/// An owned predicate built from a condition of model code by crates/rewrite: a plain boolean
/// (a test on non-tensors, decided while tracing) or a boolean scalar tensor. `&&`, `||` and
/// `!` between them keep Rust's short-circuit on plain booleans ([`Cond::and`], [`Cond::or`],
/// [`Cond::negate`]) and become `logical_and` / `logical_or` / `logical_not` between tensors.
#[derive(Clone, Debug)]
pub enum Cond {
    /// Known while tracing.
    Bool(bool),
    /// A boolean tensor with one element.
    Tensor(Tensor),
}

impl Cond {
    /// A plain boolean, as a `Result` (the rewriter's uniform form).
    ///
    /// # Errors
    /// None.
    pub fn from_bool(b: bool) -> Result<Cond> {
        Ok(Cond::Bool(b))
    }

    /// The truth of a one-element tensor, what `t.to_bool()?` tested (non-boolean tensors
    /// are compared with 0, as Python's `bool(tensor)`).
    ///
    /// # Errors
    /// Any error of the comparison.
    #[track_caller]
    pub fn tensor(t: &Tensor) -> Result<Cond> {
        if t.kind() == tch::Kind::Bool {
            Ok(Cond::Tensor(t.clone()))
        } else {
            Ok(Cond::Tensor(t.ne_scalar(0.0)?))
        }
    }

    /// `self && other`; `other` is not evaluated when `self` is `false`.
    ///
    /// # Errors
    /// Any error of `other` or of `logical_and`.
    #[track_caller]
    pub fn and(self, other: impl FnOnce() -> Result<Cond>) -> Result<Cond> {
        self.combine(other, false, |a, b| a.logical_and(b))
    }

    /// `self || other`; `other` is not evaluated when `self` is `true`.
    ///
    /// # Errors
    /// Any error of `other` or of `logical_or`.
    #[track_caller]
    pub fn or(self, other: impl FnOnce() -> Result<Cond>) -> Result<Cond> {
        self.combine(other, true, |a, b| a.logical_or(b))
    }

    /// `&&` (`absorbing` false) or `||` (true): a plain boolean equal to `absorbing` decides
    /// alone, the other plain boolean leaves the other side; two tensors combine with `op`.
    fn combine(
        self,
        other: impl FnOnce() -> Result<Cond>,
        absorbing: bool,
        op: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Cond> {
        match self {
            Cond::Bool(b) if b == absorbing => Ok(Cond::Bool(b)),
            Cond::Bool(_) => other(),
            Cond::Tensor(a) => match other()? {
                Cond::Bool(b) if b == absorbing => Ok(Cond::Bool(b)),
                Cond::Bool(_) => Ok(Cond::Tensor(a)),
                Cond::Tensor(b) => Ok(Cond::Tensor(op(&a, &b)?)),
            },
        }
    }

    /// `!self`.
    ///
    /// # Errors
    /// Any error of `logical_not`.
    #[track_caller]
    pub fn negate(self) -> Result<Cond> {
        match self {
            Cond::Bool(b) => Ok(Cond::Bool(!b)),
            Cond::Tensor(t) => Ok(Cond::Tensor(t.logical_not()?)),
        }
    }
}

/// What a rewritten branch returns: a tensor, a tuple of tensors, or a list of them, turned
/// into the list [`cond`] works on and back.
pub trait CondValue: Sized {
    /// The tensors, in order.
    fn into_tensors(self) -> Vec<Tensor>;
    /// Rebuilt from the tensors [`cond`] returned.
    ///
    /// # Errors
    /// [`Error::ControlFlow`] when the count is not the expected one.
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self>;
}

fn count_error(want: usize, got: usize) -> Error {
    Error::ControlFlow {
        op: "cond",
        location: Loc::caller(),
        reason: format!("a rewritten branch returns {want} tensors but cond gave {got}"),
    }
}

impl CondValue for Tensor {
    fn into_tensors(self) -> Vec<Tensor> {
        vec![self]
    }
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self> {
        let n = tensors.len();
        let mut it = tensors.into_iter();
        match (it.next(), it.next()) {
            (Some(t), None) => Ok(t),
            _ => Err(count_error(1, n)),
        }
    }
}

impl CondValue for Vec<Tensor> {
    fn into_tensors(self) -> Vec<Tensor> {
        self
    }
    fn from_tensors(tensors: Vec<Tensor>) -> Result<Self> {
        Ok(tensors)
    }
}

macro_rules! cond_value_tuple {
    ($n:literal; $($t:ident),+) => {
        impl CondValue for ($(cond_value_tuple!(@ty $t),)+) {
            fn into_tensors(self) -> Vec<Tensor> {
                let ($($t,)+) = self;
                vec![$($t),+]
            }
            fn from_tensors(tensors: Vec<Tensor>) -> Result<Self> {
                let n = tensors.len();
                let mut it = tensors.into_iter();
                let out = ($(cond_value_tuple!(@next it, $t, n),)+);
                if it.next().is_some() {
                    return Err(count_error($n, n));
                }
                Ok(out)
            }
        }
    };
    (@ty $t:ident) => { Tensor };
    (@next $it:ident, $t:ident, $n:ident) => {
        $it.next().ok_or_else(|| count_error(0, $n))?
    };
}
cond_value_tuple!(2; a, b);
cond_value_tuple!(3; a, b, c);
cond_value_tuple!(4; a, b, c, d);

/// [`cond`] on a [`Cond`] with branches returning a [`CondValue`]: what crates/rewrite turns
/// `if c { ...; return a } else { ...; return b }` into.
///
/// # Errors
/// As [`cond`].
#[track_caller]
pub fn cond_value<T: CondValue>(
    pred: Cond,
    then_fn: impl FnOnce(&[Tensor]) -> Result<T>,
    else_fn: impl FnOnce(&[Tensor]) -> Result<T>,
    operands: &[Tensor],
) -> Result<T> {
    let out = match &pred {
        Cond::Bool(b) => Pred::Bool(*b),
        Cond::Tensor(t) => Pred::Tensor(t),
    };
    let tensors = cond(
        out,
        |ops| then_fn(ops).map(CondValue::into_tensors),
        |ops| else_fn(ops).map(CondValue::into_tensors),
        operands,
    )?;
    T::from_tensors(tensors)
}

/// `check(!pred, message)`: what crates/rewrite turns `if c { return Err(..) }` (or a
/// `panic!`) into. A plain `true` fails at once, as the original code would.
///
/// # Errors
/// [`Error::CheckFailed`] when the condition holds (eagerly, or for a plain boolean).
#[track_caller]
pub fn check_not(pred: Cond, message: &str) -> Result<()> {
    match pred {
        Cond::Bool(false) => Ok(()),
        Cond::Bool(true) => Err(Error::CheckFailed {
            message: message.to_owned(),
            location: Loc::caller(),
        }),
        Cond::Tensor(t) => check(&t.logical_not()?, message),
    }
}

/// `for i in 0..n { carries = body(i, carries) }` as a [`scan`] over `arange(n)`: what
/// crates/rewrite turns a loop over a dimension (`for i in 0..x.size(0)?.guard_int()?`) into,
/// as the seeds turn `for i in range(x.shape[0])` into `torch.ops.higher_order.scan` over
/// `torch.arange(x.shape[0])`.
///
/// `n` may be symbolic: the loop is recorded once, its length stays dynamic, where the plain
/// loop specialises the graph to the example length. `body` gets the step index as a 0-d
/// `int64` tensor (which [`Tensor::select`] and [`Tensor::select_scatter`] accept) and the
/// carries, which must keep their dtypes and shapes (a row written with `select_scatter`
/// keeps them). With no step (`n == 0`) the result is `init`.
///
/// # Errors
/// [`Error::ControlFlow`] when `init` has no tensor or a carry changes dtype or shape; any
/// error of the body.
#[track_caller]
pub fn for_range<T: CondValue>(
    n: impl Into<SymInt>,
    init: T,
    body: impl Fn(&Tensor, T) -> Result<T>,
) -> Result<T> {
    let location = Loc::caller();
    let init = init.into_tensors();
    let device = init.first().map(Tensor::device).ok_or_else(|| {
        cf_error(
            "for_range",
            location,
            "no carry: the loop must update at least one tensor declared before it".to_owned(),
        )
    })?;
    let idx = Tensor::arange(0, n, 1, tch::Kind::Int64, device)?;
    let (carries, _) = scan(
        |c, x| {
            let out = body(&x[0], T::from_tensors(c.to_vec())?)?;
            Ok((out.into_tensors(), Vec::new()))
        },
        &init,
        &[idx],
    )?;
    T::from_tensors(carries)
}

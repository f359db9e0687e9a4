//! The recording context of an export: one per thread, alive while `export` runs the model.
//!
//! Ops check it on every call (a thread-local borrow, nothing else when no export runs). While
//! it is alive, each op appends a node; tensors the graph has never seen are lifted to inputs:
//! parameters and buffers of the exported module by checkpoint name, anything else as a
//! constant. Guards (the assumptions the graph relies on) are collected here.

use std::{cell::RefCell, collections::HashMap};

use tch::Kind;

use crate::{
    error::{Error, Loc, Result},
    graph::{Attr, Graph, InputKind, Node, ValueId, ValueInfo},
    ops::{Assumption, OpDef, Rel, ShapeCtx},
    state,
    sym::{Atom, SymExpr, SymInt},
    tensor::{Tensor, Traced},
};

/// An assumption the exported graph relies on: `lhs rel rhs` over symbols.
#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    /// Left side.
    pub lhs: SymExpr,
    /// Relation.
    pub rel: Rel,
    /// Right side.
    pub rhs: SymExpr,
    /// Where the model code made the graph depend on it.
    pub location: Loc,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.lhs, self.rel, self.rhs)
    }
}

/// Identity of a tensor's data: pointer, sizes, strides, dtype. Two views of one storage with the
/// same geometry are the same tensor for the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TensorKey {
    ptr: usize,
    sizes: Vec<i64>,
    strides: Vec<i64>,
    kind: Option<Kind>,
}

impl TensorKey {
    pub(crate) fn of(t: &tch::Tensor) -> Self {
        Self {
            ptr: t.data_ptr() as usize,
            sizes: t.size(),
            strides: t.stride(),
            kind: t.f_kind().ok(),
        }
    }
}

/// A graph being recorded inside another one (a branch of `cond`, the body of `scan`): the
/// saved state of the enclosing frame while the inner one records.
pub(crate) struct Frame {
    pub(crate) id: u64,
    pub(crate) graph: Graph,
    lifted: HashMap<TensorKey, ValueId>,
    /// Values of the enclosing frame read by this one: (outer id, inner placeholder).
    pub(crate) captures: Vec<(ValueId, ValueId)>,
}

/// A size created during the recording that no input gives (torch's unbacked symbol).
#[derive(Clone, Debug)]
pub(crate) struct Unbacked {
    /// `u0`, `u1`, ...
    pub(crate) name: String,
    /// Its value for the example inputs.
    pub(crate) hint: i64,
    /// Largest value it can take, when the op that made it knows (`nonzero` of a static
    /// shape: the number of elements).
    pub(crate) max: Option<i64>,
    /// What made it (`nonzero`, `an output size of cond`).
    pub(crate) origin: String,
    /// Where.
    pub(crate) location: Loc,
}

pub(crate) struct Recorder {
    pub(crate) id: u64,
    pub(crate) graph: Graph,
    names: HashMap<String, usize>,
    /// Parameters and buffers of the module, not lifted yet.
    known: HashMap<TensorKey, (String, InputKind)>,
    lifted: HashMap<TensorKey, ValueId>,
    /// Values of the enclosing frame read by the current sub-graph (empty at the top).
    pub(crate) captures: Vec<(ValueId, ValueId)>,
    /// The enclosing frames, innermost last (empty at the top).
    parents: Vec<Frame>,
    /// Sizes no input gives (torch's unbacked `u0`, `u1`, ...): outputs of data-dependent
    /// ops (`nonzero`, `masked_select`, `bincount`) and `cond` outputs whose sizes differ
    /// between the branches.
    pub(crate) unbacked: Vec<Unbacked>,
    /// Range refinements from `check` on sizes: (symbol, min, max).
    pub(crate) refinements: Vec<(String, Option<i64>, Option<i64>)>,
    /// Lifted tensors: (placeholder kind, tensor), in lifting order.
    pub(crate) captured: Vec<(InputKind, tch::Tensor)>,
    pub(crate) guards: Vec<Guard>,
    pub(crate) shape_env: crate::shape_env::ShapeEnv,
    pub(crate) scope: Vec<String>,
    n_constants: usize,
}

/// The recorder of this thread (in the host's state when this copy is a plugin's).
static RECORDER: state::Slot<RefCell<Option<Recorder>>> = state::Slot(|s| &s.recorder);

/// Whether an export is recording on this thread.
pub(crate) fn recording() -> bool {
    RECORDER.with_borrow(Option::is_some)
}

/// Runs `f` on the recorder, if any.
pub(crate) fn with_recorder<R>(f: impl FnOnce(&mut Recorder) -> R) -> Option<R> {
    RECORDER.with_borrow_mut(|r| r.as_mut().map(f))
}

/// Removes the recorder when dropped (normal return, error or panic).
pub(crate) struct RecordingGuard(());

impl Drop for RecordingGuard {
    fn drop(&mut self) {
        RECORDER.with_borrow_mut(|r| *r = None);
    }
}

/// Starts recording on this thread.
pub(crate) fn start(
    stop_if_static: u8,
    known: Vec<(String, InputKind, tch::Tensor)>,
) -> Result<RecordingGuard> {
    RECORDER.with_borrow_mut(|r| {
        if r.is_some() {
            return Err(Error::Model {
                model: String::new(),
                message: "export called while another export records on this thread; nested exports are not supported".to_owned(),
            });
        }
        let mut map = HashMap::new();
        for (name, kind, t) in known {
            map.entry(TensorKey::of(&t)).or_insert((name, kind));
        }
        *r = Some(Recorder {
            id: state::next_id(),
            graph: Graph::default(),
            names: HashMap::new(),
            known: map,
            lifted: HashMap::new(),
            captured: Vec::new(),
            guards: Vec::new(),
            shape_env: crate::shape_env::ShapeEnv { stop_if_static },
            scope: Vec::new(),
            n_constants: 0,
            captures: Vec::new(),
            parents: Vec::new(),
            unbacked: Vec::new(),
            refinements: Vec::new(),
        });
        Ok(RecordingGuard(()))
    })
}

/// Takes the recorder out (the end of an export, or a pause).
pub(crate) fn take() -> Option<Recorder> {
    RECORDER.with_borrow_mut(Option::take)
}

/// Puts back a recorder taken by [`take`] to pause the recording.
pub(crate) fn restore(r: Recorder) {
    RECORDER.with_borrow_mut(|slot| *slot = Some(r));
}

impl Recorder {
    /// A fresh value name derived from `base` (`add`, `add_1`, ...).
    pub(crate) fn fresh_name(&mut self, base: &str) -> String {
        loop {
            let n = self.names.entry(base.to_owned()).or_insert(0);
            let name = if *n == 0 {
                base.to_owned()
            } else {
                format!("{base}_{n}")
            };
            *n += 1;
            if !self.names.contains_key(&name) || name == base {
                if name != base {
                    self.names.insert(name.clone(), 1);
                }
                return name;
            }
        }
    }

    pub(crate) fn add_value(&mut self, name: String, kind: Kind, shape: Vec<SymInt>) -> ValueId {
        let id = ValueId(self.graph.values.len() as u32);
        self.graph.values.push(ValueInfo { name, kind, shape });
        id
    }

    /// Starts recording a sub-graph; values of the enclosing graphs it reads become its
    /// inputs (captures).
    pub(crate) fn push_frame(&mut self) {
        let outer = Frame {
            id: std::mem::replace(&mut self.id, state::next_id()),
            graph: std::mem::take(&mut self.graph),
            lifted: std::mem::take(&mut self.lifted),
            captures: std::mem::take(&mut self.captures),
        };
        self.parents.push(outer);
    }

    /// Ends the current sub-graph and returns it; the enclosing frame records again.
    pub(crate) fn pop_frame(&mut self) -> Option<Frame> {
        let outer = self.parents.pop()?;
        Some(Frame {
            id: std::mem::replace(&mut self.id, outer.id),
            graph: std::mem::replace(&mut self.graph, outer.graph),
            lifted: std::mem::replace(&mut self.lifted, outer.lifted),
            captures: std::mem::replace(&mut self.captures, outer.captures),
        })
    }

    /// Runs `f` with the enclosing frame as the current one.
    fn in_parent<R>(&mut self, f: impl FnOnce(&mut Recorder) -> R) -> Option<R> {
        let inner = self.pop_frame()?;
        let r = f(self);
        self.parents.push(Frame {
            id: std::mem::replace(&mut self.id, inner.id),
            graph: std::mem::replace(&mut self.graph, inner.graph),
            lifted: std::mem::replace(&mut self.lifted, inner.lifted),
            captures: std::mem::replace(&mut self.captures, inner.captures),
        });
        Some(r)
    }

    /// The symbolic shape of a traced value of this frame or of an enclosing one.
    pub(crate) fn find_shape(&self, graph: u64, id: ValueId) -> Option<Vec<SymInt>> {
        if graph == self.id {
            return Some(self.shape_of(id).to_vec());
        }
        self.parents
            .iter()
            .find(|f| f.id == graph)
            .map(|f| f.graph.value(id).shape.clone())
    }

    /// The value of a tensor in this graph, lifting it to an input when the graph has not seen it.
    pub(crate) fn value_of(&mut self, t: &Tensor) -> ValueId {
        if let Some(tr) = t.traced
            && tr.graph == self.id
        {
            return tr.id;
        }
        if !self.parents.is_empty() {
            return self.capture(t);
        }
        let key = TensorKey::of(&t.t);
        if let Some(id) = self.lifted.get(&key) {
            return *id;
        }
        let (name, kind) = match self.known.get(&key) {
            Some((name, InputKind::Buffer(_))) => (
                format!("b_{}", name.replace('.', "_")),
                InputKind::Buffer(name.clone()),
            ),
            Some((name, _)) => (
                format!("p_{}", name.replace('.', "_")),
                InputKind::Parameter(name.clone()),
            ),
            None => {
                let target = format!("lifted_tensor_{}", self.n_constants);
                self.n_constants += 1;
                (format!("c_{target}"), InputKind::Constant(target))
            }
        };
        let name = self.fresh_name(&name);
        let shape = t.t.size().into_iter().map(SymInt::new).collect();
        let id = self.add_value(name, t.t.kind(), shape);
        self.graph.inputs.push((id, kind.clone()));
        self.captured.push((kind, t.t.shallow_clone()));
        self.lifted.insert(key, id);
        id
    }

    /// A value of an enclosing frame (or a weight) read by the current sub-graph: resolved in
    /// the enclosing frame, then passed in as an input of the sub-graph.
    fn capture(&mut self, t: &Tensor) -> ValueId {
        let Some((outer, name, kind, shape)) = self.in_parent(|r| {
            let id = r.value_of(t);
            let v = r.graph.value(id);
            (id, v.name.clone(), v.kind, v.shape.clone())
        }) else {
            return ValueId(0);
        };
        if let Some((_, inner)) = self.captures.iter().find(|(o, _)| *o == outer) {
            return *inner;
        }
        let name = self.fresh_name(&name);
        let id = self.add_value(name, kind, shape);
        self.graph.inputs.push((id, InputKind::User));
        self.captures.push((outer, id));
        id
    }

    /// Appends a node whose outputs are already computed (control flow).
    pub(crate) fn push_node(
        &mut self,
        op: &'static OpDef,
        inputs: Vec<Option<ValueId>>,
        attrs: Vec<Attr>,
        outputs: Vec<(tch::Tensor, Vec<SymInt>)>,
        location: Loc,
    ) -> Vec<Tensor> {
        let module = self.scope.join(".");
        let base = op.short_name();
        let mut out_ids = Vec::with_capacity(outputs.len());
        let mut traced = Vec::with_capacity(outputs.len());
        for (t, shape) in outputs {
            let name = self.fresh_name(base);
            let id = self.add_value(name, t.kind(), shape);
            out_ids.push(id);
            traced.push(Tensor {
                t,
                traced: Some(Traced { graph: self.id, id }),
            });
        }
        self.graph.nodes.push(Node {
            op,
            inputs,
            attrs,
            outputs: out_ids,
            location,
            module,
            patch: crate::patches::running_patch(),
        });
        traced
    }

    /// Records a guard, after the patchable [`ShapeEnv::log_guard`](crate::shape_env::ShapeEnv)
    /// accepted it (crates/patch-torch's `stop_if_static` refuses some).
    pub(crate) fn add_guard(&mut self, a: Assumption, location: Loc) -> Result<()> {
        if let Some(u) = self
            .unbacked_in(&a.lhs)
            .or_else(|| self.unbacked_in(&a.rhs))
        {
            if self.implied_by_range(&a) {
                return Ok(());
            }
            let (min, max) = self.unbacked_range(&u.name);
            return Err(Error::DataDependent {
                what: format!(
                    "size {} (made by {} at {}, range [{min}, {}]): the code needs `{} {} {}` \
                     ({}); bound it with core::check_size, or replace the code with a patch",
                    u.name,
                    u.origin,
                    u.location,
                    max.map_or("inf".to_owned(), |m| m.to_string()),
                    a.lhs,
                    a.rel,
                    a.rhs,
                    a.reason
                ),
                location,
            });
        }
        let guard = Guard {
            lhs: a.lhs,
            rel: a.rel,
            rhs: a.rhs,
            location,
            reason: a.reason,
        };
        if self.guards.contains(&guard) {
            return Ok(());
        }
        self.shape_env.log_guard(&guard)?;
        self.guards.push(guard);
        Ok(())
    }

    /// A fresh unbacked size `u<n>` of value `hint` for the example inputs.
    pub(crate) fn fresh_unbacked(
        &mut self,
        hint: i64,
        max: Option<i64>,
        origin: &str,
        location: Loc,
    ) -> SymInt {
        let name = format!("u{}", self.unbacked.len());
        self.unbacked.push(Unbacked {
            name: name.clone(),
            hint,
            max,
            origin: origin.to_owned(),
            location,
        });
        SymInt::symbolic(SymExpr::symbol(&name), hint)
    }

    /// The first unbacked size `expr` reads.
    fn unbacked_in(&self, expr: &SymExpr) -> Option<Unbacked> {
        let symbols = expr.symbols();
        self.unbacked
            .iter()
            .find(|u| symbols.iter().any(|s| **s == *u.name))
            .cloned()
    }

    /// The range of an unbacked size: `[0, max]` refined by `check_size`.
    fn unbacked_range(&self, name: &str) -> (i64, Option<i64>) {
        let mut min = 0;
        let mut max = self
            .unbacked
            .iter()
            .find(|u| u.name == name)
            .and_then(|u| u.max);
        for (s, lo, hi) in &self.refinements {
            if s == name {
                if let Some(lo) = lo {
                    min = min.max(*lo);
                }
                if let Some(hi) = hi {
                    max = Some(max.map_or(*hi, |m| m.min(*hi)));
                }
            }
        }
        (min, max)
    }

    /// Whether a relation between one unbacked size and a constant holds for every value of
    /// the size's range (`u0 >= 0`, or `u0 != 0` after `check_size(u0 >= 1)`): such a
    /// decision needs no value, as torch's size-oblivious reasoning decides it.
    /// Whether the ranges of the symbols settle `a`: `lhs - rhs` is evaluated over intervals
    /// when it is linear (each term a constant or a constant times one symbol), the unbacked
    /// symbols taking their ranges and the others `[0, inf)` (sizes are never negative).
    fn implied_by_range(&self, a: &Assumption) -> bool {
        let d = &a.lhs - &a.rhs;
        // lo, hi of `d`; None is -inf / +inf.
        let (mut lo, mut hi) = (Some(0i64), Some(0i64));
        for (mono, c) in d.terms() {
            let (tlo, thi) = match mono {
                [] => (Some(c), Some(c)),
                [Atom::Sym(name)] => {
                    let (min, max) = if self
                        .unbacked
                        .iter()
                        .any(|u| u.name.as_str() == name.as_ref())
                    {
                        self.unbacked_range(name)
                    } else {
                        (0, None)
                    };
                    let scale = |v: i64| v.checked_mul(c);
                    if c > 0 {
                        (scale(min), max.and_then(scale))
                    } else {
                        (max.and_then(scale), scale(min))
                    }
                }
                _ => return false,
            };
            lo = lo.zip(tlo).and_then(|(x, y)| x.checked_add(y));
            hi = hi.zip(thi).and_then(|(x, y)| x.checked_add(y));
        }
        match a.rel {
            Rel::Ge => lo.is_some_and(|l| l >= 0),
            Rel::Gt => lo.is_some_and(|l| l > 0),
            Rel::Le => hi.is_some_and(|h| h <= 0),
            Rel::Lt => hi.is_some_and(|h| h < 0),
            Rel::Ne => lo.is_some_and(|l| l > 0) || hi.is_some_and(|h| h < 0),
            Rel::Eq => lo == Some(0) && hi == Some(0),
            Rel::Broadcast => false,
        }
    }

    pub(crate) fn shape_of(&self, id: ValueId) -> &[SymInt] {
        &self.graph.values[id.index()].shape
    }
}

/// Records one op call: resolves inputs, applies the shape rule, checks it against the eager
/// outputs and appends the node. Returns the traced outputs.
pub(crate) fn record(
    op: &'static OpDef,
    inputs: &[Option<&Tensor>],
    attrs: Vec<Attr>,
    outputs: Vec<tch::Tensor>,
    location: Loc,
) -> Result<Vec<Tensor>> {
    let recorded = with_recorder(|r| {
        let ids: Vec<Option<ValueId>> = inputs.iter().map(|t| t.map(|t| r.value_of(t))).collect();
        let shapes: Vec<Option<Vec<SymInt>>> = ids
            .iter()
            .map(|id| id.map(|id| r.shape_of(id).to_vec()))
            .collect();
        let shape_refs: Vec<Option<&[SymInt]>> = shapes.iter().map(|s| s.as_deref()).collect();
        let mut ctx = ShapeCtx::default();
        let mut rule =
            (op.shape)(&shape_refs, &attrs, &mut ctx).map_err(|message| Error::Torch {
                op: op.name,
                location,
                message,
            })?;
        let eager: Vec<Vec<i64>> = outputs.iter().map(tch::Tensor::size).collect();
        // Sizes the rule could not know (data-dependent): fresh unbacked symbols whose
        // example values are what the kernel computed.
        if !ctx.data_dependent.is_empty() {
            for (shape, sizes) in rule.iter_mut().zip(&eager) {
                for (d, size) in shape.iter_mut().zip(sizes) {
                    if let Some(k) = ShapeCtx::placeholder_index(d) {
                        let max = ctx.data_dependent.get(k).copied().flatten();
                        *d = r.fresh_unbacked(*size, max, op.short_name(), location);
                    }
                }
            }
        }
        let rule_hints: Vec<Vec<i64>> = rule
            .iter()
            .map(|s| s.iter().map(SymInt::hint).collect())
            .collect();
        if rule_hints != eager {
            return Err(Error::ShapeRule {
                op: op.name,
                location,
                rule: format!("{rule_hints:?}"),
                eager: format!("{eager:?}"),
            });
        }
        for a in ctx.assumptions {
            r.add_guard(a, location)?;
        }
        let outs: Vec<(tch::Tensor, Vec<SymInt>)> = outputs.into_iter().zip(rule).collect();
        let traced = r.push_node(op, ids, attrs, outs, location);
        Ok(traced)
    });
    match recorded {
        Some(result) => result,
        None => Ok(Vec::new()),
    }
}

/// The symbolic shape of a tensor: from the graph while recording, else static.
pub(crate) fn shape_of(t: &Tensor) -> Vec<SymInt> {
    if let Some(tr) = t.traced {
        let found = with_recorder(|r| r.find_shape(tr.graph, tr.id)).flatten();
        if let Some(shape) = found {
            return shape;
        }
    }
    t.t.size().into_iter().map(SymInt::new).collect()
}

/// Pushes a module name on the module path of the recording (`model` > `layers.0` > ...).
/// The name is popped when the returned guard drops. Outside an export it does nothing.
pub fn scope(name: &str) -> ScopeGuard {
    let pushed = with_recorder(|r| r.scope.push(name.to_owned())).is_some();
    ScopeGuard { pushed }
}

/// Pops the module name pushed by [`scope`] when dropped.
#[must_use = "the scope ends when this guard drops"]
pub struct ScopeGuard {
    pushed: bool,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if self.pushed {
            with_recorder(|r| r.scope.pop());
        }
    }
}

impl SymInt {
    /// The value as a plain integer. For a symbolic size this *specialises* the graph to the
    /// example value: a guard `expr == value` is recorded; with crates/patch-torch's
    /// `stop_if_static >= 1` it is an error naming the symbol, the value and the caller's
    /// location.
    ///
    /// # Errors
    /// [`Error::Specialized`] as said above.
    #[track_caller]
    pub fn guard_int(&self) -> Result<i64> {
        if let Some(v) = self.as_static() {
            return Ok(v);
        }
        let location = Loc::caller();
        let assumption = Assumption {
            lhs: self.expr().clone(),
            rel: Rel::Eq,
            rhs: SymExpr::constant(self.hint()),
            reason: "a dynamic size was converted into a plain integer (SymInt::guard_int)"
                .to_owned(),
        };
        with_recorder(|r| r.add_guard(assumption, location)).transpose()?;
        Ok(self.hint())
    }

    /// Compares two sizes. When either is symbolic the graph relies on the outcome: a guard
    /// (the relation or its negation, whichever holds for the example inputs) is recorded and
    /// checked by `ExportedProgram::run`.
    ///
    /// # Errors
    /// [`Error::StopIfStatic`] with crates/patch-torch's `stop_if_static >= 2`.
    #[track_caller]
    pub fn compare(&self, rel: Rel, other: impl Into<SymInt>) -> Result<bool> {
        let other = other.into();
        let holds = rel.holds(self.hint(), other.hint());
        if self.is_static() && other.is_static() {
            return Ok(holds);
        }
        let location = Loc::caller();
        let assumption = Assumption {
            lhs: self.expr().clone(),
            rel: if holds { rel } else { rel.negate() },
            rhs: other.expr().clone(),
            reason: "model code compared dynamic sizes (SymInt::compare)".to_owned(),
        };
        with_recorder(|r| {
            if r.guards.iter().any(|g| {
                g.lhs == assumption.lhs && g.rel == assumption.rel && g.rhs == assumption.rhs
            }) {
                return Ok(());
            }
            r.add_guard(assumption, location)
        })
        .transpose()?;
        Ok(holds)
    }
}

//! `export`: runs a module once on example inputs and records an [`ExportedProgram`], the
//! counterpart of `torch.export.export`.
//!
//! Dynamic dimensions are declared with [`Dim`] in a [`DynSpec`] tree shaped like the inputs.
//! A dynamic dimension becomes a symbol: the `Dim`'s name, or `s0`, `s1`, ... for
//! `Dim::DYNAMIC` / `Dim::AUTO`. Unlike torch.export, an example size of 0 or 1 does not
//! specialise the dimension: an empty cache or a batch of one stays dynamic, and only the
//! guards the model code itself creates constrain it.

use std::{
    collections::{BTreeMap, HashMap},
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use crate::{
    context::{self, Guard},
    error::{Error, Result},
    graph::InputKind,
    program::{ExportedProgram, SymbolInfo, UserInput},
    pytree::{TreeSpec, Value},
    sym::{SymExpr, SymInt},
    tensor::{Tensor, Traced},
};

/// How one dimension of an input may vary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A named dynamic dimension with an optional range; the same name in several places is
    /// the same symbol.
    Named {
        /// Symbol name (`batch`, `seq_length`).
        name: String,
        /// Smallest allowed value (0 when absent).
        min: Option<i64>,
        /// Largest allowed value (unbounded when absent).
        max: Option<i64>,
    },
    /// Dynamic if the model allows it; a specialisation by the model is accepted silently.
    Auto,
    /// Dynamic: a specialisation by the model to a constant fails the export (torch's
    /// "Constraints violated"; see `shape_env::produce_guards_and_solve_constraints`).
    Dynamic,
    /// Static: the example size.
    Static,
}

impl Dim {
    /// `torch.export.Dim.AUTO`.
    pub const AUTO: Dim = Dim::Auto;
    /// `torch.export.Dim.DYNAMIC`.
    pub const DYNAMIC: Dim = Dim::Dynamic;
    /// `torch.export.Dim.STATIC`.
    pub const STATIC: Dim = Dim::Static;

    /// A named dimension without bounds.
    pub fn new(name: &str) -> Dim {
        Dim::Named {
            name: name.to_owned(),
            min: None,
            max: None,
        }
    }

    /// A named dimension within `[min, max]`.
    pub fn with_range(name: &str, min: Option<i64>, max: Option<i64>) -> Dim {
        Dim::Named {
            name: name.to_owned(),
            min,
            max,
        }
    }
}

/// Dynamic shapes of one input, shaped like it.
#[derive(Clone, Debug, PartialEq)]
pub enum DynSpec {
    /// A tensor: dynamic dims by index; dims not listed are static.
    Tensor(BTreeMap<usize, Dim>),
    /// A list or tuple, item by item.
    Seq(Vec<DynSpec>),
    /// A dict, entry by entry.
    Dict(Vec<(String, DynSpec)>),
    /// Everything static (also for non-tensor inputs).
    Static,
}

impl DynSpec {
    /// A tensor spec from `(dim, Dim)` pairs.
    pub fn dims(dims: impl IntoIterator<Item = (usize, Dim)>) -> DynSpec {
        DynSpec::Tensor(dims.into_iter().collect())
    }
}

/// The dynamic shapes of a call: one spec per positional argument and per keyword argument,
/// as torch accepts a tuple for `args` and a dict for `kwargs`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DynamicShapes {
    /// Specs of the positional arguments.
    pub args: Vec<DynSpec>,
    /// Specs of the keyword arguments, by name.
    pub kwargs: Vec<(String, DynSpec)>,
}

/// Options of [`export`].
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// The `stop_if_static` level handed to [`ShapeEnv::log_guard`](crate::ShapeEnv): 0, the
    /// model's guards are recorded; 1, making a dynamic dimension static is an error; 2, also
    /// tying dynamic dimensions together. Levels 1 and 2 are torch patches: the export must run
    /// inside `torch_export_patches(PatchOptions { patch_torch: true, stop_if_static, .. })`
    /// with crates/patch-torch linked (else [`Error::Patch`] says so).
    pub stop_if_static: u8,
}

/// The inputs of a call bound to the parameter names of `forward`.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    entries: Vec<(String, Value)>,
}

impl Inputs {
    /// The value of a parameter (`Value::None` when not given).
    pub fn get(&self, name: &str) -> &Value {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&Value::None, |(_, v)| v)
    }

    /// The tensor of a parameter.
    ///
    /// # Errors
    /// [`Error::Input`] when the parameter is absent or not a tensor.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.get(name).as_tensor().ok_or_else(|| Error::Input {
            path: name.to_owned(),
            reason: "expected a tensor".to_owned(),
        })
    }

    /// The tensor of an optional parameter.
    ///
    /// # Errors
    /// [`Error::Input`] when it is given but not a tensor.
    pub fn opt_tensor(&self, name: &str) -> Result<Option<&Tensor>> {
        match self.get(name) {
            Value::None => Ok(None),
            Value::Tensor(t) => Ok(Some(t)),
            _ => Err(Error::Input {
                path: name.to_owned(),
                reason: "expected a tensor or None".to_owned(),
            }),
        }
    }

    /// Binds a call's positional and keyword arguments to `module`'s forward signature, for an
    /// eager call of `module.forward`.
    ///
    /// # Errors
    /// [`Error::Input`] for too many arguments, an unknown or a duplicated keyword.
    pub fn bind_for(
        module: &dyn Module,
        args: &[Value],
        kwargs: &[(String, Value)],
    ) -> Result<Inputs> {
        Ok(Inputs {
            entries: bind(&module.forward_signature(), args, kwargs, "args")?,
        })
    }

    /// `(name, value)` pairs in signature order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }
}

/// A model that can be exported: the counterpart of a `torch.nn.Module`.
pub trait Module {
    /// Class name, for messages and the printed program (`LlamaForCausalLM`).
    fn class_name(&self) -> String;
    /// Parameter names of `forward`, in order.
    fn forward_signature(&self) -> Vec<String>;
    /// Weights with their checkpoint names.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;
    /// Buffers with their names.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// The computation.
    ///
    /// # Errors
    /// Any error of the ops it runs.
    fn forward(&self, inputs: &Inputs) -> Result<Value>;
}

/// A [`Module`] made of a closure: a class name, the names of the inputs, optional named
/// weights, and the forward function. Handy for exporting a function (what torch does with a
/// small `nn.Module` wrapping it) and for op-level tests.
///
/// ```ignore
/// use onnx_diagnostic_core::{FnModule, Inputs, Value};
/// let m = FnModule::new("Relu", &["x"], |i: &Inputs| Ok(Value::from(i.tensor("x")?.relu()?)));
/// ```
pub struct FnModule<F> {
    name: String,
    signature: Vec<String>,
    parameters: Vec<(String, Tensor)>,
    forward: F,
}

impl<F: Fn(&Inputs) -> Result<Value>> FnModule<F> {
    /// A module with no weights.
    pub fn new(name: &str, signature: &[&str], forward: F) -> Self {
        Self {
            name: name.to_owned(),
            signature: signature.iter().map(|s| (*s).to_owned()).collect(),
            parameters: Vec::new(),
            forward,
        }
    }

    /// The same module with named weights (they become PARAMETER inputs of the graph).
    pub fn with_parameters(mut self, parameters: Vec<(String, Tensor)>) -> Self {
        self.parameters = parameters;
        self
    }
}

impl<F: Fn(&Inputs) -> Result<Value>> Module for FnModule<F> {
    fn class_name(&self) -> String {
        self.name.clone()
    }
    fn forward_signature(&self) -> Vec<String> {
        self.signature.clone()
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.parameters.clone()
    }
    fn forward(&self, inputs: &Inputs) -> Result<Value> {
        (self.forward)(inputs)
    }
}

/// Binds positional and keyword arguments to the signature, as Python does.
pub(crate) fn bind<T: Clone>(
    signature: &[String],
    args: &[T],
    kwargs: &[(String, T)],
    what: &str,
) -> Result<Vec<(String, T)>> {
    if args.len() > signature.len() {
        return Err(Error::Input {
            path: format!("{what}[{}]", signature.len()),
            reason: format!(
                "forward takes {} arguments ({}), {} were given",
                signature.len(),
                signature.join(", "),
                args.len()
            ),
        });
    }
    let mut bound: Vec<(String, T)> = signature
        .iter()
        .zip(args)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    for (name, v) in kwargs {
        if !signature.contains(name) {
            return Err(Error::Input {
                path: format!("{what}[{name:?}]"),
                reason: format!(
                    "forward has no parameter {name:?}; its parameters are {}",
                    signature.join(", ")
                ),
            });
        }
        if bound.iter().any(|(n, _)| n == name) {
            return Err(Error::Input {
                path: format!("{what}[{name:?}]"),
                reason: "given both positionally and by name".to_owned(),
            });
        }
        bound.push((name.clone(), v.clone()));
    }
    bound.sort_by_key(|(n, _)| signature.iter().position(|s| s == n));
    Ok(bound)
}

struct SymbolTable {
    infos: Vec<SymbolInfo>,
    auto_count: usize,
    /// The dimensions declared dynamic: `true` for a named one, `false` for `Dim::DYNAMIC`.
    declared: HashMap<String, bool>,
}

impl SymbolTable {
    fn symbol_for(
        &mut self,
        dim: &Dim,
        hint: i64,
        path: &str,
        axis: usize,
    ) -> Result<Option<SymExpr>> {
        let source = format!("{path}.shape[{axis}]");
        match dim {
            Dim::Static => Ok(None),
            Dim::Auto | Dim::Dynamic => {
                let name = loop {
                    let candidate = format!("s{}", self.auto_count);
                    self.auto_count += 1;
                    if !self.infos.iter().any(|s| s.name == candidate) {
                        break candidate;
                    }
                };
                self.infos.push(SymbolInfo {
                    name: name.clone(),
                    min: 0,
                    max: None,
                    hint,
                    source,
                    auto: matches!(dim, Dim::Auto),
                });
                if matches!(dim, Dim::Dynamic) {
                    self.declared.insert(name.clone(), false);
                }
                Ok(Some(SymExpr::symbol(&name)))
            }
            Dim::Named { name, min, max } => {
                let lo = min.unwrap_or(0);
                if hint < lo || max.is_some_and(|m| hint > m) {
                    return Err(Error::Input {
                        path: source,
                        reason: format!(
                            "size {hint} is outside the range of Dim {name:?} [{lo}, {}]",
                            max.map_or("inf".to_owned(), |m| m.to_string())
                        ),
                    });
                }
                if let Some(existing) = self.infos.iter().find(|s| &s.name == name) {
                    if existing.hint != hint {
                        return Err(Error::Input {
                            path: source,
                            reason: format!(
                                "Dim {name:?} is {hint} here but {} at {}: one Dim must have one value",
                                existing.hint, existing.source
                            ),
                        });
                    }
                } else {
                    self.declared.insert(name.clone(), true);
                    self.infos.push(SymbolInfo {
                        name: name.clone(),
                        min: lo,
                        max: *max,
                        hint,
                        source,
                        auto: false,
                    });
                }
                Ok(Some(SymExpr::symbol(name)))
            }
        }
    }
}

/// Walks an input and its spec together, creating the symbolic placeholders.
fn trace_input(
    value: &Value,
    spec: &DynSpec,
    path: &str,
    name: &str,
    symbols: &mut SymbolTable,
    placeholders: &mut Vec<(String, String, Tensor, Vec<SymInt>)>,
) -> Result<()> {
    let mismatch = |what: &str| Error::Input {
        path: path.to_owned(),
        reason: format!(
            "the dynamic shapes give {what} here but the input is {}",
            value.kind_name()
        ),
    };
    match (value, spec) {
        (Value::Tensor(t), DynSpec::Tensor(_) | DynSpec::Static) => {
            let sizes = t.concrete_shape();
            let dims = match spec {
                DynSpec::Tensor(d) => d.clone(),
                _ => BTreeMap::new(),
            };
            if let Some(bad) = dims.keys().find(|d| **d >= sizes.len()) {
                return Err(Error::Input {
                    path: path.to_owned(),
                    reason: format!(
                        "dynamic dimension {bad} given for a tensor of rank {}",
                        sizes.len()
                    ),
                });
            }
            let mut shape = Vec::with_capacity(sizes.len());
            for (axis, size) in sizes.iter().enumerate() {
                let sym = match dims.get(&axis) {
                    Some(dim) => symbols.symbol_for(dim, *size, path, axis)?,
                    None => None,
                };
                shape.push(match sym {
                    Some(expr) => SymInt::symbolic(expr, *size),
                    None => SymInt::new(*size),
                });
            }
            placeholders.push((name.to_owned(), path.to_owned(), t.clone(), shape));
            Ok(())
        }
        (Value::Tensor(_), _) => Err(mismatch("a container")),
        (Value::List(items) | Value::Tuple(items), DynSpec::Seq(specs)) => {
            if items.len() != specs.len() {
                return Err(Error::Input {
                    path: path.to_owned(),
                    reason: format!(
                        "the dynamic shapes have {} entries, the input {}",
                        specs.len(),
                        items.len()
                    ),
                });
            }
            for (i, (v, s)) in items.iter().zip(specs).enumerate() {
                trace_input(
                    v,
                    s,
                    &format!("{path}[{i}]"),
                    &format!("{name}_{i}"),
                    symbols,
                    placeholders,
                )?;
            }
            Ok(())
        }
        (Value::List(items) | Value::Tuple(items), DynSpec::Static) => {
            for (i, v) in items.iter().enumerate() {
                trace_input(
                    v,
                    &DynSpec::Static,
                    &format!("{path}[{i}]"),
                    &format!("{name}_{i}"),
                    symbols,
                    placeholders,
                )?;
            }
            Ok(())
        }
        (Value::Dict(items), DynSpec::Dict(specs)) => {
            if let Some((k, _)) = specs
                .iter()
                .find(|(k, _)| !items.iter().any(|(n, _)| n == k))
            {
                return Err(Error::Input {
                    path: format!("{path}[{k:?}]"),
                    reason: "the dynamic shapes name a key the input does not have".to_owned(),
                });
            }
            for (k, v) in items {
                let s = specs
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or(&DynSpec::Static, |(_, s)| s);
                trace_input(
                    v,
                    s,
                    &format!("{path}[{k:?}]"),
                    &crate::pytree::child_leaf_name(name, k),
                    symbols,
                    placeholders,
                )?;
            }
            Ok(())
        }
        (Value::Dict(items), DynSpec::Static) => {
            for (k, v) in items {
                trace_input(
                    v,
                    &DynSpec::Static,
                    &format!("{path}[{k:?}]"),
                    &crate::pytree::child_leaf_name(name, k),
                    symbols,
                    placeholders,
                )?;
            }
            Ok(())
        }
        (Value::Custom(obj), DynSpec::Seq(_) | DynSpec::Dict(_) | DynSpec::Static) => {
            // A custom class follows its flattened form: a list of specs, one per child in
            // flattening order (what `guess_dynamic_shapes` gives), or a dict by child key.
            let children = crate::pytree::custom_children(obj.as_ref())?;
            let specs: Vec<&DynSpec> = match spec {
                DynSpec::Seq(specs) if specs.len() == children.len() => specs.iter().collect(),
                DynSpec::Seq(specs) => {
                    return Err(Error::Input {
                        path: path.to_owned(),
                        reason: format!(
                            "the dynamic shapes have {} entries, the flattened {} {} ({})",
                            specs.len(),
                            obj.class_name(),
                            children.len(),
                            children
                                .iter()
                                .map(|(k, _)| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                DynSpec::Dict(specs) => {
                    if let Some((k, _)) = specs
                        .iter()
                        .find(|(k, _)| !children.iter().any(|(n, _)| n == k))
                    {
                        return Err(Error::Input {
                            path: format!("{path}[{k:?}]"),
                            reason: format!(
                                "the flattened {} has no child {k:?}",
                                obj.class_name()
                            ),
                        });
                    }
                    children
                        .iter()
                        .map(|(k, _)| {
                            specs
                                .iter()
                                .find(|(n, _)| n == k)
                                .map_or(&DynSpec::Static, |(_, s)| s)
                        })
                        .collect()
                }
                _ => children.iter().map(|_| &DynSpec::Static).collect(),
            };
            for ((k, v), s) in children.iter().zip(specs) {
                trace_input(
                    v,
                    s,
                    &format!("{path}.{k}"),
                    &crate::pytree::child_leaf_name(name, k),
                    symbols,
                    placeholders,
                )?;
            }
            Ok(())
        }
        (Value::List(_) | Value::Tuple(_) | Value::Dict(_) | Value::Custom(_), _) => {
            Err(mismatch("another structure"))
        }
        (_, DynSpec::Static) => Ok(()),
        (_, _) => Err(mismatch("dynamic dimensions")),
    }
}

/// Exports `module` called with `args` and `kwargs` (see the module doc).
///
/// # Errors
/// [`Error::Input`] for inputs or dynamic shapes that do not fit the signature or each other;
/// any error of the model's ops ([`Error::Torch`], [`Error::Specialized`],
/// [`Error::DataDependent`], ...); [`Error::Model`] when the model code panics.
pub fn export(
    module: &dyn Module,
    args: &[Value],
    kwargs: &[(String, Value)],
    dynamic_shapes: Option<&DynamicShapes>,
    options: &ExportOptions,
) -> Result<ExportedProgram> {
    let class_name = module.class_name();
    let signature = module.forward_signature();
    let bound = bind(&signature, args, kwargs, "args")?;
    let spec_bound: HashMap<String, DynSpec> = match dynamic_shapes {
        Some(ds) => {
            if ds.args.len() > args.len() {
                return Err(Error::Input {
                    path: "dynamic_shapes".to_owned(),
                    reason: format!(
                        "{} positional specs for {} positional inputs",
                        ds.args.len(),
                        args.len()
                    ),
                });
            }
            bind(&signature, &ds.args, &ds.kwargs, "dynamic_shapes")?
                .into_iter()
                .collect()
        }
        None => HashMap::new(),
    };
    if let Some(name) = spec_bound
        .keys()
        .find(|k| !bound.iter().any(|(n, _)| n == *k))
    {
        return Err(Error::Input {
            path: format!("dynamic_shapes[{name:?}]"),
            reason: "a spec for an input that is not given".to_owned(),
        });
    }

    let mut symbols = SymbolTable {
        infos: Vec::new(),
        auto_count: 0,
        declared: HashMap::new(),
    };
    let mut placeholders = Vec::new();
    for (name, value) in &bound {
        let spec = spec_bound.get(name).unwrap_or(&DynSpec::Static);
        let leaf = crate::pytree::leaf_name_part(name);
        trace_input(value, spec, name, &leaf, &mut symbols, &mut placeholders)?;
    }

    let mut known: Vec<(String, InputKind, tch::Tensor)> = Vec::new();
    for (n, t) in module.named_parameters() {
        known.push((n.clone(), InputKind::Parameter(n), t.t.shallow_clone()));
    }
    for (n, t) in module.named_buffers() {
        known.push((n.clone(), InputKind::Buffer(n), t.t.shallow_clone()));
    }
    let stop_if_static = options.stop_if_static.max(crate::patches::stop_if_static());
    if stop_if_static > 0 && !crate::patches::is_patched(crate::shape_env::LOG_GUARD_TARGET) {
        return Err(Error::Patch {
            patch: "patched_ShapeEnv.log_guard".to_owned(),
            reason: format!(
                "stop_if_static={} is a torch patch: export inside \
                 torch_export_patches(PatchOptions {{ patch_torch: true, stop_if_static: {}, .. }}) \
                 and link crates/patch-torch (call onnx_diagnostic_patch_torch::patches() once)",
                stop_if_static, stop_if_static
            ),
        });
    }
    let _recording = context::start(stop_if_static, known)?;

    // User inputs.
    let mut user_inputs = Vec::new();
    let mut traced_leaves = Vec::new();
    context::with_recorder(|r| {
        for (name, path, t, shape) in &placeholders {
            let vname = r.fresh_name(name);
            let id = r.add_value(vname, t.kind(), shape.clone());
            r.graph.inputs.push((id, InputKind::User));
            traced_leaves.push(Tensor {
                t: t.t.shallow_clone(),
                traced: Some(Traced { graph: r.id, id }),
            });
            user_inputs.push(UserInput {
                value: id,
                path: path.clone(),
            });
        }
    });
    // Replaces the tensors of the inputs by their traced placeholders, in flattening order.
    let mut it = traced_leaves.into_iter();
    let entries: Vec<(String, Value)> = bound
        .iter()
        .map(|(n, v)| {
            Ok((
                n.clone(),
                v.map_tensors(&mut |t| Ok(it.next().unwrap_or_else(|| t.clone())))?,
            ))
        })
        .collect::<Result<_>>()?;
    let inputs = Inputs { entries };

    let output =
        catch_unwind(AssertUnwindSafe(|| module.forward(&inputs))).map_err(|panic| {
            Error::Model {
                model: class_name.clone(),
                message: format!("forward panicked: {}", panic_message(&panic)),
            }
        })??;

    let (out_leaves, out_spec) = output.flatten("output")?;
    let mut outputs = Vec::new();
    context::with_recorder(|r| {
        for (_, t) in &out_leaves {
            outputs.push(r.value_of(t));
        }
    });
    let mut recorder = context::take().ok_or_else(|| Error::Model {
        model: class_name.clone(),
        message: "the recording ended during forward".to_owned(),
    })?;
    recorder.graph.outputs = outputs;
    // Sizes created by control flow, and ranges refined by `check_size`.
    for u in &recorder.unbacked {
        symbols.infos.push(SymbolInfo {
            name: u.name.clone(),
            min: 0,
            max: u.max,
            hint: u.hint,
            source: format!("{} at {}", u.origin, u.location),
            auto: false,
        });
    }
    for (name, min, max) in &recorder.refinements {
        if let Some(info) = symbols.infos.iter_mut().find(|s| &s.name == name) {
            if let Some(m) = min {
                info.min = info.min.max(*m);
            }
            if let Some(m) = max {
                info.max = Some(info.max.map_or(*m, |x| x.min(*m)));
            }
        }
    }
    let replaced = unify_symbols(
        &mut recorder.graph,
        &mut symbols.infos,
        &mut recorder.guards,
    );
    let violations = constraint_violations(&replaced, &symbols.declared);
    crate::shape_env::produce_guards_and_solve_constraints(&violations)?;
    // torch's placeholder order: parameters, buffers, constants, user inputs.
    let rank = |k: &InputKind| match k {
        InputKind::Parameter(_) => 0,
        InputKind::Buffer(_) => 1,
        InputKind::Constant(_) => 2,
        InputKind::User => 3,
    };
    recorder.graph.inputs.sort_by_key(|(_, k)| rank(k));
    let mut captured: Vec<(InputKind, tch::Tensor)> = recorder.captured;
    captured.sort_by_key(|(k, _)| rank(k));

    Ok(ExportedProgram::new(
        class_name,
        signature,
        recorder.graph,
        user_inputs,
        bound
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.flatten(n)?.1)))
            .collect::<Result<Vec<(String, TreeSpec)>>>()?,
        out_spec,
        captured,
        symbols.infos,
        recorder.guards,
    ))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Symbol bindings from names to values.
pub(crate) type Bindings = HashMap<Arc<str>, i64>;

/// Applies the equalities the model established (`s2 == s1` from broadcasting, `s0 == 4` from
/// a specialisation) as torch does: the later symbol is replaced by the earlier one (or by the
/// constant) everywhere, its range is merged, and the guard that said so is dropped since the
/// graph now encodes it (`run` checks that inputs agree). Returns each replaced symbol with
/// what it finally became and the guard that replaced it.
fn unify_symbols(
    graph: &mut crate::graph::Graph,
    symbols: &mut Vec<SymbolInfo>,
    guards: &mut Vec<Guard>,
) -> Vec<(SymbolInfo, SymExpr, Guard)> {
    let mut why: Vec<(String, Guard)> = Vec::new();
    let order = |name: &str, symbols: &[SymbolInfo]| {
        symbols
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(usize::MAX)
    };
    let mut map: HashMap<Arc<str>, SymExpr> = HashMap::new();
    loop {
        let mut changed = false;
        for g in guards.iter() {
            if g.rel != crate::ops::Rel::Eq {
                continue;
            }
            let lhs = g.lhs.substitute(&map);
            let rhs = g.rhs.substitute(&map);
            let (from, to) = match (
                lhs.as_symbol(),
                rhs.as_symbol(),
                lhs.as_const(),
                rhs.as_const(),
            ) {
                (Some(a), Some(b), _, _) if a != b => {
                    if order(a, symbols) < order(b, symbols) {
                        (b.to_owned(), lhs.clone())
                    } else {
                        (a.to_owned(), rhs.clone())
                    }
                }
                (Some(a), _, _, Some(_)) => (a.to_owned(), rhs.clone()),
                (_, Some(b), Some(_), _) => (b.to_owned(), lhs.clone()),
                _ => continue,
            };
            // Keep the target's range as the intersection.
            if let Some(from_info) = symbols.iter().find(|s| s.name == from).cloned()
                && let Some(target) = to
                    .as_symbol()
                    .and_then(|t| symbols.iter_mut().find(|s| s.name == t))
            {
                target.min = target.min.max(from_info.min);
                target.max = match (target.max, from_info.max) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            for v in map.values_mut() {
                *v = v.substitute(&HashMap::from([(Arc::from(from.as_str()), to.clone())]));
            }
            map.insert(Arc::from(from.as_str()), to);
            why.push((from, g.clone()));
            changed = true;
        }
        if !changed {
            break;
        }
    }
    if map.is_empty() {
        return Vec::new();
    }
    let replaced = why
        .into_iter()
        .filter_map(|(from, g)| {
            let info = symbols.iter().find(|s| s.name == from)?.clone();
            let to = map.get(from.as_str())?.clone();
            Some((info, to, g))
        })
        .collect();
    let sub = |s: &SymInt| SymInt::symbolic(s.expr().substitute(&map), s.hint());
    for v in &mut graph.values {
        for d in &mut v.shape {
            *d = sub(d);
        }
    }
    for node in &mut graph.nodes {
        for a in &mut node.attrs {
            if let Ok(new) = a.map_syms(&mut |s| Ok(sub(s))) {
                *a = new;
            }
        }
    }
    let mut kept = Vec::new();
    for mut g in guards.drain(..) {
        g.lhs = g.lhs.substitute(&map);
        g.rhs = g.rhs.substitute(&map);
        if g.lhs != g.rhs && !kept.contains(&g) {
            kept.push(g);
        }
    }
    *guards = kept;
    symbols.retain(|s| !map.contains_key(s.name.as_str()));
    replaced
}

/// The declared dynamic dimensions the model did not keep (torch's constraint violations): a
/// named or `Dim::DYNAMIC` dimension that became a constant, a named one that became an
/// expression of another named one.
fn constraint_violations(
    replaced: &[(SymbolInfo, SymExpr, Guard)],
    declared: &HashMap<String, bool>,
) -> Vec<crate::shape_env::ConstraintViolation> {
    replaced
        .iter()
        .filter(|(info, to, _)| match declared.get(&info.name) {
            None => false,
            Some(_) if to.as_const().is_some() => true,
            Some(named) => {
                *named
                    && to
                        .symbols()
                        .iter()
                        .any(|s| declared.get(&**s) == Some(&true))
            }
        })
        .map(|(info, to, g)| crate::shape_env::ConstraintViolation {
            dim: info.name.clone(),
            source: info.source.clone(),
            became: to.clone(),
            guard: g.to_string(),
            location: g.location,
            reason: g.reason.clone(),
        })
        .collect()
}

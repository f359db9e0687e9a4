//! [`ExportedProgram`]: the recorded graph, its weights, symbols and guards; printed in
//! torch's format and runnable with libtorch (torch's `ep.module()(...)`).

use std::{collections::HashMap, fmt, sync::Arc};

use crate::{
    context::Guard,
    error::{Error, Result},
    export::{Bindings, bind},
    graph::{Graph, InputKind, ValueId, kind_short},
    pytree::{TreeSpec, Value},
    sym::SymInt,
    tensor::Tensor,
};

/// A symbol of the export.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SymbolInfo {
    /// Name (`s0`, `batch`).
    pub name: String,
    /// Smallest allowed value.
    pub min: i64,
    /// Largest allowed value, `None` for unbounded.
    pub max: Option<i64>,
    /// Value in the example inputs.
    pub hint: i64,
    /// Where it first appears (`x.shape[0]`).
    pub source: String,
    /// Declared with `Dim::AUTO`.
    pub auto: bool,
}

/// A flattened user input: its graph value and its path in the call.
#[derive(Clone, Debug, PartialEq)]
pub struct UserInput {
    /// The placeholder.
    pub value: ValueId,
    /// Path in the call (`x`, `past_key_values[0]`).
    pub path: String,
}

/// The result of [`crate::export`].
#[derive(Debug)]
pub struct ExportedProgram {
    pub(crate) class_name: String,
    pub(crate) signature: Vec<String>,
    pub(crate) graph: Graph,
    pub(crate) user_inputs: Vec<UserInput>,
    pub(crate) input_specs: Vec<(String, TreeSpec)>,
    pub(crate) output_spec: TreeSpec,
    /// Parameters, buffers and constants, in the order of the graph's non-user inputs.
    pub(crate) captured: Vec<(InputKind, tch::Tensor)>,
    pub(crate) symbols: Vec<SymbolInfo>,
    pub(crate) guards: Vec<Guard>,
}

impl ExportedProgram {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        class_name: String,
        signature: Vec<String>,
        graph: Graph,
        user_inputs: Vec<UserInput>,
        input_specs: Vec<(String, TreeSpec)>,
        output_spec: TreeSpec,
        captured: Vec<(InputKind, tch::Tensor)>,
        symbols: Vec<SymbolInfo>,
        guards: Vec<Guard>,
    ) -> Self {
        Self {
            class_name,
            signature,
            graph,
            user_inputs,
            input_specs,
            output_spec,
            captured,
            symbols,
            guards,
        }
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The symbols, in order of creation.
    pub fn symbols(&self) -> &[SymbolInfo] {
        &self.symbols
    }

    /// The guards the graph relies on.
    pub fn guards(&self) -> &[Guard] {
        &self.guards
    }

    /// The flattened user inputs.
    pub fn user_inputs(&self) -> &[UserInput] {
        &self.user_inputs
    }

    /// Parameter names of `forward`, in order.
    pub fn signature(&self) -> &[String] {
        &self.signature
    }

    /// Each bound argument's name and structure, in signature order.
    pub fn input_specs(&self) -> &[(String, TreeSpec)] {
        &self.input_specs
    }

    /// The structure of the output.
    pub fn output_spec(&self) -> &TreeSpec {
        &self.output_spec
    }

    /// The class name of the exported module.
    pub fn class_name(&self) -> &str {
        &self.class_name
    }

    /// Parameters, buffers and lifted constants with their placeholder kinds.
    pub fn captured(&self) -> &[(InputKind, tch::Tensor)] {
        &self.captured
    }

    /// Runs the graph with libtorch on new inputs (same structure, any allowed sizes).
    ///
    /// Guards and ranges are checked on the inputs' sizes before the graph runs; those that
    /// read a size control flow creates (an unbacked symbol, `u0`) are checked once the graph
    /// has computed it, as torch checks its deferred runtime assertions on unbacked sizes.
    ///
    /// # Errors
    /// [`Error::Input`] when the inputs do not fit the signature, a static size, a dtype or a
    /// symbol's range, or when two inputs give one symbol different values;
    /// [`Error::GuardViolated`] when a guard does not hold; [`Error::Input`] naming its origin
    /// when a size computed while running is outside its range; [`Error::Torch`] when a kernel
    /// fails.
    pub fn run(&self, args: &[Value], kwargs: &[(String, Value)]) -> Result<Value> {
        let bound = bind(&self.signature, args, kwargs, "args")?;
        let mut leaves = Vec::new();
        for ((name, value), (spec_name, spec)) in bound.iter().zip(&self.input_specs) {
            let (l, s) = value.flatten(name)?;
            if name != spec_name || &s != spec {
                return Err(Error::Input {
                    path: name.clone(),
                    reason: format!(
                        "the structure differs from the exported one: {s:?} instead of {spec:?}"
                    ),
                });
            }
            leaves.extend(l);
        }
        if bound.len() != self.input_specs.len() || leaves.len() != self.user_inputs.len() {
            return Err(Error::Input {
                path: "args".to_owned(),
                reason: format!(
                    "{} tensors given, the program takes {}",
                    leaves.len(),
                    self.user_inputs.len()
                ),
            });
        }

        // Bind symbols from the input sizes.
        let mut bindings: Bindings = HashMap::new();
        let mut sources: HashMap<Arc<str>, String> = HashMap::new();
        for (input, (_, tensor)) in self.user_inputs.iter().zip(&leaves) {
            let info = self.graph.value(input.value);
            let sizes = tensor.concrete_shape();
            let bad = |reason: String| Error::Input {
                path: input.path.clone(),
                reason,
            };
            if tensor.kind() != info.kind {
                return Err(bad(format!(
                    "dtype {:?}, the program expects {:?}",
                    tensor.kind(),
                    info.kind
                )));
            }
            if sizes.len() != info.shape.len() {
                return Err(bad(format!(
                    "rank {}, the program expects {}",
                    sizes.len(),
                    info.shape.len()
                )));
            }
            for (axis, (dim, size)) in info.shape.iter().zip(&sizes).enumerate() {
                if let Some(c) = dim.as_static() {
                    if c != *size {
                        return Err(bad(format!(
                            "dimension {axis} is {size}, the program was exported with the static size {c}"
                        )));
                    }
                } else if let Some(sym) = dim.expr().as_symbol() {
                    let sym: Arc<str> = Arc::from(sym);
                    match bindings.get(&sym) {
                        Some(v) if v != size => {
                            return Err(bad(format!(
                                "dimension {axis} is {size} but {sym} is {v} from {}",
                                sources.get(&sym).map_or("another input", String::as_str)
                            )));
                        }
                        Some(_) => {}
                        None => {
                            bindings.insert(sym.clone(), *size);
                            sources.insert(sym, format!("{}.shape[{axis}]", input.path));
                        }
                    }
                }
            }
        }
        for s in &self.symbols {
            if let Some(v) = bindings.get(s.name.as_str())
                && (*v < s.min || s.max.is_some_and(|m| *v > m))
            {
                return Err(Error::Input {
                    path: sources
                        .get(s.name.as_str())
                        .cloned()
                        .unwrap_or_else(|| s.name.clone()),
                    reason: format!("{} = {v} is outside its range {}", s.name, range_str(s)),
                });
            }
        }
        // Guards on sizes the inputs do not give wait for the graph to compute them.
        let deferred = self.check_guards(&bindings, true)?;

        // Evaluate.
        let mut captured = self.captured.iter();
        let mut users = leaves.iter();
        let mut inputs = Vec::with_capacity(self.graph.inputs.len());
        for (_, kind) in &self.graph.inputs {
            let t = match kind {
                InputKind::User => users.next().map(|(_, t)| t.as_tch().shallow_clone()),
                _ => captured.next().map(|(_, t)| t.shallow_clone()),
            };
            inputs.push(t.ok_or_else(|| Error::Model {
                model: self.class_name.clone(),
                message: "fewer tensors than graph inputs".to_owned(),
            })?);
        }
        let bound_by_inputs: Vec<Arc<str>> = bindings.keys().cloned().collect();
        let outputs: Vec<Tensor> = eval_graph(&self.graph, inputs, &mut bindings)
            .map_err(|e| match e {
                Error::Model { message, .. } => Error::Model {
                    model: self.class_name.clone(),
                    message,
                },
                other => other,
            })?
            .into_iter()
            .map(Tensor::from)
            .collect();
        for s in &self.symbols {
            if let Some(v) = bindings.get(s.name.as_str())
                && !bound_by_inputs.iter().any(|b| **b == *s.name)
                && (*v < s.min || s.max.is_some_and(|m| *v > m))
            {
                return Err(Error::Input {
                    path: s.source.clone(),
                    reason: format!(
                        "the size {} = {v} computed while running is outside its range {}",
                        s.name,
                        range_str(s)
                    ),
                });
            }
        }
        if deferred {
            self.check_guards(&bindings, false)?;
        }
        self.output_spec.unflatten(outputs)
    }

    /// Checks the guards on `bindings`. With `defer`, a guard reading a symbol without a
    /// value is left for later (returns whether one was); without, it is a violation.
    fn check_guards(&self, bindings: &Bindings, defer: bool) -> Result<bool> {
        let values_str = || {
            let mut v: Vec<String> = bindings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            v.sort();
            v.join(", ")
        };
        let mut deferred = false;
        for g in &self.guards {
            let (l, r) = match (g.lhs.eval(bindings), g.rhs.eval(bindings)) {
                (Ok(l), Ok(r)) => (l, r),
                (Err(_), _) | (_, Err(_)) if defer => {
                    deferred = true;
                    continue;
                }
                (Err(e), _) | (_, Err(e)) => {
                    return Err(Error::GuardViolated {
                        guard: g.to_string(),
                        location: g.location,
                        reason: g.reason.clone(),
                        values: e,
                    });
                }
            };
            if !g.rel.holds(l, r) {
                return Err(Error::GuardViolated {
                    guard: g.to_string(),
                    location: g.location,
                    reason: g.reason.clone(),
                    values: values_str(),
                });
            }
        }
        Ok(deferred)
    }
}

/// Evaluates `graph` with libtorch on `inputs` (in the order of `graph.inputs`); `bindings`
/// holds the symbol values and receives those of the sizes control flow creates.
pub(crate) fn eval_graph(
    graph: &Graph,
    inputs: Vec<tch::Tensor>,
    bindings: &mut Bindings,
) -> Result<Vec<tch::Tensor>> {
    let mut env: Vec<Option<tch::Tensor>> = (0..graph.values.len()).map(|_| None).collect();
    for ((id, _), t) in graph.inputs.iter().zip(inputs) {
        env[id.index()] = Some(t);
    }
    for node in &graph.nodes {
        let torch_err = |message: String| Error::Torch {
            op: node.op.name,
            location: node.location,
            message,
        };
        let inputs: Vec<Option<&tch::Tensor>> = node
            .inputs
            .iter()
            .map(|i| match i {
                Some(id) => env[id.index()].as_ref().map(Some).ok_or_else(|| {
                    torch_err(format!("input {} was not computed", graph.value(*id).name))
                }),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        let outs = if node.op.name == crate::ops::COND.name {
            let outs = crate::control_flow::eval_cond(node, &inputs, bindings)?;
            crate::control_flow::bind_cond_outputs(node, graph, &outs, bindings);
            outs
        } else if node.op.name == crate::ops::SCAN.name {
            crate::control_flow::eval_scan(graph, node, &inputs, bindings)?
        } else {
            let mut eval = |s: &SymInt| -> Result<SymInt, String> {
                if s.is_static() {
                    return Ok(s.clone());
                }
                s.expr().eval(bindings).map(SymInt::new)
            };
            let attrs = node
                .attrs
                .iter()
                .map(|a| a.map_syms(&mut eval))
                .collect::<Result<Vec<_>, _>>()
                .map_err(torch_err)?;
            let outs = (node.op.kernel)(&inputs, &attrs).map_err(torch_err)?;
            if node.op.data_dependent {
                // A fresh value every time the node runs (a loop body runs it many times).
                for (id, t) in node.outputs.iter().zip(&outs) {
                    for (d, size) in graph.value(*id).shape.iter().zip(t.size()) {
                        if let Some(sym) = d.expr().as_symbol() {
                            bindings.insert(Arc::from(sym), size);
                        }
                    }
                }
            }
            outs
        };
        for (id, t) in node.outputs.iter().zip(outs) {
            env[id.index()] = Some(t);
        }
    }
    graph
        .outputs
        .iter()
        .map(|id| {
            env[id.index()]
                .as_ref()
                .map(tch::Tensor::shallow_clone)
                .ok_or_else(|| Error::Model {
                    model: String::new(),
                    message: format!("output {} was not computed", graph.value(*id).name),
                })
        })
        .collect()
}

fn range_str(s: &SymbolInfo) -> String {
    format!(
        "VR[{}, {}]",
        s.min,
        s.max.map_or("int_oo".to_owned(), |m| m.to_string())
    )
}

/// One graph as torch prints a `GraphModule` class, indented by `indent`, its sub-graphs as
/// nested classes after its `return` (torch's `true_graph_0`, `false_graph_0`).
fn write_module(f: &mut fmt::Formatter<'_>, g: &Graph, class: &str, indent: usize) -> fmt::Result {
    let pad = " ".repeat(indent);
    let name = |id: ValueId| g.value(id).name.clone();
    writeln!(f, "{pad}class {class}(torch.nn.Module):")?;
    let params: Vec<String> = g
        .inputs
        .iter()
        .map(|(id, _)| format!("{}: {}", name(*id), type_str(g, *id)))
        .collect();
    writeln!(f, "{pad}    def forward(self, {}):", params.join(", "))?;

    // Last use of every value, for torch's `x = y = None` suffix.
    let mut last_use: HashMap<ValueId, usize> = HashMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        for id in node.inputs.iter().flatten() {
            last_use.insert(*id, i);
        }
    }
    let mut last_location = None;
    for (i, node) in g.nodes.iter().enumerate() {
        let here = (node.location, node.module.clone());
        if last_location.as_ref() != Some(&here) {
            let module = if node.module.is_empty() {
                "forward".to_owned()
            } else {
                node.module.clone()
            };
            writeln!(f, "{pad}         # File: {} in {module}", node.location)?;
            last_location = Some(here);
        }
        let targets: Vec<String> = node.outputs.iter().map(|id| name(*id)).collect();
        let tensors: Vec<String> = node
            .inputs
            .iter()
            .map(|i| i.map_or("None".to_owned(), name))
            .collect();
        let mut args: Vec<String> = Vec::new();
        if node.op.name == crate::ops::COND.name {
            // cond(pred, true_graph_0, false_graph_0, (operands..., lifted...))
            args.push(tensors.first().cloned().unwrap_or_default());
            args.extend(node.attrs.iter().map(ToString::to_string));
            args.push(tuple_str(&tensors[1.min(tensors.len())..]));
        } else if node.op.name == crate::ops::SCAN.name {
            // scan(scan_combine_graph_0, [init...], [xs...], (lifted...))
            let count = |k: usize| match node.attrs.get(k) {
                Some(crate::graph::Attr::Int(v)) => usize::try_from(v.hint()).unwrap_or(0),
                _ => 0,
            };
            let (n_init, n_xs) = (count(1), count(2).min(tensors.len()));
            let n_init = n_init.min(tensors.len());
            args.push(
                node.attrs
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
            args.push(format!("[{}]", tensors[..n_init].join(", ")));
            args.push(format!(
                "[{}]",
                tensors[n_init..(n_init + n_xs).min(tensors.len())].join(", ")
            ));
            args.push(tuple_str(&tensors[(n_init + n_xs).min(tensors.len())..]));
        } else {
            if node.op.list_input {
                args.push(format!("[{}]", tensors.join(", ")));
            } else {
                args.extend(tensors);
            }
            args.extend(node.attrs.iter().map(ToString::to_string));
        }
        let call = format!("torch.ops.{}({})", node.op.name, args.join(", "));
        let lhs = match node.outputs.len() {
            0 => String::new(),
            1 => format!("{}: {} = ", targets[0], type_str(g, node.outputs[0])),
            _ => format!("{}_result = ", targets[0]),
        };
        let mut freed: Vec<String> = Vec::new();
        for id in node.inputs.iter().flatten() {
            let n = name(*id);
            if last_use.get(id) == Some(&i) && !g.outputs.contains(id) && !freed.contains(&n) {
                freed.push(n);
            }
        }
        let suffix = if freed.is_empty() {
            String::new()
        } else {
            format!(";  {} = None", freed.join(" = "))
        };
        writeln!(f, "{pad}        {lhs}{call}{suffix}")?;
        if node.outputs.len() > 1 {
            for (k, id) in node.outputs.iter().enumerate() {
                writeln!(
                    f,
                    "{pad}        {}: {} = {}_result[{k}]",
                    name(*id),
                    type_str(g, *id),
                    targets[0]
                )?;
            }
        }
    }
    let outs: Vec<String> = g.outputs.iter().map(|id| name(*id)).collect();
    writeln!(f, "{pad}        return ({},)", outs.join(", "))?;
    for sub in g.subgraphs() {
        writeln!(f, "{pad}        ")?;
        write_module(f, &sub.graph, &sub.name, indent + 4)?;
    }
    Ok(())
}

/// `(a,)`, `(a, b)`, `()`: torch's printing of a tuple of operands.
fn tuple_str(items: &[String]) -> String {
    match items.len() {
        0 => "()".to_owned(),
        1 => format!("({},)", items[0]),
        _ => format!("({})", items.join(", ")),
    }
}

fn type_str(graph: &Graph, id: ValueId) -> String {
    let v = graph.value(id);
    let dims: Vec<String> = v.shape.iter().map(ToString::to_string).collect();
    format!("\"{}[{}]\"", kind_short(v.kind), dims.join(", "))
}

impl fmt::Display for ExportedProgram {
    /// torch's format: the graph module, the graph signature, the range constraints (and the
    /// guards, which torch does not print, when there are any).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.graph;
        let name = |id: ValueId| g.value(id).name.clone();
        writeln!(f, "ExportedProgram:")?;
        write_module(f, g, "GraphModule", 4)?;
        writeln!(f, "            ")?;
        writeln!(f, "Graph signature: ")?;
        writeln!(f, "    # inputs")?;
        for (id, kind) in &g.inputs {
            match kind {
                InputKind::Parameter(t) => {
                    writeln!(f, "    {}: PARAMETER target='{t}'", name(*id))?
                }
                InputKind::Buffer(t) => {
                    writeln!(f, "    {}: BUFFER target='{t}' persistent=True", name(*id))?
                }
                InputKind::Constant(t) => {
                    writeln!(f, "    {}: CONSTANT_TENSOR target='{t}'", name(*id))?
                }
                InputKind::User => writeln!(f, "    {}: USER_INPUT", name(*id))?,
            }
        }
        writeln!(f)?;
        writeln!(f, "    # outputs")?;
        for id in &g.outputs {
            writeln!(f, "    {}: USER_OUTPUT", name(*id))?;
        }
        writeln!(f)?;
        let ranges: Vec<String> = self
            .symbols
            .iter()
            .map(|s| format!("{}: {}", s.name, range_str(s)))
            .collect();
        writeln!(f, "Range constraints: {{{}}}", ranges.join(", "))?;
        if !self.guards.is_empty() {
            writeln!(f)?;
            writeln!(f, "Guards:")?;
            for g in &self.guards {
                writeln!(f, "    {g}  # {} at {}", g.reason, g.location)?;
            }
        }
        Ok(())
    }
}

//! An [`ExportedProgram`] saved to disk and loaded back (torch's `torch.export.save` /
//! `load`): the program as JSON (graph with its sub-graphs, signature, input and output
//! structures, symbols with their ranges, guards), the weights beside it in a safetensors file
//! under their checkpoint names (constants under their `lifted_tensor_<n>` targets).
//!
//! `save(path)` writes `path` (the JSON) and `path` with the extension `safetensors`, each
//! first as `<file>.partial` then renamed, so that a failed save leaves no file that looks
//! complete. `load(path)` reads both and gives a program that runs and prints as the saved
//! one. Decisions: element types are stored by torch's names (`float32`), floats as strings
//! (`inf` and `NaN` are not JSON numbers), source locations as file/line/column (loaded file
//! names are interned for the life of the process, as the engine keeps `&'static str`).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use serde::{Deserialize, Serialize};
use tch::Kind;

use crate::{
    context::Guard,
    error::{Error, Loc, Result},
    graph::{
        Attr, Graph, InputKind, Node, SubGraph, ValueId, ValueInfo, kind_from_name, kind_name,
    },
    ops::{Rel, op_by_name},
    program::{ExportedProgram, SymbolInfo, UserInput},
    pytree::TreeSpec,
    sym::{SymExpr, SymInt},
};

/// The format tag of the JSON file.
const FORMAT: &str = "onnx-diagnostic-rs/exported-program/1";

#[derive(Serialize, Deserialize)]
enum KindDto {
    Parameter(String),
    Buffer(String),
    Constant(String),
    User,
}

#[derive(Serialize, Deserialize)]
struct ValueDto {
    name: String,
    dtype: String,
    shape: Vec<SymInt>,
}

#[derive(Serialize, Deserialize)]
enum AttrDto {
    Int(SymInt),
    Ints(Vec<SymInt>),
    Float(String),
    Bool(bool),
    Kind(String),
    None,
    Str(String),
    Text(String),
    Graph { name: String, graph: Box<GraphDto> },
}

#[derive(Serialize, Deserialize)]
struct LocDto {
    file: String,
    line: u32,
    column: u32,
}

#[derive(Serialize, Deserialize)]
struct NodeDto {
    op: String,
    inputs: Vec<Option<u32>>,
    attrs: Vec<AttrDto>,
    outputs: Vec<u32>,
    location: LocDto,
    module: String,
    #[serde(default)]
    patch: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct GraphDto {
    values: Vec<ValueDto>,
    nodes: Vec<NodeDto>,
    inputs: Vec<(u32, KindDto)>,
    outputs: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct GuardDto {
    lhs: SymExpr,
    rel: Rel,
    rhs: SymExpr,
    location: LocDto,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct ProgramDto {
    format: String,
    class_name: String,
    signature: Vec<String>,
    graph: GraphDto,
    user_inputs: Vec<(u32, String)>,
    input_specs: Vec<(String, TreeSpec)>,
    output_spec: TreeSpec,
    /// The weights, in the order of the graph's non-user inputs, by their name in the
    /// safetensors file.
    captured: Vec<KindDto>,
    symbols: Vec<SymbolInfo>,
    guards: Vec<GuardDto>,
    /// The safetensors file, relative to the JSON file.
    weights: String,
}

fn kind_dto(k: &InputKind) -> KindDto {
    match k {
        InputKind::Parameter(n) => KindDto::Parameter(n.clone()),
        InputKind::Buffer(n) => KindDto::Buffer(n.clone()),
        InputKind::Constant(n) => KindDto::Constant(n.clone()),
        InputKind::User => KindDto::User,
    }
}

fn kind_from(k: KindDto) -> InputKind {
    match k {
        KindDto::Parameter(n) => InputKind::Parameter(n),
        KindDto::Buffer(n) => InputKind::Buffer(n),
        KindDto::Constant(n) => InputKind::Constant(n),
        KindDto::User => InputKind::User,
    }
}

fn weight_name(k: &InputKind) -> &str {
    match k {
        InputKind::Parameter(n) | InputKind::Buffer(n) | InputKind::Constant(n) => n,
        InputKind::User => "",
    }
}

fn loc_dto(l: &Loc) -> LocDto {
    LocDto {
        file: l.file.to_owned(),
        line: l.line,
        column: l.column,
    }
}

/// A `&'static str` for a loaded string (file names, attribute strings), interned.
fn intern(s: &str) -> &'static str {
    static POOL: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let pool = POOL.get_or_init(|| Mutex::new(HashSet::new()));
    let mut pool = match pool.lock() {
        Ok(p) => p,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(found) = pool.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    pool.insert(leaked);
    leaked
}

fn loc_from(l: LocDto) -> Loc {
    Loc {
        file: intern(&l.file),
        line: l.line,
        column: l.column,
    }
}

fn kind_parse(name: &str) -> Result<Kind> {
    kind_from_name(name).ok_or_else(|| bad(format!("unknown element type {name:?}")))
}

fn bad(reason: String) -> Error {
    Error::Input {
        path: "exported program file".to_owned(),
        reason,
    }
}

fn graph_dto(g: &Graph) -> GraphDto {
    GraphDto {
        values: g
            .values
            .iter()
            .map(|v| ValueDto {
                name: v.name.clone(),
                dtype: kind_name(v.kind).to_owned(),
                shape: v.shape.clone(),
            })
            .collect(),
        nodes: g
            .nodes
            .iter()
            .map(|n| NodeDto {
                op: n.op.name.to_owned(),
                inputs: n.inputs.iter().map(|i| i.map(|v| v.0)).collect(),
                attrs: n
                    .attrs
                    .iter()
                    .map(|a| match a {
                        Attr::Int(v) => AttrDto::Int(v.clone()),
                        Attr::Ints(v) => AttrDto::Ints(v.clone()),
                        Attr::Float(v) => AttrDto::Float(v.to_string()),
                        Attr::Bool(v) => AttrDto::Bool(*v),
                        Attr::Kind(k) => AttrDto::Kind(kind_name(*k).to_owned()),
                        Attr::None => AttrDto::None,
                        Attr::Str(s) => AttrDto::Str((*s).to_owned()),
                        Attr::Text(s) => AttrDto::Text(s.clone()),
                        Attr::Graph(sub) => AttrDto::Graph {
                            name: sub.name.clone(),
                            graph: Box::new(graph_dto(&sub.graph)),
                        },
                    })
                    .collect(),
                outputs: n.outputs.iter().map(|v| v.0).collect(),
                location: loc_dto(&n.location),
                module: n.module.clone(),
                patch: n.patch.as_deref().map(str::to_owned),
            })
            .collect(),
        inputs: g.inputs.iter().map(|(id, k)| (id.0, kind_dto(k))).collect(),
        outputs: g.outputs.iter().map(|v| v.0).collect(),
    }
}

fn graph_from(g: GraphDto) -> Result<Graph> {
    let n_values = g.values.len() as u32;
    let id = |v: u32| {
        if v < n_values {
            Ok(ValueId(v))
        } else {
            Err(bad(format!("value {v} out of {n_values}")))
        }
    };
    let values = g
        .values
        .into_iter()
        .map(|v| {
            Ok(ValueInfo {
                name: v.name,
                kind: kind_parse(&v.dtype)?,
                shape: v.shape,
            })
        })
        .collect::<Result<_>>()?;
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for n in g.nodes {
        let op = op_by_name(&n.op).ok_or_else(|| Error::UnsupportedOp {
            op: n.op.clone(),
            location: loc_from(LocDto {
                file: n.location.file.clone(),
                line: n.location.line,
                column: n.location.column,
            }),
        })?;
        let attrs = n
            .attrs
            .into_iter()
            .map(|a| {
                Ok(match a {
                    AttrDto::Int(v) => Attr::Int(v),
                    AttrDto::Ints(v) => Attr::Ints(v),
                    AttrDto::Float(s) => Attr::Float(
                        s.parse()
                            .map_err(|_| bad(format!("{s:?} is not a float")))?,
                    ),
                    AttrDto::Bool(v) => Attr::Bool(v),
                    AttrDto::Kind(k) => Attr::Kind(kind_parse(&k)?),
                    AttrDto::None => Attr::None,
                    AttrDto::Str(s) => Attr::Str(intern(&s)),
                    AttrDto::Text(s) => Attr::Text(s),
                    AttrDto::Graph { name, graph } => Attr::Graph(SubGraph {
                        name,
                        graph: Arc::new(graph_from(*graph)?),
                    }),
                })
            })
            .collect::<Result<_>>()?;
        nodes.push(Node {
            op,
            inputs: n
                .inputs
                .into_iter()
                .map(|i| i.map(id).transpose())
                .collect::<Result<_>>()?,
            attrs,
            outputs: n.outputs.into_iter().map(id).collect::<Result<_>>()?,
            location: loc_from(n.location),
            module: n.module,
            patch: n.patch.map(|p| Arc::from(p.as_str())),
        });
    }
    Ok(Graph {
        values,
        nodes,
        inputs: g
            .inputs
            .into_iter()
            .map(|(v, k)| Ok((id(v)?, kind_from(k))))
            .collect::<Result<_>>()?,
        outputs: g.outputs.into_iter().map(id).collect::<Result<_>>()?,
    })
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes `bytes` to `path` through `<path>.partial`.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = write(&partial)
        .and_then(|()| std::fs::rename(&partial, path).map_err(|e| io_error(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

impl ExportedProgram {
    /// The program as JSON; the weights are referenced by name (see the module doc).
    ///
    /// # Errors
    /// Never in practice (serde_json on plain data); typed for symmetry with [`Self::from_json`].
    pub fn to_json(&self, weights_file: &str) -> Result<String> {
        let dto = ProgramDto {
            format: FORMAT.to_owned(),
            class_name: self.class_name.clone(),
            signature: self.signature.clone(),
            graph: graph_dto(&self.graph),
            user_inputs: self
                .user_inputs
                .iter()
                .map(|u| (u.value.0, u.path.clone()))
                .collect(),
            input_specs: self.input_specs.clone(),
            output_spec: self.output_spec.clone(),
            captured: self.captured.iter().map(|(k, _)| kind_dto(k)).collect(),
            symbols: self.symbols.clone(),
            guards: self
                .guards
                .iter()
                .map(|g| GuardDto {
                    lhs: g.lhs.clone(),
                    rel: g.rel,
                    rhs: g.rhs.clone(),
                    location: loc_dto(&g.location),
                    reason: g.reason.clone(),
                })
                .collect(),
            weights: weights_file.to_owned(),
        };
        serde_json::to_string_pretty(&dto).map_err(|e| bad(e.to_string()))
    }

    /// Saves the program to `path` (JSON) and its weights to `path` with the extension
    /// `safetensors`.
    ///
    /// # Errors
    /// [`Error::Input`] naming the file that could not be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let weights = path.with_extension("safetensors");
        let weights_name = weights
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let named: Vec<(String, tch::Tensor)> = self
            .captured
            .iter()
            // safetensors reads host memory: a weight on a GPU is copied to the CPU first.
            .map(|(k, t)| {
                (
                    weight_name(k).to_owned(),
                    t.to_device(tch::Device::Cpu).contiguous(),
                )
            })
            .collect();
        write_atomic(&weights, |p| {
            let refs: Vec<(&str, &tch::Tensor)> =
                named.iter().map(|(n, t)| (n.as_str(), t)).collect();
            tch::Tensor::write_safetensors(&refs, p).map_err(|e| io_error(&weights, e))
        })?;
        let json = self.to_json(&weights_name)?;
        write_atomic(path, |p| {
            std::fs::write(p, json).map_err(|e| io_error(path, e))
        })
    }

    /// Loads a program saved by [`Self::save`].
    ///
    /// # Errors
    /// [`Error::Input`] naming the file and what is wrong (unreadable, another format, a
    /// missing weight); [`Error::UnsupportedOp`] for an op this build does not know.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        let dto: ProgramDto = serde_json::from_str(&text).map_err(|e| io_error(path, e))?;
        if dto.format != FORMAT {
            return Err(io_error(
                path,
                format!("format {:?}, expected {FORMAT:?}", dto.format),
            ));
        }
        let weights_path = path.with_file_name(&dto.weights);
        let mut weights: std::collections::HashMap<String, tch::Tensor> = if dto.captured.is_empty()
        {
            std::collections::HashMap::new()
        } else {
            tch::Tensor::read_safetensors(&weights_path)
                .map_err(|e| io_error(&weights_path, e))?
                .into_iter()
                .collect()
        };
        let captured = dto
            .captured
            .into_iter()
            .map(|k| {
                let k = kind_from(k);
                let t = weights.remove(weight_name(&k)).ok_or_else(|| {
                    io_error(&weights_path, format!("no tensor {:?}", weight_name(&k)))
                })?;
                Ok((k, t))
            })
            .collect::<Result<_>>()?;
        let graph = graph_from(dto.graph)?;
        let n = graph.values.len() as u32;
        Ok(ExportedProgram {
            class_name: dto.class_name,
            signature: dto.signature,
            user_inputs: dto
                .user_inputs
                .into_iter()
                .map(|(v, path)| {
                    if v < n {
                        Ok(UserInput {
                            value: ValueId(v),
                            path,
                        })
                    } else {
                        Err(bad(format!("user input value {v} out of {n}")))
                    }
                })
                .collect::<Result<_>>()?,
            graph,
            input_specs: dto.input_specs,
            output_spec: dto.output_spec,
            captured,
            symbols: dto.symbols,
            guards: dto
                .guards
                .into_iter()
                .map(|g| Guard {
                    lhs: g.lhs,
                    rel: g.rel,
                    rhs: g.rhs,
                    location: loc_from(g.location),
                    reason: g.reason,
                })
                .collect(),
        })
    }
}

//! Core of onnx-diagnostic: the tensor, symbolic shapes, the graph IR and the export engine
//! (our `torch.export`). See DESIGN.md section 3.
//!
//! - [`Tensor`]: model code is written against it; outside an export it runs libtorch ops,
//!   inside [`export`] it also records them with symbolic shapes.
//! - [`SymInt`] / [`SymExpr`]: sizes as expressions over symbols (`s0`, `batch`).
//! - [`export`] → [`ExportedProgram`]: printed like torch's, runnable with [`ExportedProgram::run`].
//! - [`string_type`], [`ModelInputs::guess_dynamic_shapes`]: the seed's helpers to read nested
//!   inputs and to find dynamic shapes from several input sets.
//! - [`ops`]: the op table (name, eager kernel, shape rule), one registration per op.

// `#[patchable]` (crates/macros) names this crate by its path, also inside it.
extern crate self as onnx_diagnostic_core;

pub mod context;
pub mod control_flow;
pub mod error;
pub mod export;
pub mod graph;
pub mod helpers;
pub mod model_inputs;
pub mod ops;
pub mod patches;
pub mod program;
mod program_file;
pub mod pytree;
pub mod serialization;
pub mod shape_env;
pub mod state;
pub mod sym;
pub mod tensor;
mod tensor_indexing;
mod tensor_resample;

pub use context::{Guard, ScopeGuard, scope};
pub use control_flow::{
    Cond, CondValue, Pred, check, check_not, check_size, cond, cond_value, for_range, scan,
};
pub use error::{Error, Loc, Result};
pub use export::{Dim, DynSpec, DynamicShapes, ExportOptions, FnModule, Inputs, Module, export};
pub use graph::{Attr, Graph, InputKind, Node, ValueId, ValueInfo};
pub use helpers::{StringTypeOptions, string_dynamic_shapes, string_type};
pub use model_inputs::ModelInputs;
pub use ops::{Assumption, OpDef, Rel};
pub use patches::{
    CustomPatch, DiffFormat, PatchDetails, PatchGuard, PatchOptions, torch_export_patches,
};
pub use program::{ExportedProgram, SymbolInfo, UserInput};
pub use pytree::{CloneCustom, CustomObject, TreeSpec, Value};
pub use serialization::{
    Family, SerializationGuard, Serializer, register_cache_serialization,
    register_class_serialization, serialization_functions, unregister_class_serialization,
};
pub use shape_env::{Broadcast, ConstraintViolation, ShapeEnv};
pub use sym::{Atom, SymExpr, SymInt};
pub use tensor::{IntoSizes, Scalar, Tensor, TensorIndex};
pub use tensor_resample::{InterpolateMode, Resize};

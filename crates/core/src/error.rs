//! The errors of the engine. Each names what failed (op, symbol, input path, guard) and where
//! (the Rust source location of the model code, captured with `#[track_caller]`), and says what
//! to do.

use std::fmt;

/// A source location in model code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    /// File, as the compiler saw it.
    pub file: &'static str,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl Loc {
    /// The location of the caller (through every `#[track_caller]` frame).
    #[track_caller]
    pub fn caller() -> Self {
        let l = std::panic::Location::caller();
        Self {
            file: l.file(),
            line: l.line(),
            column: l.column(),
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Errors of the tensor ops, of `export` and of `ExportedProgram::run`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch rejected an op (wrong shapes, dtypes, ...).
    #[error("{op} failed at {location}: {message}")]
    Torch {
        /// The op, as torch names it (`aten.add.Tensor`).
        op: &'static str,
        /// Where the model code called it.
        location: Loc,
        /// libtorch's message.
        message: String,
    },
    /// The op has no implementation in the engine.
    #[error(
        "unsupported op {op} at {location}: the engine has no kernel or shape rule for it; \
         write the computation with supported ops, or add the op to crates/core/src/ops"
    )]
    UnsupportedOp {
        /// The op's name.
        op: String,
        /// Where the model code called it.
        location: Loc,
    },
    /// A dynamic dimension was made static while `stop_if_static` is on (crates/patch-torch).
    #[error(
        "dynamic dimension {symbol} was specialised to {value} at {location}: {reason}; \
         keep it a SymInt (use the size in tensor ops), or declare the dimension static \
         (Dim::STATIC) if the model really needs the value"
    )]
    Specialized {
        /// The expression that was specialised (`s0`, `batch*seq_length`).
        symbol: String,
        /// Its value for the example inputs.
        value: i64,
        /// Where the model code did it.
        location: Loc,
        /// What turned it into an integer.
        reason: String,
    },
    /// With `stop_if_static = 2` (crates/patch-torch): the model made the graph depend on a
    /// relation between dynamic dimensions.
    #[error(
        "stop_if_static=2: the graph now depends on {guard} at {location}: {reason}; keep the \
         sizes independent (compute with SymInt, or express a branch with core::cond), or \
         lower stop_if_static to accept the guard (it is then checked by ExportedProgram::run)"
    )]
    StopIfStatic {
        /// The guard (`s0 == s1`, `seq_length > 4`).
        guard: String,
        /// Where the model code did it.
        location: Loc,
        /// Why it was recorded.
        reason: String,
    },
    /// torch's "Constraints violated": dimensions declared dynamic that the model made
    /// constant, or named dimensions it made equal.
    #[error(
        "constraints violated ({dims}):{details}\nthe model does not keep these dimensions as \
         declared: declare them Dim::STATIC, use one Dim for sizes that are always equal, change \
         the model code at the locations given, or export inside \
         torch_export_patches(PatchOptions {{ catch_constraints: true, .. }}) to go on with them \
         static or tied"
    )]
    ConstraintViolation {
        /// The dimensions, comma-separated.
        dims: String,
        /// One line a violation: what each became, the guard, where and why.
        details: String,
    },
    /// Model code read the data of a tensor during an export.
    #[error(
        "data-dependent {what} at {location}: the value of a tensor is unknown during export; \
         express a branch with core::cond, an assertion with core::check, or replace the code \
         with a patch"
    )]
    DataDependent {
        /// What was read (`item()`, `a tensor used as bool`, `nonzero`).
        what: String,
        /// Where the model code did it.
        location: Loc,
    },
    /// An input, or the dynamic shapes describing it, does not fit.
    #[error("input {path}: {reason}")]
    Input {
        /// The input path (`args[0]`, `kwargs['past_key_values'][1]`, `x` ...).
        path: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// An input given to `ExportedProgram::run` breaks an assumption the graph was exported
    /// under.
    #[error(
        "guard {guard} (recorded at {location}: {reason}) does not hold for these inputs: {values}"
    )]
    GuardViolated {
        /// The relation (`s0 == 1`).
        guard: String,
        /// Where it was recorded.
        location: Loc,
        /// Why it was recorded.
        reason: String,
        /// The symbol values of the inputs.
        values: String,
    },
    /// The shape rule of an op disagrees with what libtorch computed: a bug of the engine.
    #[error(
        "shape rule of {op} at {location} gives {rule} but libtorch computed {eager}; \
         this is a bug of onnx-diagnostic's op table, please report it"
    )]
    ShapeRule {
        /// The op.
        op: &'static str,
        /// Where the model code called it.
        location: Loc,
        /// Shapes the rule computed (with hints).
        rule: String,
        /// Shapes libtorch computed.
        eager: String,
    },
    /// `cond` or `scan` was given something it cannot express (branches whose outputs differ
    /// in count, dtype or rank, a predicate that is not a boolean scalar, sequences of
    /// different lengths).
    #[error("{op} at {location}: {reason}")]
    ControlFlow {
        /// `cond` or `scan`.
        op: &'static str,
        /// Where the model code called it.
        location: Loc,
        /// What is wrong, naming the branch, output or operand.
        reason: String,
    },
    /// A `check` does not hold.
    #[error("check failed at {location}: {message}")]
    CheckFailed {
        /// The message given to `check`.
        message: String,
        /// Where the model code called it.
        location: Loc,
    },
    /// A custom class could not be flattened or rebuilt (not registered, or a structure its
    /// serializer refuses).
    #[error("serialization of {class}: {reason}")]
    Serialization {
        /// The class (`DynamicCache`).
        class: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A patch cannot be applied (two patches of one target in a guard, an unknown target).
    #[error("patch {patch}: {reason}")]
    Patch {
        /// The patch's name.
        patch: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A custom patch (from a plugin or `custom_patches`) panicked: the panic was caught at the
    /// patch's boundary, the export stopped there, and the host goes on.
    #[error(
        "patch {patch}{} panicked: {message}; fix the patch, or leave it out \
         (without its plugin, or without it in custom_patches)",
        plugin.as_ref().map(|p| format!(" of plugin {p}")).unwrap_or_default()
    )]
    PatchPanicked {
        /// The patch's name.
        patch: String,
        /// The plugin that supplied it (none for a patch linked into the program).
        plugin: Option<String>,
        /// The panic's message.
        message: String,
    },
    /// A model-level failure (missing input, wrong configuration ...).
    #[error("model {model}: {message}")]
    Model {
        /// The model (class name).
        model: String,
        /// What is wrong.
        message: String,
    },
}

/// `Result` of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

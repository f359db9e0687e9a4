//! The engine's dynamic-shape decisions as `#[patchable]` hooks: what torch's `ShapeEnv`,
//! `infer_size` and `produce_guards_and_solve_constraints` decide during `torch.export`, which
//! the seeds' "torch fixes" patch (crates/patch-torch, family `torch`).
//!
//! Each hook here has torch's behaviour, unpatched:
//! - [`infer_size`]: broadcasting two shapes. Two sizes broadcast when they are equal or one
//!   of them is 1; a symbolic size whose example value is 1 is *specialised* to 1 (a guard
//!   `s0 == 1`), and two different symbolic sizes with the same example value are made equal.
//! - [`ShapeEnv::log_guard`]: every guard the model makes the graph depend on is recorded,
//!   silently.
//! - [`produce_guards_and_solve_constraints`]: at the end of the export, a dimension declared
//!   dynamic ([`Dim::DYNAMIC`](crate::Dim) or named) that the model turned into a constant, or
//!   two named dimensions it made equal, fail the export (torch's "Constraints violated").
//!
//! The hooks run while the recording is borrowed: a patch of them must decide from its
//! arguments and must not record ops.

use crate::{
    context::Guard,
    error::{Error, Loc, Result},
    ops::{Assumption, Rel, broadcast_dim_strict},
    sym::{SymExpr, SymInt},
};

/// The result of broadcasting two shapes: the shape and what the rule assumed.
#[derive(Clone, Debug, PartialEq)]
pub struct Broadcast {
    /// The broadcast shape.
    pub shape: Vec<SymInt>,
    /// Relations the graph now relies on (recorded as guards).
    pub assumptions: Vec<Assumption>,
}

/// Broadcasts two shapes (right-aligned), torch's `infer_size`. See the module doc for the
/// rule; crates/patch-torch's `patched_infer_size` relaxes it.
///
/// # Errors
/// A message when the sizes cannot be broadcast.
#[onnx_diagnostic_macros::patchable]
pub fn infer_size(a: &[SymInt], b: &[SymInt]) -> std::result::Result<Broadcast, String> {
    let mut shape = Vec::new();
    let mut assumptions = Vec::new();
    for (x, y) in aligned(a, b) {
        shape.push(broadcast_dim_strict(&x, &y, &mut assumptions)?);
    }
    Ok(Broadcast { shape, assumptions })
}

/// The dimensions of two shapes paired right-aligned, the shorter padded with 1 on the left
/// (what a broadcasting rule walks through).
pub fn aligned(a: &[SymInt], b: &[SymInt]) -> Vec<(SymInt, SymInt)> {
    let rank = a.len().max(b.len());
    let at = |s: &[SymInt], i: usize| {
        (i + s.len())
            .checked_sub(rank)
            .map_or_else(|| SymInt::new(1), |j| s[j].clone())
    };
    (0..rank).map(|i| (at(a, i), at(b, i))).collect()
}

/// The target name of [`ShapeEnv::log_guard`], as patches name it.
pub const LOG_GUARD_TARGET: &str = "ShapeEnv.log_guard";

/// The shape environment of one export: the options its hooks read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShapeEnv {
    /// The `stop_if_static` level of the export (see crates/patch-torch).
    pub stop_if_static: u8,
}

impl ShapeEnv {
    /// Called for every guard the model makes the graph depend on, before it is recorded.
    /// Unpatched it accepts all (torch records guards silently); crates/patch-torch's
    /// `patched_ShapeEnv.log_guard` stops the export at the first one that makes a dynamic
    /// dimension static (`stop_if_static = 1`) or ties it (`stop_if_static = 2`).
    ///
    /// # Errors
    /// None unpatched.
    #[onnx_diagnostic_macros::patchable]
    pub fn log_guard(&self, guard: &Guard) -> Result<()> {
        let _ = guard;
        Ok(())
    }
}

/// A dynamic dimension the model did not keep dynamic.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstraintViolation {
    /// The dimension (`batch`, or `s0` for a `Dim::DYNAMIC`).
    pub dim: String,
    /// Where it comes from (`input_ids.shape[0]`).
    pub source: String,
    /// What it became: a constant or another dimension.
    pub became: SymExpr,
    /// The guard that made it so.
    pub guard: String,
    /// Where the model code did it.
    pub location: Loc,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for ConstraintViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.became.as_const().is_some() {
            format!("was inferred to be a constant ({})", self.became)
        } else {
            format!("must always be equal to {}", self.became)
        };
        write!(
            f,
            "{} = {} {what}: guard {} at {} ({})",
            self.dim, self.source, self.guard, self.location, self.reason
        )
    }
}

/// Called at the end of an export with the dynamic dimensions the model did not keep
/// dynamic. Unpatched it fails as torch does; crates/patch-torch's
/// `patched_produce_guards_and_solve_constraints` (option `catch_constraints`) lets the export
/// go on with them static or tied.
///
/// # Errors
/// [`Error::ConstraintViolation`] when `violations` is not empty.
#[onnx_diagnostic_macros::patchable]
pub fn produce_guards_and_solve_constraints(violations: &[ConstraintViolation]) -> Result<()> {
    if violations.is_empty() {
        return Ok(());
    }
    let mut dims: Vec<&str> = violations.iter().map(|v| v.dim.as_str()).collect();
    dims.dedup();
    Err(Error::ConstraintViolation {
        dims: dims.join(", "),
        details: violations
            .iter()
            .map(|v| format!("\n  - {v}"))
            .collect::<String>(),
    })
}

/// An assumption of the relaxed broadcasting rule: `x` and `y` broadcast (equal, or one is 1).
pub fn broadcastable(x: &SymInt, y: &SymInt, reason: &str) -> Assumption {
    Assumption {
        lhs: x.expr().clone(),
        rel: Rel::Broadcast,
        rhs: y.expr().clone(),
        reason: reason.to_owned(),
    }
}

//! Patches of the exporter's own behaviour, the "torch fixes" of the seeds (family `torch`),
//! applied by `torch_export_patches(PatchOptions { patch_torch: true, .. })` (the default).
//! Each replaces one of the `#[patchable]` hooks of `onnx_diagnostic_core::shape_env`, where
//! the engine makes its dynamic-shape decisions as torch does.
//!
//! | patch | option | what it changes |
//! |---|---|---|
//! | `patched_infer_size` | `patch_torch` | a symbolic size of example value 1 broadcast against another size is not specialised to 1: the result is `Max(a, b)` and the graph records `a broadcasts with b` |
//! | `patched_ShapeEnv.log_guard` | `stop_if_static >= 1` | the export stops where the model makes a dynamic dimension static (1) or ties dynamic dimensions together (2) |
//! | `patched_produce_guards_and_solve_constraints` | `catch_constraints` | dimensions declared dynamic that the model made static or tied no longer fail the export; they stay static or tied (printed with `verbose`) |

use onnx_diagnostic_core::{
    Assumption, Broadcast, ConstraintViolation, Error, Guard, Rel, Result, ShapeEnv, SymInt,
    shape_env,
};
use onnx_diagnostic_macros::patch;

/// Replaces `shape_env::infer_size` (torch's `torch._subclasses.fake_impls.infer_size`, which
/// onnx-diagnostic patches as `patched_infer_size`). torch's rule turns a dynamic dimension
/// whose example value is 1 into the constant 1 as soon as it meets a larger size: exported
/// with one sequence, a model then only accepts one sequence, and a dimension declared
/// dynamic fails the export ("Constraints violated"). The relaxed rule keeps it: sizes known
/// equal or known to be 1 broadcast as before; two sizes with equal example values are made
/// equal as before; otherwise the result is `Max(a, b)` and the graph records the assumption
/// `a broadcasts with b` (equal, or one of them 1), which `ExportedProgram::run` checks. The
/// `Max` is the broadcast size whenever no size is 0. It can go when the engine reasons about
/// sizes that are either 1 or equal without specialising (torch's size-oblivious guards).
///
/// # Errors
/// A message when two static sizes cannot be broadcast.
#[patch(target = shape_env::infer_size, family = "torch")]
pub fn patched_infer_size(a: &[SymInt], b: &[SymInt]) -> std::result::Result<Broadcast, String> {
    let mut shape = Vec::new();
    let mut assumptions = Vec::new();
    for (x, y) in shape_env::aligned(a, b) {
        let (x, y) = (&x, &y);
        if x.expr() == y.expr() || y.as_static() == Some(1) {
            shape.push(x.clone());
        } else if x.as_static() == Some(1) {
            shape.push(y.clone());
        } else if x.hint() == y.hint() {
            // Equal examples: the same size (torch's `guard_or_false(a == b)` on backed sizes).
            let (keep, other) = if x.is_static() { (y, x) } else { (x, y) };
            assumptions.push(Assumption {
                lhs: keep.expr().clone(),
                rel: Rel::Eq,
                rhs: other.expr().clone(),
                reason: "broadcasting requires equal sizes".to_owned(),
            });
            shape.push(keep.clone());
        } else if x.is_static() && y.is_static() {
            return Err(format!("sizes {x} and {y} cannot be broadcast"));
        } else {
            assumptions.push(shape_env::broadcastable(
                x,
                y,
                "relaxed broadcasting (patched_infer_size): equal sizes, or one of them is 1",
            ));
            shape.push(x.max(y));
        }
    }
    Ok(Broadcast { shape, assumptions })
}

/// Replaces `ShapeEnv.log_guard` (torch's `ShapeEnv._log_guard` and `_set_replacement`, which
/// onnx-diagnostic patches when `stop_if_static` is set). Unpatched, a guard that makes a
/// dynamic dimension static is recorded and the export goes on: the user learns it from a
/// failed run on other shapes, far from the cause. With `stop_if_static = 1` the export stops
/// at the first guard fixing a dynamic size to a constant, with the model's source location;
/// with `2`, also at the first guard relating dynamic sizes (two dimensions made equal, a
/// branch on a size). It can go when export reports where each specialisation comes from by
/// itself.
///
/// # Errors
/// [`Error::Specialized`] (level 1), [`Error::StopIfStatic`] (level 2).
#[patch(target = ShapeEnv::log_guard, family = "torch", when = "stop_if_static")]
pub fn patched_log_guard(env: &ShapeEnv, guard: &Guard) -> Result<()> {
    if env.stop_if_static == 0 {
        return Ok(());
    }
    if guard.rel == Rel::Eq {
        let fixed = match (guard.lhs.as_const(), guard.rhs.as_const()) {
            (None, Some(c)) => Some((&guard.lhs, c)),
            (Some(c), None) => Some((&guard.rhs, c)),
            _ => None,
        };
        if let Some((expr, value)) = fixed {
            return Err(Error::Specialized {
                symbol: expr.to_string(),
                value,
                location: guard.location,
                reason: guard.reason.clone(),
            });
        }
    }
    let symbolic = !guard.lhs.symbols().is_empty() || !guard.rhs.symbols().is_empty();
    if env.stop_if_static >= 2 && symbolic {
        return Err(Error::StopIfStatic {
            guard: guard.to_string(),
            location: guard.location,
            reason: guard.reason.clone(),
        });
    }
    Ok(())
}

/// Replaces `shape_env::produce_guards_and_solve_constraints` (torch's function of that name,
/// which onnx-diagnostic wraps as `_catch_produce_guards_and_solve_constraints` when
/// `catch_constraints` is on). Unpatched, a dimension declared dynamic that the model made
/// static (or a named one it tied to another) fails the whole export; with the patch the
/// export goes on with it static or tied, which is often what the user wants to see first
/// (the ONNX file exists, and validate's other input sets show where it is too static). The
/// violations are printed with `verbose`. It can go when the user fixes the dynamic shapes or
/// the model.
///
/// # Errors
/// None.
#[patch(
    target = shape_env::produce_guards_and_solve_constraints,
    family = "torch",
    when = "catch_constraints"
)]
pub fn patched_produce_guards_and_solve_constraints(
    violations: &[ConstraintViolation],
) -> Result<()> {
    if onnx_diagnostic_core::patches::verbosity() > 0 {
        for v in violations {
            println!("[patched_produce_guards_and_solve_constraints] caught: {v}");
        }
    }
    Ok(())
}

/// The patches of this crate, by name. Calling it (once, anywhere) also keeps the crate's
/// link-time registrations in the binary (a linker drops the object files of a library
/// nothing refers to, with their `#[patch]` entries). The CLI calls it; so should a program
/// that only names this crate in its dependencies.
pub fn patches() -> Vec<&'static str> {
    let _ =
        patched_infer_size as fn(&[SymInt], &[SymInt]) -> std::result::Result<Broadcast, String>;
    let _ = patched_log_guard as fn(&ShapeEnv, &Guard) -> Result<()>;
    let _ =
        patched_produce_guards_and_solve_constraints as fn(&[ConstraintViolation]) -> Result<()>;
    onnx_diagnostic_core::patches::registered_patches()
        .into_iter()
        .filter(|p| p.family == onnx_diagnostic_core::patches::PatchFamily::Torch)
        .map(|p| p.name)
        .collect()
}

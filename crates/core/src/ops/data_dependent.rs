//! Ops whose output sizes depend on the values of their inputs (torch's data-dependent ops):
//! during an export each such size is a fresh unbacked symbol (`u0`), bounded by what the op
//! knows (`nonzero` of a static shape: at most its number of elements), and bound again from
//! the actual output whenever the program runs.

use super::{ShapeCtx, a, err, numel, op, s, t};
use crate::sym::SymInt;

/// The largest value a count over these sizes can take, when they are static.
fn static_numel(shape: &[SymInt]) -> Option<i64> {
    numel(shape).as_static()
}

// nonzero(x) -> [u, rank] (int64)
op!(
    NONZERO = "aten.nonzero.default",
    |i, _| Ok(vec![t(i, 0)?.f_nonzero().map_err(err)?]),
    |sh, _, ctx: &mut ShapeCtx| {
        let x = s(sh, 0)?;
        let n = ctx.data_dependent(static_numel(x));
        Ok(vec![vec![n, SymInt::new(x.len() as i64)]])
    },
    data_dependent
);

// masked_select(x, mask) -> [u]: the elements of the broadcast x where mask is true.
op!(
    MASKED_SELECT = "aten.masked_select.default",
    |i, _| Ok(vec![t(i, 0)?.f_masked_select(t(i, 1)?).map_err(err)?]),
    |sh, _, ctx: &mut ShapeCtx| {
        let b = super::broadcast(&[s(sh, 0)?, s(sh, 1)?], ctx)?;
        let n = ctx.data_dependent(static_numel(&b));
        Ok(vec![vec![n]])
    },
    data_dependent
);

// bincount(x, minlength) -> [u] with u = max(max(x) + 1, minlength) (no weights).
op!(
    BINCOUNT = "aten.bincount.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_bincount(None::<&tch::Tensor>, a(at, 0)?.int()?)
            .map_err(err)?
    ]),
    |sh, _, ctx: &mut ShapeCtx| {
        s(sh, 0)?;
        Ok(vec![vec![ctx.data_dependent(None)]])
    },
    data_dependent
);

// repeat_interleave(x, repeats) -> [u]: each element of the 1-D x repeated repeats[i] times
// (`torch.repeat_interleave(x, repeats)` with a tensor of counts), u = sum(repeats).
op!(
    REPEAT_INTERLEAVE_TENSOR = "aten.repeat_interleave.self_Tensor",
    |i, _| Ok(vec![
        t(i, 0)?
            .f_repeat_interleave_self_tensor(t(i, 1)?, Some(0), None::<i64>)
            .map_err(err)?
    ]),
    |sh, _, ctx: &mut ShapeCtx| {
        if s(sh, 0)?.len() != 1 || s(sh, 1)?.len() != 1 {
            return Err(
                "repeat_interleave with tensor repeats expects 1-D values and repeats".to_owned(),
            );
        }
        Ok(vec![vec![ctx.data_dependent(None)]])
    },
    data_dependent
);

//! Reductions over dims (`dims` empty means every dim), with `keepdim`.

use super::{ShapeCtx, a, err, norm_dim, op, s, t};
use crate::{graph::Attr, sym::SymInt};

type Shapes = Vec<Vec<SymInt>>;

fn reduced(x: &[SymInt], dims: &[i64], keepdim: bool) -> Result<Vec<SymInt>, String> {
    let dims: Vec<usize> = if dims.is_empty() {
        (0..x.len()).collect()
    } else {
        dims.iter()
            .map(|d| norm_dim(*d, x.len()))
            .collect::<Result<_, _>>()?
    };
    Ok(x.iter()
        .enumerate()
        .filter_map(|(i, d)| {
            if !dims.contains(&i) {
                Some(d.clone())
            } else if keepdim {
                Some(SymInt::new(1))
            } else {
                None
            }
        })
        .collect())
}

/// Rule of `op(x, dims, keepdim)`.
fn dims_rule(sh: &[Option<&[SymInt]>], at: &[Attr], _: &mut ShapeCtx) -> Result<Shapes, String> {
    Ok(vec![reduced(
        s(sh, 0)?,
        &a(at, 0)?.ints()?,
        a(at, 1)?.bool()?,
    )?])
}

/// Rule of `op(x, dim, keepdim)` returning values and indices.
fn dim_pair_rule(
    sh: &[Option<&[SymInt]>],
    at: &[Attr],
    _: &mut ShapeCtx,
) -> Result<Shapes, String> {
    let out = reduced(s(sh, 0)?, &[a(at, 0)?.int()?], a(at, 1)?.bool()?)?;
    Ok(vec![out.clone(), out])
}

/// `None` for "every dim" (libtorch's optional dim list).
fn opt_dims(at: &Attr) -> Result<Option<Vec<i64>>, String> {
    let d = at.ints()?;
    Ok(if d.is_empty() { None } else { Some(d) })
}

op!(
    SUM = "aten.sum.dim_IntList",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_sum_dim_intlist(opt_dims(a(at, 0)?)?, a(at, 1)?.bool()?, None::<tch::Kind>)
            .map_err(err)?
    ]),
    dims_rule
);
op!(
    MEAN = "aten.mean.dim",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_mean_dim(opt_dims(a(at, 0)?)?, a(at, 1)?.bool()?, None::<tch::Kind>)
            .map_err(err)?
    ]),
    dims_rule
);
op!(
    AMAX = "aten.amax.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_amax(a(at, 0)?.ints()?, a(at, 1)?.bool()?)
            .map_err(err)?
    ]),
    dims_rule
);
op!(
    AMIN = "aten.amin.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_amin(a(at, 0)?.ints()?, a(at, 1)?.bool()?)
            .map_err(err)?
    ]),
    dims_rule
);
op!(
    ANY = "aten.any.dims",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_any_dims(opt_dims(a(at, 0)?)?, a(at, 1)?.bool()?)
            .map_err(err)?
    ]),
    dims_rule
);
op!(
    ALL = "aten.all.dims",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_all_dims(opt_dims(a(at, 0)?)?, a(at, 1)?.bool()?)
            .map_err(err)?
    ]),
    dims_rule
);
op!(
    MAX_DIM = "aten.max.dim",
    |i, at| {
        let (v, idx) = t(i, 0)?
            .f_max_dim(a(at, 0)?.int()?, a(at, 1)?.bool()?)
            .map_err(err)?;
        Ok(vec![v, idx])
    },
    dim_pair_rule
);
op!(
    MIN_DIM = "aten.min.dim",
    |i, at| {
        let (v, idx) = t(i, 0)?
            .f_min_dim(a(at, 0)?.int()?, a(at, 1)?.bool()?)
            .map_err(err)?;
        Ok(vec![v, idx])
    },
    dim_pair_rule
);
op!(
    ARGMAX = "aten.argmax.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_argmax(a(at, 0)?.int()?, a(at, 1)?.bool()?)
            .map_err(err)?
    ]),
    |sh, at, _| Ok(vec![reduced(
        s(sh, 0)?,
        &[a(at, 0)?.int()?],
        a(at, 1)?.bool()?
    )?])
);

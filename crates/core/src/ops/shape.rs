//! Ops that move or select data: view/reshape, transpose/permute, (un)squeeze, expand,
//! cat/stack/split, narrow/slice/select, index_select/gather/scatter/index_put.

use super::{Assumption, Rel, ShapeCtx, a, broadcast_dim, err, norm_dim, numel, op, s, t};
use crate::{graph::Attr, sym::SymInt};

type Shapes = Vec<Vec<SymInt>>;

/// Shape of a view/reshape with at most one `-1`.
fn reshape_rule(
    shapes: &[Option<&[SymInt]>],
    at: &[Attr],
    _: &mut ShapeCtx,
) -> Result<Shapes, String> {
    let input = s(shapes, 0)?;
    let target = a(at, 0)?.syms()?;
    let mut unknown = None;
    let mut known = SymInt::new(1);
    for (i, d) in target.iter().enumerate() {
        if d.as_static() == Some(-1) {
            if unknown.replace(i).is_some() {
                return Err("only one dimension can be -1".to_owned());
            }
        } else {
            known = known * d;
        }
    }
    let mut out = target.to_vec();
    if let Some(i) = unknown {
        out[i] = numel(input).floor_div(&known);
    }
    Ok(vec![out])
}

op!(
    VIEW = "aten.view.default",
    |i, at| Ok(vec![t(i, 0)?.f_reshape(a(at, 0)?.ints()?).map_err(err)?]),
    reshape_rule
);
op!(
    RESHAPE = "aten.reshape.default",
    |i, at| Ok(vec![t(i, 0)?.f_reshape(a(at, 0)?.ints()?).map_err(err)?]),
    reshape_rule
);

op!(
    TRANSPOSE = "aten.transpose.int",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_transpose(a(at, 0)?.int()?, a(at, 1)?.int()?)
            .map_err(err)?
    ]),
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        let d0 = norm_dim(a(at, 0)?.int()?, out.len())?;
        let d1 = norm_dim(a(at, 1)?.int()?, out.len())?;
        out.swap(d0, d1);
        Ok(vec![out])
    }
);

op!(
    PERMUTE = "aten.permute.default",
    |i, at| Ok(vec![t(i, 0)?.f_permute(a(at, 0)?.ints()?).map_err(err)?]),
    |sh, at, _| {
        let input = s(sh, 0)?;
        let dims = a(at, 0)?.ints()?;
        let out = dims
            .iter()
            .map(|d| norm_dim(*d, input.len()).map(|d| input[d].clone()))
            .collect::<Result<_, _>>()?;
        Ok(vec![out])
    }
);

op!(
    UNSQUEEZE = "aten.unsqueeze.default",
    |i, at| Ok(vec![t(i, 0)?.f_unsqueeze(a(at, 0)?.int()?).map_err(err)?]),
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        let d = norm_dim(a(at, 0)?.int()?, out.len() + 1)?;
        out.insert(d, SymInt::new(1));
        Ok(vec![out])
    }
);

op!(
    SQUEEZE = "aten.squeeze.dim",
    |i, at| Ok(vec![t(i, 0)?.f_squeeze_dim(a(at, 0)?.int()?).map_err(err)?]),
    |sh, at, ctx| {
        let mut out = s(sh, 0)?.to_vec();
        if out.is_empty() {
            return Ok(vec![out]);
        }
        let d = norm_dim(a(at, 0)?.int()?, out.len())?;
        if out[d].hint() == 1 {
            ctx.assume_eq(
                &out[d],
                &SymInt::new(1),
                "squeeze removes a dimension of size 1",
            );
            out.remove(d);
        } else if !out[d].is_static() {
            ctx.assumptions.push(Assumption {
                lhs: out[d].expr().clone(),
                rel: Rel::Ne,
                rhs: SymInt::new(1).expr().clone(),
                reason: "squeeze keeps a dimension whose size is not 1".to_owned(),
            });
        }
        Ok(vec![out])
    }
);

op!(
    EXPAND = "aten.expand.default",
    |i, at| Ok(vec![
        t(i, 0)?.f_expand(a(at, 0)?.ints()?, false).map_err(err)?
    ]),
    |sh, at, ctx| {
        let input = s(sh, 0)?;
        let target = a(at, 0)?.syms()?;
        if target.len() < input.len() {
            return Err(format!(
                "expand to rank {} from rank {}",
                target.len(),
                input.len()
            ));
        }
        let lead = target.len() - input.len();
        let mut out = Vec::with_capacity(target.len());
        for (i, d) in target.iter().enumerate() {
            if i < lead {
                out.push(d.clone());
            } else if d.as_static() == Some(-1) {
                out.push(input[i - lead].clone());
            } else {
                out.push(broadcast_dim(&input[i - lead], d, ctx)?);
            }
        }
        Ok(vec![out])
    }
);

op!(
    CAT = "aten.cat.default",
    |i, at| {
        let ts = i
            .iter()
            .map(|x| x.ok_or("missing tensor in cat"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vec![
            tch::Tensor::f_cat(&ts, a(at, 0)?.int()?).map_err(err)?,
        ])
    },
    |sh, at, ctx| {
        let shapes: Vec<&[SymInt]> = sh
            .iter()
            .flatten()
            .copied()
            .filter(|s| !(s.len() == 1 && s[0].as_static() == Some(0)))
            .collect();
        let first = *shapes.first().ok_or("cat of no tensor")?;
        let d = norm_dim(a(at, 0)?.int()?, first.len())?;
        let mut out = first.to_vec();
        for other in &shapes[1..] {
            if other.len() != first.len() {
                return Err("cat of tensors of different ranks".to_owned());
            }
            for (k, (o, x)) in out.iter_mut().zip(other.iter()).enumerate() {
                if k == d {
                    *o = &*o + x;
                } else {
                    ctx.assume_eq(
                        o,
                        x,
                        "cat requires equal sizes outside the concatenated dimension",
                    );
                }
            }
        }
        Ok(vec![out])
    },
    list
);

op!(
    STACK = "aten.stack.default",
    |i, at| {
        let ts = i
            .iter()
            .map(|x| x.ok_or("missing tensor in stack"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vec![
            tch::Tensor::f_stack(&ts, a(at, 0)?.int()?).map_err(err)?,
        ])
    },
    |sh, at, ctx| {
        let first = s(sh, 0)?;
        for other in sh.iter().flatten() {
            for (x, y) in first.iter().zip(other.iter()) {
                ctx.assume_eq(x, y, "stack requires equal shapes");
            }
        }
        let d = norm_dim(a(at, 0)?.int()?, first.len() + 1)?;
        let mut out = first.to_vec();
        out.insert(d, SymInt::new(sh.len() as i64));
        Ok(vec![out])
    },
    list
);

op!(
    SPLIT_WITH_SIZES = "aten.split_with_sizes.default",
    |i, at| t(i, 0)?
        .f_split_with_sizes(a(at, 0)?.ints()?, a(at, 1)?.int()?)
        .map_err(err),
    |sh, at, ctx| {
        let input = s(sh, 0)?;
        let sizes = a(at, 0)?.syms()?;
        let d = norm_dim(a(at, 1)?.int()?, input.len())?;
        let total = sizes.iter().fold(SymInt::new(0), |acc, x| acc + x);
        ctx.assume_eq(
            &input[d],
            &total,
            "split_with_sizes requires the sizes to add up to the dimension",
        );
        Ok(sizes
            .iter()
            .map(|size| {
                let mut out = input.to_vec();
                out[d] = size.clone();
                out
            })
            .collect())
    }
);

/// Normalises a possibly negative start/end against a size, recording the sign it relied on.
fn normalize_bound(v: &SymInt, size: &SymInt, ctx: &mut ShapeCtx) -> SymInt {
    let zero = SymInt::new(0);
    let negative = v.hint() < 0;
    if !v.is_static() {
        ctx.assumptions.push(Assumption {
            lhs: v.expr().clone(),
            rel: if negative { Rel::Lt } else { Rel::Ge },
            rhs: zero.expr().clone(),
            reason: "the sign of a slice bound decides how it is normalised".to_owned(),
        });
    }
    if negative { size + v } else { v.clone() }
}

/// Clamps a normalised bound to `[0, size]`, recording which side it relied on.
fn clamp_bound(v: SymInt, size: &SymInt, ctx: &mut ShapeCtx) -> SymInt {
    if v.hint() < 0 {
        if !v.is_static() {
            ctx.assumptions.push(Assumption {
                lhs: v.expr().clone(),
                rel: Rel::Lt,
                rhs: SymInt::new(0).expr().clone(),
                reason: "a slice bound below 0 is clamped to 0".to_owned(),
            });
        }
        return SymInt::new(0);
    }
    if v.expr() == size.expr() {
        return v;
    }
    let (rel, out) = if v.hint() > size.hint() {
        (Rel::Gt, size.clone())
    } else {
        (Rel::Le, v.clone())
    };
    if !(v.is_static() && size.is_static()) {
        ctx.assumptions.push(Assumption {
            lhs: v.expr().clone(),
            rel,
            rhs: size.expr().clone(),
            reason: "a slice bound is clamped to the size of the dimension".to_owned(),
        });
    }
    out
}

// slice.Tensor(x, dim, start, end, step): start/end may be negative; end i64::MAX means "to
// the end" as in Python's `x[a:]`.
op!(
    SLICE = "aten.slice.Tensor",
    |i, at| {
        let x = t(i, 0)?;
        Ok(vec![
            x.f_slice(
                a(at, 0)?.int()?,
                a(at, 1)?.int()?,
                a(at, 2)?.int()?,
                a(at, 3)?.int()?,
            )
            .map_err(err)?,
        ])
    },
    |sh, at, ctx| {
        let mut out = s(sh, 0)?.to_vec();
        let d = norm_dim(a(at, 0)?.int()?, out.len())?;
        let size = out[d].clone();
        let start = normalize_bound(a(at, 1)?.sym()?, &size, ctx);
        let start = clamp_bound(start, &size, ctx);
        let end_attr = a(at, 2)?.sym()?;
        let end = if end_attr.as_static() == Some(i64::MAX) {
            size.clone()
        } else {
            let e = normalize_bound(end_attr, &size, ctx);
            clamp_bound(e, &size, ctx)
        };
        let step = a(at, 3)?.int()?;
        if step <= 0 {
            return Err(format!("slice step must be positive, got {step}"));
        }
        let len = if end.hint() <= start.hint() {
            if !(end.is_static() && start.is_static()) {
                ctx.assumptions.push(Assumption {
                    lhs: end.expr().clone(),
                    rel: Rel::Le,
                    rhs: start.expr().clone(),
                    reason: "an empty slice".to_owned(),
                });
            }
            SymInt::new(0)
        } else {
            (&end - &start + (step - 1)).floor_div(step)
        };
        out[d] = len;
        Ok(vec![out])
    }
);

// narrow(x, dim, start, length)
op!(
    NARROW = "aten.narrow.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_narrow(a(at, 0)?.int()?, a(at, 1)?.int()?, a(at, 2)?.int()?)
            .map_err(err)?
    ]),
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        let d = norm_dim(a(at, 0)?.int()?, out.len())?;
        out[d] = a(at, 2)?.sym()?.clone();
        Ok(vec![out])
    }
);

// select.int(x, dim, index)
op!(
    SELECT = "aten.select.int",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_select(a(at, 0)?.int()?, a(at, 1)?.int()?)
            .map_err(err)?
    ]),
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        let d = norm_dim(a(at, 0)?.int()?, out.len())?;
        out.remove(d);
        Ok(vec![out])
    }
);

// index_select(x, dim, index)
op!(
    INDEX_SELECT = "aten.index_select.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_index_select(a(at, 0)?.int()?, t(i, 1)?)
            .map_err(err)?
    ]),
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        let d = norm_dim(a(at, 0)?.int()?, out.len())?;
        out[d] = numel(s(sh, 1)?);
        Ok(vec![out])
    }
);

// gather(x, dim, index)
op!(
    GATHER = "aten.gather.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_gather(a(at, 0)?.int()?, t(i, 1)?, false)
            .map_err(err)?
    ]),
    |sh, _, _| Ok(vec![s(sh, 1)?.to_vec()])
);

// scatter.src(x, dim, index, src)
op!(
    SCATTER = "aten.scatter.src",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_scatter(a(at, 0)?.int()?, t(i, 1)?, t(i, 2)?)
            .map_err(err)?
    ]),
    |sh, _, _| Ok(vec![s(sh, 0)?.to_vec()])
);

// index_put(x, values, *indices, accumulate): inputs are x, values, then one optional index
// tensor per leading dimension (None for `:`).
op!(
    INDEX_PUT = "aten.index_put.default",
    |i, at| {
        let indices: Vec<Option<&tch::Tensor>> = i[2..].to_vec();
        Ok(vec![
            t(i, 0)?
                .f_index_put(&indices, t(i, 1)?, a(at, 0)?.bool()?)
                .map_err(err)?,
        ])
    },
    |sh, _, _| Ok(vec![s(sh, 0)?.to_vec()])
);

// Output shape of `x[idx0, idx1, ...]` for index tensors on the leading dimensions: the
// broadcast shape of the index tensors, then the remaining dimensions of `x` (the layout
// libtorch uses when the indexed dimensions are adjacent and lead).
op!(
    INDEX = "aten.index.Tensor",
    |i, _| {
        let indices: Vec<Option<&tch::Tensor>> = i[1..].to_vec();
        Ok(vec![t(i, 0)?.f_index(&indices).map_err(err)?])
    },
    |sh, _, ctx| {
        let x = s(sh, 0)?;
        let idx = &sh[1..];
        if idx.iter().any(Option::is_none) {
            return Err(
                "index with `:` before an index tensor is not supported; use index_select"
                    .to_owned(),
            );
        }
        let present: Vec<&[SymInt]> = idx.iter().flatten().copied().collect();
        let mut out = super::broadcast(&present, ctx)?;
        out.extend(x.iter().skip(idx.len()).cloned());
        Ok(vec![out])
    }
);

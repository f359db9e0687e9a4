//! Ops of mixture-of-experts routing and their kin: `one_hot`, `index_add`, `scatter_add`,
//! `sort`, `repeat_interleave` with an integer count. Their output sizes follow from the input
//! sizes (the data-dependent ones are in [`super::data_dependent`]).

use super::{a, err, norm_dim, op, s, t};
use crate::sym::SymInt;

// one_hot(x, num_classes) -> x.shape + [num_classes] (int64)
op!(
    ONE_HOT = "aten.one_hot.default",
    |i, at| Ok(vec![t(i, 0)?.f_one_hot(a(at, 0)?.int()?).map_err(err)?]),
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        out.push(SymInt::new(a(at, 0)?.int()?));
        Ok(vec![out])
    }
);

// index_add(x, index, source, dim): x with source's slices added at index along dim.
op!(
    INDEX_ADD = "aten.index_add.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_index_add(a(at, 0)?.int()?, t(i, 1)?, t(i, 2)?)
            .map_err(err)?
    ]),
    |sh, at, ctx| {
        let (x, index, src) = (s(sh, 0)?, s(sh, 1)?, s(sh, 2)?);
        let d = norm_dim(a(at, 0)?.int()?, x.len())?;
        if src.len() != x.len() || index.len() > 1 {
            return Err(format!(
                "index_add: source of rank {} into a tensor of rank {} with an index of rank {}",
                src.len(),
                x.len(),
                index.len()
            ));
        }
        let n = super::numel(index);
        ctx.assume_eq(&src[d], &n, "index_add: one source slice per index");
        Ok(vec![x.to_vec()])
    }
);

// scatter_add(x, index, src, dim): x with src added at index along dim.
op!(
    SCATTER_ADD = "aten.scatter_add.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_scatter_add(a(at, 0)?.int()?, t(i, 1)?, t(i, 2)?)
            .map_err(err)?
    ]),
    |sh, _, _| Ok(vec![s(sh, 0)?.to_vec()])
);

// sort(x, dim, descending) -> (values, indices)
op!(
    SORT = "aten.sort.default",
    |i, at| {
        let (v, idx) = t(i, 0)?
            .f_sort(a(at, 0)?.int()?, a(at, 1)?.bool()?)
            .map_err(err)?;
        Ok(vec![v, idx])
    },
    |sh, at, _| {
        let x = s(sh, 0)?.to_vec();
        norm_dim(a(at, 0)?.int()?, x.len())?;
        Ok(vec![x.clone(), x])
    }
);

// repeat_interleave.self_int(x, repeats, dim): each slice along dim repeated `repeats` times.
op!(
    REPEAT_INTERLEAVE = "aten.repeat_interleave.self_int",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_repeat_interleave_self_int(a(at, 0)?.int()?, a(at, 1)?.int()?, None)
            .map_err(err)?
    ]),
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        let d = norm_dim(a(at, 1)?.int()?, out.len())?;
        out[d] = &out[d] * a(at, 0)?.int()?;
        Ok(vec![out])
    }
);

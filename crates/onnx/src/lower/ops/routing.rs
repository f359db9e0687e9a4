//! Lowerings of the data-dependent ops (`nonzero`, `masked_select`, `bincount`) and of the
//! mixture-of-experts routing ops (`one_hot`, `index_add`, `scatter_add`, `sort`,
//! `repeat_interleave`).
//!
//! - A data-dependent size is read at run time from the output that carries it (the lowering
//!   registers every fresh symbol of a node's outputs as a source), so the shape arithmetic
//!   after `nonzero` works on any count, zero included.
//! - `nonzero` is NonZero then a Transpose (ONNX gives `[rank, n]`, torch `[n, rank]`).
//! - `index_add` is ScatterND with `reduction="add"` along a leading axis (the axis is moved
//!   first and back with Transposes); `scatter_add` is ScatterElements with
//!   `reduction="add"`.
//! - `sort` is TopK over the whole axis; `one_hot` and `bincount` compare with a Range.

use onnx_diagnostic_core::SymInt;
use tch::Kind;

use super::{A, Ctx, Entry, LowerError};

fn nonzero(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let x = c.input(0)?;
    let nz = c.b.op("NonZero", &[&x], Vec::new());
    c.emit_out("Transpose", &[&nz], vec![("perm", A::Ints(vec![1, 0]))])
}

/// The broadcast of two shapes (the engine checked they broadcast).
fn broadcast_shape(x: &[SymInt], y: &[SymInt]) -> Vec<SymInt> {
    let rank = x.len().max(y.len());
    (0..rank)
        .map(|j| {
            let a = (j + x.len()).checked_sub(rank).map(|k| x[k].clone());
            let b = (j + y.len()).checked_sub(rank).map(|k| y[k].clone());
            match (a, b) {
                (Some(a), Some(b)) if a.as_static() == Some(1) => b,
                (Some(a), _) => a,
                (None, Some(b)) => b,
                (None, None) => SymInt::new(1),
            }
        })
        .collect()
}

fn masked_select(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let (xs, ms) = (c.shape(0)?, c.shape(1)?);
    let shape = broadcast_shape(&xs, &ms);
    let mut x = c.input(0)?;
    let mut mask = c.input_as(1, Kind::Bool)?;
    let same = |s: &[SymInt]| {
        s.iter()
            .map(SymInt::expr)
            .eq(shape.iter().map(SymInt::expr))
    };
    if !same(&xs) || !same(&ms) {
        let target = c.b.shape(&shape)?;
        if !same(&xs) {
            x = c.b.op("Expand", &[&x, &target], Vec::new());
        }
        if !same(&ms) {
            mask = c.b.op("Expand", &[&mask, &target], Vec::new());
        }
    }
    let flat = c.b.ints(&[-1])?;
    let x = c.b.op("Reshape", &[&x, &flat], Vec::new());
    let mask = c.b.op("Reshape", &[&mask, &flat], Vec::new());
    c.emit_out("Compress", &[&x, &mask], vec![("axis", A::Int(0))])
}

/// `counts[v] = sum(x == v)` for `v` in `0..n` (a 0-D int64 `n`), as int64 `[n]`.
fn count_values(c: &mut Ctx<'_>, x: &str, n: &str) -> Result<String, LowerError> {
    let (zero, one) = (c.b.scalar(0.0, Kind::Int64)?, c.b.scalar(1.0, Kind::Int64)?);
    let values = c.b.op("Range", &[&zero, n, &one], Vec::new());
    let axes = c.b.ints(&[-1])?;
    let col = c.b.op("Unsqueeze", &[x, &axes], Vec::new());
    let eq = c.b.op("Equal", &[&col, &values], Vec::new());
    let eq = c.cast(&eq, Kind::Bool, Kind::Int64)?;
    let first = c.b.ints(&[0])?;
    Ok(c.b.op("ReduceSum", &[&eq, &first], vec![("keepdims", A::Int(0))]))
}

fn bincount(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let minlength = c.int(0)?;
    let x = c.input_as(0, Kind::Int64)?;
    // max(max(x) + 1, minlength), also for an empty x: the max of x and minlength - 1.
    let floor = c.b.ints(&[minlength - 1])?;
    let with_floor = c.b.op("Concat", &[&x, &floor], vec![("axis", A::Int(0))]);
    let top =
        c.b.op("ReduceMax", &[&with_floor], vec![("keepdims", A::Int(0))]);
    let one = c.b.scalar(1.0, Kind::Int64)?;
    let n = c.b.op("Add", &[&top, &one], Vec::new());
    let counts = count_values(c, &x, &n)?;
    c.finish_as(&counts, Kind::Int64)
}

fn one_hot(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let n = c.int(0)?;
    let x = c.input_as(0, Kind::Int64)?;
    let values = c.b.constant(
        &tch::Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)),
        "classes",
    )?;
    let axes = c.b.ints(&[-1])?;
    let col = c.b.op("Unsqueeze", &[&x, &axes], Vec::new());
    let eq = c.b.op("Equal", &[&col, &values], Vec::new());
    c.finish_as(&eq, Kind::Bool)
}

/// The permutation swapping axes 0 and `d`.
fn swap_first(rank: usize, d: usize) -> Vec<i64> {
    let mut perm: Vec<i64> = (0..rank as i64).collect();
    perm.swap(0, d);
    perm
}

/// The type a `reduction="add"` scatter computes in: float32 for the half types, which ONNX
/// Runtime's CPU ScatterND and ScatterElements do not add (each index is added once per
/// node in the experts' use, so the result is the half-precision sum rounded once).
pub(super) fn accumulation_kind(k: Kind) -> Kind {
    if matches!(k, Kind::Half | Kind::BFloat16) {
        Kind::Float
    } else {
        k
    }
}

fn index_add(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let rank = c.shape(0)?.len();
    let d = c.dim(0, rank)? as usize;
    let out_kind = c.out_kind()?;
    let k = accumulation_kind(out_kind);
    let mut x = c.input_as(0, k)?;
    let mut src = c.input_as(2, k)?;
    let idx = c.input_as(1, Kind::Int64)?;
    let as_column = c.b.ints(&[-1, 1])?;
    let idx = c.b.op("Reshape", &[&idx, &as_column], Vec::new());
    let perm = swap_first(rank, d);
    if d != 0 {
        x =
            c.b.op("Transpose", &[&x], vec![("perm", A::Ints(perm.clone()))]);
        src =
            c.b.op("Transpose", &[&src], vec![("perm", A::Ints(perm.clone()))]);
    }
    let attrs = vec![("reduction", A::Str("add"))];
    let mut y = c.b.op("ScatterND", &[&x, &idx, &src], attrs);
    if d != 0 {
        y = c.b.op("Transpose", &[&y], vec![("perm", A::Ints(perm))]);
    }
    c.finish_as(&y, k)
}

fn scatter_add(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    super::scatter_with(c, Some("add"))
}

fn sort(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let shape = c.shape(0)?;
    let axis = c.dim(0, shape.len())?;
    let descending = c.bool(1)?;
    let x = c.input(0)?;
    let k = c.b.sym(&shape[axis as usize])?;
    let outs = vec![c.out(0)?, c.out(1)?];
    c.b.emit(
        "TopK",
        &[&x, &k],
        &outs,
        vec![
            ("axis", A::Int(axis)),
            ("largest", A::Int(i64::from(descending))),
            ("sorted", A::Int(1)),
        ],
    );
    Ok(())
}

fn repeat_interleave(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let repeats = c.int(0)?;
    let rank = c.shape(0)?.len();
    let d = c.dim(1, rank)? as usize;
    let x = c.input(0)?;
    let axes = c.b.ints(&[d as i64 + 1])?;
    let col = c.b.op("Unsqueeze", &[&x, &axes], Vec::new());
    let mut reps = vec![1; rank + 1];
    reps[d + 1] = repeats;
    let reps = c.b.ints(&reps)?;
    let tiled = c.b.op("Tile", &[&col, &reps], Vec::new());
    let out_shape = c.out_info(0)?.shape.clone();
    let target = c.b.shape(&out_shape)?;
    c.emit_out("Reshape", &[&tiled, &target], Vec::new())
}

/// `repeat_interleave(x, repeats)` with 1-D tensor counts: output `j` is `x[i]` for the `i`
/// whose range `cumsum(repeats)[i-1] <= j < cumsum(repeats)[i]` holds it, i.e. the number of
/// prefix sums at or below `j`, gathered from `x` (any total, zero included).
fn repeat_interleave_tensor(c: &mut Ctx<'_>) -> Result<(), LowerError> {
    let k = c.out_kind()?;
    let x = c.input_as(0, k)?;
    let reps = c.input_as(1, Kind::Int64)?;
    let axis = c.b.scalar(0.0, Kind::Int64)?;
    let ends = c.b.op("CumSum", &[&reps, &axis], Vec::new());
    // The total, `sum(repeats)`, also of no repeats (ReduceSum mishandles empty inputs, see
    // `integer_sum`).
    let total = super::sum_last_keepdim(c, &reps, Kind::Int64)?;
    let scalar = c.b.ints(&[])?;
    let total = c.b.op("Reshape", &[&total, &scalar], Vec::new());
    let (zero, one) = (c.b.scalar(0.0, Kind::Int64)?, c.b.scalar(1.0, Kind::Int64)?);
    let j = c.b.op("Range", &[&zero, &total, &one], Vec::new());
    let last = c.b.ints(&[-1])?;
    let col = c.b.op("Unsqueeze", &[&j, &last], Vec::new());
    let passed = c.b.op("GreaterOrEqual", &[&col, &ends], Vec::new());
    let passed = c.cast(&passed, Kind::Bool, Kind::Int64)?;
    let index = super::sum_last_keepdim(c, &passed, Kind::Int64)?;
    let index = c.b.op("Squeeze", &[&index, &last], Vec::new());
    c.emit_out("Gather", &[&x, &index], vec![("axis", A::Int(0))])
}

/// The lowerings of this file.
pub(crate) static TABLE: &[Entry] = &[
    Entry {
        op: "aten.nonzero.default",
        min_opset: 13,
        lower: nonzero,
    },
    Entry {
        op: "aten.masked_select.default",
        min_opset: 13,
        lower: masked_select,
    },
    Entry {
        op: "aten.bincount.default",
        min_opset: 13,
        lower: bincount,
    },
    Entry {
        op: "aten.one_hot.default",
        min_opset: 13,
        lower: one_hot,
    },
    Entry {
        op: "aten.index_add.default",
        min_opset: 16,
        lower: index_add,
    },
    Entry {
        op: "aten.scatter_add.default",
        min_opset: 16,
        lower: scatter_add,
    },
    Entry {
        op: "aten.sort.default",
        min_opset: 11,
        lower: sort,
    },
    Entry {
        op: "aten.repeat_interleave.self_Tensor",
        min_opset: 13,
        lower: repeat_interleave_tensor,
    },
    Entry {
        op: "aten.repeat_interleave.self_int",
        min_opset: 13,
        lower: repeat_interleave,
    },
];

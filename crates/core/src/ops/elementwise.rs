//! Elementwise ops: arithmetic and comparisons with broadcasting, scalar forms, activations,
//! math functions, casts, `where`, `masked_fill`, `clamp`, softmax-like ops along a dim.

use tch::Scalar;

use super::{a, broadcast_all, err, op, same_as_first, t};
use crate::graph::Attr;

/// A scalar attribute as libtorch's `Scalar` (integers stay integers, as Python ints do).
pub(crate) fn scalar(attr: &Attr) -> Result<Scalar, String> {
    match attr {
        Attr::Int(v) => Ok(Scalar::int(v.hint())),
        Attr::Float(v) => Ok(Scalar::float(*v)),
        Attr::Bool(v) => Ok(Scalar::int(i64::from(*v))),
        other => Err(format!("expected a scalar, got {other}")),
    }
}

macro_rules! binary {
    ($($id:ident = $name:literal => $method:ident;)*) => {$(
        op!($id = $name, |i, _| Ok(vec![t(i, 0)?.$method(t(i, 1)?).map_err(err)?]), broadcast_all);
    )*};
}

binary! {
    ADD = "aten.add.Tensor" => f_add;
    SUB = "aten.sub.Tensor" => f_sub;
    MUL = "aten.mul.Tensor" => f_mul;
    DIV = "aten.div.Tensor" => f_div;
    FLOOR_DIVIDE = "aten.floor_divide.default" => f_floor_divide;
    REMAINDER = "aten.remainder.Tensor" => f_remainder_tensor;
    POW = "aten.pow.Tensor_Tensor" => f_pow;
    MAXIMUM = "aten.maximum.default" => f_maximum;
    MINIMUM = "aten.minimum.default" => f_minimum;
    EQ = "aten.eq.Tensor" => f_eq_tensor;
    NE = "aten.ne.Tensor" => f_ne_tensor;
    LT = "aten.lt.Tensor" => f_lt_tensor;
    LE = "aten.le.Tensor" => f_le_tensor;
    GT = "aten.gt.Tensor" => f_gt_tensor;
    GE = "aten.ge.Tensor" => f_ge_tensor;
    LOGICAL_AND = "aten.logical_and.default" => f_logical_and;
    LOGICAL_OR = "aten.logical_or.default" => f_logical_or;
    BITWISE_AND = "aten.bitwise_and.Tensor" => f_bitwise_and_tensor;
    BITWISE_OR = "aten.bitwise_or.Tensor" => f_bitwise_or_tensor;
}

macro_rules! with_scalar {
    ($($id:ident = $name:literal => $method:ident;)*) => {$(
        op!($id = $name, |i, at| Ok(vec![t(i, 0)?.$method(scalar(a(at, 0)?)?).map_err(err)?]), same_as_first);
    )*};
}

with_scalar! {
    ADD_SCALAR = "aten.add.Scalar" => f_add_scalar;
    SUB_SCALAR = "aten.sub.Scalar" => f_sub_scalar;
    MUL_SCALAR = "aten.mul.Scalar" => f_mul_scalar;
    DIV_SCALAR = "aten.div.Scalar" => f_div_scalar;
    RSUB_SCALAR = "aten.rsub.Scalar" => f_rsub_scalar;
    POW_SCALAR = "aten.pow.Tensor_Scalar" => f_pow_tensor_scalar;
    EQ_SCALAR = "aten.eq.Scalar" => f_eq;
    NE_SCALAR = "aten.ne.Scalar" => f_ne;
    LT_SCALAR = "aten.lt.Scalar" => f_lt;
    LE_SCALAR = "aten.le.Scalar" => f_le;
    GT_SCALAR = "aten.gt.Scalar" => f_gt;
    GE_SCALAR = "aten.ge.Scalar" => f_ge;
}

macro_rules! unary {
    ($($id:ident = $name:literal => $method:ident;)*) => {$(
        op!($id = $name, |i, _| Ok(vec![t(i, 0)?.$method().map_err(err)?]), same_as_first);
    )*};
}

unary! {
    NEG = "aten.neg.default" => f_neg;
    EXP = "aten.exp.default" => f_exp;
    LOG = "aten.log.default" => f_log;
    SQRT = "aten.sqrt.default" => f_sqrt;
    RSQRT = "aten.rsqrt.default" => f_rsqrt;
    SIN = "aten.sin.default" => f_sin;
    COS = "aten.cos.default" => f_cos;
    ABS = "aten.abs.default" => f_abs;
    TANH = "aten.tanh.default" => f_tanh;
    SIGMOID = "aten.sigmoid.default" => f_sigmoid;
    RELU = "aten.relu.default" => f_relu;
    SILU = "aten.silu.default" => f_silu;
    LOGICAL_NOT = "aten.logical_not.default" => f_logical_not;
    BITWISE_NOT = "aten.bitwise_not.default" => f_bitwise_not;
    CONTIGUOUS = "aten.contiguous.default" => f_contiguous;
    ISINF = "aten.isinf.default" => f_isinf;
    ISNAN = "aten.isnan.default" => f_isnan;
}

// gelu(x, approximate='none'|'tanh')
op!(
    GELU = "aten.gelu.default",
    |i, at| Ok(vec![t(i, 0)?.f_gelu(a(at, 0)?.str()?).map_err(err)?]),
    same_as_first
);

// clamp(x, min=None, max=None)
op!(
    CLAMP = "aten.clamp.default",
    |i, at| {
        let x = t(i, 0)?;
        let out = match (a(at, 0)?, a(at, 1)?) {
            (Attr::None, Attr::None) => x.f_to_dtype(x.kind(), false, true),
            (lo, Attr::None) => x.f_clamp_min(scalar(lo)?),
            (Attr::None, hi) => x.f_clamp_max(scalar(hi)?),
            (lo, hi) => x.f_clamp(scalar(lo)?, scalar(hi)?),
        };
        Ok(vec![out.map_err(err)?])
    },
    same_as_first
);

// _to_copy(x, dtype=None, device=None): a dtype cast, a device move, or both.
op!(
    TO_COPY = "aten._to_copy.default",
    |i, at| {
        let mut x = t(i, 0)?.shallow_clone();
        if let Attr::Kind(kind) = a(at, 0)? {
            x = x.f_to_kind(*kind).map_err(err)?;
        }
        if let Attr::Str(_) = a(at, 1)? {
            x = x.f_to_device(super::device(a(at, 1)?)?).map_err(err)?;
        }
        Ok(vec![x])
    },
    same_as_first
);

// where.self(condition, x, y)
op!(
    WHERE = "aten.where.self",
    |i, _| Ok(vec![
        t(i, 1)?.f_where_self(t(i, 0)?, t(i, 2)?).map_err(err)?
    ]),
    broadcast_all
);

// masked_fill.Scalar(x, mask, value)
op!(
    MASKED_FILL = "aten.masked_fill.Scalar",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_masked_fill(t(i, 1)?, scalar(a(at, 0)?)?)
            .map_err(err)?
    ]),
    broadcast_all
);

// softmax.int(x, dim), log_softmax.int(x, dim), cumsum(x, dim)
op!(
    SOFTMAX = "aten.softmax.int",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_softmax(a(at, 0)?.int()?, None::<tch::Kind>)
            .map_err(err)?
    ]),
    same_as_first
);
op!(
    LOG_SOFTMAX = "aten.log_softmax.int",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_log_softmax(a(at, 0)?.int()?, None::<tch::Kind>)
            .map_err(err)?
    ]),
    same_as_first
);
op!(
    CUMSUM = "aten.cumsum.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_cumsum(a(at, 0)?.int()?, None::<tch::Kind>)
            .map_err(err)?
    ]),
    same_as_first
);

// triu(x, diagonal), tril(x, diagonal)
op!(
    TRIU = "aten.triu.default",
    |i, at| Ok(vec![t(i, 0)?.f_triu(a(at, 0)?.int()?).map_err(err)?]),
    same_as_first
);
op!(
    TRIL = "aten.tril.default",
    |i, at| Ok(vec![t(i, 0)?.f_tril(a(at, 0)?.int()?).map_err(err)?]),
    same_as_first
);

// clone(x): a copy with its own storage.
op!(
    CLONE = "aten.clone.default",
    |i, _| {
        let x = t(i, 0)?;
        Ok(vec![x.f_to_dtype(x.kind(), false, true).map_err(err)?])
    },
    same_as_first
);

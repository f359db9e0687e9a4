//! `max_diff`: how far two nested outputs are, with the keys and formulas of onnx-diagnostic's
//! `max_diff` (helpers/helper.py, version 0.9).
//!
//! For two tensors of one shape, both are cast to float64 with NaN replaced by 1e10 (and ±inf
//! by ±f64::MAX, as numpy's `nan_to_num`); then `abs` is the largest absolute difference,
//! `rel` the largest `|got - expected| / (|expected| + 1e-3)`, `sum` the sum of absolute
//! differences, `n` the number of elements and `dnan` the number of positions where exactly one
//! side is NaN. Nested values are compared leaf by leaf: `abs`, `rel` and `dnan` take the
//! maximum, `sum` and `n` add up. A difference of structure or shape gives infinity everywhere.

use onnx_diagnostic_core::Value;

/// Discrepancies between an expected and an obtained value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diff {
    /// Largest absolute difference.
    pub abs: f64,
    /// Largest relative difference.
    pub rel: f64,
    /// Sum of absolute differences.
    pub sum: f64,
    /// Number of compared elements.
    pub n: f64,
    /// Positions where exactly one side is NaN (maximum over leaves).
    pub dnan: f64,
}

impl Diff {
    const ZERO: Diff = Diff {
        abs: 0.0,
        rel: 0.0,
        sum: 0.0,
        n: 0.0,
        dnan: 0.0,
    };
    const MISMATCH: Diff = Diff {
        abs: f64::INFINITY,
        rel: f64::INFINITY,
        sum: f64::INFINITY,
        n: f64::INFINITY,
        dnan: f64::INFINITY,
    };

    fn merge(self, other: Diff) -> Diff {
        Diff {
            abs: self.abs.max(other.abs),
            rel: self.rel.max(other.rel),
            sum: self.sum + other.sum,
            n: self.n + other.n,
            dnan: self.dnan.max(other.dnan),
        }
    }
}

fn cleaned(t: &tch::Tensor) -> Result<tch::Tensor, tch::TchError> {
    t.f_to_kind(tch::Kind::Double)?
        .f_nan_to_num(1e10, None::<f64>, None::<f64>)
}

/// Elements compared at once: the float64 copies of a chunk take a few MiB, where the whole
/// logits of a large vocabulary would take gigabytes (and the time to fault their pages in).
const CHUNK: i64 = 1 << 18;

/// The difference of two tensors (see the module doc), computed chunk by chunk.
pub fn tensor_diff(expected: &tch::Tensor, got: &tch::Tensor) -> Diff {
    if expected.size() != got.size() {
        return Diff::MISMATCH;
    }
    if expected.numel() == 0 {
        return Diff::ZERO;
    }
    let compute = || -> Result<Diff, tch::TchError> {
        let flat = |t: &tch::Tensor| t.f_to_device(tch::Device::Cpu)?.f_reshape([-1]);
        let (ef, gf) = (flat(expected)?, flat(got)?);
        let n = ef.size()[0];
        let mut out = Diff {
            n: n as f64,
            ..Diff::ZERO
        };
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            let (ec, gc) = (ef.f_narrow(0, start, len)?, gf.f_narrow(0, start, len)?);
            let (mut e, g) = (cleaned(&ec)?, cleaned(&gc)?);
            let diff = g.f_sub(&e)?.f_abs_()?;
            let rdiff = diff.f_div(&e.f_abs_()?.f_add_scalar_(1e-3)?)?;
            let dnan = ec
                .f_isnan()?
                .f_logical_xor(&gc.f_isnan()?)?
                .f_sum(tch::Kind::Double)?;
            out.abs = out.abs.max(diff.f_max()?.f_double_value(&[])?);
            out.rel = out.rel.max(rdiff.f_max()?.f_double_value(&[])?);
            out.sum += diff.f_sum(tch::Kind::Double)?.f_double_value(&[])?;
            out.dnan += dnan.f_double_value(&[])?;
            start += len;
        }
        Ok(out)
    };
    compute().unwrap_or(Diff::MISMATCH)
}

/// The difference of two nested values (see the module doc).
pub fn max_diff(expected: &Value, got: &Value) -> Diff {
    match (expected, got) {
        (Value::Tensor(e), Value::Tensor(g)) => tensor_diff(e.as_tch(), g.as_tch()),
        (Value::None, Value::None) => Diff::ZERO,
        (Value::Int(a), Value::Int(b)) => scalar_diff(*a as f64, *b as f64),
        (Value::Float(a), Value::Float(b)) => scalar_diff(*a, *b),
        (Value::Bool(a), Value::Bool(b)) => {
            scalar_diff(f64::from(u8::from(*a)), f64::from(u8::from(*b)))
        }
        (Value::List(a) | Value::Tuple(a), Value::List(b) | Value::Tuple(b)) => {
            if a.len() != b.len() {
                return Diff::MISMATCH;
            }
            a.iter()
                .zip(b)
                .fold(Diff::ZERO, |acc, (x, y)| acc.merge(max_diff(x, y)))
        }
        (Value::Dict(a), Value::Dict(b)) => {
            let mut a: Vec<_> = a.iter().collect();
            let mut b: Vec<_> = b.iter().collect();
            a.sort_by(|x, y| x.0.cmp(&y.0));
            b.sort_by(|x, y| x.0.cmp(&y.0));
            if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0) {
                return Diff::MISMATCH;
            }
            a.iter()
                .zip(&b)
                .fold(Diff::ZERO, |acc, (x, y)| acc.merge(max_diff(&x.1, &y.1)))
        }
        (Value::Custom(a), Value::Custom(b)) if a.class_name() == b.class_name() => {
            max_diff(&Value::Dict(a.fields()), &Value::Dict(b.fields()))
        }
        _ => Diff::MISMATCH,
    }
}

fn scalar_diff(e: f64, g: f64) -> Diff {
    let d = (e - g).abs();
    Diff {
        abs: d,
        rel: d / (e.abs() + 1e-5),
        sum: d,
        n: 1.0,
        dnan: 0.0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What the Python package does not compare (crates/onnx/tests/oracle.rs checks the
    /// formulas against it): other shapes or lengths are infinitely far.
    #[test]
    fn mismatched_structures_are_infinitely_far() {
        let e = tch::Tensor::from_slice(&[1.0f32, -2.0, f32::NAN, 4.0]);
        let other_shape = tch::Tensor::zeros([2, 2], (tch::Kind::Float, tch::Device::Cpu));
        assert_eq!(tensor_diff(&e, &other_shape).abs, f64::INFINITY);
        let t = |v: &[f32]| Value::from(tch::Tensor::from_slice(v));
        let e = Value::Tuple(vec![t(&[1.0, 2.0]), t(&[0.0])]);
        let short = Value::List(vec![t(&[1.0, 2.0])]);
        assert_eq!(max_diff(&e, &short).n, f64::INFINITY);
    }
}

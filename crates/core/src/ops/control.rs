//! Control flow: `cond` and `scan` (torch's higher-order ops, evaluated by the graph evaluator
//! since they run sub-graphs) and the runtime assertion of `check` on a tensor.

use super::{ShapeCtx, op};
use crate::{graph::Attr, sym::SymInt};

type Shapes = Vec<Vec<SymInt>>;

fn higher_order(_: &[Option<&tch::Tensor>], _: &[Attr]) -> Result<Vec<tch::Tensor>, String> {
    Err("a higher-order op runs its sub-graphs through the graph evaluator".to_owned())
}

fn higher_order_shape(
    _: &[Option<&[SymInt]>],
    _: &[Attr],
    _: &mut ShapeCtx,
) -> Result<Shapes, String> {
    Err("the shapes of a higher-order op come from its sub-graphs".to_owned())
}

op!(COND = "higher_order.cond", higher_order, higher_order_shape);
op!(SCAN = "higher_order.scan", higher_order, higher_order_shape);

/// Whether every element of a boolean tensor is true (the truth of a predicate or a check).
pub(crate) fn all_true(t: &tch::Tensor) -> Result<bool, String> {
    t.f_all()
        .and_then(|x| x.f_int64_value(&[]))
        .map(|v| v != 0)
        .map_err(super::err)
}

/// `aten._assert_async.msg(cond, message)`: fails with the message when `cond` is false.
fn assert_kernel(i: &[Option<&tch::Tensor>], a: &[Attr]) -> Result<Vec<tch::Tensor>, String> {
    let c = i
        .first()
        .copied()
        .flatten()
        .ok_or("assert without a condition")?;
    if !all_true(c)? {
        let msg = match a.first() {
            Some(Attr::Text(m)) => m.clone(),
            _ => "assertion failed".to_owned(),
        };
        return Err(format!("check failed: {msg}"));
    }
    Ok(Vec::new())
}

fn assert_shape(_: &[Option<&[SymInt]>], _: &[Attr], _: &mut ShapeCtx) -> Result<Shapes, String> {
    Ok(Vec::new())
}

op!(
    ASSERT = "aten._assert_async.msg",
    assert_kernel,
    assert_shape
);

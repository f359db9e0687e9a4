//! Ops that create tensors from sizes: arange, zeros, ones, full. Sizes may be symbolic.

use tch::Device;

use super::elementwise::scalar;
use super::{a, err, op};
use crate::{graph::Attr, sym::SymInt};

/// The device attribute (`'cpu'`, `'cuda'`).
pub(crate) fn device(at: &Attr) -> Result<Device, String> {
    match at.str()? {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => Err(format!("unknown device {other}")),
    }
}

// arange.start_step(start, end, step, dtype, device)
op!(
    ARANGE = "aten.arange.start_step",
    |_, at| {
        let opts = (a(at, 3)?.kind()?, device(a(at, 4)?)?);
        Ok(vec![
            tch::Tensor::f_arange_start_step(
                scalar(a(at, 0)?)?,
                scalar(a(at, 1)?)?,
                scalar(a(at, 2)?)?,
                opts,
            )
            .map_err(err)?,
        ])
    },
    |_, at, _| {
        let start = a(at, 0)?.sym()?;
        let end = a(at, 1)?.sym()?;
        let step = a(at, 2)?.int()?;
        if step <= 0 {
            return Err("arange with a non-positive step".to_owned());
        }
        let len = (end - start + (step - 1)).floor_div(step);
        Ok(vec![vec![if len.hint() < 0 {
            SymInt::new(0)
        } else {
            len
        }]])
    }
);

fn size_rule(
    _: &[Option<&[SymInt]>],
    at: &[Attr],
    _: &mut super::ShapeCtx,
) -> Result<Vec<Vec<SymInt>>, String> {
    Ok(vec![a(at, 0)?.syms()?.to_vec()])
}

// zeros(size, dtype, device), ones(size, dtype, device), full(size, value, dtype, device)
op!(
    ZEROS = "aten.zeros.default",
    |_, at| Ok(vec![
        tch::Tensor::f_zeros(a(at, 0)?.ints()?, (a(at, 1)?.kind()?, device(a(at, 2)?)?))
            .map_err(err)?
    ]),
    size_rule
);
op!(
    ONES = "aten.ones.default",
    |_, at| Ok(vec![
        tch::Tensor::f_ones(a(at, 0)?.ints()?, (a(at, 1)?.kind()?, device(a(at, 2)?)?))
            .map_err(err)?
    ]),
    size_rule
);
op!(
    FULL = "aten.full.default",
    |_, at| {
        let opts = (a(at, 2)?.kind()?, device(a(at, 3)?)?);
        Ok(vec![
            tch::Tensor::f_full(a(at, 0)?.ints()?, scalar(a(at, 1)?)?, opts).map_err(err)?,
        ])
    },
    size_rule
);

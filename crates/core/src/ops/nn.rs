//! Neural-network ops: linear/matmul/bmm, embedding, normalisations, convolution, pooling,
//! nearest and bilinear interpolation, constant padding, scaled dot-product attention, topk.

use super::{ShapeCtx, a, broadcast, err, norm_dim, op, s, same_as_first, t};
use crate::{graph::Attr, sym::SymInt};

type Shapes = Vec<Vec<SymInt>>;

fn last(shape: &[SymInt], what: &str) -> Result<SymInt, String> {
    shape
        .last()
        .cloned()
        .ok_or_else(|| format!("{what} has rank 0"))
}

// linear(x, weight, bias=None): x[..., in] @ weight[out, in]^T
op!(
    LINEAR = "aten.linear.default",
    |i, _| Ok(vec![
        t(i, 0)?
            .f_linear(t(i, 1)?, i.get(2).copied().flatten())
            .map_err(err)?
    ]),
    |sh, _, ctx| {
        let x = s(sh, 0)?;
        let w = s(sh, 1)?;
        if w.len() != 2 || x.is_empty() {
            return Err("linear expects x of rank >= 1 and a weight of rank 2".to_owned());
        }
        ctx.assume_eq(&last(x, "x")?, &w[1], "linear: in_features of x and weight");
        let mut out = x.to_vec();
        let n = out.len();
        out[n - 1] = w[0].clone();
        Ok(vec![out])
    }
);

fn matmul_rule(sh: &[Option<&[SymInt]>], _: &[Attr], ctx: &mut ShapeCtx) -> Result<Shapes, String> {
    let x = s(sh, 0)?;
    let y = s(sh, 1)?;
    if x.is_empty() || y.is_empty() {
        return Err("matmul of a scalar".to_owned());
    }
    let (xm, xk) = if x.len() == 1 {
        (None, &x[0])
    } else {
        (Some(&x[x.len() - 2]), &x[x.len() - 1])
    };
    let (yk, yn) = if y.len() == 1 {
        (&y[0], None)
    } else {
        (&y[y.len() - 2], Some(&y[y.len() - 1]))
    };
    ctx.assume_eq(xk, yk, "matmul: inner dimensions");
    let xb = if x.len() > 2 {
        &x[..x.len() - 2]
    } else {
        &[][..]
    };
    let yb = if y.len() > 2 {
        &y[..y.len() - 2]
    } else {
        &[][..]
    };
    let mut out = broadcast(&[xb, yb], ctx)?;
    out.extend(xm.cloned());
    out.extend(yn.cloned());
    Ok(vec![out])
}

op!(
    MATMUL = "aten.matmul.default",
    |i, _| Ok(vec![t(i, 0)?.f_matmul(t(i, 1)?).map_err(err)?]),
    matmul_rule
);
op!(
    BMM = "aten.bmm.default",
    |i, _| Ok(vec![t(i, 0)?.f_bmm(t(i, 1)?).map_err(err)?]),
    matmul_rule
);

// embedding(weight, indices)
op!(
    EMBEDDING = "aten.embedding.default",
    |i, _| Ok(vec![
        tch::Tensor::f_embedding(t(i, 0)?, t(i, 1)?, -1, false, false).map_err(err)?
    ]),
    |sh, _, _| {
        let w = s(sh, 0)?;
        let mut out = s(sh, 1)?.to_vec();
        out.push(last(w, "weight")?);
        Ok(vec![out])
    }
);

// layer_norm(x, normalized_shape, weight=None, bias=None, eps)
op!(
    LAYER_NORM = "aten.layer_norm.default",
    |i, at| {
        let x = t(i, 0)?;
        let shape = a(at, 0)?.ints()?;
        let eps = a(at, 1)?.float()?;
        Ok(vec![
            x.f_layer_norm(
                shape,
                i.get(1).copied().flatten(),
                i.get(2).copied().flatten(),
                eps,
                false,
            )
            .map_err(err)?,
        ])
    },
    same_as_first
);

// group_norm(x, weight=None, bias=None, num_groups, eps)
op!(
    GROUP_NORM = "aten.group_norm.default",
    |i, at| {
        let x = t(i, 0)?;
        Ok(vec![
            x.f_group_norm(
                a(at, 0)?.int()?,
                i.get(1).copied().flatten(),
                i.get(2).copied().flatten(),
                a(at, 1)?.float()?,
                false,
            )
            .map_err(err)?,
        ])
    },
    same_as_first
);

/// Output size of a convolution or pooling window along one dimension.
fn window_out(size: &SymInt, kernel: i64, stride: i64, padding: i64, dilation: i64) -> SymInt {
    (size + (2 * padding - dilation * (kernel - 1) - 1)).floor_div(stride) + 1
}

/// The output shape of an `n`-D convolution of `x` `[batch, in, *spatial]` by `w` `[out, in /
/// groups, *kernel]` (the kernel sizes static).
fn conv_shape(
    name: &str,
    n: usize,
    x: &[SymInt],
    w: &[SymInt],
    (st, pa, di): (&[i64], &[i64], &[i64]),
) -> Result<Vec<SymInt>, String> {
    if x.len() != n + 2 || w.len() != n + 2 {
        return Err(format!("{name} expects {}-D input and weight", n + 2));
    }
    if st.len() != n || pa.len() != n || di.len() != n {
        return Err(format!(
            "{name} expects {n} strides, paddings and dilations"
        ));
    }
    let mut out = vec![x[0].clone(), w[0].clone()];
    for k in 0..n {
        let kernel = w[2 + k]
            .as_static()
            .ok_or_else(|| format!("{name} with a dynamic kernel size"))?;
        out.push(window_out(&x[2 + k], kernel, st[k], pa[k], di[k]));
    }
    Ok(out)
}

/// `convNd(x, weight, bias=None, stride, padding, dilation, groups)` for one spatial rank.
macro_rules! conv_op {
    ($id:ident = $name:literal, $method:ident, $short:literal, $rank:literal) => {
        op!(
            $id = $name,
            |i, at| {
                let x = t(i, 0)?;
                Ok(vec![
                    x.$method(
                        t(i, 1)?,
                        i.get(2).copied().flatten(),
                        a(at, 0)?.ints()?,
                        a(at, 1)?.ints()?,
                        a(at, 2)?.ints()?,
                        a(at, 3)?.int()?,
                    )
                    .map_err(err)?,
                ])
            },
            |sh, at, _| {
                let (st, pa, di) = (a(at, 0)?.ints()?, a(at, 1)?.ints()?, a(at, 2)?.ints()?);
                Ok(vec![conv_shape(
                    $short,
                    $rank,
                    s(sh, 0)?,
                    s(sh, 1)?,
                    (&st, &pa, &di),
                )?])
            }
        );
    };
}

conv_op!(CONV2D = "aten.conv2d.default", f_conv2d, "conv2d", 2);
conv_op!(CONV3D = "aten.conv3d.default", f_conv3d, "conv3d", 3);

// conv_transpose2d(x, weight, bias=None, stride, padding, output_padding, groups, dilation)
op!(
    CONV_TRANSPOSE2D = "aten.conv_transpose2d.input",
    |i, at| {
        let x = t(i, 0)?;
        Ok(vec![
            x.f_conv_transpose2d(
                t(i, 1)?,
                i.get(2).copied().flatten(),
                a(at, 0)?.ints()?,
                a(at, 1)?.ints()?,
                a(at, 2)?.ints()?,
                a(at, 3)?.int()?,
                a(at, 4)?.ints()?,
            )
            .map_err(err)?,
        ])
    },
    |sh, at, _| {
        let (x, w) = (s(sh, 0)?, s(sh, 1)?);
        if x.len() != 4 || w.len() != 4 {
            return Err("conv_transpose2d expects 4-D input and weight".to_owned());
        }
        let (st, pa, op) = (a(at, 0)?.ints()?, a(at, 1)?.ints()?, a(at, 2)?.ints()?);
        let (groups, di) = (a(at, 3)?.int()?, a(at, 4)?.ints()?);
        if [&st, &pa, &op, &di].iter().any(|v| v.len() != 2) {
            return Err(
                "conv_transpose2d expects 2 strides, paddings, output paddings and dilations"
                    .to_owned(),
            );
        }
        // The weight is [in, out / groups, kh, kw].
        let mut out = vec![x[0].clone(), &w[1] * groups];
        for k in 0..2 {
            let kernel = w[2 + k]
                .as_static()
                .ok_or_else(|| "conv_transpose2d with a dynamic kernel size".to_owned())?;
            // (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
            out.push(&(&x[2 + k] - 1) * st[k] + (di[k] * (kernel - 1) + op[k] + 1 - 2 * pa[k]));
        }
        Ok(vec![out])
    }
);

// avg_pool2d(x, kernel_size, stride, padding)
op!(
    AVG_POOL2D = "aten.avg_pool2d.default",
    |i, at| {
        let x = t(i, 0)?;
        Ok(vec![
            x.f_avg_pool2d(
                a(at, 0)?.ints()?,
                a(at, 1)?.ints()?,
                a(at, 2)?.ints()?,
                false,
                true,
                None::<i64>,
            )
            .map_err(err)?,
        ])
    },
    |sh, at, _| {
        let x = s(sh, 0)?;
        if x.len() != 4 {
            return Err("avg_pool2d expects a 4-D input".to_owned());
        }
        let (ke, st, pa) = (a(at, 0)?.ints()?, a(at, 1)?.ints()?, a(at, 2)?.ints()?);
        let mut out = x[..2].to_vec();
        for k in 0..2 {
            out.push(window_out(&x[2 + k], ke[k], st[k], pa[k], 1));
        }
        Ok(vec![out])
    }
);

/// The output shape of a 2-D resampling: batch and channels, then the sizes of attribute 0.
fn resampled(sh: &[Option<&[SymInt]>], at: &[Attr], what: &str) -> Result<Shapes, String> {
    let x = s(sh, 0)?;
    if x.len() != 4 {
        return Err(format!("{what} expects a 4-D input"));
    }
    let mut out = x[..2].to_vec();
    out.extend(a(at, 0)?.syms()?.iter().cloned());
    Ok(vec![out])
}

// upsample_nearest2d(x, output_size, scales_h=None, scales_w=None): `Tensor::interpolate`
// computes the output size (symbolic) and passes the scales torch's `F.interpolate` passes
// (its `scale_factor`, used for the coordinates; none with `size=`).
op!(
    UPSAMPLE_NEAREST2D = "aten.upsample_nearest2d.vec",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_upsample_nearest2d(
                a(at, 0)?.ints()?,
                a(at, 1)?.opt_float()?,
                a(at, 2)?.opt_float()?
            )
            .map_err(err)?
    ]),
    |sh, at, _| resampled(sh, at, "upsample_nearest2d")
);

// upsample_bilinear2d(x, output_size, align_corners, scales_h=None, scales_w=None)
op!(
    UPSAMPLE_BILINEAR2D = "aten.upsample_bilinear2d.vec",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_upsample_bilinear2d(
                a(at, 0)?.ints()?,
                a(at, 1)?.bool()?,
                a(at, 2)?.opt_float()?,
                a(at, 3)?.opt_float()?
            )
            .map_err(err)?
    ]),
    |sh, at, _| resampled(sh, at, "upsample_bilinear2d")
);

// constant_pad_nd(x, pad, value): `pad` pairs (before, after) from the last dimension on, as
// `F.pad(x, pad, mode="constant", value=value)`; negative amounts crop.
op!(
    CONSTANT_PAD_ND = "aten.constant_pad_nd.default",
    |i, at| Ok(vec![
        t(i, 0)?
            .f_pad(a(at, 0)?.ints()?, "constant", a(at, 1)?.float()?)
            .map_err(err)?
    ]),
    |sh, at, _| {
        let x = s(sh, 0)?;
        let pad = a(at, 0)?.syms()?;
        if pad.len() % 2 != 0 || pad.len() / 2 > x.len() {
            return Err(format!(
                "pad of {} amounts for a tensor of rank {}: give (before, after) pairs for at \
                 most every dimension",
                pad.len(),
                x.len()
            ));
        }
        let mut out = x.to_vec();
        for (k, pair) in pad.chunks(2).enumerate() {
            let d = x.len() - 1 - k;
            out[d] = &(&out[d] + &pair[0]) + &pair[1];
        }
        Ok(vec![out])
    }
);

// scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p, is_causal, scale=None, enable_gqa)
op!(
    SDPA = "aten.scaled_dot_product_attention.default",
    |i, at| {
        Ok(vec![
            tch::Tensor::f_scaled_dot_product_attention(
                t(i, 0)?,
                t(i, 1)?,
                t(i, 2)?,
                i.get(3).copied().flatten(),
                a(at, 0)?.float()?,
                a(at, 1)?.bool()?,
                a(at, 2)?.opt_float()?,
                a(at, 3)?.bool()?,
            )
            .map_err(err)?,
        ])
    },
    |sh, _, ctx| {
        let q = s(sh, 0)?;
        let k = s(sh, 1)?;
        let v = s(sh, 2)?;
        if q.len() < 2 || k.len() < 2 || v.is_empty() {
            return Err("scaled_dot_product_attention expects q, k, v of rank >= 2".to_owned());
        }
        ctx.assume_eq(
            &q[q.len() - 1],
            &k[k.len() - 1],
            "attention: head size of query and key",
        );
        ctx.assume_eq(
            &k[k.len() - 2],
            &v[v.len() - 2],
            "attention: sequence length of key and value",
        );
        let mut out = q.to_vec();
        let n = out.len();
        out[n - 1] = last(v, "value")?;
        Ok(vec![out])
    }
);

// topk(x, k, dim, largest, sorted) -> (values, indices)
op!(
    TOPK = "aten.topk.default",
    |i, at| {
        let (v, idx) = t(i, 0)?
            .f_topk(
                a(at, 0)?.int()?,
                a(at, 1)?.int()?,
                a(at, 2)?.bool()?,
                a(at, 3)?.bool()?,
            )
            .map_err(err)?;
        Ok(vec![v, idx])
    },
    |sh, at, _| {
        let mut out = s(sh, 0)?.to_vec();
        let d = norm_dim(a(at, 1)?.int()?, out.len())?;
        out[d] = a(at, 0)?.sym()?.clone();
        Ok(vec![out.clone(), out])
    }
);

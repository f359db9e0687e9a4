//! `patched_*` entries for the models of `onnx-diagnostic-diffusers` (family `diffusers`),
//! applied by `torch_export_patches(PatchOptions { patch_diffusers: true, .. })`. Each says
//! what it replaces, why export needs it and when it can go; each has a test showing the export
//! specialised without it and matching diffusers with it (crates/patch-diffusers/tests).
//!
//! The Python package has no diffusers patch (its `patch_diffusers` only registers the
//! `UNet2DConditionOutput` serializer) and validates text-to-image with static height and
//! width. These two make one graph serve every resolution:
//!
//! | patch | export problem |
//! |---|---|
//! | `patched_UNet2DConditionModel.forward_upsample_size` | the upsample-size decision on `sample.shape[-2:] % 2**num_upsamplers` is a guard on the height and width: the graph only holds for multiples of the up factor; the patch always upsamples to the skip states' sizes |
//! | `patched_Upsample2D.forward` | the `shape[0] >= 64` and `numel * scale > 2**31` checks (for libtorch kernel limits) are guards on the batch and the sizes; the patch drops them |

use onnx_diagnostic_core::{InterpolateMode, Resize, Result, SymInt, Tensor};
use onnx_diagnostic_diffusers::{UNet2DConditionModel, models::sampling::Upsample2D};
use onnx_diagnostic_macros::patch;

/// Replaces `UNet2DConditionModel`'s `forward_upsample_size` decision (in diffusers, the loop
/// `for dim in sample.shape[-2:]: if dim % default_overall_up_factor != 0` at the top of
/// `forward`). On a dynamic height or width the remainder is a decision on a symbolic size:
/// the export records the guard `Mod(height, 2**num_upsamplers) == 0` and the graph
/// upsamples by 2, which is wrong (a failed concatenation with the skip state) for a size that
/// is not a multiple. The patch always answers true: every up block but the last upsamples to
/// the size of the skip state it is concatenated with, a symbolic size. The values are the
/// same on every size: for a multiple, nearest interpolation to twice the size maps the same
/// pixels as a scale of 2 (`floor(dst * in / out)` with `out = 2 * in`). It can go when
/// diffusers takes the skip sizes unconditionally, or exporters treat this remainder as a
/// branch (`torch.cond`).
#[patch(target = UNet2DConditionModel::forward_upsample_size, family = "diffusers")]
pub fn patched_forward_upsample_size(this: &UNet2DConditionModel, sample: &Tensor) -> Result<bool> {
    let _ = (this, sample);
    Ok(true)
}

/// Replaces `Upsample2D.forward`, which calls `contiguous()` when `hidden_states.shape[0] >=
/// 64` and when `numel * scale_factor > 2**31` (workarounds for libtorch's nearest kernels on
/// large tensors). Both are decisions on symbolic sizes during an export: guards `batch < 64`
/// and on the image size, which a graph for any batch and resolution cannot keep, while
/// `contiguous()` changes no value (and the exported graph has no memory layout). The patch
/// interpolates (by 2, or to `output_size`) and convolves as the original does, without the
/// checks. It can go when diffusers moves the workaround out of the traced path (a
/// `torch.compiler.is_exporting()` check) or exporters ignore layout-only branches.
#[patch(target = Upsample2D::forward, family = "diffusers")]
pub fn patched_upsample2d_forward(
    this: &Upsample2D,
    hidden_states: &Tensor,
    output_size: Option<&[SymInt; 2]>,
) -> Result<Tensor> {
    let _s = onnx_diagnostic_core::scope("upsamplers.0");
    let h = match output_size {
        None => hidden_states.upsample_nearest2d(2)?,
        Some(size) => {
            hidden_states.interpolate(&Resize::Size(size.clone()), InterpolateMode::Nearest)?
        }
    };
    this.conv().forward(&h)
}

/// The patches of this crate, by name. Calling it (once, anywhere) also keeps the crate's
/// link-time registrations in the binary (see `onnx_diagnostic_patch_transformers::patches`).
pub fn patches() -> Vec<&'static str> {
    let _ = patched_forward_upsample_size as fn(&UNet2DConditionModel, &Tensor) -> Result<bool>;
    let _ = patched_upsample2d_forward
        as fn(&Upsample2D, &Tensor, Option<&[SymInt; 2]>) -> Result<Tensor>;
    onnx_diagnostic_core::patches::registered_patches()
        .into_iter()
        .filter(|p| p.family == onnx_diagnostic_core::patches::PatchFamily::Diffusers)
        .map(|p| p.name)
        .collect()
}

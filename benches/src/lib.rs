//! Criterion benchmarks of onnx-diagnostic (`cargo bench -p onnx-diagnostic-benches`).
//! Speed is measured here, never in timed tests. The library part holds the workloads, so that
//! a test can check that the two sides of a comparison compute the same thing.

use onnx_diagnostic_core::{Result, Tensor};

/// One block of the chain: `softmax(x @ w + b, -1)`, through [`Tensor`].
///
/// # Errors
/// Any error of the ops.
pub fn chain_tensor(x: &Tensor, w: &Tensor, b: &Tensor, depth: usize) -> Result<Tensor> {
    let mut h = x.clone();
    for _ in 0..depth {
        h = h.matmul(w)?.add(b)?.softmax(-1)?;
    }
    Ok(h)
}

/// The same chain on raw libtorch tensors.
pub fn chain_tch(x: &tch::Tensor, w: &tch::Tensor, b: &tch::Tensor, depth: usize) -> tch::Tensor {
    let mut h = x.shallow_clone();
    for _ in 0..depth {
        h = h.matmul(w).g_add(b).softmax(-1, None::<tch::Kind>);
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_chains_compute_the_same_values() {
        let opts = (tch::Kind::Float, tch::Device::Cpu);
        let x = tch::Tensor::randn([2, 8, 16], opts);
        let w = tch::Tensor::randn([16, 16], opts);
        let b = tch::Tensor::randn([16], opts);
        let ours = chain_tensor(
            &Tensor::from(x.shallow_clone()),
            &Tensor::from(w.shallow_clone()),
            &Tensor::from(b.shallow_clone()),
            4,
        )
        .unwrap();
        let raw = chain_tch(&x, &w, &b, 4);
        assert!(ours.as_tch().allclose(&raw, 0.0, 0.0, false));
    }

    fn zero(_: u64) -> u64 {
        0
    }

    #[test]
    fn the_patchable_function_computes_the_same_and_can_be_patched() {
        use onnx_diagnostic_core::{CustomPatch, PatchOptions, patches::PatchFamily};
        assert_eq!(dispatch::plain(7), dispatch::patchable(7));
        let f: fn(u64) -> u64 = zero;
        let g = onnx_diagnostic_core::torch_export_patches(PatchOptions {
            custom_patches: vec![CustomPatch {
                name: "patched_patchable".to_owned(),
                target: "patchable".to_owned(),
                family: PatchFamily::Custom,
                doc: String::new(),
                patch_source: "fn zero(_: u64) -> u64 { 0 }".to_owned(),
                target_source: dispatch::__patchable_source_patchable.to_owned(),
                func: std::sync::Arc::new(f),
                plugin: None,
            }],
            ..PatchOptions::default()
        })
        .unwrap();
        assert_eq!(dispatch::patchable(7), 0);
        assert_eq!(g.details().n_patches(), 1);
        drop(g);
        assert_eq!(dispatch::plain(7), dispatch::patchable(7));
    }
}

/// A small function (integer arithmetic) in two versions, plain and `#[patchable]`, for the
/// dispatch-overhead bench: with no patch active the patchable one must cost at most 2 ns more
/// per call.
pub mod dispatch {
    /// The plain version.
    #[inline(never)]
    pub fn plain(x: u64) -> u64 {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    }

    /// The same body, patchable.
    #[inline(never)]
    #[onnx_diagnostic_macros::patchable]
    pub fn patchable(x: u64) -> u64 {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    }
}

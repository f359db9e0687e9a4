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
}

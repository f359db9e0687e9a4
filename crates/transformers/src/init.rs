//! Deterministic untrained weights. Each weight is drawn from its own stream, seeded by the
//! model build's seed and the weight's checkpoint name, so the bytes depend on nothing else:
//! not the thread, not libtorch's global generator, not the order in which modules load.
//!
//! The distribution is transformers' `_init_weights` (normal(0, `initializer_range`) for linear
//! and embedding weights, zero biases, unit norms); the numbers are not torch's (its generator
//! and its draw order over modules cannot be reproduced outside Python), so a model is the same
//! across our runs, and of the same scale as the Python package's untrained models.
//!
//! The generator is SplitMix64 (Steele, Lea and Flood, 2014) and the normals come from the
//! Box–Muller transform in f64, rounded to f32.

/// What an untrained weight is initialised to (transformers' `_init_weights`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, `initializer_range`): linear weights.
    Normal,
    /// N(0, `initializer_range`) with one row (the embedding's `padding_idx`) at zero.
    NormalWithZeroRow(Option<i64>),
    /// N(0, std) with its own std: SAM's positional features (`init.normal_(std=scale)`).
    NormalStd(f64),
    /// Zeros: biases, one-centered norms.
    Zeros,
    /// Ones: norm weights.
    Ones,
    /// U(-bound, bound): torch's own initialisation of `nn.Linear` and `nn.Conv2d`
    /// (`kaiming_uniform_(a=sqrt(5))` for the weight, the same bound `1/sqrt(fan_in)` for the
    /// bias), what a model without `_init_weights` gets (diffusers' models).
    Uniform(f64),
}

/// A SplitMix64 stream.
struct SplitMix64(u64);

/// SplitMix64's increment.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: 53 random bits, never zero (the logarithm below needs that).
    fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// The stream seed of weight `name` under `seed` (FNV-1a of the name, mixed with the seed).
fn stream_seed(seed: i64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `n` values of N(0, `std`) for weight `name`, as f32. SplitMix64 is a counter (its state
/// after `k` steps is `seed + k * gamma`), so the stream is drawn in chunks, one per core, each
/// starting where the sequential draw would be: the same values as one thread draws.
pub(crate) fn normal(seed: i64, name: &str, n: usize, std: f64) -> Vec<f32> {
    let start = stream_seed(seed, name);
    let mut out = vec![0f32; n];
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    // Chunks of whole pairs (two normals per two draws), large enough to be worth a thread.
    let chunk = n.div_ceil(threads).max(1 << 16).next_multiple_of(2);
    std::thread::scope(|scope| {
        for (i, part) in out.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                let offset = (i * chunk) as u64;
                let mut rng = SplitMix64(start.wrapping_add(offset.wrapping_mul(GAMMA)));
                fill_normal(&mut rng, part, std);
            });
        }
    });
    out
}

/// `n` values of U(-`bound`, `bound`) for weight `name`, as f32, from the stream of
/// [`normal`] (one draw per value).
pub(crate) fn uniform(seed: i64, name: &str, n: usize, bound: f64) -> Vec<f32> {
    let mut rng = SplitMix64(stream_seed(seed, name));
    (0..n)
        .map(|_| ((2.0 * rng.next_open01() - 1.0) * bound) as f32)
        .collect()
}

/// Fills `out` with N(0, `std`) from `rng`, two values per two draws (Box–Muller).
fn fill_normal(rng: &mut SplitMix64, out: &mut [f32], std: f64) {
    for pair in out.chunks_mut(2) {
        let (u1, u2) = (rng.next_open01(), rng.next_open01());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        pair[0] = (r * theta.cos() * std) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = (r * theta.sin() * std) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_seed_and_name_only() {
        let a = normal(42, "model.embed_tokens.weight", 1000, 0.02);
        assert_eq!(a, normal(42, "model.embed_tokens.weight", 1000, 0.02));
        assert_ne!(a, normal(43, "model.embed_tokens.weight", 1000, 0.02));
        assert_ne!(a, normal(42, "lm_head.weight", 1000, 0.02));
        // A prefix of a longer draw is the shorter draw.
        assert_eq!(
            a[..999],
            normal(42, "model.embed_tokens.weight", 999, 0.02)[..]
        );
    }

    #[test]
    fn draws_have_the_requested_moments() {
        let v = normal(7, "w", 200_000, 0.02);
        let n = v.len() as f64;
        let mean = v.iter().map(|x| f64::from(*x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|x| (f64::from(*x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 2e-4, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 2e-4, "std {}", var.sqrt());
    }
}

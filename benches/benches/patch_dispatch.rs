//! The cost of `#[patchable]` when no patch is active: the same function body called plainly
//! and through the patchable wrapper (one thread-local read), 1000 calls per iteration.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use onnx_diagnostic_benches::dispatch::{patchable, plain};

fn dispatch(c: &mut Criterion) {
    c.bench_function("patch_dispatch/plain_x1000", |b| {
        b.iter(|| {
            let mut x = black_box(1u64);
            for _ in 0..1000 {
                x = plain(black_box(x));
            }
            x
        })
    });
    c.bench_function("patch_dispatch/patchable_x1000", |b| {
        b.iter(|| {
            let mut x = black_box(1u64);
            for _ in 0..1000 {
                x = patchable(black_box(x));
            }
            x
        })
    });
}

criterion_group!(benches, dispatch);
criterion_main!(benches);

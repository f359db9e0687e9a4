//! Overhead of `core::Tensor` over raw tch outside an export: a chain of matmul/add/softmax,
//! at a small size (where a per-op cost shows most) and at an LLM-like size.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use onnx_diagnostic_benches::{chain_tch, chain_tensor};
use onnx_diagnostic_core::Tensor;

fn overhead(c: &mut Criterion) {
    tch::set_num_threads(1);
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let mut group = c.benchmark_group("matmul_add_softmax_x8");
    for (batch, seq, hidden) in [(1, 8, 32), (2, 64, 256)] {
        let x = tch::Tensor::randn([batch, seq, hidden], opts);
        let w = tch::Tensor::randn([hidden, hidden], opts);
        let b = tch::Tensor::randn([hidden], opts);
        let label = format!("{batch}x{seq}x{hidden}");
        group.bench_with_input(BenchmarkId::new("tch", &label), &(), |bench, _| {
            bench.iter(|| chain_tch(&x, &w, &b, 8));
        });
        let (xt, wt, bt) = (
            Tensor::from(x.shallow_clone()),
            Tensor::from(w.shallow_clone()),
            Tensor::from(b.shallow_clone()),
        );
        group.bench_with_input(BenchmarkId::new("Tensor", &label), &(), |bench, _| {
            bench.iter(|| chain_tensor(&xt, &wt, &bt, 8).unwrap());
        });
    }
    group.finish();

    // The fixed cost per op, on a one-element tensor where libtorch's own work is smallest.
    let mut group = c.benchmark_group("per_op_1_element");
    let x = tch::Tensor::randn([1], opts);
    let xt = Tensor::from(x.shallow_clone());
    group.bench_function("tch/add", |bench| bench.iter(|| x.g_add(&x)));
    group.bench_function("Tensor/add", |bench| bench.iter(|| xt.add(&xt).unwrap()));
    group.bench_function("tch/softmax", |bench| {
        bench.iter(|| x.softmax(-1, None::<tch::Kind>))
    });
    group.bench_function("Tensor/softmax", |bench| {
        bench.iter(|| xt.softmax(-1).unwrap())
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);

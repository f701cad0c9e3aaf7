//! Criterion benches of training: for each layer of the compare tool's suite, the inference
//! forward, the two backward products and a whole training step (forward in training mode
//! with ReLU and bias, then `BackwardPlan::backward` for dx, dw and db), side by side in one
//! group. Throughput is the forward's flops for the first three and three times that for the
//! step, so the step's time over the forward's is `3 * fwd / step` in criterion's GFLOP/s.
//! The same passes as `compare --pass fwd,bwd_data,bwd_weights,step`.
//!
//! - `POINTWISE_KERNEL=avx2 cargo bench --bench backward` forces one kernel (default Auto);
//! - `POINTWISE_LAYOUT=nhwc` benchmarks the NHWC layout (default NCHW);
//! - `POINTWISE_THREADS=2` uses a dedicated pool of that many threads (default 1).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pointwise::{Accumulate, Activation, BackwardPlan, Gradients, KernelChoice, Plan, PlanOptions, Saved, Workspace};
use std::time::Duration;

mod support;

#[path = "../examples/compare/suite.rs"]
#[allow(dead_code)]
mod suite;

fn training(c: &mut Criterion) {
    let layout = support::layout_from_env();
    let threads = support::threads_from_env();
    let kernel = KernelChoice::from_env().expect("POINTWISE_KERNEL names a kernel");
    let options = PlanOptions::default().with_kernel(kernel).with_threads(threads);
    for layer in suite::default_suite() {
        let mut group = c.benchmark_group(format!("train_{}", layer.name));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        let conv = layer.conv(layout).with_activation(Activation::Relu);
        let dims = layer.dims();
        let pattern = |len: usize, m: usize| -> Vec<f32> {
            (0..len).map(|i| ((i % m) as f32 - (m / 2) as f32) / m as f32).collect()
        };
        let x = pattern(conv.input_len(dims).unwrap(), 13);
        let w = pattern(conv.weights_len().unwrap(), 11);
        let bias = vec![0.25f32; layer.k];
        let out_len = conv.output_dims(dims).unwrap().len().unwrap();
        let dy = pattern(out_len, 7);
        let plan = Plan::new(&conv, &w, Some(&bias), options).unwrap();
        let grads = BackwardPlan::new(&conv, &w, options).unwrap();
        let mut ws = Workspace::new();
        let (mut y, mut z) = (vec![0.0f32; out_len], vec![0.0f32; out_len]);
        let (mut dx, mut dw, mut db) = (vec![0.0f32; x.len()], vec![0.0f32; w.len()], vec![0.0f32; layer.k]);
        group.throughput(Throughput::Elements(layer.flops() as u64));
        group.bench_function("fwd", |b| {
            b.iter(|| plan.forward(&x, dims, None, &mut y, &mut ws).unwrap())
        });
        group.bench_function("bwd_data", |b| {
            b.iter(|| grads.data(&dy, dims, &mut dx, Accumulate::Overwrite, &mut ws).unwrap())
        });
        group.bench_function("bwd_weights", |b| {
            b.iter(|| {
                grads
                    .weights(&x, &dy, dims, &mut dw, Accumulate::Overwrite, &mut ws)
                    .unwrap()
            })
        });
        group.throughput(Throughput::Elements(3 * layer.flops() as u64));
        group.bench_function("step", |b| {
            b.iter(|| {
                plan.forward_training(&x, dims, None, &mut z, &mut y, &mut ws).unwrap();
                let gradients = Gradients::new().input(&mut dx).weights(&mut dw).bias(&mut db);
                grads
                    .backward(&x, &dy, Saved::Output(&y), dims, gradients, &mut ws)
                    .unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, training);
criterion_main!(benches);

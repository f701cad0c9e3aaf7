//! Criterion benches: one group per layer of the compare tool's suite, one `BenchmarkId` per
//! kernel available on this CPU, flops as throughput, so criterion's report compares the
//! kernels of each CPU feature level side by side.
//!
//! - `POINTWISE_KERNEL=avx2 cargo bench` narrows the run to one kernel;
//! - `POINTWISE_LAYOUT=nhwc` benchmarks the NHWC layout (default NCHW);
//! - `POINTWISE_THREADS=2` uses a dedicated pool of that many threads (default 1).
//!
//! The `denormals` group runs one ResNet layer (256 -> 64, 28x28) per kernel with normal
//! data, with denormal inputs, and with normal inputs whose products are denormal: what IEEE
//! arithmetic without a flush-to-zero mode costs on this CPU (`cargo bench -- denormals`).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pointwise::{available_kernels, KernelChoice, KernelId, Plan, PlanOptions, Workspace};
use std::time::Duration;

mod support;

#[path = "../examples/compare/suite.rs"]
#[allow(dead_code)]
mod suite;

fn kernels() -> Vec<KernelId> {
    match KernelChoice::from_env().expect("POINTWISE_KERNEL names a kernel") {
        KernelChoice::Force(k) => vec![k],
        KernelChoice::Auto => available_kernels()
            .into_iter()
            .filter(|k| *k != KernelId::Reference)
            .collect(),
    }
}

fn layers(c: &mut Criterion) {
    let layout = support::layout_from_env();
    let threads = support::threads_from_env();
    for layer in suite::default_suite() {
        let mut group = c.benchmark_group(&layer.name);
        group.throughput(Throughput::Elements(layer.flops() as u64));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        let conv = layer.conv(layout);
        let dims = layer.dims();
        let x: Vec<f32> = (0..conv.input_len(dims).unwrap())
            .map(|i| ((i % 13) as f32 - 6.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..conv.weights_len().unwrap())
            .map(|i| ((i % 11) as f32 - 5.0) / 9.0)
            .collect();
        let bias = vec![0.25f32; layer.k];
        for kernel in kernels() {
            let options = PlanOptions::default()
                .with_kernel(KernelChoice::Force(kernel))
                .with_threads(threads);
            let plan = Plan::new(&conv, &w, Some(&bias), options).unwrap();
            let mut y = vec![0.0f32; plan.output_dims(dims).unwrap().len().unwrap()];
            let mut ws = Workspace::new();
            group.bench_function(BenchmarkId::from_parameter(kernel.name()), |b| {
                b.iter(|| plan.forward(&x, dims, None, &mut y, &mut ws).unwrap())
            });
        }
        group.finish();
    }
}

fn denormals(c: &mut Criterion) {
    let (cin, k, hw) = (256, 64, 28);
    let mut group = c.benchmark_group("denormals_256_64_28x28");
    group.throughput(Throughput::Elements((2 * cin * k * hw * hw) as u64));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let conv = pointwise::Conv1x1::new(cin, k);
    let dims = pointwise::InputDims::new(1, hw, hw);
    let pattern = |i: usize, m: usize| ((i % m) as f32 - (m / 2) as f32) / m as f32;
    let len = conv.input_len(dims).unwrap();
    // (label, input scale, weight scale): denormal operands, or normal operands with
    // denormal products and sums.
    for (label, xs, ws) in [
        ("normal", 1.0f32, 1.0f32),
        ("denormal_inputs", 1e-39, 1.0),
        ("denormal_products", 1e-20, 1e-20),
    ] {
        let x: Vec<f32> = (0..len).map(|i| pattern(i, 13) * xs).collect();
        let w: Vec<f32> = (0..cin * k).map(|i| pattern(i, 11) * ws).collect();
        for kernel in kernels() {
            let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
            let plan = Plan::new(&conv, &w, None, options).unwrap();
            let mut y = vec![0.0f32; plan.output_len(dims).unwrap()];
            let mut wsp = Workspace::new();
            group.bench_function(BenchmarkId::new(kernel.name(), label), |b| {
                b.iter(|| plan.forward(&x, dims, None, &mut y, &mut wsp).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, layers, denormals);
criterion_main!(benches);

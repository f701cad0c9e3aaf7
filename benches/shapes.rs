//! Criterion benches for the shapes off the `compare` suite (the classes of
//! `benches/sweep/shapes.txt`): a few representative shapes of each class, run by the plan
//! `KernelChoice::Auto` builds, in both layouts, flops as throughput.
//!
//! The `seed` group runs the seed example (3 -> 2 channels at 3x3, with bias) through a plan
//! and through a hand-written triple loop with sizes known only at run time, side by side in
//! one run: what a plan costs over the plainest code on the smallest problem
//! (`cargo bench --bench shapes -- seed`).
//!
//! `POINTWISE_THREADS=2` uses a dedicated pool of that many threads (default 1).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pointwise::{Conv1x1, InputDims, Layout, Plan, PlanOptions, Workspace};
use std::hint::black_box;
use std::time::Duration;

#[allow(dead_code)]
mod support;

/// `(class, n, c, k, h, w, stride, groups)`.
type Shape = (&'static str, usize, usize, usize, usize, usize, usize, usize);

/// One or two shapes per class of the sweep.
const SHAPES: &[Shape] = &[
    ("channelwise", 1, 64, 64, 56, 56, 1, 64),
    ("channelwise", 1, 32, 32, 14, 14, 1, 32),
    ("group_c2", 1, 128, 128, 28, 28, 1, 64),
    ("group_c4", 1, 128, 128, 14, 14, 1, 32),
    ("group_c8", 1, 256, 256, 28, 28, 1, 32),
    ("group_c16", 1, 128, 512, 56, 56, 1, 8),
    ("few_outputs_k1", 1, 96, 1, 14, 14, 1, 1),
    ("few_outputs_k5", 1, 32, 5, 28, 28, 1, 1),
    ("few_inputs_c3", 1, 3, 32, 56, 56, 1, 1),
    ("few_pixels", 1, 512, 64, 2, 2, 1, 1),
    ("few_pixels", 1, 32, 32, 4, 4, 1, 1),
    ("odd", 1, 175, 21, 29, 29, 1, 1),
    ("stride3", 1, 96, 48, 29, 29, 3, 1),
    ("batch8", 8, 64, 64, 14, 14, 1, 1),
];

fn pattern(len: usize, modulus: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i % modulus) as f32 - (modulus / 2) as f32) / modulus as f32)
        .collect()
}

fn shapes(c: &mut Criterion) {
    let threads = support::threads_from_env();
    for &(class, n, cin, k, h, w, stride, groups) in SHAPES {
        let name = format!("{class}_{n}x{cin}->{k}_{h}x{w}_s{stride}_g{groups}");
        let mut group = c.benchmark_group(&name);
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let conv = Conv1x1::new(cin, k)
                .with_stride(stride, stride)
                .with_groups(groups)
                .with_layout(layout);
            let dims = InputDims::new(n, h, w);
            let out = conv.output_dims(dims).unwrap();
            group.throughput(Throughput::Elements(
                (2 * n * out.h * out.w * k * (cin / groups)) as u64,
            ));
            let x = pattern(conv.input_len(dims).unwrap(), 13);
            let weights = pattern(conv.weights_len().unwrap(), 11);
            let bias = pattern(k, 7);
            let options = PlanOptions::default().with_threads(threads);
            let plan = Plan::new(&conv, &weights, Some(&bias), options).unwrap();
            let mut y = vec![0.0f32; out.len().unwrap()];
            let mut ws = Workspace::new();
            let label = if layout == Layout::Nchw { "nchw" } else { "nhwc" };
            group.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| plan.forward(&x, dims, None, &mut y, &mut ws).unwrap())
            });
        }
        group.finish();
    }
}

/// NCHW `y[k][p] = bias[k] + sum_c w[k][c] * x[c][p]`, sizes as run-time values.
fn hand_loop(c: usize, k: usize, p: usize, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    for ko in 0..k {
        for pi in 0..p {
            let mut acc = bias[ko];
            for ci in 0..c {
                acc += w[ko * c + ci] * x[ci * p + pi];
            }
            y[ko * p + pi] = acc;
        }
    }
}

fn seed(c: &mut Criterion) {
    let (cin, k, hw) = (3, 2, 3);
    let mut group = c.benchmark_group("seed_3->2_3x3");
    group.throughput(Throughput::Elements((2 * cin * k * hw * hw) as u64));
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let x = pattern(cin * hw * hw, 13);
    let w = pattern(cin * k, 11);
    let bias = pattern(k, 7);
    let conv = Conv1x1::new(cin, k);
    let dims = InputDims::new(1, hw, hw);
    let plan = Plan::new(&conv, &w, Some(&bias), PlanOptions::default()).unwrap();
    let mut y = vec![0.0f32; k * hw * hw];
    let mut ws = Workspace::new();
    group.bench_function("plan_forward", |b| {
        b.iter(|| plan.forward(black_box(&x), dims, None, &mut y, &mut ws).unwrap())
    });
    group.bench_function("hand_loop", |b| {
        b.iter(|| {
            hand_loop(
                black_box(cin),
                black_box(k),
                black_box(hw * hw),
                black_box(&x),
                black_box(&w),
                black_box(&bias),
                &mut y,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, seed, shapes);
criterion_main!(benches);

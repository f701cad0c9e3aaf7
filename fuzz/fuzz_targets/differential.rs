//! `differential`: a small valid problem (see `DiffCase`) on every kernel this CPU runs, as
//! the plan tiles it and, on the SIMD kernels, with a forced tile, against the f64 reference
//! of the test suite (`tests/common/mod.rs`) under its error bound: bit-exact on integer data
//! with the piecewise-linear activations, within `2 gamma_n |W||X| + ...` otherwise; with
//! `in_place`, the in-place residual must give the same bits as a separate one. The problem
//! rounded to bf16 values must give, with bf16 input, residual and output, the f32 call's
//! bits rounded once; with bf16 weights too, on a kernel's bf16-pair tile (forced), the
//! reference of those values under the pair tiles' bound.
#![no_main]
#[path = "../../tests/common/mod.rs"]
mod common;

use common::{Data, Problem};
use libfuzzer_sys::fuzz_target;
use pointwise::{available_kernels, bf16, testing, KernelChoice, KernelId, PlanOptions, Threads, Workspace};
use pointwise_fuzz::DiffCase;

/// Runs `p`; with `in_place`, through `forward_residual_in_place` on a copy of the residual.
fn run(p: &Problem, kernel: KernelId, threads: Threads, tiling: Option<(usize, bool)>, in_place: bool) -> Vec<f32> {
    let options = PlanOptions::default()
        .with_kernel(KernelChoice::Force(kernel))
        .with_threads(threads);
    let mut plan = p.plan(options);
    if let Some((tile, fold)) = tiling {
        plan.force_tile(testing::tiles(kernel)[tile].name, fold)
            .expect("tile in range");
    }
    match (&p.residual, in_place) {
        (Some(r), true) => {
            let mut y = r.clone();
            plan.forward_residual_in_place(&p.x, p.dims, &mut y, &mut Workspace::new())
                .expect("valid call");
            y
        }
        _ => {
            let mut y = vec![f32::NAN; p.output_len()];
            plan.forward(&p.x, p.dims, p.residual.as_deref(), &mut y, &mut Workspace::new())
                .expect("valid call");
            y
        }
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fuzz_target!(|case: DiffCase| {
    let data = if case.exact { Data::Exact } else { Data::Real };
    let p = Problem::new(case.conv(), case.dims(), case.bias, case.residual, data, case.seed);
    let reference = p.reference();
    let mut threads = vec![Threads::Single];
    if case.threads % 2 == 1 {
        // rayon's global pool: built once. A dedicated pool per case (Threads::Count) makes
        // LeakSanitizer report the worker deques of pools whose threads are still shutting
        // down after the pool was dropped (rayon tears pools down asynchronously).
        threads.push(Threads::Rayon);
    }
    for kernel in available_kernels() {
        let mut tilings = vec![None];
        if let Some(t) = case.tiling(testing::tiles(kernel).len()) {
            tilings.push(Some(t));
        }
        for &t in &threads {
            for &tiling in &tilings {
                let y = run(&p, kernel, t, tiling, false);
                if let Err(e) = p.check_with(&reference, &y, data, kernel) {
                    panic!("{e}\n{t:?}, tiling {tiling:?}\n{:?} {:?}", p.conv, p.dims);
                }
                if case.in_place && p.residual.is_some() {
                    let z = run(&p, kernel, t, tiling, true);
                    assert!(
                        same_bits(&y, &z),
                        "in-place residual differs on {kernel}, {t:?}, tiling {tiling:?}"
                    );
                }
            }
        }
    }
    check_bf16_pairs(&p, &case);
    check_bf16(p);
});

/// On kernels with bf16-pair tiles: the problem with its input and weights rounded to bf16
/// values, a bf16 input on a pair tile the case picks, against the reference of those
/// values (the pair tiles' own bound: `common::Problem::check_with` on that kernel).
fn check_bf16_pairs(p: &Problem, case: &DiffCase) {
    let mut p = p.clone();
    let round = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32());
    round(&mut p.x);
    round(&mut p.w);
    let data = if case.exact { Data::Exact } else { Data::Real };
    let x16: Vec<bf16> = p.x.iter().map(|&x| bf16::from_f32(x)).collect();
    let mut reference = None;
    for kernel in available_kernels() {
        let pairs = testing::bf16_pair_tiles(kernel);
        let Some((tile, fold)) = case.tiling(pairs.len()) else {
            continue;
        };
        let mut plan = p.plan(PlanOptions::default().with_kernel(KernelChoice::Force(kernel)));
        plan.force_tile(pairs[tile].name, fold).expect("a pair tile of the kernel");
        let mut y = vec![f32::NAN; p.output_len()];
        plan.forward(&x16, p.dims, p.residual.as_deref(), &mut y, &mut Workspace::new())
            .expect("valid call");
        let reference = reference.get_or_insert_with(|| p.reference());
        if let Err(e) = p.check_with(reference, &y, data, kernel) {
            panic!("{e}
pair tile {}, fold {fold}
{:?} {:?}", pairs[tile].name, p.conv, p.dims);
        }
    }
}

/// The problem's data rounded to bf16 values: the bf16 call (input, residual and output in
/// bf16) gives the f32 call's bits on the same values, rounded once.
fn check_bf16(mut p: Problem) {
    let round = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32());
    round(&mut p.x);
    if let Some(r) = p.residual.as_mut() {
        round(r);
    }
    let to_bf16 = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let plan = p.plan(PlanOptions::default());
    let mut want = vec![f32::NAN; p.output_len()];
    plan.forward(&p.x, p.dims, p.residual.as_deref(), &mut want, &mut Workspace::new())
        .expect("valid call");
    let mut got = vec![bf16::NAN; p.output_len()];
    let residual = p.residual.as_deref().map(to_bf16);
    plan.forward(
        &to_bf16(&p.x),
        p.dims,
        residual.as_deref(),
        &mut got,
        &mut Workspace::new(),
    )
    .expect("valid call");
    let want = to_bf16(&want);
    assert!(
        got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
        "bf16 call differs from the f32 call rounded: {:?} {:?}",
        p.conv,
        p.dims
    );
}

//! `backward`: the backward passes of a small valid problem (the `differential` target's
//! `DiffCase`) on every kernel this CPU runs, against the f64 references of the test suite
//! (`tests/common/gradients.rs`): bit-exact on integer data (overwriting, and adding onto what
//! the buffers held), within `gamma_{n+1}` times the sum of |terms| on real data, where `n` is
//! the reduction length (`K/G` for dx, `N*Ho*Wo` for dw and db); and one
//! `BackwardPlan::backward` step (activation gradient, residual gradient, data, weights,
//! bias) equal bit for bit to the separate passes.
#![no_main]
#[path = "../../tests/common/mod.rs"]
mod common;

use common::gamma;
use common::gradients::GradCase;
use libfuzzer_sys::fuzz_target;
use pointwise::{
    available_kernels, Accumulate, Activation, BackwardPlan, Gradients, KernelChoice, PlanOptions, Saved, Threads,
    Workspace,
};
use pointwise_fuzz::DiffCase;

fn as_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fuzz_target!(|case: DiffCase| {
    let conv = case.conv();
    let dims = case.dims();
    let g = GradCase::new(conv, dims, case.exact, case.seed);
    let ((dx, dx_scale), (dw, dw_scale), db) = g.reference();
    let out = conv.output_dims(dims).expect("valid case");
    let pixels = dims.n * out.h * out.w;
    let db_scale: Vec<f64> = vec![g.dz.iter().map(|v| f64::from(v.abs())).sum(); db.len()];
    // rayon's global pool only (see the differential target on dedicated pools and LSan).
    let threads: &[Threads] = if case.threads % 2 == 1 {
        &[Threads::Single, Threads::Rayon]
    } else {
        &[Threads::Single]
    };
    for kernel in available_kernels() {
        for &t in threads {
            let options = PlanOptions::default()
                .with_kernel(KernelChoice::Force(kernel))
                .with_threads(t);
            let (gx, gw, gb) = g.run(options, Accumulate::Overwrite, f32::NAN);
            let what = format!("{kernel} {t:?} {conv:?} {dims:?}");
            if case.exact {
                assert_eq!(gx, as_f32(&dx), "dx {what}");
                assert_eq!(gw, as_f32(&dw), "dw {what}");
                assert_eq!(gb, as_f32(&db), "db {what}");
                let (ax, aw, ab) = g.run(options, Accumulate::Add, 2.0);
                let plus_two = |v: &[f32]| v.iter().map(|&x| x + 2.0).collect::<Vec<_>>();
                assert_eq!(
                    (ax, aw, ab),
                    (plus_two(&gx), plus_two(&gw), plus_two(&gb)),
                    "add {what}"
                );
            } else {
                let check = |name: &str, got: &[f32], want: &[f64], scale: &[f64], n: usize| {
                    for (j, (&v, &r)) in got.iter().zip(want).enumerate() {
                        let bound = gamma(n + 1) * scale[j] + f64::from(f32::MIN_POSITIVE);
                        assert!((f64::from(v) - r).abs() <= bound, "{name}[{j}] {v} vs {r} {what}");
                    }
                };
                check("dx", &gx, &dx, &dx_scale, conv.out_channels / conv.groups);
                check("dw", &gw, &dw, &dw_scale, pixels);
                check("db", &gb, &db, &db_scale, pixels);
            }
        }
    }
    // One step against the separate passes, with the case's activation (PReLU with slopes).
    let mut plan = BackwardPlan::new(&conv, &g.w, PlanOptions::default()).expect("valid case");
    if conv.activation == Activation::Prelu {
        let slopes: Vec<f32> = (0..conv.out_channels).map(|k| [0.25, -0.5, 2.0, 0.0][k % 4]).collect();
        plan = plan.with_prelu_slope(&slopes).expect("valid slopes");
    }
    let z: Vec<f32> = g.dz.iter().map(|&v| 0.5 - v).collect();
    let dy = &g.dz;
    let mut ws = Workspace::new();
    let mut dz = vec![0.0; z.len()];
    plan.activation(dy, Saved::PreActivation(&z), dims, &mut dz)
        .expect("valid call");
    let accumulate = if case.in_place {
        Accumulate::Add
    } else {
        Accumulate::Overwrite
    };
    let start = 0.5;
    let (mut ex, mut ew, mut eb) = (vec![start; g.x.len()], vec![start; g.w.len()], vec![start; db.len()]);
    plan.data(&dz, dims, &mut ex, accumulate, &mut ws).expect("valid call");
    plan.weights(&g.x, &dz, dims, &mut ew, accumulate, &mut ws)
        .expect("valid call");
    plan.bias(&dz, dims, &mut eb, accumulate).expect("valid call");
    let er: Vec<f32> = match accumulate {
        Accumulate::Add => dz.iter().map(|&d| start + d).collect(),
        _ => dz.clone(),
    };
    let (mut sx, mut sw, mut sb, mut sr) = (
        vec![start; g.x.len()],
        vec![start; g.w.len()],
        vec![start; db.len()],
        vec![start; z.len()],
    );
    let mut step = Gradients::new()
        .input(&mut sx)
        .weights(&mut sw)
        .bias(&mut sb)
        .accumulate(accumulate);
    if case.residual {
        step = step.residual(&mut sr);
    }
    plan.backward(&g.x, dy, Saved::PreActivation(&z), dims, step, &mut ws)
        .expect("valid call");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        (bits(&sx), bits(&sw), bits(&sb)),
        (bits(&ex), bits(&ew), bits(&eb)),
        "step {conv:?} {dims:?}"
    );
    if case.residual {
        assert_eq!(bits(&sr), bits(&er), "residual gradient {conv:?} {dims:?}");
    }
});

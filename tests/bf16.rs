//! bf16 tensors: weights, inputs, residuals and outputs in bf16 on every kernel, checked
//! against the f64 reference of the bf16 operands, and against the definition the API
//! states: the f32 call on the widened values, rounded once (to nearest, ties to even) where
//! the output is bf16. Exact data (small integers, exact in bf16) is compared bit for bit.
mod common;
use common::*;
use pointwise::{
    bf16, Activation, Conv1x1, Error, InputDims, KernelChoice, Layout, Padding, Plan, PlanOptions, Threads,
    WeightOrder, Workspace,
};

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// The problem with its input, weights and residual rounded to bf16 (bias stays f32), so that
/// its f32 data and its bf16 data hold the same values.
fn representable(mut p: Problem) -> Problem {
    let round = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32());
    round(&mut p.x);
    round(&mut p.w);
    if let Some(r) = p.residual.as_mut() {
        round(r);
    }
    p
}

/// Layer shapes across the features: the seed example, strides with asymmetric padding,
/// groups (C/G of 1, 6 and 16), batches, few and many channels, both layouts; large enough
/// that Auto takes the microkernels on the bigger ones.
fn convs() -> Vec<(Conv1x1, InputDims)> {
    let mut out = Vec::new();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let shapes = [
            (Conv1x1::new(3, 2), InputDims::new(1, 3, 3)),
            (
                Conv1x1::new(17, 33).with_stride(2, 3).with_padding(Padding::Explicit {
                    top: 1,
                    bottom: 0,
                    left: 2,
                    right: 1,
                }),
                InputDims::new(2, 7, 9),
            ),
            (Conv1x1::new(32, 32).with_groups(32), InputDims::new(1, 6, 7)),
            (Conv1x1::new(24, 40).with_groups(4), InputDims::new(3, 5, 6)),
            (Conv1x1::new(64, 48).with_groups(4), InputDims::new(1, 9, 10)),
            (Conv1x1::new(96, 17), InputDims::new(1, 14, 14)),
            (Conv1x1::new(40, 72), InputDims::new(2, 11, 13)),
        ];
        let shapes = if tiny() { &shapes[..2] } else { &shapes[..] };
        for (conv, dims) in shapes {
            out.push((conv.with_layout(layout), *dims));
        }
    }
    out
}

fn options() -> Vec<PlanOptions> {
    let mut out: Vec<PlanOptions> = kernels_under_test()
        .into_iter()
        .map(|k| PlanOptions::default().with_kernel(KernelChoice::Force(k)))
        .collect();
    out.push(PlanOptions::default());
    if !tiny() {
        out.push(PlanOptions::default().with_threads(Threads::Count(2)));
    }
    out
}

/// Runs every element-type combination of `p` (already bf16-representable) on `plan` and
/// checks each against the f32 call's bits; returns the f32 call's output.
fn check_every_type_combination(p: &Problem, plan: &Plan, what: &str) -> Vec<f32> {
    let mut ws = Workspace::new();
    let (x16, r16) = (to_bf16(&p.x), p.residual.as_deref().map(to_bf16));
    let len = p.output_len();
    let mut want = vec![f32::NAN; len];
    plan.forward(&p.x, p.dims, p.residual.as_deref(), &mut want, &mut ws)
        .unwrap();
    let want16 = to_bf16(&want);
    let same_bits = |got: &[f32], case: &str| {
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}, {case}: element {i}: {g} vs {w}");
        }
    };
    let same_bits16 = |got: &[bf16], case: &str| {
        for (i, (g, w)) in got.iter().zip(&want16).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}, {case}: element {i}: {g} vs {w}");
        }
    };
    // bf16 input, f32 output and residual.
    let mut y = vec![f32::NAN; len];
    plan.forward(&x16, p.dims, p.residual.as_deref(), &mut y, &mut ws)
        .unwrap();
    same_bits(&y, "bf16 -> f32");
    // f32 input, bf16 output and residual.
    let mut y16 = vec![bf16::NAN; len];
    plan.forward(&p.x, p.dims, r16.as_deref(), &mut y16, &mut ws).unwrap();
    same_bits16(&y16, "f32 -> bf16");
    // bf16 everywhere.
    let mut y16 = vec![bf16::NAN; len];
    plan.forward(&x16, p.dims, r16.as_deref(), &mut y16, &mut ws).unwrap();
    same_bits16(&y16, "bf16 -> bf16");
    // The residual in the output buffer.
    if let Some(r16) = &r16 {
        let mut y16 = r16.clone();
        plan.forward_residual_in_place(&x16, p.dims, &mut y16, &mut ws).unwrap();
        same_bits16(&y16, "bf16 -> bf16, residual in place");
        let mut y = p.residual.clone().unwrap();
        plan.forward_residual_in_place(&x16, p.dims, &mut y, &mut ws).unwrap();
        same_bits(&y, "bf16 -> f32, residual in place");
    }
    want
}

#[test]
fn bf16_calls_give_the_f32_calls_bits_rounded_once_on_every_kernel() {
    let acts = [Activation::Relu, Activation::Silu];
    for (seed, (conv, dims)) in convs().into_iter().enumerate() {
        for (a, data) in [(0, Data::Exact), (1, Data::Real)] {
            let conv = conv.with_activation(acts[a]);
            let p = representable(Problem::new(conv, dims, true, true, data, seed as u64));
            let reference = p.reference();
            for opts in options() {
                let plan = p.plan(opts);
                let what = format!("{conv:?} {dims:?} {data:?} on {:?}", plan.kernel_for(dims).unwrap());
                let y = check_every_type_combination(&p, &plan, &what);
                // The f32 call on bf16 values against the f64 reference of the bf16 operands:
                // bit for bit on exact data, else within the bound of the reduction length.
                p.check_with(&reference, &y, data, plan.kernel_for(dims).unwrap())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
}

#[test]
fn bf16_outputs_are_within_half_a_bf16_ulp_of_the_reference() {
    // Real data, no activation: |y16 - y64| <= |y32 - y64| + 2^-8 |y32| (bf16 keeps 8
    // significant bits, so rounding moves a value by at most half of 2^-7 of its magnitude).
    let conv = Conv1x1::new(200, 24);
    let dims = InputDims::new(1, 5, 7);
    let p = representable(Problem::new(conv, dims, true, false, Data::Real, 11));
    let reference = p.reference();
    let plan = p.plan(PlanOptions::default());
    let mut y16 = vec![bf16::NAN; p.output_len()];
    plan.forward(&to_bf16(&p.x), dims, None, &mut y16, &mut Workspace::new())
        .unwrap();
    let n = 200 + 1;
    for (i, (g, &(want, _, mag))) in y16.iter().zip(&reference).enumerate() {
        let bound = 2.0 * gamma(n) * mag + 2f64.powi(-8) * want.abs() * (1.0 + 1e-6);
        let err = (g.to_f64() - want).abs();
        assert!(err <= bound, "element {i}: {g} vs {want}: {err:e} > {bound:e}");
    }
}

#[test]
fn bf16_weights_build_the_plan_of_their_f32_values() {
    let conv = Conv1x1::new(12, 20).with_groups(2);
    let dims = InputDims::new(1, 4, 5);
    let p = representable(Problem::new(conv, dims, true, false, Data::Exact, 3));
    let w16 = to_bf16(&p.w);
    let from16 = Plan::new(&conv, &w16, p.bias.as_deref(), PlanOptions::default()).unwrap();
    let from32 = p.plan(PlanOptions::default());
    let mut ws = Workspace::new();
    let (mut a, mut b) = (vec![0.0f32; p.output_len()], vec![1.0f32; p.output_len()]);
    from16.forward(&p.x, dims, None, &mut a, &mut ws).unwrap();
    from32.forward(&p.x, dims, None, &mut b, &mut ws).unwrap();
    assert_eq!(a, b);
    // [C/G, K] order: (c, k) holds w[k][c].
    let (kg_all, cg) = (20, 6);
    let mut input_major = vec![bf16::ZERO; w16.len()];
    for k in 0..kg_all {
        for c in 0..cg {
            input_major[c * kg_all + k] = w16[k * cg + c];
        }
    }
    let transposed = Plan::builder(&conv, &input_major)
        .weight_order(WeightOrder::InputMajor)
        .bias(p.bias.as_deref().unwrap())
        .build()
        .unwrap();
    let mut c = vec![2.0f32; p.output_len()];
    transposed.forward(&p.x, dims, None, &mut c, &mut ws).unwrap();
    assert_eq!(c, b);
}

#[test]
fn bf16_special_values_propagate_as_in_f32() {
    // NaN and infinity reach only the outputs that read them; a bf16 output keeps them.
    let conv = Conv1x1::new(2, 2);
    let plan = Plan::new(&conv, &[1.0f32; 4], None, PlanOptions::default()).unwrap();
    // Three pixels: (NaN, 1), (inf, 2), (1, 2), channel by channel.
    let x = to_bf16(&[f32::NAN, f32::INFINITY, 1.0, 1.0, 2.0, 2.0]);
    let mut y = vec![bf16::ZERO; 6];
    plan.forward(&x, InputDims::new(1, 1, 3), None, &mut y, &mut Workspace::new())
        .unwrap();
    for k in 0..2 {
        assert!(y[3 * k].is_nan(), "{y:?}");
        assert_eq!(y[3 * k + 1], bf16::INFINITY, "{y:?}");
        assert_eq!(y[3 * k + 2].to_f32(), 3.0, "{y:?}");
    }
}

#[test]
fn bf16_bad_lengths_are_errors_and_leave_the_output_untouched() {
    let conv = Conv1x1::new(4, 3);
    let w = vec![bf16::ONE; 12];
    let plan = Plan::new(&conv, &w, None, PlanOptions::default()).unwrap();
    let dims = InputDims::new(1, 2, 2);
    let mut ws = Workspace::new();
    let sentinel = bf16::from_f32(-7.0);
    let cases: [(usize, Option<usize>, usize, &str); 3] = [
        (15, None, 12, "input"),
        (16, Some(11), 12, "residual"),
        (16, None, 13, "output"),
    ];
    for (xn, rn, yn, what) in cases {
        let x = vec![bf16::ONE; xn];
        let r = rn.map(|n| vec![bf16::ONE; n]);
        let mut y = vec![sentinel; yn];
        let err = plan.forward(&x, dims, r.as_deref(), &mut y, &mut ws).unwrap_err();
        assert!(
            matches!(err, Error::LengthMismatch { what: w, .. } if w == what),
            "{what}: {err:?}"
        );
        assert!(y.iter().all(|&v| v == sentinel), "{what}: output touched");
        let mut y = vec![sentinel; yn];
        if rn.is_none() {
            let err = plan.forward_residual_in_place(&x, dims, &mut y, &mut ws).unwrap_err();
            assert!(matches!(err, Error::LengthMismatch { .. }), "{what} in place: {err:?}");
            assert!(y.iter().all(|&v| v == sentinel), "{what} in place: output touched");
        }
    }
    let err = Plan::new(&conv, &w[..11], None, PlanOptions::default()).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { what: "weights", .. }), "{err:?}");
}

#[test]
fn bf16_conversions_shared_by_threads_give_the_single_thread_bits() {
    // Tensors of more than 2^16 values are converted on the plan's threads in chunks.
    if tiny() {
        return;
    }
    let conv = Conv1x1::new(48, 40);
    let dims = InputDims::new(1, 41, 43);
    let p = representable(Problem::new(conv, dims, true, true, Data::Real, 5));
    let (x16, r16) = (to_bf16(&p.x), to_bf16(p.residual.as_deref().unwrap()));
    let run = |threads: Threads| {
        let plan = p.plan(PlanOptions::default().with_threads(threads));
        let mut y16 = vec![bf16::NAN; p.output_len()];
        plan.forward(&x16, dims, Some(&r16), &mut y16, &mut Workspace::new())
            .unwrap();
        y16
    };
    let single = run(Threads::Single);
    let mut f32_call = vec![f32::NAN; p.output_len()];
    p.plan(PlanOptions::default())
        .forward(&p.x, dims, p.residual.as_deref(), &mut f32_call, &mut Workspace::new())
        .unwrap();
    assert_eq!(single, to_bf16(&f32_call));
    for threads in [Threads::Count(2), Threads::Count(3), Threads::Rayon] {
        assert_eq!(run(threads), single, "{threads:?}");
    }
}

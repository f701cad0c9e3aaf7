//! IEEE results on every kernel and size: denormals are computed, not flushed, and the
//! caller's floating-point environment is left alone; padded outputs never read the weights;
//! the smooth activations reach their limits for huge and infinite `z`.
mod common;
use common::*;
use pointwise::{
    Activation, Conv1x1, InputDims, KernelChoice, KernelId, Layout, Padding, Plan, PlanOptions, Workspace,
};

/// Every kernel under test forced, plus Auto (which takes the reference loop on small problems).
fn choices() -> Vec<PlanOptions> {
    let mut out: Vec<PlanOptions> = kernels_under_test()
        .into_iter()
        .map(|k| PlanOptions::default().with_kernel(KernelChoice::Force(k)))
        .collect();
    out.push(PlanOptions::default());
    out
}

/// Pixel counts below and above the small-problem cut-off for a `c -> k` layer.
fn sizes(c: usize, k: usize) -> [InputDims; 2] {
    let small = InputDims::new(1, 1, 1);
    let side = (pointwise::SMALL_PROBLEM_MACS / (c * k) + 1).isqrt() + 2;
    [small, InputDims::new(1, side, side + 1)]
}

#[test]
fn denormal_inputs_give_ieee_results_everywhere() {
    // 64 -> 32, x = 1e-40 (a denormal), w = 1e30: every output is 64 * 1e-40 * 1e30 = 6.4e-9.
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let conv = Conv1x1::new(64, 32).with_layout(layout);
        let w = vec![1e30f32; 64 * 32];
        for dims in sizes(64, 32) {
            let x = vec![1e-40f32; conv.input_len(dims).unwrap()];
            let want = 64.0 * f64::from(1e-40f32) * 1e30;
            for opts in choices() {
                let plan = Plan::new(&conv, &w, None, opts).unwrap();
                let mut y = vec![f32::NAN; plan.output_len(dims).unwrap()];
                plan.forward(&x, dims, None, &mut y, &mut Workspace::new()).unwrap();
                for &v in &y {
                    let err = (f64::from(v) - want).abs() / want;
                    assert!(
                        err < 1e-5,
                        "{:?} {layout:?} {dims:?}: {v} vs {want}",
                        plan.kernel_for(dims)
                    );
                }
            }
        }
    }
    // Denormal results stay denormal: 2^-130 * 1 summed once.
    let tiny = f32::from_bits(1 << 19); // 2^-130
    for opts in choices() {
        let conv = Conv1x1::new(1, 16);
        for dims in sizes(1, 16) {
            let plan = Plan::new(&conv, &[1.0; 16], None, opts).unwrap();
            let x = vec![tiny; conv.input_len(dims).unwrap()];
            let mut y = vec![0.0; plan.output_len(dims).unwrap()];
            plan.forward(&x, dims, None, &mut y, &mut Workspace::new()).unwrap();
            assert!(y.iter().all(|&v| v == tiny), "{:?}", plan.kernel_for(dims));
        }
    }
}

/// The SSE control and status register (reading it is sound; pointwise must never write it).
#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    #[allow(deprecated)]
    // SAFETY: stmxcsr only reads the register; SSE is baseline on x86_64.
    unsafe {
        std::arch::x86_64::_mm_getcsr()
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_floating_point_environment_is_untouched() {
    // Raise the sticky "inexact" flag (bit 5) with a computation the compiler cannot fold.
    let third = std::hint::black_box(1.0f32) / std::hint::black_box(3.0f32);
    assert!(third > 0.0);
    let before = mxcsr();
    assert!(before & (1 << 5) != 0, "inexact flag not raised: {before:#x}");
    for opts in choices() {
        let conv = Conv1x1::new(16, 16).with_activation(Activation::Silu);
        for dims in sizes(16, 16) {
            let plan = Plan::new(&conv, &[0.5; 256], None, opts).unwrap();
            let x = vec![1.0; conv.input_len(dims).unwrap()];
            let mut y = vec![0.0; plan.output_len(dims).unwrap()];
            plan.forward(&x, dims, None, &mut y, &mut Workspace::new()).unwrap();
            // Control bits (rounding, masks, FTZ, DAZ) equal; sticky flags only ever added.
            let after = mxcsr();
            assert_eq!(after & !0x3f, before & !0x3f, "{:?}", plan.kernel_for(dims));
            assert_eq!(after & before & 0x3f, before & 0x3f, "{:?}", plan.kernel_for(dims));
        }
    }
}

#[test]
fn padded_outputs_ignore_non_finite_weights() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let conv = Conv1x1::new(5, 19)
                .with_layout(layout)
                .with_padding(Padding::Explicit {
                    top: 1,
                    bottom: 2,
                    left: 2,
                    right: 1,
                })
                .with_activation(Activation::Relu6);
            for dims in [InputDims::new(1, 1, 1), InputDims::new(2, 9, 11)] {
                let mut p = Problem::new(conv, dims, true, true, Data::Exact, 4);
                p.w.iter_mut().step_by(7).for_each(|w| *w = bad);
                let out = conv.output_dims(dims).unwrap();
                for opts in choices() {
                    for in_place in [false, true] {
                        let plan = p.plan(opts);
                        let mut y = vec![f32::NAN; p.output_len()];
                        let r = p.residual.as_ref().unwrap();
                        if in_place {
                            y.copy_from_slice(r);
                            plan.forward_residual_in_place(&p.x, dims, &mut y, &mut Workspace::new())
                        } else {
                            plan.forward(&p.x, dims, Some(r), &mut y, &mut Workspace::new())
                        }
                        .unwrap();
                        for img in 0..dims.n {
                            for oy in 0..out.h {
                                for ox in 0..out.w {
                                    let padded = oy < 1 || oy > dims.h || ox < 2 || ox >= dims.w + 2;
                                    if !padded {
                                        continue;
                                    }
                                    for k in 0..19 {
                                        let oi = match layout {
                                            Layout::Nchw => ((img * 19 + k) * out.h + oy) * out.w + ox,
                                            Layout::Nhwc => ((img * out.h + oy) * out.w + ox) * 19 + k,
                                            other => panic!("no model for {other:?}"),
                                        };
                                        let z = p.bias.as_ref().unwrap()[k] + r[oi];
                                        assert_eq!(
                                            y[oi],
                                            z.clamp(0.0, 6.0),
                                            "{:?} {layout:?} {dims:?} w={bad} in_place={in_place} ({img},{k},{oy},{ox})",
                                            plan.kernel_for(dims)
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Runs `act` on the values `zs` (as a 1 -> 1 convolution with weight 1 over `zs.len()`
/// pixels, so `z` reaches the activation exactly) with `opts`.
fn activate_all(act: Activation, zs: &[f32], opts: PlanOptions) -> (Vec<f32>, KernelId) {
    let conv = Conv1x1::new(1, 1).with_activation(act);
    let mut b = Plan::builder(&conv, &[1.0]).options(opts);
    if act.needs_slope() {
        b = b.prelu_slope(&[0.25]);
    }
    let plan = b.build().unwrap();
    let dims = InputDims::new(1, 1, zs.len());
    let mut y = vec![f32::NAN; zs.len()];
    plan.forward(zs, dims, None, &mut y, &mut Workspace::new()).unwrap();
    (y, plan.kernel_for(dims).unwrap())
}

/// z over the whole f32 range: 0, ±(2^-149 .. 3.4e38) in steps of 2^(1/4), and ±inf.
fn wide_range() -> Vec<f32> {
    let mut zs = vec![0.0f32, -0.0];
    let mut m = f32::from_bits(1) as f64;
    while m < f32::MAX as f64 {
        zs.push(m as f32);
        zs.push(-m as f32);
        m *= 2f64.powf(0.25);
    }
    zs.extend([f32::MAX, -f32::MAX, f32::INFINITY, f32::NEG_INFINITY]);
    zs
}

#[test]
fn smooth_activations_over_the_whole_range() {
    let zs = wide_range();
    let acts = [
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::HardSwish,
        Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
        Activation::Prelu,
    ];
    for act in acts {
        for opts in choices() {
            // Small (reference loop under Auto) and large (tiled) calls agree in class.
            for len in [3, zs.len()] {
                let zs = &zs[..len];
                let (y, kernel) = activate_all(act, zs, opts);
                for (&z, &got) in zs.iter().zip(&y) {
                    let want = act64(act, f64::from(z), 0.25);
                    let ctx = format!("{act:?} on {kernel}: z = {z:e}, got {got:e}, want {want:e}");
                    if want.is_infinite() || z.is_infinite() {
                        assert_eq!(f64::from(got), want, "{ctx}");
                        continue;
                    }
                    let bound = act_error(act, f64::from(z), want) + f64::from(f32::MIN_POSITIVE);
                    let err = (f64::from(got) - want).abs();
                    assert!(err <= bound, "{ctx}, bound {bound:e}");
                    if act == Activation::Gelu && z < 0.0 && z > -10.0 {
                        let relative = want.abs() / 65536.0 + f64::from(f32::MIN_POSITIVE);
                        assert!(err <= relative, "{ctx}, relative bound {relative:e}");
                    }
                }
                // The functions' minima hold for every z.
                let floor = match act {
                    Activation::Silu => -0.278_465,
                    Activation::Gelu | Activation::GeluTanh => -0.170_2,
                    _ => f32::NEG_INFINITY,
                };
                assert!(y.iter().all(|&v| v >= floor), "{act:?} on {kernel} below its minimum");
            }
        }
    }
    // NaN propagates through every activation.
    for act in ACTIVATIONS {
        for opts in choices() {
            let (y, kernel) = activate_all(act, &[f32::NAN; 40], opts);
            assert!(y.iter().all(|v| v.is_nan()), "{act:?} on {kernel}");
        }
    }
}

#[test]
fn gelu_is_the_exact_erf_form() {
    // PyTorch's nn.GELU() at z = -2.7: 0.5 z (1 + erf(z / sqrt 2)) = -0.009386...; the tanh
    // form is about 4.7e-4 away.
    let z = -2.7f64;
    let exact = z * 0.5 * erfc64(-z / std::f64::consts::SQRT_2);
    for opts in choices() {
        let (y, kernel) = activate_all(Activation::Gelu, &[-2.7; 40], opts);
        let (t, _) = activate_all(Activation::GeluTanh, &[-2.7; 40], opts);
        assert!((f64::from(y[0]) / exact - 1.0).abs() < 1e-6, "{kernel}: {}", y[0]);
        assert!((f64::from(t[0]) - exact).abs() > 4e-4, "{kernel}: {}", t[0]);
    }
}

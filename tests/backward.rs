//! The backward passes against f64 references written from their definitions: exact (bit for
//! bit) on integer data on every kernel, bounded by the reduction length on real data, equal
//! for every thread count, and the analytic gradients against central finite differences of an
//! f64 forward pass for every activation, stride, asymmetric padding and groups.
mod common;

use common::gradients::{channel_of, GradCase as Case};
use common::{act64, gamma, kernels_under_test, reduced};
use pointwise::{
    Accumulate, Activation, BackwardPlan, Conv1x1, Error, Gradients, InputDims, KernelChoice, Layout, Padding, Plan,
    PlanOptions, Saved, Threads, Workspace,
};
use rand::{Rng, SeedableRng};

fn sweep() -> Vec<(Conv1x1, InputDims)> {
    let mut v = Vec::new();
    let channel_pairs: &[(usize, usize, usize)] = if reduced() {
        &[(3, 5, 1), (16, 33, 1), (12, 6, 3)]
    } else {
        &[
            (1, 1, 1),
            (3, 5, 1),
            (16, 33, 1),
            (33, 16, 1),
            (12, 6, 3),
            (8, 8, 8),
            (64, 96, 2),
        ]
    };
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for &(c, k, g) in channel_pairs {
            for (stride, padding) in [
                (1, Padding::Valid),
                (2, Padding::Valid),
                (
                    1,
                    Padding::Explicit {
                        top: 1,
                        left: 0,
                        bottom: 0,
                        right: 2,
                    },
                ),
                (
                    3,
                    Padding::Explicit {
                        top: 0,
                        left: 2,
                        bottom: 1,
                        right: 1,
                    },
                ),
            ] {
                for (n, h, w) in [(1, 5, 7), (2, 4, 3)] {
                    let conv = Conv1x1::new(c, k)
                        .with_groups(g)
                        .with_layout(layout)
                        .with_stride(stride, stride)
                        .with_padding(padding);
                    v.push((conv, InputDims::new(n, h, w)));
                }
            }
        }
    }
    v
}

#[test]
fn integer_data_gives_the_exact_gradients_on_every_kernel() {
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for (i, (conv, dims)) in sweep().into_iter().enumerate() {
            let case = Case::new(conv, dims, true, i as u64);
            let ((dx, _), (dw, _), db) = case.reference();
            let (gx, gw, gb) = case.run(options, Accumulate::Overwrite, f32::NAN);
            let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            assert_eq!(gx, as_f32(&dx), "{kernel} dx {conv:?} {dims:?}");
            assert_eq!(gw, as_f32(&dw), "{kernel} dw {conv:?} {dims:?}");
            assert_eq!(gb, as_f32(&db), "{kernel} db {conv:?} {dims:?}");
            // beta = 1 adds onto what was there.
            let (ax, aw, ab) = case.run(options, Accumulate::Add, 2.0);
            let plus_two = |v: &[f32]| v.iter().map(|&x| x + 2.0).collect::<Vec<_>>();
            assert_eq!(
                (ax, aw, ab),
                (plus_two(&gx), plus_two(&gw), plus_two(&gb)),
                "{kernel} accumulate {conv:?}"
            );
        }
    }
}

#[test]
fn real_data_stays_within_the_bound_of_its_reduction_length() {
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for (i, (conv, dims)) in sweep().into_iter().enumerate() {
            let case = Case::new(conv, dims, false, 1000 + i as u64);
            let ((dx, dx_scale), (dw, dw_scale), db) = case.reference();
            let (gx, gw, gb) = case.run(options, Accumulate::Overwrite, 0.0);
            let out = conv.output_dims(dims).unwrap();
            // dx reduces over K/G terms, dw over N*Ho*Wo, db over N*Ho*Wo.
            let pixels = dims.n * out.h * out.w;
            let check = |name: &str, got: &[f32], want: &[f64], scale: &[f64], n: usize| {
                for (j, (&g, &r)) in got.iter().zip(want).enumerate() {
                    let bound = gamma(n + 1) * scale[j] + f64::from(f32::MIN_POSITIVE);
                    assert!(
                        (g as f64 - r).abs() <= bound,
                        "{kernel} {name}[{j}] {g} vs {r} {conv:?} {dims:?}"
                    );
                }
            };
            check("dx", &gx, &dx, &dx_scale, conv.out_channels / conv.groups);
            check("dw", &gw, &dw, &dw_scale, pixels);
            let db_scale: Vec<f64> = vec![case.dz.iter().map(|v| v.abs() as f64).sum(); db.len()];
            check("db", &gb, &db, &db_scale, pixels);
        }
    }
}

#[test]
fn gradients_are_bit_identical_for_every_thread_count() {
    // Gathered operands (stride, padding, two images) and operands read in place (one image,
    // dense: rows in NCHW, columns in NHWC), each packing the smaller one.
    let strided = Conv1x1::new(64, 96).with_stride(2, 2).with_padding(Padding::uniform(1));
    let cases = [(strided, 2), (Conv1x1::new(96, 48), 1), (Conv1x1::new(48, 96), 1)];
    for ((conv, n), layout) in cases.into_iter().flat_map(|c| [(c, Layout::Nchw), (c, Layout::Nhwc)]) {
        let case = Case::new(conv.with_layout(layout), InputDims::new(n, 23, 21), false, 7);
        let one = case.run(PlanOptions::default(), Accumulate::Overwrite, 0.0);
        for t in [2, 3, 7] {
            let many = case.run(
                PlanOptions::default().with_threads(Threads::Count(t)),
                Accumulate::Overwrite,
                0.0,
            );
            assert!(one == many, "{t} threads, {layout:?}");
        }
    }
}

/// `sum(act(W x + b) * r)` in f64, for finite differences.
fn loss64(conv: &Conv1x1, dims: InputDims, x: &[f64], w: &[f64], b: &[f64], r: &[f32], slope: &[f64]) -> f64 {
    let out = conv.output_dims(dims).unwrap();
    let (kg, cg) = (conv.out_channels / conv.groups, conv.in_channels / conv.groups);
    let case = Case {
        conv: *conv,
        dims,
        x: vec![0.0; x.len()],
        w: vec![],
        dz: vec![],
    };
    let (pairs, cs, ks) = case.pixel_pairs();
    let p = out.h * out.w;
    let mut z: Vec<f64> = (0..out.len().unwrap())
        .map(|i| b[channel_of(conv.layout, i, p, out.k)])
        .collect();
    for &(ib, ob) in &pairs {
        for k in 0..out.k {
            let g = k / kg;
            z[ob + k * ks] += (0..cg)
                .map(|cc| w[k * cg + cc] * x[ib + (g * cg + cc) * cs])
                .sum::<f64>();
        }
    }
    z.iter()
        .enumerate()
        .map(|(i, &zi)| {
            let k = channel_of(conv.layout, i, p, out.k);
            act64(conv.activation, zi, slope.get(k).copied().unwrap_or(0.0)) * r[i] as f64
        })
        .sum()
}

#[test]
fn analytic_gradients_agree_with_finite_differences() {
    // Not `common::ACTIVATIONS`: these parameters put every kink (Clamp's bounds, the
    // negative slopes) inside the range the small random pre-activations here cover.
    let activations = [
        Activation::Identity,
        Activation::Relu,
        Activation::Relu6,
        Activation::Clamp { min: -0.5, max: 0.75 },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Prelu,
        Activation::HardSwish,
        Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (a, &act) in activations.iter().enumerate() {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let conv = Conv1x1::new(4, 6)
                .with_groups(2)
                .with_stride(2, 1)
                .with_padding(Padding::Explicit {
                    top: 1,
                    left: 0,
                    bottom: 0,
                    right: 1,
                })
                .with_layout(layout)
                .with_activation(act);
            let dims = InputDims::new(2, 3, 3);
            let case = Case::new(conv, dims, false, 50 + a as u64);
            let b: Vec<f32> = (0..6).map(|_| rng.random_range(-0.5f32..0.5)).collect();
            let slope: Vec<f32> = if act == Activation::Prelu {
                vec![0.2, -0.3, 0.5, 0.1, 0.0, 0.7]
            } else {
                vec![]
            };
            let r: Vec<f32> = (0..case.dz.len()).map(|_| rng.random_range(-1.0f32..1.0)).collect();

            // Forward in training mode, then the four backward passes.
            let mut builder = Plan::builder(&conv, &case.w).bias(&b);
            if !slope.is_empty() {
                builder = builder.prelu_slope(&slope);
            }
            let plan = builder.build().unwrap();
            let mut grads = BackwardPlan::new(&conv, &case.w, PlanOptions::default()).unwrap();
            if !slope.is_empty() {
                grads = grads.with_prelu_slope(&slope).unwrap();
            }
            let mut ws = Workspace::new();
            let (mut z, mut y) = (vec![0.0; r.len()], vec![0.0; r.len()]);
            plan.forward_training(&case.x, dims, None, &mut z, &mut y, &mut ws)
                .unwrap();
            let mut plain = vec![0.0; r.len()];
            plan.forward(&case.x, dims, None, &mut plain, &mut ws).unwrap();
            assert_eq!(y, plain, "training forward output bits {act:?}");
            let mut dz = vec![0.0; r.len()];
            grads.activation(&r, Saved::PreActivation(&z), dims, &mut dz).unwrap();
            let mut dz_from_y = vec![f32::NAN; r.len()];
            match grads.activation(&r, Saved::Output(&y), dims, &mut dz_from_y) {
                Ok(()) => {
                    for (i, (&a1, &a2)) in dz.iter().zip(&dz_from_y).enumerate() {
                        assert!(
                            (a1 - a2).abs() <= 1e-5 * (1.0 + a1.abs()),
                            "{act:?} dz from y [{i}]: {a2} vs {a1}"
                        );
                    }
                }
                Err(Error::InvalidActivation(_)) => assert!(dz_from_y.iter().all(|v| v.is_nan()), "untouched"),
                Err(e) => panic!("{e}"),
            }
            let (mut dx, mut dw, mut db) = (vec![0.0; case.x.len()], vec![0.0; case.w.len()], vec![0.0; 6]);
            grads.data(&dz, dims, &mut dx, Accumulate::Overwrite, &mut ws).unwrap();
            grads
                .weights(&case.x, &dz, dims, &mut dw, Accumulate::Overwrite, &mut ws)
                .unwrap();
            grads.bias(&dz, dims, &mut db, Accumulate::Overwrite).unwrap();

            let x64: Vec<f64> = case.x.iter().map(|&v| v as f64).collect();
            let w64: Vec<f64> = case.w.iter().map(|&v| v as f64).collect();
            let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            // The PReLU slopes' gradient, from one step with the pre-activation.
            let mut ds = vec![0.0f32; slope.len()];
            if !slope.is_empty() {
                let step = Gradients::new().prelu_slope(&mut ds);
                grads
                    .backward(&case.x, &r, Saved::PreActivation(&z), dims, step, &mut ws)
                    .unwrap();
            }
            let s64: Vec<f64> = slope.iter().map(|&v| v as f64).collect();
            let h = 1e-6;
            let fd = |x: &[f64], w: &[f64], b: &[f64], which: usize, i: usize| {
                let (mut xp, mut wp, mut bp, mut sp) = (x.to_vec(), w.to_vec(), b.to_vec(), s64.clone());
                let (mut xm, mut wm, mut bm, mut sm) = (x.to_vec(), w.to_vec(), b.to_vec(), s64.clone());
                match which {
                    0 => (xp[i] += h, xm[i] -= h),
                    1 => (wp[i] += h, wm[i] -= h),
                    2 => (bp[i] += h, bm[i] -= h),
                    _ => (sp[i] += h, sm[i] -= h),
                };
                (loss64(&conv, dims, &xp, &wp, &bp, &r, &sp) - loss64(&conv, dims, &xm, &wm, &bm, &r, &sm)) / (2.0 * h)
            };
            for (which, analytic) in [(0, &dx), (1, &dw), (2, &db), (3, &ds)] {
                for (i, &g) in analytic.iter().enumerate() {
                    let numeric = fd(&x64, &w64, &b64, which, i);
                    assert!(
                        (g as f64 - numeric).abs() <= 1e-3 * (1.0 + numeric.abs()),
                        "{act:?} {layout:?} d{}[{i}]: analytic {g}, numeric {numeric}",
                        ["x", "w", "b", "slope"][which]
                    );
                }
            }
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors_and_leave_outputs_untouched() {
    let conv = Conv1x1::new(4, 6).with_groups(2).with_stride(2, 2);
    let case = Case::new(conv, InputDims::new(1, 5, 5), true, 3);
    let grads = BackwardPlan::new(&conv, &case.w, PlanOptions::default()).unwrap();
    let mut ws = Workspace::new();
    let dims = case.dims;
    let mut dx = vec![9.0; case.x.len()];
    let e = grads
        .data(&case.dz[1..], dims, &mut dx, Accumulate::Overwrite, &mut ws)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                what: "grad_output",
                ..
            }
        ),
        "{e}"
    );
    let mut short = vec![9.0; case.x.len() - 1];
    let e = grads
        .data(&case.dz, dims, &mut short, Accumulate::Overwrite, &mut ws)
        .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "grad_input", .. }), "{e}");
    assert!(dx.iter().chain(&short).all(|&v| v == 9.0));
    let mut dw = vec![9.0; case.w.len() + 1];
    let e = grads
        .weights(&case.x, &case.dz, dims, &mut dw, Accumulate::Overwrite, &mut ws)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                what: "grad_weights",
                ..
            }
        ),
        "{e}"
    );
    let mut dw = vec![9.0; case.w.len()];
    let e = grads
        .weights(&case.x[1..], &case.dz, dims, &mut dw, Accumulate::Overwrite, &mut ws)
        .unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "input", .. }), "{e}");
    assert!(dw.iter().all(|&v| v == 9.0));
    let mut db = vec![9.0; 5];
    let e = grads.bias(&case.dz, dims, &mut db, Accumulate::Overwrite).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { what: "grad_bias", .. }), "{e}");
    assert!(db.iter().all(|&v| v == 9.0));
    let mut dz = vec![9.0; case.dz.len()];
    let silu = BackwardPlan::new(&conv.with_activation(Activation::Silu), &case.w, PlanOptions::default()).unwrap();
    let e = silu
        .activation(&case.dz, Saved::Output(&case.dz), dims, &mut dz)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidActivation(_)), "{e}");
    let prelu = BackwardPlan::new(
        &conv.with_activation(Activation::Prelu),
        &case.w,
        PlanOptions::default(),
    )
    .unwrap();
    let e = prelu
        .activation(&case.dz, Saved::PreActivation(&case.dz), dims, &mut dz)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidActivation(_)), "{e}");
    assert!(dz.iter().all(|&v| v == 9.0));
    assert!(matches!(
        BackwardPlan::new(&conv, &case.w[1..], PlanOptions::default()),
        Err(Error::LengthMismatch { what: "weights", .. })
    ));
    assert!(matches!(
        BackwardPlan::new(&conv.with_groups(3), &case.w, PlanOptions::default()),
        Err(Error::GroupsDoNotDivide { .. })
    ));
}

#[test]
fn one_step_equals_the_separate_passes_bit_for_bit() {
    let activations = [
        Activation::Identity,
        Activation::Relu,
        Activation::Clamp { min: -0.5, max: 0.75 },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Prelu,
        Activation::HardSwish,
        Activation::Silu,
        Activation::Gelu,
    ];
    for (a, &act) in activations.iter().enumerate() {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let conv = Conv1x1::new(6, 9)
                .with_groups(3)
                .with_stride(2, 1)
                .with_padding(Padding::Explicit {
                    top: 0,
                    left: 1,
                    bottom: 1,
                    right: 0,
                })
                .with_layout(layout)
                .with_activation(act);
            let dims = InputDims::new(2, 5, 4);
            let case = Case::new(conv, dims, false, 70 + a as u64);
            // `case.dz` plays dy; z from a perturbation of it (any pre-activation will do).
            let z: Vec<f32> = case.dz.iter().map(|&v| 2.0 * v - 0.3).collect();
            let slope = [0.2, -0.3, 0.5, 0.1, 0.0, 0.7, 1.5, -1.0, 0.25];
            let mut grads = BackwardPlan::new(&conv, &case.w, PlanOptions::default()).unwrap();
            if act == Activation::Prelu {
                grads = grads.with_prelu_slope(&slope).unwrap();
            }
            let mut ws = Workspace::new();
            for accumulate in [Accumulate::Overwrite, Accumulate::Add] {
                for with_residual in [false, true] {
                    let start = 0.375;
                    let mut expected_dz = vec![0.0; z.len()];
                    grads
                        .activation(&case.dz, Saved::PreActivation(&z), dims, &mut expected_dz)
                        .unwrap();
                    let (mut dx0, mut dw0, mut db0) =
                        (vec![start; case.x.len()], vec![start; case.w.len()], vec![start; 9]);
                    grads.data(&expected_dz, dims, &mut dx0, accumulate, &mut ws).unwrap();
                    grads
                        .weights(&case.x, &expected_dz, dims, &mut dw0, accumulate, &mut ws)
                        .unwrap();
                    grads.bias(&expected_dz, dims, &mut db0, accumulate).unwrap();
                    let dr0: Vec<f32> = match accumulate {
                        Accumulate::Overwrite => expected_dz.clone(),
                        _ => expected_dz.iter().map(|&d| start + d).collect(),
                    };

                    let (mut dx, mut dw, mut db, mut dr) = (
                        vec![start; case.x.len()],
                        vec![start; case.w.len()],
                        vec![start; 9],
                        vec![start; z.len()],
                    );
                    let mut step = Gradients::new()
                        .input(&mut dx)
                        .weights(&mut dw)
                        .bias(&mut db)
                        .accumulate(accumulate);
                    if with_residual {
                        step = step.residual(&mut dr);
                    }
                    grads
                        .backward(&case.x, &case.dz, Saved::PreActivation(&z), dims, step, &mut ws)
                        .unwrap();
                    let what = format!("{act:?} {layout:?} {accumulate:?} residual {with_residual}");
                    assert_eq!(dx, dx0, "dx {what}");
                    assert_eq!(dw, dw0, "dw {what}");
                    assert_eq!(db, db0, "db {what}");
                    if with_residual {
                        assert_eq!(dr, dr0, "dresidual {what}");
                    } else {
                        assert!(dr.iter().all(|&v| v == start), "not asked for: untouched {what}");
                    }
                }
            }
            // Only some gradients: the others' passes do not run (nothing else to observe
            // but the result).
            let mut db = vec![0.0; 9];
            grads
                .backward(
                    &case.x,
                    &case.dz,
                    Saved::PreActivation(&z),
                    dims,
                    Gradients::new().bias(&mut db),
                    &mut ws,
                )
                .unwrap();
            let mut dz = vec![0.0; z.len()];
            grads
                .activation(&case.dz, Saved::PreActivation(&z), dims, &mut dz)
                .unwrap();
            let mut db0 = vec![0.0; 9];
            grads.bias(&dz, dims, &mut db0, Accumulate::Overwrite).unwrap();
            assert_eq!(db, db0);
        }
    }
}

#[test]
fn a_bad_step_touches_no_gradient() {
    let conv = Conv1x1::new(4, 6)
        .with_groups(2)
        .with_stride(2, 2)
        .with_activation(Activation::Silu);
    let case = Case::new(conv, InputDims::new(1, 5, 5), true, 5);
    let grads = BackwardPlan::new(&conv, &case.w, PlanOptions::default()).unwrap();
    let dims = case.dims;
    let mut ws = Workspace::new();
    let (nx, nw, nz) = (case.x.len(), case.w.len(), case.dz.len());
    // (x, dy, saved, dx, dw, db, dresidual) lengths, the error's name; one wrong each.
    let wrong: [([usize; 7], &str); 8] = [
        ([nx - 1, nz, nz, nx, nw, 6, nz], "input"),
        ([nx, nz + 1, nz, nx, nw, 6, nz], "grad_output"),
        ([nx, nz, nz - 1, nx, nw, 6, nz], "saved"),
        ([nx, nz, nz, nx + 1, nw, 6, nz], "grad_input"),
        ([nx, nz, nz, nx, nw - 1, 6, nz], "grad_weights"),
        ([nx, nz, nz, nx, nw, 4, nz], "grad_bias"),
        ([nx, nz, nz, nx, nw, 6, 0], "grad_residual"),
        ([nx, nz, nz, nx, nw, 6, nz], "saved output of SiLU"),
    ];
    for (lens, name) in wrong {
        let x = vec![1.0; lens[0]];
        let dy = vec![1.0; lens[1]];
        let saved = vec![1.0; lens[2]];
        let mut bufs: Vec<Vec<f32>> = lens[3..].iter().map(|&n| vec![9.0; n]).collect();
        let [dx, dw, db, dr] = &mut bufs[..] else {
            unreachable!()
        };
        let step = Gradients::new().input(dx).weights(dw).bias(db).residual(dr);
        let saved = if name.starts_with("saved output") {
            Saved::Output(&saved)
        } else {
            Saved::PreActivation(&saved)
        };
        let e = grads.backward(&x, &dy, saved, dims, step, &mut ws).unwrap_err();
        match e {
            Error::LengthMismatch { what, .. } => assert_eq!(what, name),
            Error::InvalidActivation(_) => assert!(name.starts_with("saved output"), "{e}"),
            e => panic!("{name}: {e}"),
        }
        assert!(bufs.iter().flatten().all(|&v| v == 9.0), "{name}: untouched");
    }
}

#[test]
fn a_slope_gradient_needs_prelu_and_the_pre_activation() {
    let conv = Conv1x1::new(4, 6).with_activation(Activation::Prelu);
    let case = Case::new(conv, InputDims::new(1, 3, 3), true, 9);
    let dims = case.dims;
    let grads = BackwardPlan::new(&conv, &case.w, PlanOptions::default())
        .unwrap()
        .with_prelu_slope(&[0.5; 6])
        .unwrap();
    let relu = BackwardPlan::new(&conv.with_activation(Activation::Relu), &case.w, PlanOptions::default()).unwrap();
    let mut ws = Workspace::new();
    let z = &case.dz;
    let mut run = |plan: &BackwardPlan, saved: Saved<'_>, ds_len: usize| {
        let (mut ds, mut db) = (vec![9.0; ds_len], vec![9.0; 6]);
        let step = Gradients::new().prelu_slope(&mut ds).bias(&mut db);
        let e = plan.backward(&case.x, &case.dz, saved, dims, step, &mut ws).err();
        assert!(
            ds.iter().chain(&db).all(|&v| v == 9.0) || e.is_none(),
            "untouched on error"
        );
        (e, ds)
    };
    let (e, _) = run(&grads, Saved::PreActivation(z), 5);
    assert!(
        matches!(
            e,
            Some(Error::LengthMismatch {
                what: "grad_prelu_slope",
                ..
            })
        ),
        "{e:?}"
    );
    let (e, _) = run(&grads, Saved::Output(z), 6);
    assert!(matches!(e, Some(Error::InvalidActivation(_))), "{e:?}");
    let (e, _) = run(&relu, Saved::PreActivation(z), 6);
    assert!(matches!(e, Some(Error::InvalidActivation(_))), "{e:?}");
    // Integer data: exact against the definition.
    let (e, ds) = run(&grads, Saved::PreActivation(z), 6);
    assert!(e.is_none());
    let mut want = [0.0f32; 6];
    for (i, (&g, &v)) in case.dz.iter().zip(z).enumerate() {
        if v <= 0.0 {
            want[i / 9] += g * v;
        }
    }
    assert_eq!(ds, want);
}

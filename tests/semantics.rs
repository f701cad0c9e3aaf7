//! Semantics beyond the sweep: NaN reach, SAME == VALID for 1x1, batch folding, threads,
//! groups, layouts, channel shuffle, the seed example, and which kernel Auto picks.
mod common;
use common::*;
use pointwise::*;

#[test]
fn seed_example() {
    let x: Vec<f32> = (1..=27).map(|v| v as f32).collect();
    let w = [0.5f32, -1.0, 2.0, 1.0, 1.0, 1.0];
    for kernel in kernels_under_test() {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let mut ws = Workspace::new();
        let plan = Plan::new(&Conv1x1::new(3, 2), &w, None, opts).unwrap();
        let mut y = vec![0.0; 18];
        plan.forward(&x, InputDims::new(1, 3, 3), None, &mut y, &mut ws)
            .unwrap();
        for p in 0..9 {
            let xs = [x[p], x[9 + p], x[18 + p]];
            assert_eq!(y[p], 0.5 * xs[0] - xs[1] + 2.0 * xs[2], "{kernel}");
            assert_eq!(y[9 + p], xs[0] + xs[1] + xs[2], "{kernel}");
        }
        assert_eq!(y[0], 0.5 * 1.0 - 10.0 + 2.0 * 19.0);
        let plan2 = Plan::new(&Conv1x1::new(3, 2).with_stride(2, 2), &w, None, opts).unwrap();
        assert_eq!(
            plan2.output_dims(InputDims::new(1, 3, 3)).unwrap(),
            OutputDims { n: 1, k: 2, h: 2, w: 2 }
        );
        let mut y2 = vec![0.0; 8];
        plan2
            .forward(&x, InputDims::new(1, 3, 3), None, &mut y2, &mut ws)
            .unwrap();
        assert_eq!(y2, [y[0], y[2], y[6], y[8], y[9], y[11], y[15], y[17]], "{kernel}");
    }
}

#[test]
fn same_padding_is_valid_for_1x1() {
    for (h, s) in [(5, 2), (6, 2), (7, 3), (1, 4), (224, 2), (13, 1)] {
        for pad in [Padding::SameUpper, Padding::SameLower, Padding::Valid] {
            let conv = Conv1x1::new(1, 1).with_stride(s, s).with_padding(pad);
            assert_eq!(conv.output_hw(h, h).unwrap(), (h.div_ceil(s), h.div_ceil(s)));
        }
        let explicit = Conv1x1::new(1, 1).with_stride(s, 1).with_padding(Padding::Explicit {
            top: 1,
            bottom: 2,
            left: 0,
            right: 0,
        });
        assert_eq!(explicit.output_hw(h, h).unwrap(), ((h + 3 - 1) / s + 1, h));
    }
    // SAME gives the same numbers as VALID.
    for kernel in kernels_under_test() {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let base = Conv1x1::new(5, 7).with_stride(2, 3);
        let a = Problem::new(base, InputDims::new(2, 9, 10), true, false, Data::Real, 4);
        let mut b = a.clone();
        b.conv = base.with_padding(Padding::SameLower);
        assert_eq!(a.run(opts), b.run(opts));
    }
}

#[test]
fn nan_reaches_exactly_the_outputs_that_read_it() {
    for kernel in kernels_under_test() {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for (groups, act) in [(1, Activation::Relu), (2, Activation::Gelu), (3, Activation::Identity)] {
                let conv = Conv1x1::new(6, 12)
                    .with_groups(groups)
                    .with_layout(layout)
                    .with_stride(2, 1)
                    .with_padding(Padding::Explicit {
                        top: 1,
                        bottom: 0,
                        left: 2,
                        right: 1,
                    })
                    .with_activation(act);
                let dims = InputDims::new(2, 7, 6);
                let mut p = Problem::new(conv, dims, true, true, Data::Real, 9);
                // Poison image 1, channel 3, input pixel (3, 4).
                let (img, ch, iy, ix) = (1, 3, 3, 4);
                let xi = match layout {
                    Layout::Nchw => ((img * 6 + ch) * 7 + iy) * 6 + ix,
                    Layout::Nhwc => ((img * 7 + iy) * 6 + ix) * 6 + ch,
                    other => panic!("no model for {other:?}"),
                };
                p.x[xi] = f32::NAN;
                let y = p.run(opts);
                let out = conv.output_dims(dims).unwrap();
                let kg = 12 / groups;
                let g = ch / (6 / groups);
                for i in 0..2 {
                    for k in 0..12 {
                        for oy in 0..out.h {
                            for ox in 0..out.w {
                                let oi = match layout {
                                    Layout::Nchw => ((i * 12 + k) * out.h + oy) * out.w + ox,
                                    Layout::Nhwc => ((i * out.h + oy) * out.w + ox) * 12 + k,
                                    other => panic!("no model for {other:?}"),
                                };
                                let reads = i == img && oy * 2 == iy + 1 && ox == ix + 2 && k / kg == g;
                                assert_eq!(
                                    y[oi].is_nan(),
                                    reads,
                                    "{kernel} {layout:?} g{groups} ({i},{k},{oy},{ox})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn padded_outputs_are_act_of_bias_plus_residual() {
    for kernel in kernels_under_test() {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let conv = Conv1x1::new(3, 4)
            .with_padding(Padding::uniform(2))
            .with_activation(Activation::Relu6);
        let dims = InputDims::new(1, 2, 2);
        let p = Problem::new(conv, dims, true, true, Data::Exact, 3);
        let y = p.run(opts);
        // Output (0, 0) reads the padding.
        for k in 0..4 {
            let oi = k * 36;
            let z = p.bias.as_ref().unwrap()[k] + p.residual.as_ref().unwrap()[oi];
            assert_eq!(y[oi], z.clamp(0.0, 6.0), "{kernel}");
        }
    }
}

#[test]
fn threads_give_identical_results() {
    for kernel in kernels_under_test() {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let conv = Conv1x1::new(96, 80)
                .with_layout(layout)
                .with_stride(1, 2)
                .with_activation(Activation::Silu);
            let p = Problem::new(conv, InputDims::new(3, 30, 34), true, true, Data::Real, 77);
            let base = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
            let single = p.run(base);
            p.check(&single, Data::Real, kernel).unwrap();
            for t in [Threads::Count(2), Threads::Count(3), Threads::Count(7), Threads::Rayon] {
                assert_eq!(p.run(base.with_threads(t)), single, "{kernel} {t:?}");
            }
        }
    }
}

#[test]
fn one_plan_called_with_changing_dims_gives_each_call_its_own_result() {
    // The plan keeps the last call's schedule: calls alternating between dims (each with its
    // own tile and blocking) must each match a fresh plan's.
    for kernel in kernels_under_test() {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let conv = Conv1x1::new(24, 40).with_layout(layout);
            let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
            let first = Problem::new(conv, InputDims::new(1, 1, 1), true, false, Data::Exact, 3);
            let problems: Vec<Problem> = [(1, 1, 1), (2, 9, 7), (1, 40, 40)]
                .iter()
                .map(|&(n, h, w)| Problem {
                    // One plan's weights and bias for every call.
                    w: first.w.clone(),
                    bias: first.bias.clone(),
                    ..Problem::new(conv, InputDims::new(n, h, w), true, false, Data::Exact, 3)
                })
                .collect();
            let fresh: Vec<Vec<f32>> = problems.iter().map(|p| p.run(opts)).collect();
            let plan = problems[0].plan(opts);
            let mut ws = Workspace::new();
            for i in [0, 1, 2, 1, 0, 2, 2, 0] {
                let p = &problems[i];
                let mut y = vec![f32::NAN; p.output_len()];
                plan.forward(&p.x, p.dims, None, &mut y, &mut ws).unwrap();
                assert_eq!(y, fresh[i], "{kernel} {layout:?} call with {:?}", p.dims);
            }
        }
    }
}

#[test]
fn batch_equals_images_one_by_one() {
    for kernel in kernels_under_test() {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for (h, w) in [(1, 1), (3, 5), (20, 20)] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let conv = Conv1x1::new(40, 24)
                    .with_layout(layout)
                    .with_activation(Activation::HardSwish);
                let n = 5;
                let p = Problem::new(conv, InputDims::new(n, h, w), true, true, Data::Real, 5);
                let all = p.run(opts);
                let (xi, yi) = (40 * h * w, 24 * h * w);
                for i in 0..n {
                    let mut q = p.clone();
                    q.dims = InputDims::new(1, h, w);
                    q.x = p.x[i * xi..(i + 1) * xi].to_vec();
                    q.residual = Some(p.residual.as_ref().unwrap()[i * yi..(i + 1) * yi].to_vec());
                    assert_eq!(q.run(opts), all[i * yi..(i + 1) * yi], "{kernel} {h}x{w} image {i}");
                }
            }
        }
    }
}

#[test]
fn nhwc_equals_nchw_transposed() {
    for kernel in kernels_under_test() {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let (n, c, k, h, w) = (2, 12, 20, 5, 7);
        let nchw = Problem::new(
            Conv1x1::new(c, k).with_stride(2, 1),
            InputDims::new(n, h, w),
            true,
            false,
            Data::Exact,
            8,
        );
        let mut nhwc = nchw.clone();
        nhwc.conv.layout = Layout::Nhwc;
        for img in 0..n {
            for ch in 0..c {
                for pix in 0..h * w {
                    nhwc.x[(img * h * w + pix) * c + ch] = nchw.x[(img * c + ch) * h * w + pix];
                }
            }
        }
        let (a, b) = (nchw.run(opts), nhwc.run(opts));
        let out = nchw.conv.output_dims(nchw.dims).unwrap();
        let po = out.h * out.w;
        for img in 0..n {
            for kk in 0..k {
                for pix in 0..po {
                    assert_eq!(a[(img * k + kk) * po + pix], b[(img * po + pix) * k + kk], "{kernel}");
                }
            }
        }
    }
}

#[test]
fn channel_shuffle_round_trip() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let dims = InputDims::new(2, 3, 4);
        let c = 12;
        let x: Vec<f32> = (0..2 * c * 12).map(|v| v as f32).collect();
        for g in [1, 2, 3, 4, 6, 12] {
            let mut y = vec![0.0; x.len()];
            let mut z = vec![0.0; x.len()];
            channel_shuffle(&x, &mut y, dims, c, g, layout).unwrap();
            channel_shuffle(&y, &mut z, dims, c, c / g, layout).unwrap();
            assert_eq!(z, x);
            if g != 1 && g != c {
                assert_ne!(y, x);
            }
        }
    }
}

#[test]
fn auto_picks_the_expected_kernel() {
    // CI sets POINTWISE_EXPECT_AUTO for each emulated CPU; natively, check the order.
    let auto = auto_kernel();
    if let Ok(expected) = std::env::var("POINTWISE_EXPECT_AUTO") {
        assert_eq!(auto.name(), expected, "features: {:?}", cpu_features());
    }
    let f = cpu_features();
    let want = if f.avx512 && f.avx512bf16 {
        KernelId::Avx512Bf16
    } else if f.avx512 {
        KernelId::Avx512
    } else if f.avx2_fma {
        KernelId::Avx2
    } else if f.neon && f.neon_bf16 {
        KernelId::NeonBf16
    } else if f.neon {
        KernelId::Neon
    } else {
        KernelId::Portable
    };
    assert_eq!(auto, want);
    // Above the small-problem cut-off Auto's kernel runs; at or below it, the reference loop,
    // and both the plan and the invocation counters say so.
    let big = InputDims::new(1, 8, 8);
    let plan = Plan::new(&Conv1x1::new(32, 32), &[1.0; 32 * 32], None, PlanOptions::default()).unwrap();
    assert_eq!(plan.kernel(), want);
    assert_eq!(plan.kernel_for(big).unwrap(), want);
    let before = want.invocations();
    plan.forward(&[1.0; 32 * 64], big, None, &mut [0.0; 32 * 64], &mut Workspace::new())
        .unwrap();
    assert!(want.invocations() > before);

    let small = InputDims::new(1, 2, 2);
    let tiny = Plan::new(&Conv1x1::new(2, 2), &[1.0; 4], None, PlanOptions::default()).unwrap();
    assert_eq!(tiny.kernel(), want);
    assert_eq!(tiny.kernel_for(small).unwrap(), KernelId::Reference);
    let before = KernelId::Reference.invocations();
    tiny.forward(&[1.0; 8], small, None, &mut [0.0; 8], &mut Workspace::new())
        .unwrap();
    assert!(KernelId::Reference.invocations() > before);
    // The cut-off is per image, all groups together: Ho * Wo * K * (C/G) multiply-adds.
    let at_cut = Plan::new(&Conv1x1::new(8, 16), &[1.0; 128], None, PlanOptions::default()).unwrap();
    assert_eq!(SMALL_PROBLEM_MACS, 2048);
    assert_eq!(at_cut.kernel_for(InputDims::new(7, 4, 4)).unwrap(), KernelId::Reference);
    assert_eq!(at_cut.kernel_for(InputDims::new(1, 4, 5)).unwrap(), want);
    // (36 * 16 * 4 = 2304 multiply-adds per image, 576 per group.)
    let grouped = Conv1x1::new(16, 16).with_groups(4);
    let at_cut = Plan::new(&grouped, &[1.0; 64], None, PlanOptions::default()).unwrap();
    assert_eq!(at_cut.kernel_for(InputDims::new(3, 4, 4)).unwrap(), KernelId::Reference);
    assert_eq!(at_cut.kernel_for(InputDims::new(1, 6, 6)).unwrap(), want);
}

#[test]
fn forced_kernel_from_environment_is_the_one_that_runs() {
    let opts = PlanOptions::from_env().unwrap();
    // A forced kernel runs at every size, the smallest included.
    for (c, k, hw) in [(4, 4, 3), (32, 32, 8)] {
        let plan = Plan::new(&Conv1x1::new(c, k), &vec![1.0; c * k], None, opts).unwrap();
        let dims = InputDims::new(1, hw, hw);
        let ran = plan.kernel_for(dims).unwrap();
        if let KernelChoice::Force(forced) = opts.kernel {
            assert_eq!(plan.kernel(), forced);
            assert_eq!(ran, forced);
        }
        let before = ran.invocations();
        plan.forward(
            &vec![1.0; c * hw * hw],
            dims,
            None,
            &mut vec![0.0; k * hw * hw],
            &mut Workspace::new(),
        )
        .unwrap();
        assert!(ran.invocations() > before, "{ran} did not run");
    }
}

/// `use pointwise::*` brings no `Result` alias that would shadow the standard one.
#[test]
fn glob_import_keeps_std_result() {
    fn two_params() -> Result<u8, String> {
        Ok(1)
    }
    assert_eq!(two_params(), Ok(1));
}

/// Shapes for the in-place and weight-order tests: tile edges, padding, stride, groups,
/// batches, both layouts, small (reference loop under Auto) and tiled.
fn layout_cases() -> Vec<(Conv1x1, InputDims)> {
    let mut out = Vec::new();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        out.push((Conv1x1::new(3, 2).with_layout(layout), InputDims::new(1, 3, 3)));
        out.push((
            Conv1x1::new(24, 40)
                .with_layout(layout)
                .with_activation(Activation::Silu),
            InputDims::new(2, 9, 13),
        ));
        out.push((
            Conv1x1::new(12, 36)
                .with_layout(layout)
                .with_groups(3)
                .with_stride(2, 1)
                .with_padding(Padding::Explicit {
                    top: 1,
                    bottom: 0,
                    left: 2,
                    right: 1,
                })
                .with_activation(Activation::Prelu),
            InputDims::new(3, 11, 7),
        ));
        out.push((
            Conv1x1::new(64, 64)
                .with_layout(layout)
                .with_activation(Activation::Relu),
            InputDims::new(1, 32, 33),
        ));
    }
    out
}

#[test]
fn in_place_residual_equals_a_separate_residual() {
    for kernel in kernels_under_test() {
        for threads in [Threads::Single, Threads::Count(3)] {
            let opts = PlanOptions::default()
                .with_kernel(KernelChoice::Force(kernel))
                .with_threads(threads);
            for (i, (conv, dims)) in layout_cases().into_iter().enumerate() {
                let p = Problem::new(conv, dims, true, true, Data::Real, 40 + i as u64);
                let plan = p.plan(opts);
                let want = p.run(opts);
                let mut y = p.residual.clone().unwrap();
                plan.forward_residual_in_place(&p.x, dims, &mut y, &mut Workspace::new())
                    .unwrap();
                assert_eq!(
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{kernel} {threads:?} {conv:?} {dims:?}"
                );
                p.check(&y, Data::Real, kernel).unwrap();
            }
        }
    }
}

#[test]
fn input_major_weights_equal_output_major() {
    for kernel in kernels_under_test() {
        let opts = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for (i, (conv, dims)) in layout_cases().into_iter().enumerate() {
            let p = Problem::new(conv, dims, true, false, Data::Real, 60 + i as u64);
            let want = p.run(opts);
            // [K, C/G] -> [C/G, K], TensorFlow's HWIO order for a 1x1 kernel.
            let (k, cg) = (conv.out_channels, conv.in_channels / conv.groups);
            let mut hwio = vec![0.0; k * cg];
            for kk in 0..k {
                for c in 0..cg {
                    hwio[c * k + kk] = p.w[kk * cg + c];
                }
            }
            let mut b = Plan::builder(&conv, &hwio)
                .weight_order(WeightOrder::InputMajor)
                .bias(p.bias.as_deref().unwrap())
                .options(opts);
            if let Some(s) = &p.slope {
                b = b.prelu_slope(s);
            }
            let plan = b.build().unwrap();
            let mut y = vec![f32::NAN; want.len()];
            plan.forward(&p.x, dims, None, &mut y, &mut Workspace::new()).unwrap();
            assert_eq!(
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{kernel} {conv:?}"
            );
        }
    }
}

#[test]
fn plan_lengths_and_debug() {
    let conv = Conv1x1::new(6, 10).with_stride(2, 2).with_layout(Layout::Nhwc);
    let plan = Plan::new(&conv, &[0.0; 60], None, PlanOptions::default()).unwrap();
    let dims = InputDims::new(2, 5, 8);
    assert_eq!(plan.input_len(dims).unwrap(), 2 * 6 * 5 * 8);
    assert_eq!(plan.output_len(dims).unwrap(), 2 * 10 * 3 * 4);
    assert_eq!(
        plan.input_len(InputDims::new(usize::MAX, 2, 2)),
        Err(Error::SizeOverflow { what: "input length" })
    );
    let mut ws = Workspace::new();
    assert_eq!(format!("{ws:?}"), "Workspace { task_scratches: 0 }");
    let x = vec![1.0; plan.input_len(dims).unwrap()];
    let mut y = vec![0.0; plan.output_len(dims).unwrap()];
    plan.forward(&x, dims, None, &mut y, &mut ws).unwrap();
    assert!(format!("{ws:?}").starts_with("Workspace"));
}

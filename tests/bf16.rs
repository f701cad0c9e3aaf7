//! bf16 tensors: weights, inputs, residuals and outputs in bf16 on every kernel, checked
//! against the f64 reference of the bf16 operands, and against the definition the API
//! states: the f32 call on the widened values, rounded once (to nearest, ties to even) where
//! the output is bf16; on a kernel with bf16-pair tiles (avx512bf16, neonbf16), a call of bf16 input
//! and weights sums in pairs instead, checked against the reference and rounded once the
//! same way. Exact data (small integers, exact in bf16) is compared bit for bit.
mod common;
use common::*;
use pointwise::{
    bf16, Activation, Conv1x1, Element, Error, InputDims, KernelChoice, KernelId, Layout, Padding, Plan, PlanOptions,
    Threads, WeightOrder, Workspace,
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
    let mut out: Vec<PlanOptions> = kernels_under_test_bf16()
        .into_iter()
        .map(|k| PlanOptions::default().with_kernel(KernelChoice::Force(k)))
        .collect();
    out.push(PlanOptions::default());
    if !tiny() {
        out.push(PlanOptions::default().with_threads(Threads::Count(2)));
    }
    out
}

/// Whether a bf16-input call of `plan` on `dims` runs a tile that multiplies bf16 pairs
/// (whose sums are in pair order, not the f32 call's).
fn multiplies_pairs(plan: &Plan, dims: InputDims) -> bool {
    let kernel = plan.kernel_for(dims).unwrap();
    let pairs = pointwise::testing::bf16_pair_tiles(kernel);
    plan.tile_for_bf16(dims)
        .unwrap()
        .is_some_and(|name| pairs.iter().any(|t| t.name == name))
}

/// Runs every element-type combination of `p` (already bf16-representable) on `plan` and
/// checks each against the bits of the call with the same input type and an f32 output:
/// the f32 call's bits for f32 input, and for bf16 input too unless the call multiplies bf16
/// pairs (then the bf16 -> f32 call's, which the caller checks against the reference).
/// Returns the f32 call's output and the bf16 -> f32 call's.
fn check_every_type_combination(p: &Problem, plan: &Plan, what: &str) -> (Vec<f32>, Vec<f32>) {
    let mut ws = Workspace::new();
    let (x16, r16) = (to_bf16(&p.x), p.residual.as_deref().map(to_bf16));
    let len = p.output_len();
    let mut want = vec![f32::NAN; len];
    plan.forward(&p.x, p.dims, p.residual.as_deref(), &mut want, &mut ws)
        .unwrap();
    let same_bits = |got: &[f32], want: &[f32], case: &str| {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}, {case}: element {i}: {g} vs {w}");
        }
    };
    let same_bits16 = |got: &[bf16], want: &[f32], case: &str| {
        for (i, (g, w)) in got.iter().zip(to_bf16(want)).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}, {case}: element {i}: {g} vs {w}");
        }
    };
    // bf16 input, f32 output and residual.
    let mut from16 = vec![f32::NAN; len];
    plan.forward(&x16, p.dims, p.residual.as_deref(), &mut from16, &mut ws)
        .unwrap();
    if !multiplies_pairs(plan, p.dims) {
        same_bits(&from16, &want, "bf16 -> f32");
    }
    // f32 input, bf16 output and residual.
    let mut y16 = vec![bf16::NAN; len];
    plan.forward(&p.x, p.dims, r16.as_deref(), &mut y16, &mut ws).unwrap();
    same_bits16(&y16, &want, "f32 -> bf16");
    // bf16 everywhere.
    let mut y16 = vec![bf16::NAN; len];
    plan.forward(&x16, p.dims, r16.as_deref(), &mut y16, &mut ws).unwrap();
    same_bits16(&y16, &from16, "bf16 -> bf16");
    // The residual in the output buffer.
    if let Some(r16) = &r16 {
        let mut y16 = r16.clone();
        plan.forward_residual_in_place(&x16, p.dims, &mut y16, &mut ws).unwrap();
        same_bits16(&y16, &from16, "bf16 -> bf16, residual in place");
        let mut y = p.residual.clone().unwrap();
        plan.forward_residual_in_place(&x16, p.dims, &mut y, &mut ws).unwrap();
        same_bits(&y, &from16, "bf16 -> f32, residual in place");
    }
    (want, from16)
}

#[test]
fn bf16_calls_match_the_reference_and_the_f32_calls_on_every_kernel() {
    let acts = [Activation::Relu, Activation::Silu];
    for (seed, (conv, dims)) in convs().into_iter().enumerate() {
        for (a, data) in [(0, Data::Exact), (1, Data::Real)] {
            let conv = conv.with_activation(acts[a]);
            let p = representable(Problem::new(conv, dims, true, true, data, seed as u64));
            let reference = p.reference();
            for opts in options() {
                let plan = p.plan(opts);
                let kernel = plan.kernel_for(dims).unwrap();
                let what = format!("{conv:?} {dims:?} {data:?} on {kernel:?}");
                let (y, from16) = check_every_type_combination(&p, &plan, &what);
                // The f32 call on bf16 values, and the bf16 call, against the f64 reference of
                // the bf16 operands: bit for bit on exact data, else within the bound of the
                // reduction length.
                p.check_with(&reference, &y, data, kernel)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                p.check_with(&reference, &from16, data, kernel)
                    .unwrap_or_else(|e| panic!("{what}, bf16 input: {e}"));
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
    let plan = p.plan(PlanOptions::default());
    if !multiplies_pairs(&plan, dims) {
        let mut f32_call = vec![f32::NAN; p.output_len()];
        plan.forward(&p.x, dims, p.residual.as_deref(), &mut f32_call, &mut Workspace::new())
            .unwrap();
        assert_eq!(single, to_bf16(&f32_call));
    }
    for threads in [Threads::Count(2), Threads::Count(3), Threads::Rayon] {
        assert_eq!(run(threads), single, "{threads:?}");
    }
}

/// Runs `plan` on the bf16 form of `p`'s input with an f32 output.
fn bf16_input_call(p: &Problem, plan: &Plan) -> Vec<f32> {
    let mut y = vec![f32::NAN; p.output_len()];
    plan.forward(
        &to_bf16(&p.x),
        p.dims,
        p.residual.as_deref(),
        &mut y,
        &mut Workspace::new(),
    )
    .unwrap();
    y
}

/// The call of `plan` on `x` with a bf16 output, with `p`'s residual in bf16 given apart and
/// held in the output buffer: each element is `want` (the same call's f32 output) rounded to
/// bf16, bit for bit. (The register tiles round in their stores, each copy-out branch: rows
/// of contiguous lanes a register at a time, scattered edges and padded pixels one value at
/// a time.)
fn check_bf16_output_rounds<I: Element>(p: &Problem, plan: &Plan, x: &[I], want: &[f32], what: &str) {
    let want16 = to_bf16(want);
    let r16 = p.residual.as_deref().map(to_bf16);
    let same = |got: &[bf16], case: &str| {
        for (i, (g, w)) in got.iter().zip(&want16).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{what}, bf16 output {case}: element {i}: {g} vs {w}"
            );
        }
    };
    let mut y16 = vec![bf16::NAN; p.output_len()];
    plan.forward(x, p.dims, r16.as_deref(), &mut y16, &mut Workspace::new())
        .unwrap();
    same(&y16, "residual apart");
    if let Some(r16) = r16 {
        let mut y16 = r16;
        plan.forward_residual_in_place(x, p.dims, &mut y16, &mut Workspace::new())
            .unwrap();
        same(&y16, "residual in place");
    }
}

/// A bf16 input is widened as the pixel packers read it (never in place): on every f32 tile
/// of every kernel, forced, folded or not, and on the matrixmultiply kernel, a bf16 call
/// gives the bits of the f32 call on the same values, through each packer's branch: NCHW
/// runs of consecutive pixels, strided rows, padded gathers; NHWC 8 x 8 transpositions with
/// their channel and pixel tails, padded pixels; groups and batches.
#[test]
fn bf16_inputs_widened_while_packing_give_the_f32_bits_on_every_tile() {
    let padded = Padding::Explicit {
        top: 1,
        bottom: 0,
        left: 2,
        right: 1,
    };
    let shapes = [
        (Conv1x1::new(19, 21), InputDims::new(1, 9, 11)),
        (Conv1x1::new(16, 9).with_stride(2, 2), InputDims::new(2, 9, 9)),
        (
            Conv1x1::new(11, 9).with_stride(2, 1).with_padding(padded),
            InputDims::new(1, 5, 7),
        ),
        (Conv1x1::new(24, 40).with_groups(2), InputDims::new(2, 6, 6)),
    ];
    let shapes = if tiny() { &shapes[..1] } else { &shapes[..] };
    for kernel in kernels_under_test() {
        let force = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let tiles: Vec<Option<&str>> = match pointwise::testing::tiles(kernel) {
            t if t.is_empty() => vec![None],
            t => t.iter().map(|t| Some(t.name)).collect(),
        };
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for (seed, &(conv, dims)) in shapes.iter().enumerate() {
                let conv = conv.with_layout(layout).with_activation(Activation::Silu);
                let p = representable(Problem::new(conv, dims, true, true, Data::Real, seed as u64));
                for &tile in &tiles {
                    for fold in [false, true] {
                        let mut plan = p.plan(force);
                        if let Some(name) = tile {
                            plan.force_tile(name, fold).unwrap();
                        }
                        let mut want = vec![f32::NAN; p.output_len()];
                        plan.forward(&p.x, dims, p.residual.as_deref(), &mut want, &mut Workspace::new())
                            .unwrap();
                        let got = bf16_input_call(&p, &plan);
                        let what = format!("{kernel} {tile:?} fold {fold} {conv:?} {dims:?}");
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}");
                        }
                        check_bf16_output_rounds(&p, &plan, &p.x, &want, &what);
                        check_bf16_output_rounds(&p, &plan, &to_bf16(&p.x), &want, &what);
                        if tile.is_none() {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Shapes around one tile's edges: channel counts of 1, 2, an odd count (a pair with one step
/// of padding) and more than one weight panel; pixel counts below, at and past the pixel
/// lanes; batches, strides with padding, groups with odd `C/G`, both layouts.
fn pair_tile_shapes(tile: &pointwise::testing::TileInfo) -> Vec<(Conv1x1, InputDims)> {
    let (wl, pl) = if tile.weight_rows {
        (tile.mr, tile.nr)
    } else {
        (tile.nr, tile.mr)
    };
    let mut out = Vec::new();
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let channels: &[(usize, usize)] = if tiny() {
            &[(3, 2)]
        } else {
            &[(1, 1), (2, wl - 1), (3, wl), (17, wl + 1), (64, 2 * wl + 3)]
        };
        for &(c, k) in channels {
            // Also runs of 32 and 143 pixels: a whole number of registers ending inside a
            // panel, and runs past the pixel-row packer's chunks (60 or 64 pixels).
            for dims in [
                InputDims::new(1, 1, pl - 1),
                InputDims::new(1, 1, pl + 1),
                InputDims::new(2, 3, 5),
                InputDims::new(1, 4, 8),
                InputDims::new(1, 11, 13),
            ] {
                out.push((Conv1x1::new(c, k).with_layout(layout), dims));
                if tiny() {
                    break;
                }
            }
        }
        if tiny() {
            continue;
        }
        let padded = Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 2,
            right: 1,
        };
        out.push((
            Conv1x1::new(33, wl + 2)
                .with_stride(2, 3)
                .with_padding(padded)
                .with_layout(layout),
            InputDims::new(2, 7, 9),
        ));
        out.push((
            Conv1x1::new(30, 2 * wl).with_groups(2).with_layout(layout),
            InputDims::new(1, 4, pl / 2 + 1),
        ));
        out.push((Conv1x1::new(257, 9).with_layout(layout), InputDims::new(1, 3, 7)));
    }
    out
}

/// Every bf16-pair tile, forced, on shapes that reach each of its edges (partial rows and
/// lanes, an odd reduction, padded pixels, groups, batches folded or not), with a bias, a
/// residual and an activation: bit for bit against the f64 reference on exact data, within
/// the bound of the reduction length on real data. A tile other than the forced one running
/// would fail `tile_for_bf16`'s check.
#[test]
fn bf16_pair_tiles_match_the_reference_on_every_edge() {
    for kernel in kernels_under_test_bf16() {
        for tile in pointwise::testing::bf16_pair_tiles(kernel) {
            for (seed, (conv, dims)) in pair_tile_shapes(&tile).into_iter().enumerate() {
                for (act, data) in [(Activation::Relu, Data::Exact), (Activation::Silu, Data::Real)] {
                    let conv = conv.with_activation(act);
                    let p = representable(Problem::new(conv, dims, true, true, data, seed as u64));
                    let reference = p.reference();
                    for fold in [false, true] {
                        let mut plan = p.plan(PlanOptions::default().with_kernel(KernelChoice::Force(kernel)));
                        plan.force_tile(tile.name, fold).unwrap();
                        assert_eq!(plan.tile_for_bf16(dims).unwrap(), Some(tile.name));
                        let y = bf16_input_call(&p, &plan);
                        let what = format!("{} {conv:?} {dims:?} fold {fold}", tile.name);
                        p.check_with(&reference, &y, data, kernel)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        check_bf16_output_rounds(&p, &plan, &to_bf16(&p.x), &y, &what);
                        // The f32 input on the same plan runs an f32 tile: the forced pair
                        // tile is refused, with the output untouched.
                        let mut untouched = vec![7.0f32; p.output_len()];
                        let err = plan
                            .forward(&p.x, dims, p.residual.as_deref(), &mut untouched, &mut Workspace::new())
                            .unwrap_err();
                        assert!(matches!(err, Error::InvalidTile(_)), "{err:?}");
                        assert!(untouched.iter().all(|&v| v == 7.0));
                    }
                }
            }
        }
    }
}

/// Reduction blocks and splits on the bf16-pair tiles start on even steps (a pair is never cut):
/// blocked results are the bits of the whole reduction, and each split (parts added in part
/// order, a different sum) gives the same bits for every thread count.
#[test]
fn bf16_pair_tiles_give_the_same_bits_blocked_split_and_threaded() {
    if tiny() {
        return;
    }
    for kernel in kernels_under_test_bf16() {
        for tile in pointwise::testing::bf16_pair_tiles(kernel) {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let conv = Conv1x1::new(301, 40).with_layout(layout);
                let dims = InputDims::new(2, 9, 11);
                let p = representable(Problem::new(conv, dims, true, true, Data::Real, 17));
                let run = |kc: Option<usize>, parts: Option<usize>, threads: usize| {
                    let options = PlanOptions::default()
                        .with_kernel(KernelChoice::Force(kernel))
                        .with_threads(Threads::Count(threads));
                    let mut plan = p.plan(options);
                    plan.force_tile(tile.name, true).unwrap();
                    if let Some(kc) = kc {
                        plan.force_reduction_block(kc);
                    }
                    if let Some(parts) = parts {
                        plan.force_reduction_split(parts);
                    }
                    bf16_input_call(&p, &plan)
                };
                let whole = run(None, None, 1);
                p.check(&whole, Data::Real, kernel).unwrap();
                for (kc, parts) in [
                    (Some(3), None),
                    (Some(8), None),
                    (Some(64), None),
                    (None, Some(2)),
                    (None, Some(3)),
                    (Some(5), Some(2)),
                ] {
                    let want = match parts {
                        None => whole.clone(),
                        Some(_) => {
                            let split = run(kc, parts, 1);
                            p.check(&split, Data::Real, kernel).unwrap();
                            split
                        }
                    };
                    for threads in [1, 2, 3, 7] {
                        let y = run(kc, parts, threads);
                        if threads == 3 {
                            // The combine phase of a split rounds in its stores too.
                            let mut plan = p.plan(
                                PlanOptions::default()
                                    .with_kernel(KernelChoice::Force(kernel))
                                    .with_threads(Threads::Count(threads)),
                            );
                            plan.force_tile(tile.name, true).unwrap();
                            if let Some(kc) = kc {
                                plan.force_reduction_block(kc);
                            }
                            if let Some(parts) = parts {
                                plan.force_reduction_split(parts);
                            }
                            let what = format!("{} {layout:?}: kc {kc:?}, parts {parts:?}", tile.name);
                            check_bf16_output_rounds(&p, &plan, &to_bf16(&p.x), &y, &what);
                        }
                        let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{} {layout:?}: kc {kc:?}, parts {parts:?}, {threads} threads",
                            tile.name
                        );
                    }
                }
            }
        }
    }
}

/// The kernels with bf16-pair tiles that this CPU runs.
fn pair_kernels() -> Vec<KernelId> {
    KernelId::ALL
        .into_iter()
        .filter(|&k| k.is_available() && !pointwise::testing::bf16_pair_tiles(k).is_empty())
        .collect()
}

/// What the bf16 kernels' pair tiles do that no other kernel does: the instructions read
/// denormal inputs as zero and flush denormal results to zero (documented); every other
/// kernel, and f32 calls on these, give IEEE results.
#[test]
fn bf16_pair_tiles_flush_denormals_and_f32_calls_do_not() {
    for kernel in pair_kernels() {
        let conv = Conv1x1::new(2, 1);
        // 2^-70 * 2^-70 = 2^-140, a denormal product; 2^-130 is a denormal bf16 input.
        let tiny_normal = 2f32.powi(-70);
        let w = to_bf16(&[tiny_normal, 1.0]);
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let dims = InputDims::new(1, 1, 2);
        // Pixel 0: (2^-70, 0) gives the denormal product; pixel 1: (0, 2^-130) a denormal
        // input.
        let x = to_bf16(&[tiny_normal, 0.0, 0.0, 2f32.powi(-130)]);
        let mut ws = Workspace::new();
        for pair_tile in pointwise::testing::bf16_pair_tiles(kernel) {
            let mut plan = Plan::new(&conv, &w, None, options).unwrap();
            plan.force_tile(pair_tile.name, false).unwrap();
            let mut y = [f32::NAN; 2];
            plan.forward(&x, dims, None, &mut y, &mut ws).unwrap();
            assert_eq!(y, [0.0, 0.0], "{}: the pair tiles flush", pair_tile.name);
        }
        let mut y = [f32::NAN; 2];
        let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let ieee = Plan::new(&conv, &w, None, options).unwrap();
        ieee.forward(&x32, dims, None, &mut y, &mut ws).unwrap();
        assert_eq!(y, [2f32.powi(-140), 2f32.powi(-130)], "{kernel}: f32 calls are IEEE");
        // Without a forced tile a bf16 call runs the pair tiles only where the core makes
        // them pay off; either way the result is one of the two above.
        ieee.forward(&x, dims, None, &mut y, &mut ws).unwrap();
        assert!(
            y == [0.0, 0.0] || y == [2f32.powi(-140), 2f32.powi(-130)],
            "{kernel}: {y:?}"
        );
    }
}

/// Each pair instruction rounds as documented: for the pair (1, 2^-25) times (1, 1),
/// `vdpbf16ps` adds the odd product first and rounds each addition to nearest (1), while
/// `BFDOT` adds the two products, then the sum, rounding to odd (1 + 2^-23, where round to
/// nearest gives 1). Every f32 tile gives 1.
#[test]
fn bf16_pair_tiles_round_as_their_instruction_does() {
    for kernel in pair_kernels() {
        let conv = Conv1x1::new(2, 1);
        let w = to_bf16(&[1.0, 1.0]);
        let x = to_bf16(&[1.0, 2f32.powi(-25)]);
        let dims = InputDims::new(1, 1, 1);
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let want = match kernel {
            KernelId::NeonBf16 => 1.0 + 2f32.powi(-23),
            _ => 1.0,
        };
        let mut ws = Workspace::new();
        for pair_tile in pointwise::testing::bf16_pair_tiles(kernel) {
            let mut plan = Plan::new(&conv, &w, None, options).unwrap();
            plan.force_tile(pair_tile.name, false).unwrap();
            let mut y = [f32::NAN];
            plan.forward(&x, dims, None, &mut y, &mut ws).unwrap();
            assert_eq!(y[0].to_bits(), want.to_bits(), "{}: {}", pair_tile.name, y[0]);
        }
        let f32_call = Plan::new(&conv, &w, None, options).unwrap();
        let mut y = [f32::NAN];
        let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        f32_call.forward(&x32, dims, None, &mut y, &mut ws).unwrap();
        assert_eq!(y, [1.0], "{kernel}: f32 calls round to nearest");
    }
}

/// f32 calls on a bf16 kernel run its base tier's tiles (`KernelId::f32_kernel`): the same
/// bits, on plans of bf16 and of f32 weights, and bf16 calls on a plan of f32 weights that
/// are not all bf16 values widen their input as every kernel does (the f32 call's bits).
#[test]
fn f32_calls_on_a_bf16_kernel_give_its_base_tiers_bits() {
    let force = |k| PlanOptions::default().with_kernel(KernelChoice::Force(k));
    for kernel in pair_kernels() {
        let base = kernel.f32_kernel();
        assert_ne!(base, kernel);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for (conv, dims) in [
                (Conv1x1::new(64, 48), InputDims::new(2, 9, 7)),
                (Conv1x1::new(24, 40).with_groups(4), InputDims::new(1, 6, 6)),
                (Conv1x1::new(7, 3), InputDims::new(1, 12, 12)),
            ] {
                let conv = conv.with_layout(layout).with_activation(Activation::Silu);
                let p = Problem::new(conv, dims, true, true, Data::Real, 9);
                let bf16_weights = representable(p.clone());
                for q in [&p, &bf16_weights] {
                    let want = q.run(force(base));
                    let got = q.run(force(kernel));
                    assert!(
                        want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kernel} {conv:?}"
                    );
                }
                // Weights that are not bf16 values: a bf16 input is widened, as on the base.
                let x16 = to_bf16(&p.x);
                let mut p_rounded_x = p.clone();
                p_rounded_x.x = x16.iter().map(|v| v.to_f32()).collect();
                let want = p_rounded_x.run(force(base));
                let got = bf16_input_call(&p, &p.plan(force(kernel)));
                assert!(
                    want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kernel} {conv:?}"
                );
            }
        }
    }
}

//! Property tests (proptest): the output-shape formula against a brute-force count, bit-exact
//! results on exact data for every kernel, identical results for 1, 2, 3 and 7 threads, batch
//! against image-by-image, grouped against G separate convolutions, NHWC against transposed
//! NCHW, and the channel-shuffle round trip.
//!
//! Case counts scale with the environment: full natively, fewer with
//! `POINTWISE_TEST_SCALE=reduced` (emulated CPUs), a handful of tiny shapes under miri
//! (`common::tiny`). Every kernel property runs on `common::kernels_under_test()`.
mod common;
use common::*;
use pointwise::{
    channel_shuffle, Activation, Conv1x1, InputDims, KernelChoice, KernelId, Layout, OutputDims, Padding, PlanOptions,
    Threads,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Limits of the generated problems for the current scale.
#[derive(Clone, Copy, Debug)]
struct Caps {
    cases: u32,
    /// Largest group count.
    groups: usize,
    /// Largest `C / G` and `K / G`.
    per_group: usize,
    /// Largest batch.
    n: usize,
    /// Largest input height and width.
    hw: usize,
}

fn caps() -> Caps {
    if tiny() {
        Caps {
            cases: 2,
            groups: 2,
            per_group: 3,
            n: 2,
            hw: 3,
        }
    } else if reduced() {
        Caps {
            cases: 10,
            groups: 3,
            per_group: 20,
            n: 3,
            hw: 9,
        }
    } else {
        Caps {
            cases: 128,
            groups: 4,
            per_group: 40,
            n: 3,
            hw: 13,
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(cases);
    config.max_shrink_iters = 200;
    if tiny() {
        // Miri isolates the file system: no regression file.
        config.failure_persistence = None;
    }
    config
}

/// A convolution problem before its data is drawn.
#[derive(Clone, Copy, Debug)]
struct Spec {
    groups: usize,
    cg: usize,
    kg: usize,
    n: usize,
    h: usize,
    w: usize,
    stride: (usize, usize),
    padding: Padding,
    layout: Layout,
    activation: Activation,
    bias: bool,
    residual: bool,
    seed: u64,
}

impl Spec {
    fn conv(&self) -> Conv1x1 {
        Conv1x1::new(self.groups * self.cg, self.groups * self.kg)
            .with_groups(self.groups)
            .with_stride(self.stride.0, self.stride.1)
            .with_padding(self.padding)
            .with_layout(self.layout)
            .with_activation(self.activation)
    }

    fn dims(&self) -> InputDims {
        InputDims::new(self.n, self.h, self.w)
    }

    fn problem(&self, data: Data) -> Problem {
        Problem::new(self.conv(), self.dims(), self.bias, self.residual, data, self.seed)
    }
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(Padding::Valid),
        Just(Padding::SameUpper),
        Just(Padding::SameLower),
        (0..3usize, 0..3usize, 0..3usize, 0..3usize).prop_map(|(top, bottom, left, right)| Padding::Explicit {
            top,
            bottom,
            left,
            right
        }),
    ]
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Nchw), Just(Layout::Nhwc)]
}

/// The activations that add no rounding on integer data (bit-exact against f64).
fn exact_activation() -> impl Strategy<Value = Activation> {
    prop::sample::select(
        ACTIVATIONS
            .iter()
            .copied()
            .filter(|&a| common::exact_activation(a))
            .collect::<Vec<_>>(),
    )
}

fn any_activation() -> impl Strategy<Value = Activation> {
    prop::sample::select(ACTIVATIONS.to_vec())
}

/// Problems within `caps`, batch in `n_min..=caps.n`, with activations from `act`.
fn spec(caps: Caps, n_min: usize, act: impl Strategy<Value = Activation>) -> impl Strategy<Value = Spec> {
    (
        (1..=caps.groups, 1..=caps.per_group, 1..=caps.per_group),
        (n_min..=caps.n.max(n_min), 1..=caps.hw, 1..=caps.hw),
        (1..=3usize, 1..=3usize, padding(), layout()),
        (act, any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((groups, cg, kg), (n, h, w), (sh, sw, padding, layout), (activation, bias, residual, seed))| Spec {
                groups,
                cg,
                kg,
                n,
                h,
                w,
                stride: (sh, sw),
                padding,
                layout,
                activation,
                bias,
                residual,
                seed,
            },
        )
}

fn forced(kernel: KernelId) -> PlanOptions {
    PlanOptions::default().with_kernel(KernelChoice::Force(kernel))
}

/// Runs a problem, mapping a failed `check` into a proptest failure.
fn run_checked(p: &Problem, data: Data, kernel: KernelId) -> Result<Vec<f32>, TestCaseError> {
    let y = p.run(forced(kernel));
    p.check(&y, data, kernel).map_err(TestCaseError::fail)?;
    Ok(y)
}

/// Bitwise equality (NaN-safe), with the first differing element in the message.
fn same_bits(a: &[f32], b: &[f32], what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len(), "{}: lengths", what);
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        return Err(TestCaseError::fail(format!(
            "{what}: element {i} differs: {} vs {}",
            a[i], b[i]
        )));
    }
    Ok(())
}

/// `[n, c, hw]` (NCHW) to `[n, hw, c]` (NHWC).
fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for img in 0..n {
        for ch in 0..c {
            for pix in 0..hw {
                out[(img * hw + pix) * c + ch] = x[(img * c + ch) * hw + pix];
            }
        }
    }
    out
}

/// Channels `range` of a `[n, c, hw]` tensor in `layout`, as a tensor of `range.len()` channels.
fn channel_slice(x: &[f32], layout: Layout, n: usize, c: usize, hw: usize, range: std::ops::Range<usize>) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * hw * range.len());
    match layout {
        Layout::Nchw => {
            for img in 0..n {
                out.extend_from_slice(&x[(img * c + range.start) * hw..(img * c + range.end) * hw]);
            }
        }
        Layout::Nhwc => {
            for px in 0..n * hw {
                out.extend_from_slice(&x[px * c + range.start..px * c + range.end]);
            }
        }
        other => panic!("no model for {other:?}"),
    }
    out
}

/// Number of output positions along one axis, by walking the padded extent: a 1x1 window
/// starts at `0, s, 2s, ...` and counts while it lies inside `before + len + after`.
fn brute_force_extent(len: usize, before: usize, after: usize, s: usize) -> usize {
    if len == 0 {
        return 0; // an empty input has an empty output, whatever the padding
    }
    let padded = before + len + after;
    let mut count = 0;
    let mut start = 0;
    while start < padded {
        count += 1;
        start += s;
    }
    count
}

proptest! {
    #![proptest_config(config(if tiny() { 16 } else { 256 }))]

    #[test]
    fn output_shape_matches_brute_force_count(
        (n, c, k) in (0..4usize, 1..6usize, 1..6usize),
        (h, w) in (0..40usize, 0..40usize),
        (sh, sw) in (1..7usize, 1..7usize),
        pad in prop_oneof![
            Just(Padding::Valid),
            Just(Padding::SameUpper),
            Just(Padding::SameLower),
            (0..6usize, 0..6usize, 0..6usize, 0..6usize)
                .prop_map(|(top, bottom, left, right)| Padding::Explicit { top, bottom, left, right }),
        ],
    ) {
        let conv = Conv1x1::new(c, k).with_stride(sh, sw).with_padding(pad);
        // SAME for a 1x1 kernel: ONNX pads (ceil(L/s) - 1) * s + 1 - L in total, never positive.
        let same_pad = |len: usize, s: usize| {
            let total = (len.div_ceil(s).saturating_sub(1) * s + 1).saturating_sub(len);
            (total / 2, total - total / 2)
        };
        let (top, bottom, left, right) = match pad {
            Padding::Explicit { top, bottom, left, right } => (top, bottom, left, right),
            Padding::SameUpper => {
                let ((t, b), (l, r)) = (same_pad(h, sh), same_pad(w, sw));
                (t, b, l, r)
            }
            Padding::SameLower => {
                let ((b, t), (r, l)) = (same_pad(h, sh), same_pad(w, sw));
                (t, b, l, r)
            }
            Padding::Valid => (0, 0, 0, 0),
            other => panic!("no model for {other:?}"),
        };
        let want_h = brute_force_extent(h, top, bottom, sh);
        let want_w = brute_force_extent(w, left, right, sw);
        prop_assert_eq!(conv.output_hw(h, w).unwrap(), (want_h, want_w));
        let out = conv.output_dims(InputDims::new(n, h, w)).unwrap();
        prop_assert_eq!(out, OutputDims { n, k, h: want_h, w: want_w });
        prop_assert_eq!(out.len().unwrap(), n * k * want_h * want_w);
        prop_assert_eq!(out.is_empty(), n * want_h * want_w == 0);
        prop_assert_eq!(conv.input_len(InputDims::new(n, h, w)).unwrap(), n * c * h * w);
    }

    #[test]
    fn channel_shuffle_twice_with_swapped_factors_is_identity(
        (g, per) in (1..7usize, 1..7usize),
        (n, h, w) in (0..3usize, 0..4usize, 0..4usize),
        layout in layout(),
    ) {
        let c = g * per;
        let dims = InputDims::new(n, h, w);
        let x: Vec<f32> = (0..n * c * h * w).map(|v| v as f32).collect();
        let mut y = vec![f32::NAN; x.len()];
        let mut z = vec![f32::NAN; x.len()];
        channel_shuffle(&x, &mut y, dims, c, g, layout).unwrap();
        channel_shuffle(&y, &mut z, dims, c, per, layout).unwrap();
        prop_assert_eq!(&z, &x);
        // The first shuffle is a permutation, and a real one unless a factor is 1.
        let mut sorted = y.clone();
        sorted.sort_by(f32::total_cmp);
        prop_assert_eq!(&sorted, &x);
        if g > 1 && per > 1 && !x.is_empty() {
            prop_assert_ne!(&y, &x);
        }
    }
}

proptest! {
    #![proptest_config(config(caps().cases))]

    #[test]
    fn exact_data_is_bit_exact_on_every_kernel(s in spec(caps(), 1, exact_activation())) {
        let p = s.problem(Data::Exact);
        let mut first: Option<Vec<f32>> = None;
        for kernel in kernels_under_test() {
            let y = run_checked(&p, Data::Exact, kernel)?;
            match &first {
                Some(f) => same_bits(&y, f, kernel.name())?,
                None => first = Some(y),
            }
        }
    }

    #[test]
    fn real_data_is_within_the_error_bound_on_every_kernel(s in spec(caps(), 1, any_activation())) {
        let p = s.problem(Data::Real);
        for kernel in kernels_under_test() {
            run_checked(&p, Data::Real, kernel)?;
        }
    }

    #[test]
    fn batch_equals_each_image_alone(s in spec(caps(), 2, any_activation())) {
        let p = s.problem(Data::Real);
        let (xi, yi) = (p.x.len() / s.n, p.output_len() / s.n);
        for kernel in kernels_under_test() {
            let all = p.run(forced(kernel));
            for img in 0..s.n {
                let mut one = p.clone();
                one.dims.n = 1;
                one.x = p.x[img * xi..(img + 1) * xi].to_vec();
                one.residual = p.residual.as_ref().map(|r| r[img * yi..(img + 1) * yi].to_vec());
                same_bits(&one.run(forced(kernel)), &all[img * yi..(img + 1) * yi], &format!("{kernel} image {img}"))?;
            }
        }
    }

    #[test]
    fn grouped_equals_separate_convolutions(
        s in spec(caps(), 1, any_activation()).prop_filter("grouped", |s| s.groups > 1),
    ) {
        let p = s.problem(Data::Real);
        let out = p.conv.output_dims(p.dims).unwrap();
        let (c, k, hw, ohw) = (s.groups * s.cg, s.groups * s.kg, s.h * s.w, out.h * out.w);
        for kernel in kernels_under_test() {
            let grouped = p.run(forced(kernel));
            for g in 0..s.groups {
                let (cs, ks) = (g * s.cg..(g + 1) * s.cg, g * s.kg..(g + 1) * s.kg);
                let single = Problem {
                    conv: Conv1x1 { in_channels: s.cg, out_channels: s.kg, groups: 1, ..p.conv },
                    dims: p.dims,
                    x: channel_slice(&p.x, s.layout, s.n, c, hw, cs),
                    w: p.w[ks.start * s.cg..ks.end * s.cg].to_vec(),
                    bias: p.bias.as_ref().map(|b| b[ks.clone()].to_vec()),
                    residual: p.residual.as_ref().map(|r| channel_slice(r, s.layout, s.n, k, ohw, ks.clone())),
                    slope: p.slope.as_ref().map(|v| v[ks.clone()].to_vec()),
                };
                let want = channel_slice(&grouped, s.layout, s.n, k, ohw, ks);
                same_bits(&single.run(forced(kernel)), &want, &format!("{kernel} group {g}"))?;
            }
        }
    }

    #[test]
    fn nhwc_equals_transposed_nchw(s in spec(caps(), 1, any_activation())) {
        let nchw = Problem::new(
            Spec { layout: Layout::Nchw, ..s }.conv(),
            s.dims(),
            s.bias,
            s.residual,
            Data::Real,
            s.seed,
        );
        let out = nchw.conv.output_dims(nchw.dims).unwrap();
        let (c, k, ohw) = (nchw.conv.in_channels, nchw.conv.out_channels, out.h * out.w);
        let nhwc = Problem {
            conv: Conv1x1 { layout: Layout::Nhwc, ..nchw.conv },
            x: nchw_to_nhwc(&nchw.x, s.n, c, s.h * s.w),
            residual: nchw.residual.as_ref().map(|r| nchw_to_nhwc(r, s.n, k, ohw)),
            ..nchw.clone()
        };
        for kernel in kernels_under_test() {
            let a = nchw_to_nhwc(&nchw.run(forced(kernel)), s.n, k, ohw);
            same_bits(&nhwc.run(forced(kernel)), &a, kernel.name())?;
        }
    }
}

/// Below this many flops (`2 * N * Ho * Wo * K * C / G`) a call stays on the calling thread
/// (see `Threads`), so the thread property draws problems above it.
const PARALLEL_MIN_FLOPS: usize = 1 << 22;

/// Problems big enough to be split over threads: `h` is raised until the call is over
/// `PARALLEL_MIN_FLOPS`.
fn threaded_spec() -> impl Strategy<Value = Spec> {
    let caps = Caps {
        groups: 2,
        per_group: 48,
        n: 2,
        hw: 24,
        ..caps()
    };
    spec(caps, 1, any_activation())
        .prop_flat_map(|s| (Just(s), 16..=48usize, 16..=48usize, 8..=24usize))
        .prop_map(|(s, cg, kg, w)| {
            let mut s = Spec { cg, kg, w, ..s };
            let (top, bottom, _, _) = s.padding.borders();
            let wo = s.conv().output_hw(1, s.w).unwrap().1;
            let per_row = 2 * s.n * wo * s.groups * s.kg * s.cg;
            let rows = PARALLEL_MIN_FLOPS.div_ceil(per_row);
            s.h = (rows * s.stride.0).saturating_sub(top + bottom).max(1);
            s
        })
}

proptest! {
    #![proptest_config(config(if reduced() { 3 } else { 24 }))]

    /// Work is never split over the reduction, so every thread count gives the same bits.
    /// (Under miri a call large enough to use threads would take hours.)
    #[test]
    #[cfg_attr(miri, ignore)]
    fn thread_counts_give_identical_results(s in threaded_spec()) {
        let p = s.problem(Data::Real);
        let out = p.conv.output_dims(p.dims).unwrap();
        let flops = 2 * s.n * out.h * out.w * s.groups * s.kg * s.cg;
        prop_assert!(flops >= PARALLEL_MIN_FLOPS, "{} flops", flops);
        for kernel in kernels_under_test() {
            let single = run_checked(&p, Data::Real, kernel)?;
            for threads in [Threads::Count(1), Threads::Count(2), Threads::Count(3), Threads::Count(7)] {
                let y = p.run(forced(kernel).with_threads(threads));
                same_bits(&y, &single, &format!("{kernel} {threads:?}"))?;
            }
        }
    }
}

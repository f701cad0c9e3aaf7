//! A deterministic grid of tiny problems, small enough for miri (`scripts/miri.sh`): every
//! layout, padding kind, stride and group count, batch 1 (one gemm per image) and 2 (batch
//! folded into the pixel axis), every activation, bias and residual on and off, on every kernel
//! under test, against the f64 reference.
//!
//! Each problem runs twice per SIMD kernel: as the plan chooses (the direct loop for the
//! smallest channel counts, the tiled driver above that) and with one of the kernel's tiles
//! forced (`Plan::force_tile`, folded or not, rotating over the grid), so that under miri the
//! packing (unit-run copies, strided and padded gathers, in-place reads), the driver's tiling
//! and edge tiles and the portable, matrixmultiply and reference kernels all run.
mod common;
use common::*;
use pointwise::{Activation, Conv1x1, InputDims, KernelChoice, KernelId, Layout, Padding, PlanOptions, Workspace};

const STRIDES: [(usize, usize); 3] = [(1, 1), (2, 1), (3, 2)];
/// `(C, K, G)`: dense with K not a multiple of any tile, and grouped.
const CHANNELS: [(usize, usize, usize); 2] = [(4, 7, 1), (4, 6, 2)];

/// Runs `p` on `kernel`, with `tiling = (tile, fold)` forced when given.
fn run(p: &Problem, kernel: KernelId, tiling: Option<(usize, bool)>) -> Vec<f32> {
    let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
    let mut plan = p.plan(options);
    if let Some((tile, fold)) = tiling {
        plan.force_tile(pointwise::testing::tiles(kernel)[tile].name, fold)
            .unwrap();
    }
    let mut y = vec![f32::NAN; p.output_len()];
    plan.forward(&p.x, p.dims, p.residual.as_deref(), &mut y, &mut Workspace::new())
        .unwrap();
    y
}

/// Checks `p` on every kernel under test, as planned and, on SIMD kernels, with the tilings
/// `tilings(number of tiles)` forced. Returns how many forced runs there were.
fn check_everywhere(p: &Problem, data: Data, tilings: impl Fn(usize) -> Vec<(usize, bool)>) -> usize {
    let reference = p.reference();
    let mut forced = 0;
    for kernel in kernels_under_test() {
        let y = run(p, kernel, None);
        p.check_with(&reference, &y, data, kernel).unwrap();
        for tiling in tilings(pointwise::testing::tiles(kernel).len()) {
            let y = run(p, kernel, Some(tiling));
            if let Err(e) = p.check_with(&reference, &y, data, kernel) {
                panic!("tiling {tiling:?}: {e}");
            }
            forced += 1;
        }
    }
    forced
}

fn data_for(activation: Activation) -> Data {
    if exact_activation(activation) {
        Data::Exact
    } else {
        Data::Real
    }
}

#[test]
fn tiny_grid_matches_the_reference_on_every_kernel() {
    let mut idx = 0usize;
    let mut forced = 0usize;
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for padding in PADDINGS {
            for (sh, sw) in STRIDES {
                // Both channel sets at every stride, alternating over the paddings and layouts.
                let (c, k, g) = CHANNELS[idx % 2];
                idx += 1;
                let activation = ACTIVATIONS[idx % ACTIVATIONS.len()];
                let conv = Conv1x1::new(c, k)
                    .with_groups(g)
                    .with_layout(layout)
                    .with_stride(sh, sw)
                    .with_padding(padding)
                    .with_activation(activation);
                // 4 x 5 = 20 pixels: two full 8-pixel panels of consecutive pixels and an edge.
                let dims = InputDims::new(1 + (idx / 3) % 2, 4, 5);
                let data = data_for(activation);
                let p = Problem::new(conv, dims, !idx.is_multiple_of(3), idx % 4 < 2, data, idx as u64);
                // One tiling per problem and SIMD kernel, rotating over tiles and folding.
                forced += check_everywhere(&p, data, |tiles| match tiles {
                    0 => Vec::new(),
                    _ => vec![(idx % tiles, (idx / tiles) % 2 == 1)],
                });
            }
        }
    }
    assert_eq!(idx, 2 * PADDINGS.len() * STRIDES.len());
    assert!(
        forced >= idx,
        "every problem ran a forced tile on the portable kernel at least"
    );
}

/// Problems over 2048 multiply-adds per image, which the plan does not send to the direct
/// loop: the matrixmultiply kernel and the cost model's own tiling run on them.
#[test]
fn small_problems_past_the_direct_loop() {
    let cases = [
        (Layout::Nchw, (1, 1), Padding::Valid, 2, Activation::Relu),
        (Layout::Nhwc, (2, 1), Padding::uniform(1), 1, Activation::Silu),
    ];
    for (i, (layout, (sh, sw), padding, n, activation)) in cases.into_iter().enumerate() {
        let conv = Conv1x1::new(8, 16)
            .with_layout(layout)
            .with_stride(sh, sw)
            .with_padding(padding)
            .with_activation(activation);
        let p = Problem::new(
            conv,
            InputDims::new(n, 4, 5),
            true,
            i != 1,
            data_for(activation),
            100 + i as u64,
        );
        let out = conv.output_dims(p.dims).unwrap();
        assert!(out.h * out.w * 16 * 8 > 2048);
        check_everywhere(&p, data_for(activation), |_| Vec::new());
    }
}

/// Regression (found by miri, `scripts/miri.sh`): an NCHW weight-row tile that reads its
/// pixels in place (8 consecutive pixels of each channel plane) advanced the input pointer one
/// channel plane past its last reduction step (`b = b.add(b_ks)` in
/// `kernels::simd::gemm_tile_strided`), outside the input's allocation: undefined behaviour
/// even though the pointer is never read. Group 1 of 2, second 8-pixel panel of a 4 x 5 image.
/// Natively this only checks the result; under miri it checks the pointer arithmetic.
#[test]
fn in_place_nchw_panel_reads_stay_inside_the_input() {
    let conv = Conv1x1::new(4, 6).with_groups(2).with_activation(Activation::Relu6);
    let p = Problem::new(conv, InputDims::new(1, 4, 5), true, false, Data::Exact, 2);
    let all_tilings = |tiles: usize| (0..tiles).flat_map(|t| [(t, false), (t, true)]).collect();
    assert!(check_everywhere(&p, Data::Exact, all_tilings) >= 2);
}

/// The in-place residual: the output buffer is read as the residual and written as the result
/// through the same pointer, on every kernel and tiling (under miri: no aliasing violation),
/// and padded outputs with a NaN weight still come out as `act(bias + residual)`.
#[test]
fn in_place_residual_on_every_kernel_and_tiling() {
    let conv = Conv1x1::new(3, 10)
        .with_padding(Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 0,
            right: 1,
        })
        .with_activation(Activation::Prelu);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let mut p = Problem::new(
            conv.with_layout(layout),
            InputDims::new(1, 2, 3),
            true,
            true,
            Data::Exact,
            5,
        );
        p.w[4] = f32::NAN;
        let reference = p.reference();
        for kernel in kernels_under_test() {
            let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
            let tilings: Vec<Option<(usize, bool)>> = std::iter::once(None)
                .chain((0..pointwise::testing::tiles(kernel).len()).map(|t| Some((t, false))))
                .collect();
            for tiling in tilings {
                let mut plan = p.plan(options);
                if let Some((tile, fold)) = tiling {
                    plan.force_tile(pointwise::testing::tiles(kernel)[tile].name, fold)
                        .unwrap();
                }
                let mut y = p.residual.clone().unwrap();
                plan.forward_residual_in_place(&p.x, p.dims, &mut y, &mut Workspace::new())
                    .unwrap();
                // Channel 1 reads the NaN weight except over padded pixels.
                for (i, (&got, &(want, _, _))) in y.iter().zip(&reference).enumerate() {
                    if want.is_nan() {
                        assert!(got.is_nan(), "{kernel} {tiling:?} {layout:?} element {i}");
                    } else {
                        assert_eq!(got as f64, want, "{kernel} {tiling:?} {layout:?} element {i}");
                    }
                }
            }
        }
    }
}

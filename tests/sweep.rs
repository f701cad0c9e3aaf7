//! The forward sweep: every kernel against the f64 reference over shapes that hit every tile
//! edge, every stride, padding, group count, layout, activation, bias and residual.
mod common;
use common::*;
use pointwise::{Conv1x1, InputDims, KernelChoice, Layout, Padding, PlanOptions, Threads};

const CHANNELS: [usize; 12] = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64];
const SIZES: [usize; 6] = [1, 2, 3, 5, 8, 13];
const STRIDES: [(usize, usize); 4] = [(1, 1), (2, 2), (3, 3), (1, 2)];

/// Every (C, K, H, W) combination; the remaining parameters rotate with the case index so
/// that each value of each parameter meets many shapes.
fn cases() -> Vec<(Problem, Data)> {
    let mut out = Vec::new();
    let mut idx = 0usize;
    let step = if reduced() { 7 } else { 1 };
    for &c in &CHANNELS {
        for &k in &CHANNELS {
            for &h in &SIZES {
                for &w in &SIZES {
                    idx += 1;
                    if !idx.is_multiple_of(step) {
                        continue;
                    }
                    let groups: Vec<usize> = [1, 2, 4, c].into_iter().filter(|&g| c % g == 0 && k % g == 0).collect();
                    let (sh, sw) = STRIDES[idx % 4];
                    let conv = Conv1x1::new(c, k)
                        .with_stride(sh, sw)
                        .with_padding(PADDINGS[(idx / 4) % 3])
                        .with_groups(groups[(idx / 12) % groups.len()])
                        .with_layout(if idx.is_multiple_of(2) {
                            Layout::Nchw
                        } else {
                            Layout::Nhwc
                        })
                        .with_activation(ACTIVATIONS[(idx / 3) % ACTIVATIONS.len()]);
                    let n = if (idx / 5).is_multiple_of(2) { 1 } else { 3 };
                    let data = if (idx / 7).is_multiple_of(2) {
                        Data::Exact
                    } else {
                        Data::Real
                    };
                    let p = Problem::new(
                        conv,
                        InputDims::new(n, h, w),
                        !idx.is_multiple_of(3),
                        (idx / 2).is_multiple_of(3),
                        data,
                        idx as u64,
                    );
                    out.push((p, data));
                }
            }
        }
    }
    out
}

fn sweep_kernel(kernel: pointwise::KernelId) {
    let cases = cases();
    assert!(cases.len() > 700 || reduced());
    let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
    let before = kernel.invocations();
    for (p, data) in &cases {
        let y = p.run(options);
        if let Err(e) = p.check(&y, *data, kernel) {
            panic!("{e}");
        }
    }
    assert!(
        kernel.invocations() >= before + cases.len() as u64,
        "forced kernel {kernel} did not run"
    );
}

#[test]
fn sweep_every_kernel() {
    for kernel in kernels_under_test() {
        sweep_kernel(kernel);
    }
}

/// Each parameter value at full strength on one mid-size shape, both data modes, every kernel:
/// the product the rotating sweep above thins out.
#[test]
fn every_activation_layout_and_epilogue() {
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let mut seed = 1000;
        for act in ACTIVATIONS {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for (bias, residual) in [(false, false), (true, false), (false, true), (true, true)] {
                    for data in [Data::Exact, Data::Real] {
                        seed += 1;
                        let conv = Conv1x1::new(33, 17)
                            .with_layout(layout)
                            .with_activation(act)
                            .with_padding(Padding::Explicit {
                                top: 1,
                                bottom: 0,
                                left: 0,
                                right: 2,
                            });
                        let p = Problem::new(conv, InputDims::new(2, 5, 13), bias, residual, data, seed);
                        let y = p.run(options);
                        p.check(&y, data, kernel).unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            }
        }
    }
}

/// Large reductions and the ResNet-like shapes, where tiles are full and blocks repeat.
#[test]
fn large_reductions() {
    let shapes: &[(usize, usize, usize, usize, usize)] = if reduced() {
        &[(256, 64, 1, 9, 9), (1024, 40, 2, 3, 3)]
    } else {
        &[
            (256, 64, 1, 14, 14),
            (512, 128, 1, 7, 9),
            (1024, 40, 2, 3, 3),
            (2048, 24, 64, 1, 1),
            (64, 256, 1, 28, 28),
        ]
    };
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for (i, &(c, k, n, h, w)) in shapes.iter().enumerate() {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for data in [Data::Exact, Data::Real] {
                    let conv = Conv1x1::new(c, k)
                        .with_layout(layout)
                        .with_activation(ACTIVATIONS[i % ACTIVATIONS.len()]);
                    let p = Problem::new(conv, InputDims::new(n, h, w), true, i % 2 == 0, data, i as u64);
                    let y = p.run(options);
                    p.check(&y, data, kernel).unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}

/// The sweep again with each tile of each SIMD kernel forced, folded and not, so every tile
/// meets every edge whatever the cost model would pick.
#[test]
fn sweep_every_tile() {
    let cases = cases();
    let step = if reduced() { 3 } else { 2 };
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for (t, tile) in pointwise::testing::tiles(kernel).iter().enumerate() {
            for fold in [false, true] {
                for (i, (p, data)) in cases.iter().enumerate() {
                    if (i + t) % step != 0 {
                        continue;
                    }
                    let y = p.run_tiled(options, tile.name, fold);
                    if let Err(e) = p.check(&y, *data, kernel) {
                        panic!("tile {} fold {fold}: {e}", tile.name);
                    }
                }
            }
        }
    }
}

/// FNV-1a over the bits of every output of the forward sweep (the plan's own tiling, and every
/// tile forced, folded and not), one digest per kernel: a refactoring that must keep results
/// bit-identical prints the same digests before and after. Run with
/// `cargo test --release --test sweep -- --ignored --nocapture output_digest`.
#[test]
#[ignore = "prints digests for comparing two commits"]
fn output_digest() {
    let cases = cases();
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |y: &[f32]| {
            for v in y {
                for byte in v.to_bits().to_le_bytes() {
                    hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        };
        let tiles = pointwise::testing::tiles(kernel);
        for (p, _) in &cases {
            eat(&p.run(options));
            for tile in &tiles {
                for fold in [false, true] {
                    eat(&p.run_tiled(options, tile.name, fold));
                }
            }
        }
        println!("digest {kernel}: {hash:016x} over {} cases", cases.len());
    }
}

/// The reduction run in blocks (partial sums stored as whole tiles and reloaded in order)
/// gives the same bits as one block, on every tile, with padding and a NaN weight, separate
/// and in-place residuals, groups, batches and both layouts.
#[test]
fn blocked_reduction_equals_one_block() {
    let shapes: &[(usize, usize, usize, usize, usize, usize)] = if reduced() {
        &[(40, 24, 2, 2, 5, 7), (33, 17, 1, 1, 9, 4)]
    } else {
        &[
            (40, 24, 2, 2, 5, 7),
            (33, 17, 1, 1, 9, 4),
            (64, 72, 4, 3, 6, 6),
            (129, 8, 1, 1, 16, 16),
        ]
    };
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for (i, &(c, k, groups, n, h, w)) in shapes.iter().enumerate() {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let conv = Conv1x1::new(c, k)
                    .with_groups(groups)
                    .with_layout(layout)
                    .with_padding(PADDINGS[i % 3])
                    .with_activation(ACTIVATIONS[(i * 5 + 3) % ACTIVATIONS.len()]);
                let mut p = Problem::new(conv, InputDims::new(n, h, w), true, true, Data::Real, 70 + i as u64);
                p.w[3] = f32::NAN;
                for tile in pointwise::testing::tiles(kernel) {
                    for fold in [false, true] {
                        let run = |kc: Option<usize>, in_place: bool| {
                            let mut plan = p.plan(options);
                            plan.force_tile(tile.name, fold).unwrap();
                            if let Some(kc) = kc {
                                plan.force_reduction_block(kc);
                            }
                            let y = p.run_plan_with_residual(&plan, in_place);
                            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                        };
                        let whole = run(None, false);
                        for kc in [1, 3, 8, c / groups - 1] {
                            for in_place in [false, true] {
                                assert_eq!(
                                    run(Some(kc), in_place),
                                    whole,
                                    "{} fold {fold} kc {kc} in_place {in_place} {conv:?}",
                                    tile.name
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The reduction split into parts (each reduced as a unit of its own, the parts added in part
/// order): the same bits for 1, 2, 3 and 7 threads, within the reduction-length bound of the
/// f64 reference (bit-exact on integer data), on every tile, both layouts, with padding,
/// groups, batches and in-place residuals. The 4096-step, 16-channel shape splits by itself.
#[test]
fn split_reduction_is_the_same_for_every_thread_count() {
    let shapes: &[(usize, usize, usize, usize, usize, usize)] = if reduced() {
        &[(512, 64, 1, 1, 8, 8), (40, 24, 2, 2, 5, 7)]
    } else {
        &[
            (512, 64, 1, 1, 8, 8),
            (40, 24, 2, 2, 5, 7),
            (4096, 16, 1, 1, 8, 8),
            (300, 40, 2, 3, 7, 5),
        ]
    };
    let thread_counts = [1, 2, 3, 7];
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        for (i, &(c, k, groups, n, h, w)) in shapes.iter().enumerate() {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                for data in [Data::Exact, Data::Real] {
                    let conv = Conv1x1::new(c, k)
                        .with_groups(groups)
                        .with_layout(layout)
                        .with_padding(PADDINGS[i % 3])
                        .with_activation(ACTIVATIONS[(i * 7 + 1) % ACTIVATIONS.len()]);
                    let p = Problem::new(conv, InputDims::new(n, h, w), true, true, data, 90 + i as u64);
                    let reference = p.reference();
                    let tiles = pointwise::testing::tiles(kernel);
                    // Every tile on the small shapes; the cost model's tile (None) on all.
                    let forced_tiles: Vec<Option<&str>> = if c * k <= 4096 {
                        tiles.iter().map(|t| Some(t.name)).collect()
                    } else {
                        vec![None]
                    };
                    for tile in forced_tiles {
                        for parts in [None, Some(2), Some(3), Some(7)] {
                            let run = |threads: usize, in_place: bool| {
                                let options = PlanOptions::default()
                                    .with_kernel(KernelChoice::Force(kernel))
                                    .with_threads(Threads::Count(threads));
                                let mut plan = p.plan(options);
                                if let Some(tile) = tile {
                                    plan.force_tile(tile, i % 2 == 1).unwrap();
                                }
                                if let Some(parts) = parts {
                                    plan.force_reduction_split(parts);
                                }
                                p.run_plan_with_residual(&plan, in_place)
                            };
                            let one = run(1, false);
                            let what = format!("{kernel} {tile:?} parts {parts:?} {conv:?} {data:?}");
                            p.check_with(&reference, &one, data, kernel)
                                .unwrap_or_else(|e| panic!("{what}: {e}"));
                            let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                            for &threads in &thread_counts[1..] {
                                let in_place = threads == 3;
                                assert_eq!(bits(&run(threads, in_place)), bits(&one), "{what} threads {threads}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One input channel per group (`C/G = 1`, K/G = 1 or a channel multiplier): Auto streams it
/// through the reference module's channel-wise loop at every size (NCHW, or NHWC with
/// `K = G`; NHWC channel multipliers run tiled), with the same bits as every
/// forced kernel (for the exact activations) and within the reference's bound (bit-exact on integer data), for strides,
/// asymmetric padding, both layouts, every activation, separate and in-place residuals.
#[test]
fn channelwise_auto_matches_every_kernel() {
    let shapes: &[(usize, usize, usize, usize, usize, usize)] = &[
        // (c, k, n, h, w, stride)
        (64, 64, 1, 56, 56, 1),
        (5, 10, 2, 9, 7, 2),
        (16, 48, 1, 13, 4, 3),
        (3, 3, 3, 1, 1, 1),
        (12, 12, 1, 5, 6, 1),
    ];
    // Every activation on the small shapes (PReLU's per-channel slopes included), one each on
    // the others; the empty bias and residual cases are the other tests' (and fuzz's) job.
    let cases = shapes.iter().enumerate().flat_map(|(i, &shape)| {
        let acts: Vec<_> = if shape.0 * shape.3 * shape.4 <= 500 {
            ACTIVATIONS.to_vec()
        } else {
            vec![ACTIVATIONS[(i * 3 + 2) % ACTIVATIONS.len()]]
        };
        acts.into_iter().map(move |act| (i, shape, act))
    });
    for (i, (c, k, n, h, w, stride), act) in cases {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for data in [Data::Exact, Data::Real] {
                let conv = Conv1x1::new(c, k)
                    .with_groups(c)
                    .with_layout(layout)
                    .with_stride(stride, stride)
                    .with_padding(PADDINGS[i % 3])
                    .with_activation(act);
                let p = Problem::new(conv, InputDims::new(n, h, w), true, true, data, 110 + i as u64);
                let plan = p.plan(PlanOptions::default());
                // NHWC with a channel multiplier runs tiled (fused groups) instead.
                let streamed = layout == Layout::Nchw || k == c;
                let want = plan.kernel_for(p.dims).unwrap();
                if streamed {
                    assert_eq!(want, pointwise::KernelId::Reference);
                }
                let before = want.invocations();
                let auto = p.run(PlanOptions::default());
                assert!(want.invocations() > before, "Auto did not run {want} on {conv:?}");
                p.check(&auto, data, want).unwrap_or_else(|e| panic!("auto: {e}"));
                // In place: the output holds the residual on entry.
                let in_place = p.run_plan_with_residual(&p.plan(PlanOptions::default()), true);
                let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&in_place), bits(&auto), "in place {conv:?}");
                // The same sum on every kernel; the same activation bits where the scalar and
                // SIMD activations are both exact.
                for kernel in kernels_under_test() {
                    let forced = p.run(PlanOptions::default().with_kernel(KernelChoice::Force(kernel)));
                    if exact_activation(conv.activation) {
                        assert_eq!(bits(&forced), bits(&auto), "{kernel} {conv:?} {data:?}");
                    } else {
                        p.check(&forced, data, kernel).unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            }
        }
    }
}

/// The off-suite shapes of `benches/sweep/shapes.txt` (grouped at every C/G, few output or
/// input channels, few pixels, odd counts, strides, batches), shrunk to test size (images at
/// most 7x7, batches at most 3, at most 96 channels a side with C/G and K/G kept), on every
/// kernel and every tile: exact on integer data, bounded on real data.
#[test]
fn off_suite_sweep_shapes_on_every_kernel_and_tile() {
    let shapes: Vec<Vec<usize>> = include_str!("../benches/sweep/shapes.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect())
        .collect();
    assert!(shapes.len() >= 120, "the sweep has {} shapes", shapes.len());
    let step = if reduced() { 5 } else { 1 };
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let tiles = pointwise::testing::tiles(kernel);
        for (i, s) in shapes.iter().enumerate().filter(|(i, _)| i % step == 0) {
            let (n, c, k, h, w, stride, groups) = (s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
            let (cg, kg) = (c / groups, k / groups);
            let groups = groups.min((96 / cg.max(kg)).max(1));
            let conv = Conv1x1::new(groups * cg, groups * kg)
                .with_groups(groups)
                .with_stride(stride, stride)
                .with_padding(PADDINGS[i % 3])
                .with_layout(if i % 2 == 0 { Layout::Nchw } else { Layout::Nhwc })
                .with_activation(ACTIVATIONS[i % ACTIVATIONS.len()]);
            let data = if i % 4 < 2 { Data::Exact } else { Data::Real };
            let dims = InputDims::new(n.min(3), h.min(7), w.min(7));
            let p = Problem::new(conv, dims, i % 3 != 0, i % 5 == 0, data, i as u64);
            let check = |y: &[f32], what: &str| {
                if let Err(e) = p.check(y, data, kernel) {
                    panic!("sweep shape {i} ({s:?}) {what}: {e}");
                }
            };
            check(&p.run(options), "default tile");
            for tile in &tiles {
                check(&p.run_tiled(options, tile.name, i % 2 == 1), tile.name);
            }
        }
    }
}

/// Grouped layers whose groups share one gemm (fewer output channels per group than a tile
/// has rows): an infinite input channel makes only its own group's outputs non-finite.
#[test]
fn a_non_finite_input_stays_in_its_group() {
    for kernel in kernels_under_test() {
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for (c, k, groups) in [(8, 8, 4), (12, 6, 6), (32, 16, 16), (24, 24, 24)] {
                let conv = Conv1x1::new(c, k).with_groups(groups).with_layout(layout);
                let dims = InputDims::new(1, 5, 9);
                let mut p = Problem::new(conv, dims, true, false, Data::Exact, 7);
                let (cg, kg, hw) = (c / groups, k / groups, 45);
                // Channel 1 of pixel 3 (group 1 / cg) is infinite.
                let bad_channel = cg;
                let at = match layout {
                    Layout::Nchw => bad_channel * hw + 3,
                    _ => 3 * c + bad_channel,
                };
                p.x[at] = f32::INFINITY;
                for w in p.w.iter_mut() {
                    if *w == 0.0 {
                        *w = 1.0;
                    }
                }
                let mut tiles: Vec<Option<&str>> = vec![None];
                let names = pointwise::testing::tiles(kernel);
                tiles.extend(names.iter().map(|t| Some(t.name)));
                for tile in tiles {
                    let y = match tile {
                        None => p.run(options),
                        Some(name) => p.run_tiled(options, name, false),
                    };
                    for (i, v) in y.iter().enumerate() {
                        let (pixel, channel) = match layout {
                            Layout::Nchw => (i % hw, i / hw),
                            _ => (i / k, i % k),
                        };
                        let own = pixel == 3 && channel / kg == bad_channel / cg;
                        assert_eq!(
                            v.is_finite(),
                            !own,
                            "{kernel} {tile:?} {layout:?} c{c} k{k} g{groups}: output {i} = {v}"
                        );
                    }
                }
            }
        }
    }
}

/// Grouped NHWC layers whose groups are narrower than a register run on each SIMD kernel's
/// group-lanes tile (several whole groups per register, each lane permuted to its own group's
/// input channel). Every combination of input and output channels per group up to the
/// register width, group counts that fill a block exactly, leave a partial last block or a
/// single one, and pixels with stride, padding and a batch: exact on integer data, bounded
/// on real data, with every epilogue. Fails if the tile did not run.
#[test]
fn group_lanes_every_block_edge() {
    let per_group: &[usize] = if reduced() {
        &[1, 2, 3, 5, 8]
    } else {
        &[1, 2, 3, 4, 5, 7, 8, 9, 15, 16]
    };
    let group_counts: &[usize] = if reduced() { &[2, 5] } else { &[2, 3, 5, 8, 17] };
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        let Some(lanes) = pointwise::testing::group_lanes_width(kernel) else {
            continue;
        };
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let mut case = 0usize;
        let mut ran = 0usize;
        for &cg in per_group.iter().filter(|&&cg| cg <= lanes) {
            for &kg in per_group
                .iter()
                .filter(|&&kg| kg < lanes || (kg == lanes && 2 * cg <= lanes))
            {
                for &groups in group_counts {
                    case += 1;
                    let conv = Conv1x1::new(cg * groups, kg * groups)
                        .with_groups(groups)
                        .with_layout(Layout::Nhwc)
                        .with_stride(1 + case % 2, 1 + case % 3 / 2)
                        .with_padding(PADDINGS[case % 3])
                        .with_activation(ACTIVATIONS[case % ACTIVATIONS.len()]);
                    let dims = InputDims::new(1 + case % 2, 3 + case % 4, 5 + case % 3);
                    let data = if case.is_multiple_of(2) {
                        Data::Exact
                    } else {
                        Data::Real
                    };
                    let p = Problem::new(conv, dims, !case.is_multiple_of(3), case % 4 < 2, data, case as u64);
                    let plan = p.plan(options);
                    let tile = plan.tile_for(dims).unwrap().unwrap_or("none");
                    assert!(tile.ends_with("_group_lanes"), "{kernel}: {conv:?} ran {tile}");
                    ran += 1;
                    check_separate_and_in_place(&p, &plan, options, data, kernel);
                }
            }
        }
        assert!(ran >= 12, "{kernel}: only {ran} group-lanes cases");
    }
}

/// NHWC layers of one group with few input and output channels run on each SIMD kernel's
/// flat-lanes loop (registers of consecutive output values spanning several pixels, each lane
/// permuted to its own pixel's input channel) exactly when a register's inputs fit in one
/// register and there are fewer output channels than lanes: every input channel count up to
/// the register width, output channel counts that do not fill whole registers, and pixel counts that leave every partial last block, with a
/// batch and every epilogue: exact on integer data, bounded on real data. Fails if the loop
/// did not run where it should, or ran on a strided or padded layer.
#[test]
fn flat_lanes_every_block_edge() {
    let outputs: &[usize] = if reduced() {
        &[1, 2, 3, 5, 7, 12]
    } else {
        &[1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 17, 20, 24, 40]
    };
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        let Some(lanes) = pointwise::testing::group_lanes_width(kernel) else {
            continue;
        };
        // The most pixels a register starting at a multiple of `lanes` spans.
        let span = |k: usize| {
            (0..k)
                .map(|r| (r * lanes + lanes - 1) / k - r * lanes / k + 1)
                .max()
                .unwrap()
        };
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let (mut case, mut ran) = (0usize, 0usize);
        for c in 1..=lanes {
            for &k in outputs.iter().filter(|&&k| !k.is_multiple_of(lanes)) {
                let flat = k < lanes && span(k) * c <= lanes;
                if !flat && !case.is_multiple_of(4) {
                    // A sample of the layers that do not qualify (they run register tiles).
                    case += 1;
                    continue;
                }
                case += 1;
                let strided = case.is_multiple_of(7);
                let conv = Conv1x1::new(c, k)
                    .with_layout(Layout::Nhwc)
                    .with_stride(1 + strided as usize, 1)
                    .with_padding(if case.is_multiple_of(11) {
                        PADDINGS[1]
                    } else {
                        Padding::Valid
                    })
                    .with_activation(ACTIVATIONS[case % ACTIVATIONS.len()]);
                let dims = InputDims::new(1 + case % 3, 1 + case % 5, 2 + case % 7);
                let data = if case.is_multiple_of(2) {
                    Data::Exact
                } else {
                    Data::Real
                };
                let p = Problem::new(conv, dims, !case.is_multiple_of(3), case % 4 < 2, data, case as u64);
                let plan = p.plan(options);
                let tile = plan.tile_for(dims).unwrap().unwrap_or("none");
                let dense = !strided && !case.is_multiple_of(11);
                assert_eq!(
                    tile.ends_with("_flat_lanes"),
                    flat && dense,
                    "{kernel}: {conv:?} {dims:?} ran {tile}"
                );
                ran += tile.ends_with("_flat_lanes") as usize;
                check_separate_and_in_place(&p, &plan, options, data, kernel);
            }
        }
        // (Four lanes, NEON's, leave five qualifying layers, 1 -> 1 and 1 or 2 -> 2 or 3, of
        // which the rotation makes one strided.)
        assert!(ran >= 3, "{kernel}: only {ran} flat-lanes cases");
    }
}

/// NHWC layers of one group with few output channels run on each SIMD kernel's pixel-lanes
/// loop (pixels as lanes, channels transposed in registers, sums interleaved into the
/// output's order) exactly when the flat-lanes loop does not take them and `K` is below the
/// register width and within the tier's bound: every such `K`, input channel counts on both
/// sides of every register edge (the partial last step), pixel counts that leave partial
/// last blocks, strides, padding (padded pixels inside blocks), batches and every epilogue:
/// exact on integer data, bounded on real data. Fails if the loop did not run where it
/// should, or ran where it should not.
#[test]
fn pixel_lanes_every_block_edge() {
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        let (Some(lanes), Some(max_k)) = (
            pointwise::testing::group_lanes_width(kernel),
            pointwise::testing::pixel_lanes_max_k(kernel),
        ) else {
            continue;
        };
        let span = |k: usize| {
            (0..k)
                .map(|r| (r * lanes + lanes - 1) / k - r * lanes / k + 1)
                .max()
                .unwrap()
        };
        let mut inputs = vec![1, 2, 3, lanes - 1, lanes, lanes + 1, 2 * lanes + 3, 37];
        inputs.sort_unstable();
        inputs.dedup();
        let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
        let (mut case, mut ran) = (0usize, 0usize);
        for k in 1..=max_k + 2 {
            for &c in &inputs {
                case += 1;
                if reduced() && !case.is_multiple_of(3) {
                    continue;
                }
                let strided = case.is_multiple_of(3);
                let padded = case.is_multiple_of(4);
                let conv = Conv1x1::new(c, k)
                    .with_layout(Layout::Nhwc)
                    .with_stride(1 + strided as usize, 1 + (case % 5 == 1) as usize)
                    .with_padding(if padded { PADDINGS[1 + case % 2] } else { Padding::Valid })
                    .with_activation(ACTIVATIONS[case % ACTIVATIONS.len()]);
                let dims = InputDims::new(1 + case % 3, 1 + case % 6, 3 + case % 7);
                let data = if case.is_multiple_of(2) {
                    Data::Exact
                } else {
                    Data::Real
                };
                let p = Problem::new(conv, dims, !case.is_multiple_of(3), case % 4 < 2, data, case as u64);
                let plan = p.plan(options);
                let tile = plan.tile_for(dims).unwrap().unwrap_or("none");
                let dense = !strided && case % 5 != 1 && !padded;
                let flat = dense && k < lanes && span(k) * c <= lanes;
                assert_eq!(
                    tile.ends_with("_pixel_lanes"),
                    !flat && k < lanes && k <= max_k,
                    "{kernel}: {conv:?} {dims:?} ran {tile}"
                );
                ran += tile.ends_with("_pixel_lanes") as usize;
                check_separate_and_in_place(&p, &plan, options, data, kernel);
            }
        }
        // (Four lanes, NEON's, leave K of 1 to 3; the reduced sweep under qemu runs a third of the cases.)
        assert!(ran >= 4, "{kernel}: only {ran} pixel-lanes cases");
    }
}

/// Layers with at most four input channels per group run on each SIMD kernel's few-inputs
/// loops (weights in registers, pixels streamed past them) exactly when they are dense
/// (stride 1, no padding) and, in NHWC, have one group and at least a register of output
/// channels: every input channel count to one past the bound, output channel counts on both
/// sides of each block of rows or registers, pixel counts on both sides of a register and of
/// a chunk (1024 pixels), batches (runs split at image edges, and across threads), NCHW
/// groups, NHWC groups, strided and padded layers that must not take the loops, and every
/// epilogue: exact on
/// integer data, bounded on real data. Fails if the loops did not run where they should, or
/// ran where they should not.
#[test]
fn few_inputs_every_edge() {
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        let Some(lanes) = pointwise::testing::group_lanes_width(kernel) else {
            continue;
        };
        let mut outputs = vec![
            1,
            3,
            4,
            5,
            lanes - 1,
            lanes,
            lanes + 1,
            4 * lanes,
            4 * lanes + 3,
            5 * lanes + 1,
        ];
        outputs.sort_unstable();
        outputs.dedup();
        // (h, w): a register's worth and less, odd sizes, a chunk of 1024 pixels and more.
        let sizes = [(1, 1), (1, lanes + 3), (3, 7), (32, 32), (33, 35)];
        let (mut case, mut ran, mut ran_grouped) = (0usize, 0usize, 0usize);
        for c in 1..=5 {
            for &k in &outputs {
                for layout in [Layout::Nchw, Layout::Nhwc] {
                    case += 1;
                    if reduced() && !case.is_multiple_of(3) {
                        continue;
                    }
                    let strided = case.is_multiple_of(7);
                    let padded = case.is_multiple_of(11);
                    let groups = if (case / 2) % 3 == 1 && c % 2 == 0 && k % 2 == 0 {
                        2
                    } else {
                        1
                    };
                    let conv = Conv1x1::new(c, k)
                        .with_layout(layout)
                        .with_groups(groups)
                        .with_stride(1 + strided as usize, 1)
                        .with_padding(if padded { PADDINGS[1] } else { Padding::Valid })
                        .with_activation(ACTIVATIONS[case % ACTIVATIONS.len()]);
                    let (h, w) = sizes[case % sizes.len()];
                    let dims = InputDims::new(1 + case % 3, h, w);
                    let data = if case.is_multiple_of(2) {
                        Data::Exact
                    } else {
                        Data::Real
                    };
                    let threads = if case % 4 == 3 {
                        Threads::Count(3)
                    } else {
                        Threads::Single
                    };
                    let options = PlanOptions::default()
                        .with_kernel(KernelChoice::Force(kernel))
                        .with_threads(threads);
                    let p = Problem::new(conv, dims, !case.is_multiple_of(3), case % 4 < 2, data, case as u64);
                    let plan = p.plan(options);
                    let tile = plan.tile_for(dims).unwrap().unwrap_or("none");
                    let expected =
                        !strided && !padded && c / groups <= 4 && (layout == Layout::Nchw || groups == 1 && k >= lanes);
                    assert_eq!(
                        tile.ends_with("_few_inputs"),
                        expected,
                        "{kernel}: {conv:?} {dims:?} ran {tile}"
                    );
                    ran += expected as usize;
                    ran_grouped += (expected && groups > 1) as usize;
                    check_separate_and_in_place(&p, &plan, options, data, kernel);
                }
            }
        }
        // (The reduced sweep under qemu runs a third of the cases.)
        let (least, least_grouped) = if reduced() { (6, 0) } else { (20, 1) };
        assert!(ran >= least, "{kernel}: only {ran} few-inputs cases");
        assert!(ran_grouped >= least_grouped, "{kernel}: no grouped few-inputs case");
        // Calls large enough to be split across threads (ranges that cross image edges).
        for (i, layout) in [Layout::Nchw, Layout::Nhwc].into_iter().enumerate() {
            let conv = Conv1x1::new(3, 4 * lanes + 1)
                .with_layout(layout)
                .with_activation(ACTIVATIONS[i + 4]);
            let dims = InputDims::new(3, 70, 75);
            let options = PlanOptions::default()
                .with_kernel(KernelChoice::Force(kernel))
                .with_threads(Threads::Count(3));
            let data = [Data::Exact, Data::Real][i];
            let p = Problem::new(conv, dims, true, i == 0, data, 7000 + i as u64);
            let plan = p.plan(options);
            assert!(plan.tile_for(dims).unwrap().unwrap_or("none").ends_with("_few_inputs"));
            check_separate_and_in_place(&p, &plan, options, data, kernel);
        }
    }
}

/// Dense NCHW layers of one group with more than four input channels and at most four
/// output channels run on each SIMD kernel's few-outputs loop (each channel plane streamed
/// past `K` rows of accumulators): every `K` to one past the bound, input channel counts
/// past the few-inputs bound, pixel counts on both sides of a register and of a block of
/// four registers, batches (runs split at image edges, and across threads), and grouped,
/// strided, padded and NHWC layers that must not take it, with every epilogue: exact on
/// integer data, bounded on real data. Fails if the loop did not run where it should, or
/// ran where it should not.
#[test]
fn few_outputs_every_edge() {
    for kernel in kernels_under_test().into_iter().filter(|k| k.is_microkernel()) {
        let Some(lanes) = pointwise::testing::group_lanes_width(kernel) else {
            continue;
        };
        let sizes = [(1, 1), (1, 4 * lanes + 3), (3, 7), (2, 4 * lanes), (5, 13)];
        let (mut case, mut ran) = (0usize, 0usize);
        for c in [5, 6, 9, 33, 70] {
            for k in 1..=5 {
                for layout in [Layout::Nchw, Layout::Nhwc] {
                    case += 1;
                    if reduced() && !case.is_multiple_of(3) {
                        continue;
                    }
                    let strided = case.is_multiple_of(7);
                    let padded = case.is_multiple_of(11);
                    let groups = if case.is_multiple_of(5) && c % 3 == 0 && k % 3 == 0 {
                        3
                    } else {
                        1
                    };
                    let conv = Conv1x1::new(c, k)
                        .with_layout(layout)
                        .with_groups(groups)
                        .with_stride(1 + strided as usize, 1)
                        .with_padding(if padded { PADDINGS[2] } else { Padding::Valid })
                        .with_activation(ACTIVATIONS[case % ACTIVATIONS.len()]);
                    let (h, w) = sizes[case % sizes.len()];
                    let dims = InputDims::new(1 + case % 3, h, w);
                    let data = if case.is_multiple_of(2) {
                        Data::Exact
                    } else {
                        Data::Real
                    };
                    let options = PlanOptions::default().with_kernel(KernelChoice::Force(kernel));
                    let p = Problem::new(conv, dims, !case.is_multiple_of(3), case % 4 < 2, data, case as u64);
                    let plan = p.plan(options);
                    let tile = plan.tile_for(dims).unwrap().unwrap_or("none");
                    let expected = layout == Layout::Nchw && groups == 1 && !strided && !padded && k <= 4;
                    assert_eq!(
                        tile.ends_with("_few_outputs"),
                        expected,
                        "{kernel}: {conv:?} {dims:?} ran {tile}"
                    );
                    ran += expected as usize;
                    check_separate_and_in_place(&p, &plan, options, data, kernel);
                }
            }
        }
        // (The reduced sweep under qemu runs a third of the cases.)
        let least = if reduced() { 2 } else { 10 };
        assert!(ran >= least, "{kernel}: only {ran} few-outputs cases");
        // A call large enough to be split across threads (ranges that cross image edges).
        let conv = Conv1x1::new(40, 3).with_activation(ACTIVATIONS[5]);
        let dims = InputDims::new(3, 81, 87);
        let options = PlanOptions::default()
            .with_kernel(KernelChoice::Force(kernel))
            .with_threads(Threads::Count(3));
        let p = Problem::new(conv, dims, true, true, Data::Exact, 7100);
        let plan = p.plan(options);
        assert!(plan.tile_for(dims).unwrap().unwrap_or("none").ends_with("_few_outputs"));
        check_separate_and_in_place(&p, &plan, options, Data::Exact, kernel);
    }
}

/// Runs `p` with `options` and checks the result; when `p` has a residual, also with the
/// residual in the output, through `plan`.
fn check_separate_and_in_place(
    p: &Problem,
    plan: &pointwise::Plan,
    options: PlanOptions,
    data: Data,
    kernel: pointwise::KernelId,
) {
    let y = p.run(options);
    p.check(&y, data, kernel).unwrap_or_else(|e| panic!("{e}"));
    if p.residual.is_some() {
        let y = p.run_plan_with_residual(plan, true);
        p.check(&y, data, kernel).unwrap_or_else(|e| panic!("in place: {e}"));
    }
}

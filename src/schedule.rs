//! The schedule: a pure function from (problem, the kernel's tiles, the machine's parameters,
//! threads) to the register tile, the batch folding, the store mode, the cache blocking and
//! the units of work. Nothing here reads global state, so the same inputs give the same
//! schedule, and the invariants are unit-tested below.
//!
//! Reduction modes. The microkernel runs the whole reduction (`C / groups` steps) in
//! registers whenever it can: no partial sums are stored and reloaded. Two other modes exist,
//! and both keep the result bit-identical for every thread count:
//! - *blocked* (`kc`): the reduction runs in blocks, each storing its partial sums and the
//!   next reloading them into its accumulators, in order: the same bits as one block;
//! - *split* (`parts`): when the whole call has too few output tiles to keep threads busy and
//!   its reduction is long, each part of the reduction is a unit of its own (units can then
//!   run on different threads), stores its sums, and a combine phase adds the parts in part
//!   order before the epilogue. Whether and how the reduction splits depends only on the
//!   problem and the tile, never on the thread count, so one thread computes the same sums.
//!
//! Blocking. The two panels a tile streams (for
//! C = 2048, 8 x 2048 weights = 64 KiB and 2048 x 32 pixels = 256 KiB) are read
//! sequentially, which the prefetchers keep ahead of the FMAs from L2. Only when one pixel
//! panel and one weight panel of the whole reduction exceed half of L2 is the reduction
//! blocked (`kc`, sized so one block of a weight panel takes half of L1 and the pixel block
//! then holds several panels): each block's partial sums are stored as whole tiles and
//! reloaded by the next, in order, which gives the same bits as one block. The pixel block (the NC loop) is sized so its
//! packed panels take half of this core's L2 (read from the machine), and blocks are made
//! equal so threads finish together; each unit sweeps its weight panels (the MC loop, all of
//! them or a thread's share) over the block, so a weight panel is read once per block and
//! reused across the block's pixel panels.
//!
//! Fused groups. When a group has fewer output channels than a weight-rows tile has rows
//! (`K/G < MR`: channel-wise-like and small grouped layers), one tile per group would compute
//! mostly padding rows and pay a tile's fixed costs for a few products. Instead every group
//! joins one gemm of `K` rows over all `C` input channels, in which each row reduces only its
//! own group's `C/G` channels (the microkernel reads each row's operand from its group's
//! first channel): tiles are full whatever `K/G`, no zero weight is multiplied, so a
//! non-finite input never reaches another group's outputs, and each row sums the same
//! products in the same order as alone.
//!
//! A *gemm* is one (group, image) product, or one group over all images when the batch is
//! folded into the pixel axis (with fused groups: all groups at once). An *output unit* is one block of a gemm's pixels times one
//! range of its output channels; output units never share an output element. A *unit* is an
//! output unit's part of the reduction (the whole reduction unless it is split).
use crate::conv::{Geometry, Layout};
use crate::kernels::few_inputs::FEW_INPUTS_MAX_C;
use crate::kernels::few_outputs::FEW_OUTPUTS_MAX_K;
use crate::kernels::{Orientation, Tile};
use crate::machine::MachineParams;
use std::borrow::Borrow;
use std::ops::Range;

/// Below this many flops a call stays on the calling thread.
pub(crate) const PARALLEL_MIN_FLOPS: usize = 1 << 22;

/// The reduction is split only when the whole call has fewer output tiles than this (too few
/// for the threads of a large machine)...
const SPLIT_BELOW_TILES: usize = 16;
/// ...and into parts of at least this many reduction steps (so that the combine, one add per
/// output and part, stays small beside the part's multiply-adds).
const SPLIT_MIN_STEPS: usize = 256;
/// At most this many parts.
const SPLIT_MAX_PARTS: usize = 16;

/// What the cost model charges for a load from L1 (a vector of the lane operand, or a
/// broadcast of the row operand), in FMA issue slots (two per cycle). A reduction step's loads
/// and FMAs did not overlap as two independent streams: on Xeon Ice Lake a loop of `MR x NV`
/// zmm FMAs with `MR` broadcasts and `NV` vector loads per step took about
/// `MR * NV + 2 * (MR + NV)` slots (ns per step: 8 x 16 4.1, 4 x 64 4.8, 8 x 32 5.1,
/// 6 x 64 6.0, 8 x 48 6.4, 12 x 32 6.9), so a tile that issues fewer loads per FMA is faster,
/// and on a core that does overlap them it loses nothing.
const L1_LOAD_COST: f64 = 2.0;

/// The least a reduction step costs per vector of its lane operand when that operand comes
/// from L2, in FMA issue slots (a floor, not a charge on top: packed panels stream from L2
/// behind the step's L1 work until the L2's bandwidth binds). Set so that a 1-row weight-row
/// tile over pixel panels in L2 costs 2 to 3 times the 4- or 8-row tiles that read each
/// panel once, as measured (NCHW 32 -> 5 at 28x28, Xeon Cascade Lake).
const L2_VECTOR_LOAD_COST: f64 = 6.0;

/// [`L2_VECTOR_LOAD_COST`] for NCHW pixels read in place: each step reads a line of another
/// channel plane, as many streams as channels, which the prefetchers follow worse. NCHW
/// 32 -> 16 and 64 -> 16 at 56x56 and 112x112 ran 4 x 64 weight rows (four sweeps of the
/// pixels, four lines a step) at 0.75x and 6 x 64 at 0.87x the speed of 8 x 32, where the
/// L1 costs alone rank them the other way round, as they ran at 28x28 (Xeon Ice Lake).
const L2_IN_PLACE_VECTOR_LOAD_COST: f64 = 14.0;

/// How one call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Index of the chosen tile in the kernel's tile list (0 for kernels without tiles).
    pub tile: usize,
    /// Whether a gemm spans all images (pixel axis of length `n * p`).
    pub folded: bool,
    /// Whether all groups form one gemm (see the module docs on fused groups).
    pub fused: bool,
    /// Whether tiles store straight into the output (their vector lanes are contiguous
    /// there); otherwise through a stack tile, scattered.
    pub direct: bool,
    /// Whether evenly spaced pixel panels are read straight from the input. Always for NHWC
    /// pixel rows; for NCHW weight rows only while a panel's channel rows fit in half of L1
    /// or one weight panel reads it (see `schedule`).
    pub pixels_in_place: bool,
    /// Whether a unit runs each pixel panel past all of its weight panels (the pixel panel
    /// stays in L1 while the weights stream from L2), instead of each weight panel past all
    /// of the block's pixel panels.
    pub pixels_outer: bool,
    /// Reduction steps per block: the whole `C / groups`, unless one pixel panel and one
    /// weight panel of it would not fit the packed budget (see the module docs).
    pub kc: usize,
    /// Pixels per block (a multiple of the pixel lanes).
    pub pixel_block: usize,
    /// Whether the units of one pixel block run group after group (NHWC gemms of several
    /// groups; see `schedule`), instead of each group over all of its pixel blocks.
    pub groups_inner: bool,
    pub blocks_per_gemm: usize,
    /// Output channels per unit (a multiple of the weight lanes).
    pub channels_per_split: usize,
    pub splits: usize,
    /// Parts the reduction is split into (1: not split), each of `steps_per_part` steps (the
    /// last may be shorter), combined in part order.
    pub parts: usize,
    pub steps_per_part: usize,
    /// Units: output units times parts.
    pub units: usize,
    /// Tasks to spread the units over (1: the calling thread).
    pub tasks: usize,
}

/// One unit's coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    /// The gemm's group (0 when groups are fused).
    pub group: usize,
    /// Folded pixel range.
    pub pixels: Range<usize>,
    /// Output-channel range within the gemm (the group, or all channels when fused).
    pub channels: Range<usize>,
    /// Reduction steps (input channels within the group) of this unit's part.
    pub steps: Range<usize>,
    /// This unit's output unit (`u / parts`) and its part of the reduction.
    pub output_unit: usize,
    pub part: usize,
}

/// The gemms of one image (or of the folded batch) and the output channels of each: one per
/// group of `K/G` channels, or one of all `K` when groups are fused.
fn gemm_groups_and_channels(g: &Geometry, fused: bool) -> (usize, usize) {
    if fused {
        (1, g.k)
    } else {
        (g.groups, g.kg)
    }
}

impl Schedule {
    /// Output channels (rows of weights) of one gemm.
    pub fn gemm_channels(&self, g: &Geometry) -> usize {
        gemm_groups_and_channels(g, self.fused).1
    }

    /// Pixels of one gemm.
    pub fn gemm_pixels(&self, g: &Geometry) -> usize {
        if self.folded {
            g.n * g.p
        } else {
            g.p
        }
    }

    /// Output units: units that share their outputs (the parts of one reduction) count once.
    pub fn output_units(&self) -> usize {
        self.units / self.parts
    }

    /// The most tiles of `weight_lanes x pixel_lanes` outputs one output unit holds (the size
    /// of its region of split partial sums).
    pub fn tiles_per_output_unit(&self, weight_lanes: usize, pixel_lanes: usize) -> usize {
        self.channels_per_split.div_ceil(weight_lanes) * self.pixel_block.div_ceil(pixel_lanes)
    }

    /// The coordinates of unit `u` (`u < units`).
    pub fn unit(&self, g: &Geometry, u: usize) -> Unit {
        let part = u % self.parts;
        let output_unit = u / self.parts;
        let split = output_unit % self.splits;
        let rest = output_unit / self.splits;
        let (gemm_groups, _) = gemm_groups_and_channels(g, self.fused);
        let (group, block, img) = if self.groups_inner {
            let blocks = rest / gemm_groups;
            (
                rest % gemm_groups,
                blocks % self.blocks_per_gemm,
                blocks / self.blocks_per_gemm,
            )
        } else {
            let gemm = rest / self.blocks_per_gemm;
            (gemm % gemm_groups, rest % self.blocks_per_gemm, gemm / gemm_groups)
        };
        let img = if self.folded { 0 } else { img };
        let start = img * g.p;
        let j0 = start + block * self.pixel_block;
        let j1 = (j0 + self.pixel_block).min(start + self.gemm_pixels(g));
        let k0 = split * self.channels_per_split;
        let k1 = (k0 + self.channels_per_split).min(self.gemm_channels(g));
        let s0 = part * self.steps_per_part;
        let s1 = (s0 + self.steps_per_part).min(g.cg);
        Unit {
            group,
            pixels: j0..j1,
            channels: k0..k1,
            steps: s0..s1,
            output_unit,
            part,
        }
    }
}

/// Choices the test hooks fix instead of the cost model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Forced {
    /// (tile index, fold the batch).
    pub tiling: Option<(usize, bool)>,
    /// Reduction steps per block.
    pub kc: Option<usize>,
    /// Parts of the reduction.
    pub parts: Option<usize>,
}

/// The schedule of geometry `g` on a kernel with `tiles` (empty: the matrixmultiply kernel),
/// on a machine with `machine`'s caches, with at most `threads` threads; `forced` fixes
/// choices for the test hooks.
///
/// `pairs` says whether the call's operands are bf16 (input and weights): it may then run
/// the tiles that multiply bf16 pairs, and only those, else only the others.
pub(crate) fn schedule<T: Borrow<Tile>>(
    g: &Geometry,
    tiles: &[T],
    pairs: bool,
    machine: &MachineParams,
    threads: usize,
    forced: Forced,
) -> Schedule {
    let (tile, folded, direct) = choose_tiling(g, tiles, pairs, machine, forced.tiling);
    // Reduction steps per packed row of the chosen tile: blocks and parts start on a
    // multiple of it.
    let step_group = if tiles.get(tile).is_some_and(|t| t.borrow().pairs) {
        2
    } else {
        1
    };
    let (weight_lanes, pixel_lanes) = tiles
        .get(tile)
        .map_or((1, 1), |t| (t.borrow().weight_lanes(), t.borrow().pixel_lanes()));
    let fused = tiles
        .get(tile)
        .is_some_and(|t| fuses_groups(g.groups, g.kg, t.borrow()));
    let (gemm_groups, gemm_channels) = gemm_groups_and_channels(g, fused);
    let gemm_pixels = if folded { g.n * g.p } else { g.p };
    // Packed pixel panels of one block take half of L2, beside the weight panel swept over it.
    let packed_bytes = machine.l2 / 2;
    // Reduction blocks: the whole reduction when one pixel panel and one weight panel of it fit
    // that budget (every layer of common networks), else blocks whose weight panel fits half
    // of L1, a multiple of 8.
    // Blocks accumulate in order, so the result is the same bits either way.
    // An NCHW weight-rows tile reads its pixel panel in place, one channel row of the input
    // per step; when rows lie a multiple of 1 KiB apart, all of a panel's lines fall in a
    // sixteenth of the cache's sets, so a long panel evicts itself before the next weight
    // panel rereads it (the weight gradient's products over power-of-two channel counts:
    // 2x slower, measured). Such reductions are blocked as the long ones below.
    let nchw_weight_rows = g.layout == Layout::Nchw
        && tiles
            .get(tile)
            .is_some_and(|t| t.borrow().orient == Orientation::WeightRows);
    let conflicting_rows = nchw_weight_rows && g.input_channel_stride().is_multiple_of(256);
    let l1_block = (machine.l1d / 2 / (4 * weight_lanes) / 8 * 8).max(8);
    let per_step = 4 * (pixel_lanes + weight_lanes);
    let kc = match forced.kc {
        _ if tiles.is_empty() || fused => g.cg,
        Some(kc) => kc.next_multiple_of(step_group).clamp(1, g.cg),
        None if g.cg * per_step <= packed_bytes && !(conflicting_rows && g.cg > l1_block) => g.cg,
        // Blocked: a weight panel of one block stays in half of L1 while the block's pixel
        // panels (then several, from L2) stream past it. Sizing the block by L2 instead left
        // one pixel panel per block and every weight panel re-read from memory per panel
        // (the weight gradient's reductions over N*Ho*Wo pixels: 2x slower, measured).
        None => l1_block.min(g.cg),
    };
    // Input channels a packed pixel panel holds per reduction block: the block's steps, or
    // every channel when fused groups read their own channels of one panel.
    let panel_rows = if fused { g.c } else { kc };
    let by_cache = (packed_bytes / (4 * panel_rows)).max(pixel_lanes);
    // NHWC gemms of several groups: each group reads a slice of every pixel's row of input
    // channels and writes a slice of its row of outputs, a row's length (C or K values)
    // apart. One group over all pixels touches a line or two per pixel, each in another page
    // once rows reach 4 KiB, which the prefetchers do not follow; so a pixel block runs
    // group after group instead, each pixel's row read (and its outputs written) front to
    // back, and the block's rows of inputs and outputs stay within the budget (Intel Xeon
    // model 207, 1 thread: 1024 -> 2048 channels in 32 groups at 56x56 50 -> 124 GFLOP/s,
    // 64 -> 64 in 4 groups 42 -> 77).
    let groups_inner = g.layout == Layout::Nhwc && gemm_groups > 1;
    let by_cache = if groups_inner {
        by_cache.min((packed_bytes / (4 * (g.c + g.k))).max(pixel_lanes))
    } else {
        by_cache
    };
    let max_block = (by_cache / pixel_lanes * pixel_lanes).min(gemm_pixels.div_ceil(pixel_lanes) * pixel_lanes);
    // Equal blocks (whole tiles each), so that threads given one block each finish together.
    let blocks = gemm_pixels.div_ceil(max_block);
    let pixel_block = gemm_pixels.div_ceil(blocks).div_ceil(pixel_lanes) * pixel_lanes;
    let blocks_per_gemm = gemm_pixels.div_ceil(pixel_block);
    let gemms = gemm_groups * if folded { 1 } else { g.n };
    let flops = [g.n, g.p, g.k, g.cg].iter().fold(2usize, |f, &x| f.saturating_mul(x));
    let threads = if flops < PARALLEL_MIN_FLOPS { 1 } else { threads.max(1) };
    let weight_panels = gemm_channels.div_ceil(weight_lanes);
    let base_units = gemms * blocks_per_gemm;
    // Too few blocks for the threads: split the output channels too (the reduction is split
    // below only on the problem's size, never on the thread count).
    let splits = if threads > 1 && base_units < 2 * threads {
        (2 * threads).div_ceil(base_units).min(weight_panels)
    } else {
        1
    };
    let channels_per_split = weight_panels.div_ceil(splits) * weight_lanes;
    let splits = gemm_channels.div_ceil(channels_per_split);
    // Split the reduction when the call has too few output tiles for the threads of a large
    // machine, on its size alone (see the module docs): the thread count is not consulted.
    let output_tiles = gemms * gemm_pixels.div_ceil(pixel_lanes) * weight_panels;
    let parts = match forced.parts {
        _ if tiles.is_empty() || fused => 1,
        Some(parts) => parts.clamp(1, g.cg),
        None if flops >= PARALLEL_MIN_FLOPS && output_tiles < SPLIT_BELOW_TILES => (g.cg / SPLIT_MIN_STEPS)
            .min(SPLIT_BELOW_TILES.div_ceil(output_tiles))
            .clamp(1, SPLIT_MAX_PARTS),
        None => 1,
    };
    let steps_per_part = g.cg.div_ceil(parts).next_multiple_of(step_group);
    let parts = g.cg.div_ceil(steps_per_part);
    let units = base_units * splits * parts;
    // An NCHW weight-row tile can read its pixel panel in place, one channel row (a plane
    // apart) per step. When the unit's weight panels sweep a panel whose rows do not fit in
    // half of L1, each sweep re-reads those scattered lines from L2; a packed copy is
    // contiguous and streams well (Xeon Cascade Lake, 1 thread: 4 x 512 -> 128 at 14x14
    // 66 -> 88 GFLOP/s, 411 -> 341 at 7x7 41 -> 76).
    // (Panels of bf16 pairs are always packed.)
    let pixels_in_place = step_group == 1
        && (!nchw_weight_rows || channels_per_split <= weight_lanes || kc * pixel_lanes * 4 <= machine.l1d / 2);
    // A packed NCHW pixel panel (its rows overflow half of L1) stays in L1 while the unit's
    // weight panels, smaller when the tile has more pixel lanes than weight lanes, stream past
    // it from L2 (NCHW 256 -> 64 at 56x56, 8 x 32 weight rows: each 32 KiB pixel panel was
    // re-read from L2 by each of 8 weight panels of 8 KiB; Xeon Ice Lake, 1 thread, 36 -> 52-77
    // GFLOP/s). The unit's weights are then read once per pixel panel, so they must stay in L2
    // beside the block's pixels. Panels read in place keep the weight panels outer: there the
    // output's rows are written in long runs, and pixels outer measured 0.8-0.9x (64 -> 256
    // and 24 -> 144 at 56x56).
    let pixels_outer = !fused
        && !pixels_in_place
        && pixel_lanes > weight_lanes
        && channels_per_split.saturating_mul(kc).saturating_mul(4) <= machine.l2 / 4;
    Schedule {
        tile,
        folded,
        fused,
        direct,
        pixels_in_place,
        pixels_outer,
        kc,
        pixel_block,
        groups_inner,
        blocks_per_gemm,
        channels_per_split,
        splits,
        parts,
        steps_per_part,
        units,
        tasks: threads.min(units),
    }
}

/// Whether a kernel's weight panels for `tile` fuse all `groups` (of `kg` output channels
/// each) into one gemm: weight-rows tiles taller than a group (see the module docs). The
/// plan packs the weights accordingly.
pub(crate) fn fuses_groups(groups: usize, kg: usize, tile: &Tile) -> bool {
    groups > 1 && tile.orient == Orientation::WeightRows && kg < tile.mr && !tile.pairs
}

/// Whether a convolution runs on its kernel's group-lanes tile (`simd::group_lanes_block`,
/// registers of `lanes` output channels holding several whole groups): NHWC layers with
/// groups, whose groups have fewer output channels than a register has lanes and no more
/// input channels than that, or exactly a register of output channels and at most half a
/// register of input channels (one permutation and one multiply-add per input channel and
/// pixel; beyond half a register the pixel-row tiles' embedded broadcasts cost less). Per-group
/// register tiles would compute mostly padding lanes there, and the fused weight-row tiles
/// transpose every NHWC pixel and scatter every output. Measured on Xeon Cascade Lake,
/// 1 thread: 928 -> 1856 channels in 116 groups at 56x56 4.4 -> 19.6 GFLOP/s, 256 -> 512 in
/// 32 groups at 14x14 14.1 -> 25.3. Depends only on the convolution, so the plan packs for
/// it once.
pub(crate) fn uses_group_lanes(layout: Layout, groups: usize, kg: usize, cg: usize, lanes: usize) -> bool {
    layout == Layout::Nhwc && groups > 1 && (kg < lanes && cg <= lanes || kg == lanes && 2 * cg <= lanes)
}

/// Whether a convolution runs on its kernel's flat-lanes loop (`driver::run_flat_lanes`):
/// NHWC layers of one group, stride 1 and no padding (`dense`), with fewer output channels
/// than a register has lanes, whose registers of `lanes` consecutive output values each read
/// the inputs of so few pixels that they fit one register (`flat_lanes_span(K) * C <= lanes`):
/// few input and few output channels. Pixel-row tiles compute padding lanes past `K` there
/// and finish every tile through a partial store, and weight-row tiles transpose every pixel
/// and scatter every output. With `K` above the lanes, the pixel-row tiles' registers are
/// mostly full and their embedded broadcasts cost less than a permutation per multiply-add
/// (3 -> 24 at 224x224: 0.8-1.0x of the pixel-row tile, Xeon Ice Lake). Depends only on the
/// convolution, so the plan packs for it once.
pub(crate) fn uses_flat_lanes(layout: Layout, groups: usize, c: usize, k: usize, dense: bool, lanes: usize) -> bool {
    layout == Layout::Nhwc
        && groups == 1
        && dense
        && k > 0
        && k < lanes
        && flat_lanes_span(k, lanes).saturating_mul(c) <= lanes
}

/// The most output channels the pixel-lanes loop takes (one accumulator each, besides the
/// `LANES` registers of a transposed block: 16 + 8 of AVX-512's 32).
pub(crate) const PIXEL_LANES_MAX_K: usize = 8;

/// Whether a convolution runs on its kernel's pixel-lanes loop (`driver::run_pixel_lanes`)
/// when the flat-lanes loop does not take it: NHWC layers of one group with fewer output
/// channels than a register has lanes, at most `max_k` (the tier's, below
/// [`PIXEL_LANES_MAX_K`]). Pixel-row tiles compute padding lanes past `K` there, and
/// weight-row tiles pack every pixel through the 8 x 8 transpositions and scatter every
/// output; the pixel-lanes loop transposes in registers and stores whole registers of
/// consecutive outputs. Depends only on the convolution, so the plan packs for it once.
pub(crate) fn uses_pixel_lanes(layout: Layout, groups: usize, k: usize, lanes: usize, max_k: usize) -> bool {
    layout == Layout::Nhwc && groups == 1 && k > 0 && k < lanes && k <= max_k.min(PIXEL_LANES_MAX_K)
}

/// Whether a convolution runs on its kernel's few-inputs loops (`driver::run_few_inputs`):
/// stride 1 and no padding (`dense`), with 1 to [`FEW_INPUTS_MAX_C`] input channels per
/// group (`cg`); in NCHW any groups (each group's `C/G` input planes feed its `K/G` output
/// planes), in NHWC one group and at least a register of output channels (fewer run on the
/// flat-lanes or pixel-lanes loop, whose registers are whole; grouped NHWC layers on group
/// lanes or tiles). A register tile does `C/G` multiply-adds per output register there, so
/// its fixed costs per tile dominate. Depends only on the convolution, so the plan packs for
/// it once. (Channel-wise layers, `C/G = 1` with several groups, run on the reference
/// module's stream before any loop is chosen: `Plan::kernel_for_macs`.)
pub(crate) fn uses_few_inputs(layout: Layout, groups: usize, cg: usize, k: usize, dense: bool, lanes: usize) -> bool {
    dense
        && (1..=FEW_INPUTS_MAX_C).contains(&cg)
        && k > 0
        && match layout {
            Layout::Nchw => true,
            Layout::Nhwc => groups == 1 && k >= lanes,
        }
}

/// Whether a convolution runs on its kernel's few-outputs loop (`driver::run_few_outputs`)
/// where the few-inputs loops do not take it: dense NCHW layers of one group with 1 to
/// [`FEW_OUTPUTS_MAX_K`] output channels. The register tiles have 1 or 4 rows of output
/// channels, so 2 or 3 ran a 4-row tile with padding rows, and their fixed costs per tile
/// weigh on a reduction of few channels. Depends only on the convolution, so the plan packs
/// for it once.
pub(crate) fn uses_few_outputs(layout: Layout, groups: usize, c: usize, k: usize, dense: bool) -> bool {
    layout == Layout::Nchw && groups == 1 && dense && c > FEW_INPUTS_MAX_C && (1..=FEW_OUTPUTS_MAX_K).contains(&k)
}

/// The most pixels a register of `lanes` consecutive output values (starting at a multiple of
/// `lanes`) covers when each pixel has `k > 0` output channels.
pub(crate) fn flat_lanes_span(k: usize, lanes: usize) -> usize {
    let phases = k / gcd(k, lanes);
    (0..phases)
        .map(|j| (lanes * j + lanes - 1) / k - lanes * j / k + 1)
        .max()
        .unwrap_or(1)
}

/// The greatest common divisor.
pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Picks the register tile, batch folding and direct stores by estimating each candidate's
/// time ([`tile_cost`]); ties go to the earlier tile.
fn choose_tiling<T: Borrow<Tile>>(
    g: &Geometry,
    tiles: &[T],
    pairs: bool,
    machine: &MachineParams,
    forced: Option<(usize, bool)>,
) -> (usize, bool, bool) {
    if tiles.is_empty() {
        // matrixmultiply: fold small NCHW images; NHWC pixels are uniformly strided.
        let folded = g.layout == Layout::Nhwc || (g.n > 1 && g.p < 256);
        return (0, folded, true);
    }
    // Whether a tile's lanes are contiguous in the output (and its rows a fixed stride apart):
    // NCHW weight rows of one image, NHWC pixel rows, and NHWC weight rows of a single output
    // channel (pixels one value apart; the tile's one valid row is stored).
    let direct_for = |tile: &Tile, folded: bool| match (g.layout, tile.orient) {
        (Layout::Nchw, Orientation::WeightRows) => !folded,
        (Layout::Nhwc, Orientation::PixelRows) => true,
        (Layout::Nhwc, Orientation::WeightRows) => g.k == 1,
        _ => false,
    };
    if let Some((tile, folded)) = forced {
        return (tile, folded, direct_for(tiles[tile].borrow(), folded));
    }
    let fold_options: &[bool] = match g.layout {
        Layout::Nhwc => &[true],
        Layout::Nchw if g.n > 1 => &[false, true],
        Layout::Nchw => &[false],
    };
    let mut best: Option<(f64, (usize, bool, bool))> = None;
    for (index, tile) in tiles.iter().map(Borrow::borrow).enumerate() {
        if tile.pairs != pairs {
            continue;
        }
        for &folded in fold_options {
            let direct = direct_for(tile, folded);
            let cost = tile_cost(g, tile, machine, folded, direct);
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, (index, folded, direct)));
            }
        }
    }
    best.map_or((0, false, false), |(_, choice)| choice)
}

/// Estimated cycles (up to a constant) to run geometry `g` with `tile`: the vector FMAs and
/// loads of every tile, padding lanes included, a fixed cost per tile (loop set-up, epilogue
/// dispatch), and the stores: one per register for a direct tile, two to five scalar moves per
/// element (residual gather and scatter) otherwise.
fn tile_cost(g: &Geometry, tile: &Tile, machine: &MachineParams, folded: bool, direct: bool) -> f64 {
    let pixels = if folded { g.n * g.p } else { g.p };
    let fused = fuses_groups(g.groups, g.kg, tile);
    let (gemm_groups, gemm_channels) = gemm_groups_and_channels(g, fused);
    let gemms = if folded { 1 } else { g.n } * gemm_groups;
    let (rows, cols) = match tile.orient {
        Orientation::WeightRows => (gemm_channels, pixels),
        Orientation::PixelRows => (pixels, gemm_channels),
    };
    let tiles = (rows.div_ceil(tile.mr) * cols.div_ceil(tile.nr) * gemms) as f64;
    let registers = (tile.mr * tile.vectors) as f64;
    // A reduction step issues one FMA per accumulator and one load per vector of the lane
    // operand plus one broadcast per row, the loads charged on top of the FMAs
    // (`L1_LOAD_COST`): a one-row tile (four vector loads and a broadcast per four FMAs) is
    // mostly loads, and 6 x 64 (10 loads per 24 FMAs) beats 8 x 32 (10 per 16).
    let broadcasts = tile.mr as f64;
    // A weight-row tile's lanes are the pixels: every panel of output channels sweeps the
    // block's pixel panels again. When they do not fit in half of L1 they come from L2, at
    // about a cache line per cycle (`L2_VECTOR_LOAD_COST`). Without this a
    // 1-row tile looked cheapest for a few output channels and ran 2.7x slower than the 8-row
    // tile that reads the pixels once (NCHW 32 -> 5 at 28x28, Xeon Cascade Lake).
    let pixel_bytes = g.cg.saturating_mul(pixels).saturating_mul(4);
    let weight_panels = gemm_channels.div_ceil(tile.mr);
    let from_l2 = tile.orient == Orientation::WeightRows && weight_panels > 1 && pixel_bytes > machine.l1d / 2;
    // NCHW weight rows read their pixels in place at unit stride while a panel's rows fit in
    // half of L1 or one weight panel sweeps them (`schedule` decides the same), else pack them.
    let nchw_in_place = g.layout == Layout::Nchw
        && !tile.pairs
        && tile.orient == Orientation::WeightRows
        && g.sw == 1
        && (weight_panels == 1 || g.cg * tile.pixel_lanes() * 4 <= machine.l1d / 2);
    let issue = registers + L1_LOAD_COST * (broadcasts + tile.vectors as f64);
    let step = match (from_l2, nchw_in_place) {
        (true, true) => issue.max(L2_IN_PLACE_VECTOR_LOAD_COST * tile.vectors as f64),
        (true, false) => issue.max(L2_VECTOR_LOAD_COST * tile.vectors as f64),
        (false, _) => issue,
    };
    // Fused groups load each row's operand separately (a load per FMA instead of one per row
    // of vectors).
    // A tile of bf16 pairs runs one step per two input channels (`vdpbf16ps` issues like an
    // FMA and reads the same registers).
    let packed_rows = if tile.pairs { g.cg.div_ceil(2) } else { g.cg };
    let per_tile_fma = packed_rows as f64 * step * if fused { 1.5 } else { 1.0 };
    // An NCHW pixel-row tile sends each lane of a row to another channel plane: a scalar
    // load, address and store per value, each into another line. 5 ranks it as measured
    // (NCHW 96 -> 576 at 14x14: 6 x 64 pixel rows ran at 0.8-0.9x the 8 x 32 weight rows, Xeon
    // Ice Lake), and leaves the long reductions of few pixels on pixel rows.
    let per_value = if g.layout == Layout::Nchw && tile.orient == Orientation::PixelRows {
        5.0
    } else {
        2.0
    };
    let scattered = per_value * (tile.mr * tile.nr) as f64;
    let per_tile_store = if direct {
        registers
    } else if folded && g.layout == Layout::Nchw && tile.orient == Orientation::WeightRows {
        // Folded NCHW weight-row tiles store straight into the output unless they straddle
        // two images: about one tile per image boundary.
        let straddling = ((g.n - 1) as f64 / pixels.div_ceil(tile.nr) as f64).min(1.0);
        registers * (1.0 - straddling) + scattered * straddling
    } else {
        scattered
    };
    // Packing pixels: NHWC pixel rows, and NCHW weight rows at unit width stride, are read in
    // place; strided NCHW rows are gathered a row at a time (~1/4 cycle per value); NCHW
    // pixel rows copy a short row per channel (below); NHWC weight rows are a transposition
    // in 8 x 8 register blocks, once per unit (~1 per value: `perf`
    // measured about 0.6 on NHWC 96 -> 1 channels at 14x14, Xeon Cascade Lake, where the
    // scalar blocks took about 3; charging 3 had moved small-group NHWC layers onto
    // per-group pixel-row tiles, 2x slower, before group lanes took them).
    let pack_per_value = match (g.layout, tile.orient) {
        // Pairs are always packed: an NHWC transposition, then narrowing (about 1/4 per
        // value) on top of any layout's packing.
        (Layout::Nhwc, _) if tile.pairs => 1.25,
        (Layout::Nchw, Orientation::WeightRows) if tile.pairs => 0.5,
        (Layout::Nhwc, Orientation::PixelRows) => 0.0,
        (Layout::Nchw, Orientation::WeightRows) if nchw_in_place => 0.0,
        (Layout::Nchw, Orientation::WeightRows) => 0.25,
        // NCHW pixel rows: a short row of each channel plane per panel, one line each (2.0
        // ranks them as measured against 6 x 64 weight rows: NCHW 512 -> 128 at 28x28 ran
        // 6 x 64 pixel rows at 0.85-0.9x the weight rows, 1024 -> 256 at 14x14 at 1.1-1.3x,
        // Xeon Ice Lake).
        (Layout::Nchw, Orientation::PixelRows) => 2.0,
        _ => 1.0,
    };
    let packing = pack_per_value * (pixels * if folded { 1 } else { g.n }) as f64 * g.c as f64;
    tiles * (per_tile_fma + 40.0 + per_tile_store) + packing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{Conv1x1, InputDims, Padding};

    fn geometry(conv: Conv1x1, dims: InputDims) -> Geometry {
        let input = conv.input_len(dims).unwrap();
        let output = conv.output_dims(dims).unwrap().len().unwrap();
        Geometry::new(&conv, dims, input, None, output).unwrap().unwrap()
    }

    fn tile(orient: Orientation, mr: usize, nr: usize) -> Tile {
        Tile {
            orient,
            mr,
            nr,
            vectors: nr / 8,
            pairs: false,
        }
    }

    /// Tile lists like the tiers': one per orientation, plus a narrow one.
    fn tile_lists() -> Vec<Vec<Tile>> {
        vec![
            vec![],
            vec![
                tile(Orientation::WeightRows, 6, 16),
                tile(Orientation::PixelRows, 6, 16),
            ],
            vec![
                tile(Orientation::WeightRows, 8, 32),
                tile(Orientation::PixelRows, 8, 32),
                tile(Orientation::PixelRows, 7, 32),
                tile(Orientation::PixelRows, 8, 8),
            ],
        ]
    }

    /// The problems (under miri, a few small ones: the interpreter is slow).
    fn problems() -> Vec<Geometry> {
        let mut all = all_problems();
        if cfg!(miri) {
            all.retain(|g| g.n * g.p * g.k <= 4096);
        }
        all
    }

    fn all_problems() -> Vec<Geometry> {
        let mut out = Vec::new();
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for (c, k, groups, n, h, w, stride, pad) in [
                (64, 256, 1, 1, 56, 56, 1, 0),
                (2048, 512, 1, 1, 7, 7, 1, 0),
                (256, 512, 1, 2, 28, 28, 2, 0),
                (24, 36, 3, 3, 5, 9, 1, 1),
                (3, 5, 1, 4, 17, 1, 3, 2),
                (4096, 8, 8, 1, 64, 64, 1, 0),
                (1, 1, 1, 1, 1, 1, 1, 0),
            ] {
                let conv = Conv1x1::new(c, k)
                    .with_groups(groups)
                    .with_layout(layout)
                    .with_stride(stride, stride)
                    .with_padding(Padding::uniform(pad));
                out.push(geometry(conv, InputDims::new(n, h, w)));
            }
        }
        out
    }

    fn machines() -> [MachineParams; 3] {
        let m = |l2| MachineParams {
            l1d: 32 << 10,
            l2,
            l3: 32 << 20,
            source: "test",
        };
        [m(256 << 10), m(1 << 20), m(2 << 20)]
    }

    #[test]
    fn nhwc_groups_run_group_after_group_within_each_pixel_block() {
        let m = &machines()[1];
        for tiles in &tile_lists()[1..] {
            for layout in [Layout::Nchw, Layout::Nhwc] {
                // 1024 -> 2048 channels in 32 groups: rows of 12 KiB of inputs and outputs.
                let conv = Conv1x1::new(1024, 2048).with_groups(32).with_layout(layout);
                let g = geometry(conv, InputDims::new(2, 56, 56));
                let s = schedule(&g, tiles, false, m, 1, Forced::default());
                assert_eq!(s.groups_inner, layout == Layout::Nhwc && !s.fused, "{s:?}");
                if !s.groups_inner {
                    continue;
                }
                // The block's rows of inputs and outputs fit the budget (half of L2).
                let lanes = tiles[s.tile].pixel_lanes();
                assert!(
                    s.pixel_block == lanes || s.pixel_block * (g.c + g.k) * 4 <= m.l2 / 2,
                    "{s:?}"
                );
                // Consecutive units: every group of one pixel block, then the next block.
                let units: Vec<Unit> = (0..s.units).map(|u| s.unit(&g, u)).collect();
                for pair in units.windows(2) {
                    if pair[1].group != 0 {
                        assert_eq!(pair[1].pixels, pair[0].pixels);
                    } else {
                        assert_eq!(pair[0].group, g.groups - 1);
                        assert!(pair[1].pixels.start >= pair[0].pixels.end, "{pair:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn nchw_weight_rows_read_pixels_in_place_only_while_they_stay_in_l1() {
        let tiles = [tile(Orientation::WeightRows, 8, 32)];
        let forced = Forced {
            tiling: Some((0, false)),
            ..Forced::default()
        };
        let m = &machines()[1];
        let in_place = |layout: Layout, c: usize, k: usize| {
            let g = geometry(Conv1x1::new(c, k).with_layout(layout), InputDims::new(1, 14, 14));
            schedule(&g, &tiles, false, m, 1, forced).pixels_in_place
        };
        // 64 channels x 32 pixels x 4 bytes = 8 KiB, within half of L1: in place.
        assert!(in_place(Layout::Nchw, 64, 256));
        // 512 channels: 64 KiB per panel, swept by 32 weight panels: packed.
        assert!(!in_place(Layout::Nchw, 512, 256));
        // One weight panel sweeps the panel once: in place whatever its length.
        assert!(in_place(Layout::Nchw, 512, 8));
        // NHWC pixel rows are not NCHW weight rows: the rule does not apply.
        assert!(in_place(Layout::Nhwc, 512, 256));
    }

    #[test]
    fn flat_lanes_only_for_dense_nhwc_layers_whose_registers_read_one_register_of_inputs() {
        // K = 5 on 16 lanes: registers start at outputs 0, 16, 32, 48, 64, which span pixels
        // 0..=3, 3..=6, 6..=9, 9..=12, 12..=15: four pixels at most.
        assert_eq!(flat_lanes_span(5, 16), 4);
        assert_eq!(flat_lanes_span(1, 16), 16);
        assert_eq!(flat_lanes_span(2, 8), 4);
        assert_eq!(flat_lanes_span(24, 16), 2);
        assert_eq!(flat_lanes_span(3, 4), 2);
        assert!(uses_flat_lanes(Layout::Nhwc, 1, 4, 5, true, 16));
        assert!(
            !uses_flat_lanes(Layout::Nhwc, 1, 5, 5, true, 16),
            "5 pixels of 5 channels"
        );
        assert!(!uses_flat_lanes(Layout::Nchw, 1, 4, 5, true, 16));
        assert!(!uses_flat_lanes(Layout::Nhwc, 2, 4, 6, true, 16), "groups: group lanes");
        assert!(!uses_flat_lanes(Layout::Nhwc, 1, 4, 5, false, 16), "strided or padded");
        assert!(
            !uses_flat_lanes(Layout::Nhwc, 1, 1, 16, true, 16),
            "a register per pixel"
        );
        assert!(!uses_flat_lanes(Layout::Nhwc, 1, 3, 24, true, 16), "pixel rows");
        assert!(uses_flat_lanes(Layout::Nhwc, 1, 1, 1, true, 16));
        assert!(!uses_flat_lanes(Layout::Nhwc, 1, 2, 1, true, 16));
        assert_eq!(gcd(12, 16), 4);
    }

    #[test]
    fn packed_pixel_panels_stay_while_smaller_weight_panels_stream() {
        let wrows = [tile(Orientation::WeightRows, 8, 32)];
        let prows = [tile(Orientation::PixelRows, 8, 32)];
        let m = &machines()[1];
        let pixels_outer = |tiles: &[Tile], layout: Layout, c: usize, k: usize| {
            let g = geometry(Conv1x1::new(c, k).with_layout(layout), InputDims::new(1, 56, 56));
            let forced = Forced {
                tiling: Some((0, false)),
                ..Forced::default()
            };
            let s = schedule(&g, tiles, false, m, 1, forced);
            assert!(!s.pixels_outer || !s.pixels_in_place, "{s:?}");
            s.pixels_outer
        };
        // 256 channels x 32 pixels: packed, swept by 8 weight panels of 8 rows whose 64 KiB
        // stay in a quarter of L2.
        assert!(pixels_outer(&wrows, Layout::Nchw, 256, 64));
        // Read in place: the weight panels stay outer.
        assert!(!pixels_outer(&wrows, Layout::Nchw, 64, 256));
        // Weights beyond a quarter of L2 (1024 x 512 x 4 bytes): each weight panel once per block.
        assert!(!pixels_outer(&wrows, Layout::Nchw, 1024, 512));
        // Pixel rows: the weight panels have more lanes than the pixel panels.
        assert!(!pixels_outer(&prows, Layout::Nchw, 256, 64));
        assert!(!pixels_outer(&prows, Layout::Nhwc, 256, 64));
    }

    #[test]
    fn every_output_element_is_covered_exactly_once() {
        for g in problems() {
            for tiles in tile_lists() {
                for machine in machines() {
                    for threads in [1, 2, 3, 16] {
                        let s = schedule(&g, &tiles, false, &machine, threads, Forced::default());
                        // Every (output element, reduction step) pair once; the parts of one
                        // output unit cover the same outputs and are adjacent units.
                        // (The parts' step ranges tile the reduction: they are consecutive.)
                        let mut count = vec![0usize; g.n * g.p * g.k];
                        for u in 0..s.units {
                            let unit = s.unit(&g, u);
                            assert!(!unit.pixels.is_empty() && !unit.channels.is_empty(), "{s:?}");
                            assert!(!unit.steps.is_empty(), "{s:?}");
                            assert_eq!((unit.output_unit, unit.part), (u / s.parts, u % s.parts));
                            let first = s.unit(&g, unit.output_unit * s.parts);
                            assert_eq!((&first.pixels, &first.channels), (&unit.pixels, &unit.channels));
                            let next_start = if unit.part + 1 < s.parts {
                                s.unit(&g, u + 1).steps.start
                            } else {
                                g.cg
                            };
                            assert_eq!(unit.steps.end, next_start, "{s:?}");
                            assert_eq!(unit.part == 0, unit.steps.start == 0, "{s:?}");
                            for j in unit.pixels.clone() {
                                for k in unit.channels.clone() {
                                    count[j * g.k + unit.group * g.kg + k] += unit.steps.len();
                                }
                            }
                        }
                        assert!(count.iter().all(|&c| c == g.cg), "{g:?} {s:?}");
                        assert_eq!(s.output_units() * s.parts, s.units);
                        // Blocks are whole tiles of pixels and channel ranges whole weight panels.
                        if let Some(t) = tiles.get(s.tile) {
                            assert_eq!(s.pixel_block % t.pixel_lanes(), 0);
                            assert_eq!(s.channels_per_split % t.weight_lanes(), 0);
                        }
                        assert!(s.tasks >= 1 && s.tasks <= threads.max(1) && s.tasks <= s.units);
                    }
                }
            }
        }
    }

    #[test]
    fn the_reduction_is_blocked_only_past_the_cache_budget() {
        for g in problems() {
            for tiles in tile_lists() {
                for threads in [1, 2, 7, 64] {
                    for m in machines() {
                        let s = schedule(&g, &tiles, false, &m, threads, Forced::default());
                        let t = tiles.get(s.tile);
                        let lanes = t.map_or(0, |t| t.pixel_lanes() + t.weight_lanes());
                        let l1_block = t.map_or(0, |t| m.l1d / 2 / (4 * t.weight_lanes()) / 8 * 8);
                        let conflicting = g.layout == Layout::Nchw
                            && t.is_some_and(|t| t.orient == Orientation::WeightRows)
                            && g.input_channel_stride().is_multiple_of(256);
                        if tiles.is_empty()
                            || s.fused
                            || (g.cg * 4 * lanes <= m.l2 / 2 && !(conflicting && g.cg > l1_block))
                        {
                            assert_eq!(s.kc, g.cg, "{s:?}");
                        } else {
                            // Blocks of a weight panel in half of L1.
                            assert_eq!(s.kc, l1_block.max(8).min(g.cg), "{s:?}");
                            assert!(s.kc < g.cg && s.kc % 8 == 0 && s.kc * 4 * lanes <= m.l2 / 2, "{s:?}");
                        }
                        // The same for every thread count.
                        assert_eq!(s.kc, schedule(&g, &tiles, false, &m, 1, Forced::default()).kc);
                    }
                }
            }
        }
        // A long reduction over input rows 1 KiB apart (16 x 16 planes, read in place) is
        // blocked even though it fits L2; the same over 14 x 14 planes is not.
        let conv = Conv1x1::new(3136, 64);
        let tiles = [tile(Orientation::WeightRows, 8, 32)];
        let m = machines()[1];
        let kc = |h| {
            schedule(
                &geometry(conv, InputDims::new(1, h, h)),
                &tiles,
                false,
                &m,
                1,
                Forced::default(),
            )
            .kc
        };
        assert_eq!((kc(16), kc(14)), (512, 3136));
        // Forced blocks are clamped to the reduction.
        let g = &all_problems()[0];
        let forced = |kc| Forced {
            kc: Some(kc),
            ..Forced::default()
        };
        assert_eq!(schedule(g, &tile_lists()[2], false, &machines()[1], 1, forced(0)).kc, 1);
        assert_eq!(
            schedule(g, &tile_lists()[2], false, &machines()[1], 1, forced(17)).kc,
            17
        );
        assert_eq!(
            schedule(g, &tile_lists()[2], false, &machines()[1], 1, forced(1 << 20)).kc,
            g.cg
        );
    }

    #[test]
    fn schedules_are_deterministic_and_follow_the_cache() {
        let g = &all_problems()[0];
        let tiles = &tile_lists()[2];
        for machine in machines() {
            assert_eq!(
                schedule(g, tiles, false, &machine, 2, Forced::default()),
                schedule(g, tiles, false, &machine, 2, Forced::default())
            );
        }
        // A larger L2 never gives smaller pixel blocks.
        let blocks: Vec<usize> = machines()
            .iter()
            .map(|m| schedule(&all_problems()[1], tiles, false, m, 1, Forced::default()).pixel_block)
            .collect();
        assert!(blocks.windows(2).all(|b| b[0] <= b[1]), "{blocks:?}");
        // The block's packed panels fit half of L2 (or are one panel wide).
        for m in machines() {
            for g in problems() {
                let s = schedule(&g, tiles, false, &m, 1, Forced::default());
                let lanes = tiles[s.tile].pixel_lanes();
                assert!(
                    s.pixel_block == lanes || s.pixel_block * s.kc * 4 <= m.l2 / 2 + lanes * s.kc * 4,
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn small_calls_stay_on_the_calling_thread_and_forced_tiles_hold() {
        let g = &all_problems()[6];
        let s = schedule(g, &tile_lists()[2], false, &machines()[0], 16, Forced::default());
        assert_eq!((s.tasks, s.splits), (1, 1));
        let tiling = Forced {
            tiling: Some((3, false)),
            ..Forced::default()
        };
        let forced = schedule(&all_problems()[0], &tile_lists()[2], false, &machines()[0], 1, tiling);
        assert_eq!((forced.tile, forced.folded, forced.direct), (3, false, false));
    }

    #[test]
    fn the_reduction_splits_only_for_few_long_tiles_and_never_by_thread_count() {
        let few_tiles = |layout| {
            let conv = Conv1x1::new(4096, 16).with_layout(layout);
            geometry(conv, InputDims::new(1, 8, 8))
        };
        for g in problems()
            .into_iter()
            .chain([few_tiles(Layout::Nchw), few_tiles(Layout::Nhwc)])
        {
            for tiles in tile_lists() {
                for m in machines() {
                    let one = schedule(&g, &tiles, false, &m, 1, Forced::default());
                    for threads in [2, 3, 7, 64] {
                        let s = schedule(&g, &tiles, false, &m, threads, Forced::default());
                        assert_eq!((s.parts, s.steps_per_part), (one.parts, one.steps_per_part), "{g:?}");
                    }
                    if one.parts > 1 {
                        let t = &tiles[one.tile];
                        let output_tiles =
                            one.output_units() * one.tiles_per_output_unit(t.weight_lanes(), t.pixel_lanes());
                        assert!(output_tiles < SPLIT_BELOW_TILES * 2, "{one:?}");
                        assert!(one.steps_per_part >= SPLIT_MIN_STEPS && one.parts <= SPLIT_MAX_PARTS);
                    }
                    if tiles.is_empty() {
                        assert_eq!(one.parts, 1);
                    }
                }
            }
        }
        // The 4096-step, 16-channel, 64-pixel problem has few tiles: it splits.
        let s = schedule(
            &few_tiles(Layout::Nchw),
            &tile_lists()[2],
            false,
            &machines()[1],
            1,
            Forced::default(),
        );
        assert!(s.parts > 1, "{s:?}");
        // A forced split is clamped to the reduction.
        let g = &all_problems()[3];
        let forced = |parts| Forced {
            parts: Some(parts),
            ..Forced::default()
        };
        assert_eq!(
            schedule(g, &tile_lists()[1], false, &machines()[0], 1, forced(0)).parts,
            1
        );
        assert_eq!(
            schedule(g, &tile_lists()[1], false, &machines()[0], 1, forced(3)).parts,
            3
        );
        assert_eq!(
            schedule(g, &tile_lists()[1], false, &machines()[0], 1, forced(1000)).parts,
            g.cg
        );
    }

    /// A kernel's tiles with bf16-pair tiles after the f32 ones, as the bf16 kernels list them.
    fn tiles_with_pairs() -> Vec<Tile> {
        let mut tiles = tile_lists()[2].clone();
        for orient in [Orientation::WeightRows, Orientation::PixelRows] {
            tiles.push(Tile {
                pairs: true,
                ..tile(orient, 8, 32)
            });
        }
        tiles
    }

    #[test]
    fn pair_tiles_only_for_pair_calls_never_in_place_or_fused_and_cut_on_even_steps() {
        let tiles = tiles_with_pairs();
        let grouped = |layout| {
            // 3 output channels per group: fewer than a tile's rows, which fuses f32 groups.
            let conv = Conv1x1::new(40, 24).with_groups(8).with_layout(layout);
            geometry(conv, InputDims::new(1, 9, 9))
        };
        let long = |layout| geometry(Conv1x1::new(4097, 16).with_layout(layout), InputDims::new(1, 8, 8));
        let extra = [Layout::Nchw, Layout::Nhwc]
            .into_iter()
            .flat_map(|l| [grouped(l), long(l)]);
        for g in problems().into_iter().chain(extra) {
            for m in machines() {
                for threads in [1, 3] {
                    let f32_call = schedule(&g, &tiles, false, &m, threads, Forced::default());
                    assert!(!tiles[f32_call.tile].pairs, "{g:?}");
                    let s = schedule(&g, &tiles, true, &m, threads, Forced::default());
                    let t = &tiles[s.tile];
                    assert!(t.pairs, "{g:?} {s:?}");
                    // A pair is not where the input keeps it: pixels are always packed, and
                    // each group keeps its own gemm (pairs never straddle groups).
                    assert!(!s.pixels_in_place && !s.fused, "{g:?} {s:?}");
                    // Blocks and parts start on even steps: a pair is never cut.
                    if s.kc < g.cg {
                        assert_eq!(s.kc % 2, 0, "{g:?} {s:?}");
                    }
                    if s.parts > 1 {
                        assert_eq!(s.steps_per_part % 2, 0, "{g:?} {s:?}");
                    }
                    for kc in [1, 3, 7] {
                        let forced = Forced {
                            kc: Some(kc),
                            parts: Some(3),
                            ..Forced::default()
                        };
                        let s = schedule(&g, &tiles, true, &m, threads, forced);
                        assert!(s.kc % 2 == 0 || s.kc >= g.cg, "{g:?} forced kc {kc}: {s:?}");
                        assert!(s.parts == 1 || s.steps_per_part % 2 == 0, "{g:?} {s:?}");
                    }
                }
            }
        }
        // The long reduction with few tiles splits on pairs as well.
        let s = schedule(&long(Layout::Nchw), &tiles, true, &machines()[1], 1, Forced::default());
        assert!(s.parts > 1 && s.steps_per_part % 2 == 0, "{s:?}");
    }

    #[test]
    fn group_lanes_only_for_nhwc_groups_narrower_than_a_register() {
        // (layout, groups, K/G, C/G, lanes, expected)
        let cases = [
            (Layout::Nhwc, 64, 2, 2, 16, true),
            (Layout::Nhwc, 128, 2, 1, 16, true),
            (Layout::Nhwc, 16, 15, 16, 16, true),
            (Layout::Nhwc, 16, 16, 8, 16, true),
            (Layout::Nhwc, 16, 16, 9, 16, false),
            (Layout::Nhwc, 16, 8, 17, 16, false),
            (Layout::Nhwc, 1, 2, 2, 16, false),
            (Layout::Nchw, 64, 2, 2, 16, false),
            (Layout::Nhwc, 8, 4, 8, 8, true),
            (Layout::Nhwc, 8, 8, 5, 8, false),
            (Layout::Nhwc, 8, 8, 4, 8, true),
        ];
        for (layout, groups, kg, cg, lanes, want) in cases {
            assert_eq!(
                uses_group_lanes(layout, groups, kg, cg, lanes),
                want,
                "{layout:?} G={groups} K/G={kg} C/G={cg} lanes={lanes}"
            );
        }
    }
}

//! The driver: the loop nest of one unit of work (see `schedule` for how a call is cut into
//! units), generic over the SIMD tier and never naming one. A unit packs its block of pixels
//! once (or reads them in place where the layout already gives the tile what it needs:
//! NCHW rows of consecutive pixels, NHWC pixels with contiguous channels), then sweeps every
//! weight panel of its channel range over it, one register tile at a time. Tiles whose lanes
//! are contiguous in the output store straight into it (partial ones with masked stores);
//! the others, and tiles over padded pixels, go through a stack tile and are scattered.
//! Packed panels are contiguous, so they cannot alias in L2; pixels read in place are
//! streamed once per weight panel.
use crate::conv::{Geometry, Layout};
use crate::element::{bf16, round_to_bf16_bits, widen};
use crate::epilogue::{Activation, ChannelAxis, ScalarEpilogue, TileEpilogue};
use crate::kernels::few_inputs::{few_inputs_planes, few_inputs_rows, FewInputsRun};
use crate::kernels::few_outputs::{few_outputs_planes, FewOutputsRun};
use crate::kernels::simd::{
    gemm_tile, group_lanes_block, pixel_lanes_run, ColOperand, Extent, GroupLanesBlock, PixelLanesRun, PixelRows,
    RowOperand, Simd, SimdF32, WithSimd,
};
use crate::kernels::Orientation;
use crate::packing::{
    pair_panel_in_place, pixel_offsets, uniform_spacing, FewChannelPanels, FlatLanePanels, GroupLanePanels, PanelBuf,
    PixelInput, PixelLanePanels, WeightPanels, PADDED,
};
use crate::schedule::{Schedule, Unit, PIXEL_LANES_MAX_K};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Largest register tile any tier uses (`MR * NR`), sizing the stack tile for edges.
pub(crate) const MAX_TILE: usize = 16 * 64;

/// A raw output pointer that units share; each unit writes a disjoint set of elements.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: units write disjoint elements (see the module comment), so sharing the pointer
// across threads creates no data race.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// A raw pointer to an operand that units only read (the residual, which may be the output
/// itself: each element is read by the unit that writes it, before it writes it).
#[derive(Clone, Copy)]
pub(crate) struct InPtr(pub *const f32);
// SAFETY: units read disjoint elements of it, each before the same unit writes that element
// (when it aliases the output); other memory is only read.
unsafe impl Send for InPtr {}
unsafe impl Sync for InPtr {}

/// A bf16 output and its bf16 residual (null when there is none; it may be the output
/// itself, read as [`InPtr`] says): the register tiles round each result to bf16 in its
/// store ([`Simd::store_bf16`]), so no f32 copy of the output is written.
#[derive(Clone, Copy)]
pub(crate) struct Bf16Out {
    pub y: *mut u16,
    pub residual: *const u16,
}
// SAFETY: as for OutPtr and InPtr: units write disjoint elements, and read a residual element
// only before the same unit writes it.
unsafe impl Send for Bf16Out {}
unsafe impl Sync for Bf16Out {}

/// Everything a unit needs, borrowed from the plan and the call's arguments.
pub(crate) struct Job<'a> {
    pub geom: Geometry,
    /// Tile, blocking and units.
    pub sched: Schedule,
    pub orient: Orientation,
    /// The input: f32, or bf16 that the pixel packers widen (never read in place).
    pub x: PixelInput<'a>,
    pub y: OutPtr,
    /// The residual (output-shaped), or null. It may be the output itself (an in-place
    /// residual): every path reads a residual element before it writes that output element.
    pub residual: InPtr,
    /// A bf16 output, whose tiles round their results in their stores (register tiles only;
    /// then `y` and `residual` are null).
    pub bf16_out: Option<Bf16Out>,
    pub bias: Option<&'a [f32]>,
    /// Per-channel PReLU slopes (`[K]`), when the activation is PReLU.
    pub slope: Option<&'a [f32]>,
    /// Packed weights (microkernels), with lanes matching the orientation.
    pub panels: Option<&'a WeightPanels>,
    /// Raw `[K, C/G]` weights (matrixmultiply).
    pub weights: &'a [f32],
    pub act: Activation,
    /// Which phase of a split reduction runs (always [`Phase::Reduce`] when it is not split).
    pub phase: Phase,
    /// Partial sums of a split reduction ([`Job::split_sums_len`] values; null when the
    /// reduction is not split): per output unit, per part, one `MR x NR` tile per tile of the
    /// output unit. Each unit writes only its own part's region.
    pub split_sums: OutPtr,
}

/// The two phases of a call whose reduction is split (see `schedule`): every unit reduces its
/// part into its region of the split sums, then each output unit adds its parts in part order
/// and runs the epilogue. A call whose reduction is not split runs only the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Reduce,
    Combine,
}

impl Job<'_> {
    /// The coordinates of unit `u`.
    pub fn unit(&self, u: usize) -> Unit {
        self.sched.unit(&self.geom, u)
    }

    /// The scalar form of the job's output stage.
    pub fn scalar_epilogue(&self) -> ScalarEpilogue<'_> {
        ScalarEpilogue {
            bias: self.bias,
            slope: self.slope,
            act: self.act,
        }
    }

    /// Values of split partial sums the call needs for a tile of `weight_lanes x pixel_lanes`
    /// (0 when the reduction is not split).
    pub fn split_sums_len(sched: &Schedule, weight_lanes: usize, pixel_lanes: usize) -> usize {
        if sched.parts == 1 {
            return 0;
        }
        sched.units * sched.tiles_per_output_unit(weight_lanes, pixel_lanes) * weight_lanes * pixel_lanes
    }

    /// The channel axis of a tile in this orientation.
    fn channel_axis(weight_rows: bool) -> ChannelAxis {
        if weight_rows {
            ChannelAxis::Rows
        } else {
            ChannelAxis::Cols
        }
    }

    /// The output stride between a tile's rows whose lanes are contiguous in the output:
    /// between output channels (NCHW weight rows) or between pixels (NHWC).
    fn tile_row_stride(&self, weight_rows: bool) -> usize {
        if weight_rows {
            self.geom.output_channel_stride()
        } else {
            self.geom.k
        }
    }

    /// Output offset of (folded pixel, global output channel).
    #[inline(always)]
    pub fn out_offset(&self, pixel: usize, channel: usize) -> usize {
        self.geom.output_pixel_offset(pixel) + channel * self.geom.output_channel_stride()
    }
}

/// Per-task scratch: grown on first use, reused by later calls.
#[derive(Default)]
pub(crate) struct TaskScratch {
    packed: Option<PanelBuf>,
    offsets: Vec<isize>,
    in_place: Vec<Option<usize>>,
    padded: Vec<u64>,
    partial: Vec<f32>,
    out: Vec<f32>,
    out_pixels: Vec<usize>,
}

/// One unit's views of its task's scratch.
pub(crate) struct UnitBuffers<'a> {
    /// Packed pixel panels.
    pub packed: &'a mut [f32],
    /// Input offset of each pixel of the unit ([`crate::packing::PADDED`] for padding).
    pub offsets: &'a mut [isize],
    /// Per pixel panel: the pixel spacing when the panel is read in place, `None` when packed.
    pub in_place: &'a mut [Option<usize>],
    /// Per pixel panel: bit `i` set when the panel's pixel `i` is padding.
    pub padded: &'a mut [u64],
    /// Partial sums between reduction blocks.
    pub partial: &'a mut [f32],
    /// matrixmultiply's output staging (grown by its user).
    pub out: &'a mut Vec<f32>,
    /// matrixmultiply's output offset of each pixel (grown by its user).
    pub out_pixels: &'a mut Vec<usize>,
}

impl TaskScratch {
    /// The pixel-offset buffer alone (group-lanes jobs grow it themselves).
    pub fn offsets_mut(&mut self) -> &mut Vec<isize> {
        &mut self.offsets
    }

    pub fn buffers(&mut self, packed_len: usize, pixels: usize, panels: usize, partial: usize) -> UnitBuffers<'_> {
        if self.partial.len() < partial {
            self.partial.resize(partial, 0.0);
        }
        let grow = self.packed.as_ref().is_none_or(|p| p.len() < packed_len);
        if grow {
            self.packed = Some(PanelBuf::from_iter(64, std::iter::repeat_n(0.0f32, packed_len)));
        }
        if self.offsets.len() < pixels {
            self.offsets.resize(pixels, 0);
        }
        if self.in_place.len() < panels {
            self.in_place.resize(panels, None);
            self.padded.resize(panels, 0);
        }
        UnitBuffers {
            packed: self.packed.as_mut().map(|p| &mut p[..packed_len]).unwrap_or_default(),
            offsets: &mut self.offsets[..pixels],
            in_place: &mut self.in_place[..panels],
            padded: &mut self.padded[..panels],
            partial: &mut self.partial[..partial],
            out: &mut self.out,
            out_pixels: &mut self.out_pixels,
        }
    }
}

/// The loop nest of one tile, as an operation a tier runs inside its `#[target_feature]`
/// entry point ([`Simd::vectorize`]).
///
/// `WROWS` is the tile's orientation (weight rows when true), a constant so that each tile's
/// loop nest holds only its own orientation's operand cases.
pub(crate) struct RunUnits<'a, const MR: usize, const NV: usize, const WROWS: bool, const PAIRS: bool> {
    job: &'a Job<'a>,
    units: Range<usize>,
    scratch: &'a mut TaskScratch,
}

impl<'a, const MR: usize, const NV: usize, const WROWS: bool, const PAIRS: bool> RunUnits<'a, MR, NV, WROWS, PAIRS> {
    /// # Safety
    /// As [`run_units`] (the tier is proven by the token that runs it).
    pub unsafe fn new(job: &'a Job<'a>, units: Range<usize>, scratch: &'a mut TaskScratch) -> Self {
        RunUnits { job, units, scratch }
    }
}

impl<const MR: usize, const NV: usize, const WROWS: bool, const PAIRS: bool> WithSimd
    for RunUnits<'_, MR, NV, WROWS, PAIRS>
{
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // SAFETY: `new`'s contract.
        unsafe { run_units::<S, MR, NV, WROWS, PAIRS>(s, self.job, self.units, self.scratch) }
    }
}

/// One microkernel call, as an operation for [`Simd::vectorize`].
pub(crate) struct RunTileCall<'a, const MR: usize, const NV: usize, const PAIRS: bool> {
    call: &'a TileCall<'a>,
}

impl<'a, const MR: usize, const NV: usize, const PAIRS: bool> RunTileCall<'a, MR, NV, PAIRS> {
    /// # Safety
    /// As [`run_tile_call`].
    pub unsafe fn new(call: &'a TileCall<'a>) -> Self {
        RunTileCall { call }
    }
}

impl<const MR: usize, const NV: usize, const PAIRS: bool> WithSimd for RunTileCall<'_, MR, NV, PAIRS> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // SAFETY: `new`'s contract.
        unsafe { run_tile_call::<S, MR, NV, PAIRS>(s, self.call) }
    }
}

/// The microkernel loop nest for one orientation, `MR x (NV * LANES)` tiles.
///
/// # Safety
/// The CPU must support `V`'s tier; `job` must describe buffers of the lengths its geometry
/// implies (the plan checked them), with `job.panels` packed with lanes matching this tile.
#[inline(always)]
pub(crate) unsafe fn run_units<S: Simd, const MR: usize, const NV: usize, const WROWS: bool, const PAIRS: bool>(
    s: S,
    job: &Job,
    units: Range<usize>,
    scratch: &mut TaskScratch,
) {
    let nr = NV * S::F32::LANES;
    debug_assert_eq!(job.orient == Orientation::WeightRows, WROWS);
    let weight_rows = WROWS;
    let (wl, pl) = if weight_rows { (MR, nr) } else { (nr, MR) };
    let Some(panels) = job.panels else { return };
    debug_assert_eq!(panels.lanes, wl);
    let g = &job.geom;
    let cg = g.cg;
    let ics = g.input_channel_stride();
    // Pixels are read straight from the input instead of packed where the layout already
    // gives the tile what it needs: NHWC pixel rows (evenly spaced pixels, contiguous
    // channels: one broadcast per row and step), and NCHW weight rows (NR consecutive pixels
    // of a channel plane: one vector load per step) when the schedule says the panel's rows
    // stay in L1 (`Schedule::pixels_in_place`).
    // Panels of bf16 pairs are always packed (two channels per 32-bit value).
    // Panels of a bf16 input are always packed too (widened as they are packed).
    let x_f32 = job.x.f32();
    let read_in_place =
        !PAIRS && x_f32.is_some() && job.sched.pixels_in_place && if weight_rows { ics != 1 } else { ics == 1 };
    // An evenly spaced full panel (spacing `d`) is read in place when the orientation wants it.
    let in_place_spacing = |d: usize| (read_in_place && (!weight_rows || d == 1)).then_some(d);
    let kc = job.sched.kc;
    // Fused groups: one gemm of every output channel, each row reducing its own group's
    // channels of a pixel panel that holds them all (see `schedule`).
    let fused = job.sched.fused;
    debug_assert!(!fused || (weight_rows && kc == cg && job.sched.parts == 1 && !PAIRS));
    // Reduction steps per packed row: two for bf16 pairs (blocks and parts start on even
    // steps, see `schedule`).
    let steps_per_row = if PAIRS { 2 } else { 1 };
    let gemm_channels = job.sched.gemm_channels(g);
    // Input channels per reduction block of a packed pixel panel.
    let panel_rows = if fused { g.c } else { kc };
    let tile_len = MR * nr;
    let parts = job.sched.parts;
    let combine = job.phase == Phase::Combine;
    // Tiles of one output unit's region of split sums.
    let unit_tiles = job.sched.tiles_per_output_unit(wl, pl);
    // The pixel range whose offsets, spacing and padding the scratch holds: units of other
    // groups, channel ranges or parts over the same pixels (consecutive in the unit order)
    // reuse them.
    let mut mapped: Option<Range<usize>> = None;
    // Whether the mapped pixels are one run of consecutive values of an NCHW channel plane
    // (packed a channel row at a time across all their panels).
    let mut consecutive = false;
    for u in units {
        // In the combine phase, `u` is an output unit, with the coordinates of its first part.
        let unit = job.unit(if combine { u * parts } else { u });
        let steps = unit.steps.clone();
        let blocks = if combine { 0 } else { steps.len().div_ceil(kc) };
        let npix = unit.pixels.len();
        let pixel_panels = npix.div_ceil(pl);
        let first_panel = unit.channels.start / wl;
        let last_panel = unit.channels.end.div_ceil(wl);
        // Partial sums between reduction blocks: one MR x NR tile per (weight panel, pixel
        // panel) of the unit (none when the reduction is one block).
        let partial_len = if blocks > 1 {
            (last_panel - first_panel) * pixel_panels * tile_len
        } else {
            0
        };
        let buffers = scratch.buffers(pixel_panels * pl * panel_rows, npix, pixel_panels, partial_len);
        let (packed, offsets, spacing, padded, partial) = (
            buffers.packed,
            buffers.offsets,
            buffers.in_place,
            buffers.padded,
            buffers.partial,
        );
        let c0 = unit.group * cg;
        debug_assert!(pl <= 64);
        if mapped.as_ref() != Some(&unit.pixels) {
            pixel_offsets(g, unit.pixels.start, offsets);
            // Decided once per panel: read in place, or packed; and which pixels are padding
            // (their outputs are the epilogue of a zero sum and never read the weights).
            let dense = g.is_dense();
            for (panel, offs) in offsets.chunks(pl).enumerate() {
                if dense {
                    // No padding; offsets rise by at least the pixel spacing `d`, so a full
                    // panel whose ends are (pl - 1) * d apart is evenly spaced.
                    let d = g.input_pixel_spacing();
                    padded[panel] = 0;
                    let even = offs.len() == pl && offs[pl - 1] - offs[0] == ((pl - 1) * d) as isize;
                    spacing[panel] = if even { in_place_spacing(d) } else { None };
                } else {
                    padded[panel] = offs
                        .iter()
                        .enumerate()
                        .filter(|&(_, &o)| o == PADDED)
                        .fold(0u64, |mask, (i, _)| mask | 1 << i);
                    spacing[panel] = uniform_spacing(offs, pl).and_then(in_place_spacing);
                }
            }
            consecutive = ics != 1
                && g.is_dense()
                && g.input_pixel_spacing() == 1
                && offsets[npix - 1] - offsets[0] == (npix - 1) as isize;
            mapped = Some(unit.pixels.clone());
        }
        // This output unit's split sums: part `q`'s tile `t` at `(q * unit_tiles + t) * tile_len`.
        let split_region = job
            .split_sums
            .0
            .wrapping_add(unit.output_unit * parts * unit_tiles * tile_len);
        if combine {
            for wp in first_panel..last_panel {
                let ch0 = wp * wl;
                let kn = wl.min(gemm_channels - ch0);
                let chan0 = unit.group * gemm_channels + ch0;
                for (pp, &padded) in padded.iter().enumerate() {
                    let j0 = unit.pixels.start + pp * pl;
                    let jn = pl.min(unit.pixels.end - j0);
                    let t = (wp - first_panel) * pixel_panels + pp;
                    let sums = split_region.wrapping_add(t * tile_len);
                    // SAFETY: each part's tile `t` is `tile_len` values inside the split sums
                    // (sized by split_sums_len), written by the reduce phase, which finished
                    // before this phase began; only this output unit touches its region.
                    unsafe {
                        for q in 1..parts {
                            let part = split_region.add((q * unit_tiles + t) * tile_len);
                            for i in 0..tile_len {
                                *sums.add(i) += *part.add(i);
                            }
                        }
                    }
                    let (m, n) = if weight_rows { (kn, jn) } else { (jn, kn) };
                    let place = TilePlace {
                        j0,
                        chan0,
                        m,
                        n,
                        padded,
                    };
                    let steps = Steps {
                        kc: 0,
                        init: sums.cast_const(),
                    };
                    // SAFETY: with no reduction steps the operands are not read; the sums are a
                    // whole tile; the output targets are the unit's own (see store_final).
                    unsafe {
                        store_final::<S, MR, NV, PAIRS>(
                            s,
                            job,
                            steps,
                            RowOperand::unread(),
                            ColOperand::unread(),
                            place,
                            weight_rows,
                        )
                    };
                }
            }
            continue;
        }
        for block in 0..blocks {
            // Reduction steps k0..k0 + kb of this block: channels c0 + k0.. of the group.
            let k0 = steps.start + block * kc;
            let kb = kc.min(steps.end - k0);
            let last = block + 1 == blocks;
            // Fused groups pack every channel (the block is the whole reduction: k0 = 0).
            let (pack_c0, pack_rows) = if fused { (0, g.c) } else { (c0 + k0, kb) };
            if consecutive && spacing[..pixel_panels].iter().all(Option::is_none) {
                // Offsets of a dense map rise by one per pixel within an image: the unit's
                // pixels are offsets[0].. of every channel plane.
                let first = offsets[0] as usize;
                let (len, panel_len) = (pixel_panels * panel_rows * pl, panel_rows * pl);
                let dst = &mut packed[..len];
                if PAIRS {
                    (job.x).pack_consecutive_pairs(s, first, npix, pack_c0, pack_rows, ics, pl, panel_len, dst);
                } else {
                    (job.x).pack_consecutive_pixels(s, first, npix, pack_c0, pack_rows, ics, pl, panel_len, 0.0, dst);
                }
            } else {
                for (panel, offs) in offsets.chunks(pl).enumerate() {
                    if spacing[panel].is_none() {
                        let dst = &mut packed[panel * panel_rows * pl..][..pack_rows * pl];
                        (job.x).pack_pixel_panels(s, offs, pack_c0, pack_rows, ics, pl, 0.0, dst);
                        if PAIRS {
                            // The f32 panel (bf16 values widened: the plan runs pair tiles
                            // only on bf16 input) narrowed into pairs where it lies.
                            pair_panel_in_place(dst, pack_rows, pl);
                        }
                    }
                }
            }
            // The schedule says which panel stays while the other streams past it.
            let pixels_outer = job.sched.pixels_outer;
            let weight_panels = last_panel - first_panel;
            let (outer, inner) = if pixels_outer {
                (pixel_panels, weight_panels)
            } else {
                (weight_panels, pixel_panels)
            };
            // (Counters rather than a division per tile, or iterator closures, which need not
            // inline into the tier's code.)
            let (mut o, mut i) = (0, 0);
            for _ in 0..outer * inner {
                let (wp, pp) = if pixels_outer {
                    (first_panel + i, o)
                } else {
                    (first_panel + o, i)
                };
                i += 1;
                if i == inner {
                    (o, i) = (o + 1, 0);
                }
                let ch0 = wp * wl;
                let kn = wl.min(gemm_channels - ch0);
                // Packed weight rows are reduction steps of `wl` lanes.
                let wptr = panels.panel_ptr(unit.group, wp).wrapping_add(k0 / steps_per_row * wl);
                let chan0 = unit.group * gemm_channels + ch0;
                // Fused groups: row r reads from its group's first channel (rows past the
                // valid ones repeat the last valid row's, so every read stays in the input).
                let mut row_steps = [0usize; MR];
                if fused {
                    for (r, first) in row_steps.iter_mut().enumerate() {
                        *first = (ch0 + r.min(kn - 1)) / g.kg * cg;
                    }
                }
                {
                    let ppanel = packed[pp * panel_rows * pl..].as_ptr();
                    let j0 = unit.pixels.start + pp * pl;
                    let jn = pl.min(unit.pixels.end - j0);
                    // In place, offsets[j0] + (c0 + k0) * ics is an input element; lanes
                    // offsets[j0] + r * d, r < pl, are the panel's pixels, each with kb
                    // channels ics apart.
                    let first = offsets[pp * pl] as usize;
                    // (Spacing is only ever given for an f32 input: read_in_place.)
                    let in_place = spacing[pp]
                        .zip(x_f32)
                        .map(|(d, x)| (x[first + (c0 + k0) * ics..].as_ptr(), d));
                    let (a, b, m, n) = if weight_rows {
                        let b = match in_place {
                            Some((ptr, _)) => ColOperand {
                                ptr,
                                ks: ics,
                                packed: false,
                                row_steps: std::ptr::null(),
                            },
                            None => ColOperand::packed(ppanel),
                        };
                        let b = if fused { b.with_row_steps(row_steps.as_ptr()) } else { b };
                        (RowOperand::packed(wptr), b, kn, jn)
                    } else {
                        let a = match in_place {
                            Some((ptr, d)) => RowOperand {
                                ptr,
                                rs: d,
                                ks: ics,
                                packed: false,
                            },
                            None => RowOperand::packed(ppanel),
                        };
                        (a, ColOperand::packed(wptr), jn, kn)
                    };
                    let sums = partial
                        .as_mut_ptr()
                        .wrapping_add(((wp - first_panel) * pixel_panels + pp) * tile_len);
                    let steps = Steps {
                        kc: kb,
                        init: if block == 0 {
                            std::ptr::null()
                        } else {
                            sums.cast_const()
                        },
                    };
                    // SAFETY: a and b address full panels of kb steps (packed, or MR evenly
                    // spaced input pixels of kb channels each; with fused groups, b holds every
                    // channel and row r's kb = cg steps from row_steps[r] are its group's);
                    // partial sums are whole
                    // MR x NR tiles of `partial` or of this unit's part of the split sums
                    // (sized by split_sums_len); the output targets are the unit's own.
                    unsafe {
                        let full = Extent { m: MR, n: nr };
                        if !last {
                            let ep = TileEpilogue::partial_sums();
                            gemm_tile::<S, MR, NV, PAIRS>(s, kb, steps.init, a, b, sums, nr, &ep, full);
                        } else if parts > 1 {
                            let t = (wp - first_panel) * pixel_panels + pp;
                            let part_sums = split_region.add((unit.part * unit_tiles + t) * tile_len);
                            let ep = TileEpilogue::partial_sums();
                            gemm_tile::<S, MR, NV, PAIRS>(s, kb, steps.init, a, b, part_sums, nr, &ep, full);
                        } else {
                            let place = TilePlace {
                                j0,
                                chan0,
                                m,
                                n,
                                padded: padded[pp],
                            };
                            store_final::<S, MR, NV, PAIRS>(s, job, steps, a, b, place, weight_rows);
                        }
                    }
                }
            }
        }
    }
}

/// The last reduction block of a tile, or a combined split tile (no steps, from its sums),
/// with the epilogue into the output: straight into it where the tile's lanes are contiguous
/// there and no pixel is padding (a bf16 output: [`store_rounded_rows`]), else through
/// [`store_scattered`].
///
/// # Safety
/// As [`gemm_tile`] for the operands and `steps`; `place` lies in the output part of the unit
/// that runs it.
#[inline(always)]
unsafe fn store_final<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
    s: S,
    job: &Job,
    steps: Steps,
    a: RowOperand,
    b: ColOperand,
    place: TilePlace,
    weight_rows: bool,
) {
    // A folded NCHW weight-row tile whose pixels lie in one image has contiguous lanes in
    // the output, like an unfolded one: only tiles across an image boundary are scattered.
    let one_image = || {
        weight_rows && job.geom.layout == Layout::Nchw && place.j0 / job.geom.p == (place.j0 + place.n - 1) / job.geom.p
    };
    // SAFETY: forwarded contract.
    unsafe {
        let direct = (job.sched.direct || one_image()) && place.padded == 0;
        if direct && job.bf16_out.is_some() {
            store_rounded_rows::<S, MR, NV, PAIRS>(s, job, steps, a, b, place, weight_rows);
        } else if direct {
            let extent = Extent { m: place.m, n: place.n };
            store_direct::<S, MR, NV, PAIRS>(s, job, steps, a, b, place.j0, place.chan0, extent, weight_rows);
        } else {
            store_scattered::<S, MR, NV, PAIRS>(s, job, steps, a, b, place, weight_rows);
        }
    }
}

/// A tile whose vector lanes are contiguous in the output: computed straight into it, a
/// partial tile with masked (or lane-by-lane) stores of its valid part.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_direct<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
    s: S,
    job: &Job,
    steps: Steps,
    a: RowOperand,
    b: ColOperand,
    j0: usize,
    chan0: usize,
    extent: Extent,
    weight_rows: bool,
) {
    let origin = job.out_offset(j0, chan0);
    let ldc = job.tile_row_stride(weight_rows);
    let ep = TileEpilogue {
        bias: job.bias.map_or(std::ptr::null(), |b| b[chan0..].as_ptr()),
        slope: job.slope.map_or(std::ptr::null(), |s| s[chan0..].as_ptr()),
        axis: Job::channel_axis(weight_rows),
        // `origin` is inside the output, whose shape the residual has.
        residual: if job.residual.0.is_null() {
            std::ptr::null()
        } else {
            job.residual.0.wrapping_add(origin)
        },
        ldr: ldc,
        act: job.act,
    };
    // SAFETY: store_final calls this only when a tile's rows are `ldc` apart and its lanes
    // contiguous inside the output (the schedule's `direct`, or an NCHW weight-row tile
    // within one image), and so in the residual, which has the output's shape; the extent's rows
    // and lanes are the unit's. An in-place residual is read register by register just
    // before the same register is stored.
    unsafe { gemm_tile::<S, MR, NV, PAIRS>(s, steps.kc, steps.init, a, b, job.y.0.add(origin), ldc, &ep, extent) }
}

/// Where a tile lands: its first folded pixel and global output channel, its valid extent
/// (`m` rows by `n` lanes) and which of its pixels are padding (bit `i`: the tile's pixel `i`).
#[derive(Clone, Copy)]
pub(crate) struct TilePlace {
    pub j0: usize,
    pub chan0: usize,
    pub m: usize,
    pub n: usize,
    pub padded: u64,
}

/// The reduction a tile call runs: `kc` steps, from zero or from the partial sums at `init`
/// (an `MR x NR` tile of earlier reduction blocks; null for the first).
#[derive(Clone, Copy)]
pub(crate) struct Steps {
    pub kc: usize,
    pub init: *const f32,
}

/// An edge tile, a tile over padded pixels, or any tile whose lanes are not contiguous in the
/// output: computed into a stack tile (with bias and residual copied in), then the valid
/// `m x n` part is scattered.
#[inline(always)]
unsafe fn store_scattered<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
    s: S,
    job: &Job,
    steps: Steps,
    a: RowOperand,
    b: ColOperand,
    t: TilePlace,
    weight_rows: bool,
) {
    // An output offset is the pixel's offset plus the channel's: each of the tile's pixels
    // is mapped once (NCHW divides by the image size), not once per element.
    let pixels = if weight_rows { t.n } else { t.m };
    let mut pixel_offset = [0usize; 64];
    for (i, o) in pixel_offset.iter_mut().enumerate().take(pixels) {
        *o = job.geom.output_pixel_offset(t.j0 + i);
    }
    let (chan_base, ocs) = (
        t.chan0 * job.geom.output_channel_stride(),
        job.geom.output_channel_stride(),
    );
    let addr = |r: usize, l: usize| {
        if weight_rows {
            pixel_offset[l] + chan_base + r * ocs
        } else {
            pixel_offset[r] + chan_base + l * ocs
        }
    };
    // SAFETY: addr(r, l) for r < m, l < n are elements of this unit's part of the output (and
    // of the residual, which has the output's shape); a and b are full panels.
    unsafe { store_through_stack::<S, MR, NV, PAIRS>(s, job, steps, a, b, t, weight_rows, addr) }
}

/// A tile of a bf16 output whose lanes are contiguous in it and whose pixels are not padding
/// (where an f32 output takes [`store_direct`]): computed into a stack tile, each row rounded
/// to bf16 a register at a time as it is copied out.
#[inline(always)]
unsafe fn store_rounded_rows<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
    s: S,
    job: &Job,
    steps: Steps,
    a: RowOperand,
    b: ColOperand,
    t: TilePlace,
    weight_rows: bool,
) {
    let origin = job.out_offset(t.j0, t.chan0);
    // Lanes are consecutive elements.
    let ldc = job.tile_row_stride(weight_rows);
    // SAFETY: as store_direct's: rows ldc apart and contiguous lanes inside the output (and
    // the residual), the unit's own; a and b are full panels.
    unsafe { store_through_stack::<S, MR, NV, PAIRS>(s, job, steps, a, b, t, weight_rows, |r, l| origin + r * ldc + l) }
}

/// The tile at `t` through [`EdgeTile`], into the job's output of either type, element
/// `(r, l)` at `addr(r, l)` (and its residual's at the same offset).
///
/// # Safety
/// `addr(r, l)` for `r < t.m`, `l < t.n` are elements of this unit's part of the output;
/// `a` and `b` are full panels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_through_stack<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
    s: S,
    job: &Job,
    steps: Steps,
    a: RowOperand,
    b: ColOperand,
    t: TilePlace,
    weight_rows: bool,
    addr: impl Fn(usize, usize) -> usize,
) {
    let edge = EdgeTile {
        steps,
        m: t.m,
        n: t.n,
        bias: job.bias.map(|b| &b[t.chan0..]),
        slope: job.slope.map(|s| &s[t.chan0..]),
        axis: Job::channel_axis(weight_rows),
        residual: match job.bf16_out {
            Some(out) => (!out.residual.is_null()).then_some(TileSource::Bf16(out.residual)),
            None => (!job.residual.0.is_null()).then_some(TileSource::F32(job.residual.0)),
        },
        act: job.act,
        padded_pixels: t.padded,
    };
    let out = match job.bf16_out {
        Some(out) => TileTarget::Bf16(out.y),
        None => TileTarget::F32(job.y.0),
    };
    // SAFETY: the caller's contract (the residual has the output's shape).
    unsafe { edge.run::<S, MR, NV, PAIRS>(s, a, b, &addr, &addr, out) }
}

/// An output-shaped operand of either element type (a bf16 one is widened as it is read).
#[derive(Clone, Copy)]
pub(crate) enum TileSource {
    F32(*const f32),
    Bf16(*const u16),
}

/// An output of either element type (bf16 results are rounded to nearest even as they are
/// stored).
#[derive(Clone, Copy)]
pub(crate) enum TileTarget {
    F32(*mut f32),
    Bf16(*mut u16),
}

/// A tile computed through the stack: bias and residual are copied into full-size stack
/// arrays, the register tile writes a stack tile, and the `m x n` valid part is copied out to
/// `out + addr(r, l)`. This is how partial tiles avoid touching memory past the caller's
/// buffers.
pub(crate) struct EdgeTile<'a> {
    pub steps: Steps,
    pub m: usize,
    pub n: usize,
    /// Bias starting at the tile's first channel, at least `m` (or `n`) values.
    pub bias: Option<&'a [f32]>,
    /// PReLU slopes starting at the tile's first channel, likewise.
    pub slope: Option<&'a [f32]>,
    pub axis: ChannelAxis,
    /// Residual base; element (r, l) is at `res_addr(r, l)`.
    pub residual: Option<TileSource>,
    pub act: Activation,
    /// Bit `i` set when the tile's pixel `i` (its row `i` if rows are pixels, else its lane
    /// `i`) is padding: its output is the epilogue of a zero sum, computed without the
    /// operands, so that a non-finite weight never reaches it.
    pub padded_pixels: u64,
}

impl EdgeTile<'_> {
    /// # Safety
    /// `a`/`b` hold `kc` rows of `MR`/`NR` values; for `r < m`, `l < n`, `out_addr(r, l)` is a
    /// valid element of `out` and `res_addr(r, l)` of the residual; `m <= MR`, `n <= NR`.
    #[inline(always)]
    pub(crate) unsafe fn run<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
        &self,
        s: S,
        a: RowOperand,
        b: ColOperand,
        out_addr: impl Fn(usize, usize) -> usize,
        res_addr: impl Fn(usize, usize) -> usize,
        out: TileTarget,
    ) {
        let nr = NV * S::F32::LANES;
        let full = Extent { m: MR, n: nr };
        debug_assert!(self.m <= MR && self.n <= nr && MR * nr <= MAX_TILE && MR.max(nr) <= 64);
        // The register tile writes all MR x NR values of `tile` before any is read, so it needs
        // no initialisation; `res` is read in full, so its MR x NR part is zeroed first.
        let mut tile = [MaybeUninit::<f32>::uninit(); MAX_TILE];
        let mut res = [MaybeUninit::<f32>::uninit(); MAX_TILE];
        let mut bias = [0.0f32; 64];
        let mut slope = [0.0f32; 64];
        // Output offsets rise along each axis by a step the same for every row (or lane), so
        // a first and last lane n - 1 apart means the lanes are contiguous in every row.
        let lanes_contiguous = out_addr(0, self.n - 1).checked_sub(out_addr(0, 0)) == Some(self.n - 1);
        if let Some(source) = self.residual {
            for v in &mut res[..MR * nr] {
                v.write(0.0);
            }
            match source {
                TileSource::F32(rsrc) => {
                    for r in 0..self.m {
                        for l in 0..self.n {
                            // SAFETY: the caller guarantees res_addr(r, l) is inside the residual.
                            res[r * nr + l].write(unsafe { *rsrc.add(res_addr(r, l)) });
                        }
                    }
                }
                TileSource::Bf16(rsrc) if lanes_contiguous => {
                    for r in 0..self.m {
                        let row = rsrc.wrapping_add(res_addr(r, 0));
                        for first in (0..self.n).step_by(S::F32::LANES) {
                            let valid = (self.n - first).min(S::F32::LANES);
                            // SAFETY: lanes first..first + valid of row r are inside the
                            // residual (contiguous, as the output's, whose shape it has), and
                            // inside the row's nr stack values.
                            unsafe {
                                let v = if valid == S::F32::LANES {
                                    s.load_bf16(row.add(first))
                                } else {
                                    s.load_first_bf16(row.add(first), valid)
                                };
                                v.store(res[r * nr + first..].as_mut_ptr().cast::<f32>());
                            }
                        }
                    }
                }
                TileSource::Bf16(rsrc) => {
                    for r in 0..self.m {
                        for l in 0..self.n {
                            // SAFETY: the caller guarantees res_addr(r, l) is inside the residual.
                            let bits = unsafe { *rsrc.add(res_addr(r, l)) };
                            res[r * nr + l].write(widen(bf16::from_bits(bits)));
                        }
                    }
                }
            }
        }
        let channels = if self.axis == ChannelAxis::Rows { self.m } else { self.n };
        if let Some(bsrc) = self.bias {
            bias[..channels].copy_from_slice(&bsrc[..channels]);
        }
        if let Some(ssrc) = self.slope {
            slope[..channels].copy_from_slice(&ssrc[..channels]);
        }
        let ep = TileEpilogue {
            bias: if self.bias.is_some() {
                bias.as_ptr()
            } else {
                std::ptr::null()
            },
            slope: if self.slope.is_some() {
                slope.as_ptr()
            } else {
                std::ptr::null()
            },
            axis: self.axis,
            residual: if self.residual.is_some() {
                res.as_ptr().cast::<f32>()
            } else {
                std::ptr::null()
            },
            ldr: nr,
            act: self.act,
        };
        // SAFETY: the stack arrays hold MR * NR <= MAX_TILE values and 64 >= max(MR, NR)
        // channel values; a and b are full panels by the caller's guarantee.
        unsafe {
            gemm_tile::<S, MR, NV, PAIRS>(
                s,
                self.steps.kc,
                self.steps.init,
                a,
                b,
                tile.as_mut_ptr().cast::<f32>(),
                nr,
                &ep,
                full,
            )
        };
        if self.padded_pixels != 0 {
            // The epilogue of a zero sum (kc = 0: the operands are not read), with the same
            // operations as any other tile, for the padded pixels.
            let mut zero_sum = [MaybeUninit::<f32>::uninit(); MAX_TILE];
            // SAFETY: as above; with kc = 0 the operand pointers are not dereferenced.
            let zero = std::ptr::null();
            unsafe {
                gemm_tile::<S, MR, NV, PAIRS>(s, 0, zero, a, b, zero_sum.as_mut_ptr().cast::<f32>(), nr, &ep, full)
            };
            let pixels_are_rows = self.axis == ChannelAxis::Cols;
            for r in 0..self.m {
                for l in 0..self.n {
                    let pixel = if pixels_are_rows { r } else { l };
                    if self.padded_pixels >> pixel & 1 == 1 {
                        tile[r * nr + l] = zero_sum[r * nr + l];
                    }
                }
            }
        }
        // Stored along whichever tile axis is contiguous in the output (the rows, when they
        // are channels of NHWC pixels), so that consecutive stores share cache lines.
        // Output offsets rise along the rows (channels, or pixels of one image and then the
        // next), by a step the same for every lane, so first and last row m - 1 apart means
        // every step is 1.
        let along_rows =
            self.m > 1 && self.n > 1 && out_addr(self.m - 1, 0).checked_sub(out_addr(0, 0)) == Some(self.m - 1);
        // SAFETY: gemm_tile initialised every element of the MR x NR tile.
        let value = |r: usize, l: usize| unsafe { tile[r * nr + l].assume_init() };
        match out {
            TileTarget::Bf16(out) if lanes_contiguous => {
                for r in 0..self.m {
                    let row = out.wrapping_add(out_addr(r, 0));
                    for first in (0..self.n).step_by(S::F32::LANES) {
                        let valid = (self.n - first).min(S::F32::LANES);
                        // SAFETY: lanes first..first + valid of row r are inside `out` (the
                        // caller's guarantee; contiguous, see above) and initialised in `tile`.
                        unsafe {
                            let v = s.load(tile[r * nr + first..].as_ptr().cast::<f32>());
                            if valid == S::F32::LANES {
                                s.store_bf16(v, row.add(first));
                            } else {
                                s.store_first_bf16(v, row.add(first), valid);
                            }
                        }
                    }
                }
            }
            TileTarget::Bf16(out) => {
                for r in 0..self.m {
                    for l in 0..self.n {
                        // SAFETY: the caller guarantees out_addr(r, l) is inside `out`.
                        unsafe { *out.add(out_addr(r, l)) = round_to_bf16_bits(value(r, l)) };
                    }
                }
            }
            TileTarget::F32(out) if along_rows => {
                for l in 0..self.n {
                    let base = out_addr(0, l);
                    for r in 0..self.m {
                        // SAFETY: out_addr(r, l) = base + r (see above) is inside `out` by the
                        // caller's guarantee.
                        unsafe { *out.add(base + r) = value(r, l) };
                    }
                }
            }
            TileTarget::F32(out) => {
                for r in 0..self.m {
                    for l in 0..self.n {
                        // SAFETY: the caller guarantees out_addr(r, l) is inside `out`.
                        unsafe { *out.add(out_addr(r, l)) = value(r, l) };
                    }
                }
            }
        }
    }
}

/// One microkernel call on caller-provided panels, as the microkernel tests drive it: a full
/// tile is computed straight into `c`, a partial one through [`EdgeTile`].
pub(crate) struct TileCall<'a> {
    pub kc: usize,
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub m: usize,
    pub n: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub bias: Option<&'a [f32]>,
    pub slope: Option<&'a [f32]>,
    pub axis: ChannelAxis,
    pub residual: Option<(&'a [f32], usize)>,
    pub act: Activation,
}

/// Runs a [`TileCall`] with an `MR x (NV * LANES)` tile: straight into `c`, a partial tile
/// with masked (or lane-by-lane) stores.
///
/// # Safety
/// The call's slices must have been checked against the tile shape (`crate::testing::run_tile`
/// does): `c` valid for `m` rows of `n` values at stride `ldc`, the residual likewise at its
/// stride, bias and slopes for `m` rows (or `n` columns).
#[inline(always)]
pub(crate) unsafe fn run_tile_call<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
    s: S,
    call: &TileCall,
) {
    let ep = TileEpilogue {
        bias: call.bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
        slope: call.slope.map_or(std::ptr::null(), <[f32]>::as_ptr),
        axis: call.axis,
        residual: call.residual.map_or(std::ptr::null(), |(r, _)| r.as_ptr()),
        ldr: call.residual.map_or(0, |(_, ld)| ld),
        act: call.act,
    };
    // SAFETY: the extent and every slice were checked by the caller.
    unsafe {
        gemm_tile::<S, MR, NV, PAIRS>(
            s,
            call.kc,
            std::ptr::null(),
            RowOperand::packed(call.a.as_ptr()),
            ColOperand::packed(call.b.as_ptr()),
            call.c,
            call.ldc,
            &ep,
            Extent { m: call.m, n: call.n },
        )
    };
}

/// A call run with group-lanes tiles (NHWC grouped layers whose groups are narrower than a
/// register; see `simd::group_lanes_block`): borrowed from the plan and the call's arguments.
pub(crate) struct GroupLanesJob<'a> {
    pub geom: Geometry,
    pub x: &'a [f32],
    pub y: OutPtr,
    /// The residual (output-shaped), or null; it may be the output itself (each element is
    /// read just before the same element is stored).
    pub residual: InPtr,
    pub bias: Option<&'a [f32]>,
    pub slope: Option<&'a [f32]>,
    pub act: Activation,
    pub panels: &'a GroupLanePanels,
}

/// Rows of a group-lanes tile: pixels per tile.
pub(crate) const GROUP_LANES_ROWS: usize = 4;

/// The group-lanes loop nest as an operation for [`Simd::vectorize`]: folded output pixels
/// `pixels` of the job.
pub(crate) struct RunGroupLanes<'a> {
    job: &'a GroupLanesJob<'a>,
    pixels: Range<usize>,
    offsets: &'a mut Vec<isize>,
}

impl<'a> RunGroupLanes<'a> {
    /// # Safety
    /// As [`run_group_lanes`] (the tier is proven by the token that runs it).
    pub unsafe fn new(job: &'a GroupLanesJob<'a>, pixels: Range<usize>, offsets: &'a mut Vec<isize>) -> Self {
        RunGroupLanes { job, pixels, offsets }
    }
}

impl WithSimd for RunGroupLanes<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // SAFETY: `new`'s contract.
        unsafe { run_group_lanes::<S>(s, self.job, self.pixels, self.offsets) }
    }
}

/// Computes folded output pixels `pixels` of a group-lanes job: for each run of pixels
/// (whose inputs stay in L1 while every block of whole groups sweeps over them, one register
/// of output channels per block), stored straight into the NHWC output (masked past the
/// block's channels).
///
/// # Safety
/// The CPU must support `S`'s tier; the job's slices must have the lengths its geometry
/// implies (the plan checked them), its layout NHWC, and its panels packed for this geometry
/// with `S`'s lane count.
#[inline(always)]
pub(crate) unsafe fn run_group_lanes<S: Simd>(
    s: S,
    job: &GroupLanesJob,
    pixels: Range<usize>,
    offsets: &mut Vec<isize>,
) {
    let g = &job.geom;
    let p = job.panels;
    let lanes = S::F32::LANES;
    debug_assert!(g.layout == crate::conv::Layout::Nhwc && p.lanes == lanes && p.cg == g.cg);
    let (cg, kg) = (g.cg, g.kg);
    // Pixels per run: their inputs take about half of L1 (and whole tiles).
    let run = ((16 * 1024 / 4) / g.c.max(1)).clamp(GROUP_LANES_ROWS, 256) / GROUP_LANES_ROWS * GROUP_LANES_ROWS;
    if offsets.len() < run {
        offsets.resize(run, 0);
    }
    for j0 in pixels.clone().step_by(run) {
        let len = (pixels.end - j0).min(run);
        // The pixel map: each output pixel's input offset, or PADDED.
        let offsets = &mut offsets[..len];
        pixel_offsets(g, j0, offsets);
        let origin = g.output_pixel_offset(j0);
        for b in 0..p.blocks {
            let groups = (g.groups - b * p.per_block).min(p.per_block);
            let (in0, chan0) = (b * p.per_block * cg, b * p.per_block * kg);
            let at = origin + chan0;
            let ep = TileEpilogue {
                bias: job.bias.map_or(std::ptr::null(), |v| v[chan0..].as_ptr()),
                slope: job.slope.map_or(std::ptr::null(), |v| v[chan0..].as_ptr()),
                axis: ChannelAxis::Cols,
                residual: if job.residual.0.is_null() {
                    std::ptr::null()
                } else {
                    job.residual.0.wrapping_add(at)
                },
                ldr: g.k,
                act: job.act,
            };
            // SAFETY: the pixel map gives offsets inside x, and the block's groups * cg
            // inputs (the lanes the permutations select) start at in0 within the pixel;
            // block b's weights and the indices hold cg registers; the NHWC output (and
            // residual) holds the run's `len` pixels of K channels from `origin`, of which
            // the block's groups * kg <= lanes start at chan0; bias and slopes hold K values.
            unsafe {
                group_lanes_block::<S, GROUP_LANES_ROWS>(
                    s,
                    &GroupLanesBlock {
                        cg,
                        x: job.x.as_ptr(),
                        x_len: job.x.len(),
                        offsets,
                        in0,
                        weights: p.weights.as_ptr().add(b * cg * lanes),
                        indices: p.indices.as_ptr(),
                        c: job.y.0.add(at),
                        ldc: g.k,
                        n: groups * kg,
                    },
                    &ep,
                )
            };
        }
    }
}

/// A call run with one of the lane loops whose packed weights `P` also hold the bias and
/// slopes (flat lanes, pixel lanes): borrowed from the plan and the call's arguments.
pub(crate) struct LanesJob<'a, P> {
    pub geom: Geometry,
    pub x: &'a [f32],
    pub y: OutPtr,
    /// The residual (output-shaped), or null; it may be the output itself (each element is
    /// read just before the same element is stored).
    pub residual: InPtr,
    pub act: Activation,
    pub panels: &'a P,
}

impl<'a, P> LanesJob<'a, P> {
    pub fn new(geom: Geometry, x: &'a [f32], y: OutPtr, residual: InPtr, act: Activation, panels: &'a P) -> Self {
        LanesJob {
            geom,
            x,
            y,
            residual,
            act,
            panels,
        }
    }
}

/// A call run with the flat-lanes loop (NHWC layers of one group with few input and output
/// channels; see [`FlatLanePanels`]).
pub(crate) type FlatLanesJob<'a> = LanesJob<'a, FlatLanePanels>;

impl FlatLanesJob<'_> {
    /// Blocks of the call: `block_pixels` pixels each, the last possibly partial.
    pub fn blocks(&self) -> usize {
        (self.geom.n * self.geom.p).div_ceil(self.panels.block_pixels)
    }
}

/// The flat-lanes loop as an operation for [`Simd::vectorize`]: blocks `blocks` of the job.
pub(crate) struct RunFlatLanes<'a> {
    job: &'a FlatLanesJob<'a>,
    blocks: Range<usize>,
    offsets: &'a mut Vec<isize>,
}

impl<'a> RunFlatLanes<'a> {
    /// # Safety
    /// As [`run_flat_lanes`] (the tier is proven by the token that runs it).
    pub unsafe fn new(job: &'a FlatLanesJob<'a>, blocks: Range<usize>, offsets: &'a mut Vec<isize>) -> Self {
        RunFlatLanes { job, blocks, offsets }
    }
}

impl WithSimd for RunFlatLanes<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // SAFETY: `new`'s contract.
        unsafe { run_flat_lanes::<S>(s, self.job, self.blocks, self.offsets) }
    }
}

/// Computes blocks `blocks` of a flat-lanes job (each `block_pixels` pixels, `phases`
/// registers of consecutive output values): for each run of blocks (whose inputs stay in L1),
/// each phase's registers of every block of the run, with [`group_lanes_block`]'s fused
/// multiply-add chain (from zero, in channel order: the bits of every other tile), epilogue
/// and one full store per register (masked in the last, partial block).
///
/// # Safety
/// The CPU must support `S`'s tier; the job's slices must have the lengths its geometry
/// implies (the plan checked them), its geometry dense NHWC of one group, and its panels
/// packed for this convolution with `S`'s lane count.
#[inline(always)]
pub(crate) unsafe fn run_flat_lanes<S: Simd>(s: S, job: &FlatLanesJob, blocks: Range<usize>, offsets: &mut Vec<isize>) {
    let g = &job.geom;
    let p = job.panels;
    let lanes = S::F32::LANES;
    debug_assert!(g.is_dense() && g.groups == 1 && p.lanes == lanes && p.c == g.c && p.k == g.k);
    let (c, k, bp) = (p.c, p.k, p.block_pixels);
    let pixels = g.n * g.p;
    let full_blocks = pixels / bp;
    // Output values per block: `phases` registers.
    let block_len = bp * k;
    // Blocks per run: their inputs take about a quarter of L1 (and whole tiles).
    let run = ((8 * 1024 / 4) / (bp * c).max(1)).clamp(GROUP_LANES_ROWS, 256) / GROUP_LANES_ROWS * GROUP_LANES_ROWS;
    if offsets.len() < run {
        offsets.resize(run, 0);
    }
    for b0 in blocks.clone().step_by(run) {
        let b1 = (b0 + run).min(blocks.end);
        let full_end = b1.min(full_blocks);
        // The outputs of the partial last block, when the run holds it.
        let tail = (b1 > full_blocks).then(|| (pixels - full_blocks * bp) * k);
        for (j, &first) in p.first_pixel.iter().enumerate() {
            // The run's full blocks, then the partial last block, of whose outputs this
            // phase's register holds the lanes from j * lanes.
            let parts = [
                (b0..full_end.max(b0), lanes),
                match tail {
                    Some(valid) if valid > j * lanes => (full_blocks..full_blocks + 1, (valid - j * lanes).min(lanes)),
                    _ => (0..0, lanes),
                },
            ];
            for (range, n) in parts {
                if range.is_empty() {
                    continue;
                }
                let offsets = &mut offsets[..range.len()];
                for (o, b) in offsets.iter_mut().zip(range.clone()) {
                    // Dense NHWC: pixel q's inputs start at q * C.
                    *o = ((b * bp + first) * c) as isize;
                }
                let at = range.start * block_len + j * lanes;
                let ep = TileEpilogue {
                    bias: p.bias.as_ref().map_or(std::ptr::null(), |v| v[j * lanes..].as_ptr()),
                    slope: p.slope.as_ref().map_or(std::ptr::null(), |v| v[j * lanes..].as_ptr()),
                    axis: ChannelAxis::Cols,
                    residual: if job.residual.0.is_null() {
                        std::ptr::null()
                    } else {
                        job.residual.0.wrapping_add(at)
                    },
                    ldr: block_len,
                    act: job.act,
                };
                // SAFETY: each offset is a pixel's first input inside x (b * bp + first <
                // pixels), and the lanes the permutations select are inputs of the register's
                // pixels, within `lanes` values of it (uses_flat_lanes) and inside x; phase
                // j's weights and indices hold c registers; registers of block b start at
                // output b * block_len + j * lanes, `n` values inside the output (and the
                // residual, which has its shape); bias and slopes hold `lanes` values per
                // phase.
                unsafe {
                    group_lanes_block::<S, GROUP_LANES_ROWS>(
                        s,
                        &GroupLanesBlock {
                            cg: c,
                            x: job.x.as_ptr(),
                            x_len: job.x.len(),
                            offsets,
                            in0: 0,
                            weights: p.weights.as_ptr().add(j * c * lanes),
                            indices: p.indices.as_ptr().add(j * c * lanes),
                            c: job.y.0.add(at),
                            ldc: block_len,
                            n,
                        },
                        &ep,
                    )
                };
            }
        }
    }
}

/// A call run with the pixel-lanes loop (NHWC layers of one group with few output channels;
/// see [`pixel_lanes_run`]).
pub(crate) type PixelLanesJob<'a> = LanesJob<'a, PixelLanePanels>;

/// Output pixels per run of the pixel-lanes loop: one pixel map of a few KiB, reused.
const PIXEL_LANES_RUN: usize = 256;

/// The pixel-lanes loop as an operation for [`Simd::vectorize`]: folded output pixels
/// `pixels` of the job.
pub(crate) struct RunPixelLanes<'a> {
    job: &'a PixelLanesJob<'a>,
    pixels: Range<usize>,
    offsets: &'a mut Vec<isize>,
}

impl<'a> RunPixelLanes<'a> {
    /// # Safety
    /// As [`run_pixel_lanes`] (the tier is proven by the token that runs it).
    pub unsafe fn new(job: &'a PixelLanesJob<'a>, pixels: Range<usize>, offsets: &'a mut Vec<isize>) -> Self {
        RunPixelLanes { job, pixels, offsets }
    }
}

impl WithSimd for RunPixelLanes<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // SAFETY: `new`'s contract.
        unsafe { run_pixel_lanes::<S>(s, self.job, self.pixels, self.offsets) }
    }
}

/// Computes folded output pixels `pixels` of a pixel-lanes job, a run of pixels at a time
/// (the pixel map gives each pixel's input offset, or padding), stored straight into the
/// NHWC output.
///
/// # Safety
/// The CPU must support `S`'s tier; the job's slices must have the lengths its geometry
/// implies (the plan checked them), its geometry NHWC of one group with `K` from 1 to
/// [`PIXEL_LANES_MAX_K`], and its panels packed for this convolution with `S`'s lane count.
#[inline(always)]
pub(crate) unsafe fn run_pixel_lanes<S: Simd>(
    s: S,
    job: &PixelLanesJob,
    pixels: Range<usize>,
    offsets: &mut Vec<isize>,
) {
    let g = &job.geom;
    let p = job.panels;
    debug_assert!(
        g.layout == crate::conv::Layout::Nhwc
            && g.groups == 1
            && p.lanes == S::F32::LANES
            && p.c == g.c
            && p.k == g.k
            && (1..=PIXEL_LANES_MAX_K).contains(&g.k)
    );
    if offsets.len() < PIXEL_LANES_RUN {
        offsets.resize(PIXEL_LANES_RUN, 0);
    }
    let dense = g.is_dense();
    for j0 in pixels.clone().step_by(PIXEL_LANES_RUN) {
        let len = (pixels.end - j0).min(PIXEL_LANES_RUN);
        let pixel_rows = if dense {
            // Dense NHWC: folded pixel j's inputs start at j * C.
            PixelRows::Uniform {
                first: j0 * g.c,
                spacing: g.c,
                count: len,
            }
        } else {
            let offsets = &mut offsets[..len];
            pixel_offsets(g, j0, offsets);
            PixelRows::Mapped(offsets)
        };
        let origin = g.output_pixel_offset(j0);
        let run = PixelLanesRun {
            c: g.c,
            x: job.x.as_ptr(),
            pixels: pixel_rows,
            weights: p.weights.as_ptr(),
            y: job.y.0.wrapping_add(origin),
            residual: if job.residual.0.is_null() {
                std::ptr::null()
            } else {
                job.residual.0.wrapping_add(origin)
            },
            bias: p.bias.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
            slope: p.slope.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
        };
        // SAFETY: the pixel map gives offsets whose pixel's C channels lie inside x; W^T
        // holds C * K weights, bias and slopes K registers; the NHWC output (and residual)
        // holds the run's `len` pixels of K values from `origin`.
        unsafe {
            match g.k {
                1 => pixel_lanes_run::<S, 1>(s, &run, job.act),
                2 => pixel_lanes_run::<S, 2>(s, &run, job.act),
                3 => pixel_lanes_run::<S, 3>(s, &run, job.act),
                4 => pixel_lanes_run::<S, 4>(s, &run, job.act),
                5 => pixel_lanes_run::<S, 5>(s, &run, job.act),
                6 => pixel_lanes_run::<S, 6>(s, &run, job.act),
                7 => pixel_lanes_run::<S, 7>(s, &run, job.act),
                8 => pixel_lanes_run::<S, 8>(s, &run, job.act),
                _ => debug_assert!(false, "pixel lanes for K = {}", g.k),
            }
        }
    }
}

/// A call run with the few-inputs loops (dense layers with at most four input channels per
/// group, of one group in NHWC; see [`crate::kernels::few_inputs`]).
pub(crate) type FewInputsJob<'a> = LanesJob<'a, FewChannelPanels>;

/// The few-inputs loops as an operation for [`Simd::vectorize`]: folded output pixels
/// `pixels` of the job.
pub(crate) struct RunFewInputs<'a> {
    job: &'a FewInputsJob<'a>,
    pixels: Range<usize>,
}

impl<'a> RunFewInputs<'a> {
    /// # Safety
    /// As [`run_few_inputs`] (the tier is proven by the token that runs it).
    pub unsafe fn new(job: &'a FewInputsJob<'a>, pixels: Range<usize>) -> Self {
        RunFewInputs { job, pixels }
    }
}

impl WithSimd for RunFewInputs<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // SAFETY: `new`'s contract.
        unsafe { run_few_inputs::<S>(s, self.job, self.pixels) }
    }
}

/// Computes folded output pixels `pixels` of a few-inputs job: each image's part of the range
/// as one run of consecutive pixels per group, read and written in place.
///
/// # Safety
/// The CPU must support `S`'s tier; the job's slices must have the lengths its geometry
/// implies (the plan checked them), its geometry dense, of one group in NHWC, with 1 to
/// [`FEW_INPUTS_MAX_C`](crate::kernels::few_inputs::FEW_INPUTS_MAX_C) input channels per group, its
/// panels packed for this convolution with `S`'s lane count, and `pixels` within `N * H * W`.
#[inline(always)]
pub(crate) unsafe fn run_few_inputs<S: Simd>(s: S, job: &FewInputsJob, pixels: Range<usize>) {
    let g = &job.geom;
    let p = job.panels;
    debug_assert!(
        g.is_dense()
            && (g.groups == 1 || g.layout == Layout::Nchw)
            && p.c == g.cg
            && p.k == g.k
            && (1..=crate::kernels::few_inputs::FEW_INPUTS_MAX_C).contains(&g.cg)
            && pixels.end <= g.n * g.p
    );
    let nchw = g.layout == Layout::Nchw;
    let mut j = pixels.start;
    while j < pixels.end {
        // The part of the range in image `img`: pixels q..q + len of its plane.
        let (img, q) = (j / g.p, j % g.p);
        let len = (pixels.end - j).min(g.p - q);
        for group in 0..g.groups {
            // NCHW: the group's first input and output channel planes (NHWC has one group).
            let (x_at, y_at) = if nchw {
                (
                    (img * g.c + group * g.cg) * g.p + q,
                    (img * g.k + group * g.kg) * g.p + q,
                )
            } else {
                (j * g.c, j * g.k)
            };
            let channel_values = |v: &Option<Vec<f32>>| {
                v.as_ref()
                    .map_or(std::ptr::null(), |v| v.as_ptr().wrapping_add(group * g.kg))
            };
            let run = FewInputsRun {
                x: job.x.as_ptr().wrapping_add(x_at),
                x_plane: g.p,
                y: job.y.0.wrapping_add(y_at),
                residual: if job.residual.0.is_null() {
                    std::ptr::null()
                } else {
                    job.residual.0.wrapping_add(y_at)
                },
                y_plane: g.p,
                pixels: len,
                k: g.kg,
                weights: p.weights.as_ptr().wrapping_add(group * g.kg * g.cg),
                k_padded: p.k_padded,
                bias: channel_values(&p.bias),
                slope: channel_values(&p.slope),
            };
            // SAFETY: a dense geometry reads, for pixels q..q + len of image img, inputs
            // x_at + c * P (NCHW, the group's C/G planes) or x_at + i * C + c (NHWC) inside
            // x, and writes outputs y_at + k * P (the group's K/G planes) or y_at + i * K
            // inside the output (and the residual, its shape), whose lengths Geometry::new
            // checked; the panels hold the group's K/G rows of C/G weights (NHWC, one group:
            // C * k_padded) and its K/G (k_padded) biases and slopes.
            unsafe {
                match (nchw, g.cg) {
                    (true, 1) => few_inputs_planes::<S, 1>(s, &run, job.act),
                    (true, 2) => few_inputs_planes::<S, 2>(s, &run, job.act),
                    (true, 3) => few_inputs_planes::<S, 3>(s, &run, job.act),
                    (true, 4) => few_inputs_planes::<S, 4>(s, &run, job.act),
                    (false, 1) => few_inputs_rows::<S, 1>(s, &run, job.act),
                    (false, 2) => few_inputs_rows::<S, 2>(s, &run, job.act),
                    (false, 3) => few_inputs_rows::<S, 3>(s, &run, job.act),
                    (false, 4) => few_inputs_rows::<S, 4>(s, &run, job.act),
                    _ => debug_assert!(false, "few inputs for C/G = {}", g.cg),
                }
            }
        }
        j += len;
    }
}

/// A call run with the few-outputs loop (dense NCHW layers of one group with at most four
/// output channels; see [`crate::kernels::few_outputs`]).
pub(crate) type FewOutputsJob<'a> = LanesJob<'a, FewChannelPanels>;

/// The few-outputs loop as an operation for [`Simd::vectorize`]: folded output pixels
/// `pixels` of the job.
pub(crate) struct RunFewOutputs<'a> {
    job: &'a FewOutputsJob<'a>,
    pixels: Range<usize>,
}

impl<'a> RunFewOutputs<'a> {
    /// # Safety
    /// As [`run_few_outputs`] (the tier is proven by the token that runs it).
    pub unsafe fn new(job: &'a FewOutputsJob<'a>, pixels: Range<usize>) -> Self {
        RunFewOutputs { job, pixels }
    }
}

impl WithSimd for RunFewOutputs<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // SAFETY: `new`'s contract.
        unsafe { run_few_outputs::<S>(s, self.job, self.pixels) }
    }
}

/// Computes folded output pixels `pixels` of a few-outputs job: each image's part of the
/// range as one run of consecutive pixels, read and written in place.
///
/// # Safety
/// The CPU must support `S`'s tier; the job's slices must have the lengths its geometry
/// implies (the plan checked them), its geometry dense NCHW of one group with 1 to
/// [`FEW_OUTPUTS_MAX_K`](crate::kernels::few_outputs::FEW_OUTPUTS_MAX_K) output channels, its
/// panels packed for this convolution, and `pixels` within `N * H * W`.
#[inline(always)]
pub(crate) unsafe fn run_few_outputs<S: Simd>(s: S, job: &FewOutputsJob, pixels: Range<usize>) {
    let g = &job.geom;
    let p = job.panels;
    debug_assert!(
        g.is_dense()
            && g.groups == 1
            && g.layout == Layout::Nchw
            && p.c == g.c
            && p.k == g.k
            && (1..=crate::kernels::few_outputs::FEW_OUTPUTS_MAX_K).contains(&g.k)
            && pixels.end <= g.n * g.p
    );
    let mut j = pixels.start;
    while j < pixels.end {
        // The part of the range in image `img`: pixels q..q + len of its planes.
        let (img, q) = (j / g.p, j % g.p);
        let len = (pixels.end - j).min(g.p - q);
        let (x_at, y_at) = (img * g.c * g.p + q, img * g.k * g.p + q);
        let run = FewOutputsRun {
            x: job.x.as_ptr().wrapping_add(x_at),
            c: g.c,
            y: job.y.0.wrapping_add(y_at),
            residual: if job.residual.0.is_null() {
                std::ptr::null()
            } else {
                job.residual.0.wrapping_add(y_at)
            },
            plane: g.p,
            pixels: len,
            weights: p.weights.as_ptr(),
            bias: p.bias.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
            slope: p.slope.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
        };
        // SAFETY: a dense NCHW geometry reads, for pixels q..q + len of image img, inputs
        // x_at + c * P inside x and writes outputs y_at + k * P inside the output (and the
        // residual, its shape), whose lengths Geometry::new checked; the panels hold K rows
        // of C weights and K biases and slopes.
        unsafe {
            match g.k {
                1 => few_outputs_planes::<S, 1>(s, &run, job.act),
                2 => few_outputs_planes::<S, 2>(s, &run, job.act),
                3 => few_outputs_planes::<S, 3>(s, &run, job.act),
                4 => few_outputs_planes::<S, 4>(s, &run, job.act),
                _ => debug_assert!(false, "few outputs for K = {}", g.k),
            }
        }
        j += len;
    }
}

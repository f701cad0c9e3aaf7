//! The driver: splits one forward call into independent units of work, runs them on the
//! calling thread or on rayon, and inside a unit runs the cache-blocked loop nest around the
//! microkernel (pack a block of pixels once, then sweep every weight panel over it).
//!
//! Blocking. The microkernel runs the whole reduction (`C / groups` steps) in registers, so
//! there is no KC loop and no partial sums are stored and reloaded: a 1x1 convolution's
//! reduction is at most a few thousand channels, and the two panels a tile streams (for
//! C = 2048, 8 x 2048 weights = 64 KiB and 2048 x 32 pixels = 256 KiB) are read sequentially,
//! which the hardware prefetchers keep ahead of the FMAs from L2. The pixel block (the NC
//! loop) is sized so its packed panels take `PACKED_PIXEL_BYTES` = half of a 1 MiB L2, and
//! blocks are made equal so threads finish together; each unit sweeps its weight panels (the
//! MC loop, all of them or a thread's share) over the block, so a weight panel is read once
//! per block from L3 or memory and reused across the block's pixel panels. Packed panels are
//! contiguous, so they cannot alias in L2; pixels read in place (NCHW rows, NHWC pixels) are
//! streamed once per weight panel.
//!
//! A *gemm* is one (group, image) product, or one group over all images when the batch is
//! folded into the pixel axis. A *unit* is one block of a gemm's pixels times one range of its
//! weight panels. Units never share an output element and the reduction is never split, so
//! the result is bit-identical for every thread count.
use crate::conv::{Geometry, Layout};
use crate::epilogue::{Activation, ChannelAxis, ScalarEpilogue, TileEpilogue};
use crate::kernels::simd::{gemm_tile, ColOperand, RowOperand, SimdF32};
use crate::packing::{pack_pixel_panels, pixel_offsets, uniform_spacing, PanelBuf, WeightPanels, PADDED};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Which operand supplies the tile's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orientation {
    /// Rows are output channels, vector lanes are pixels (NCHW's natural tile).
    WeightRows,
    /// Rows are pixels, vector lanes are output channels (NHWC's natural tile).
    PixelRows,
}

/// Bytes of packed pixels a unit gathers at once: half of a 1 MiB L2, so that the block and
/// the weight panel being swept over it stay in L2 together.
pub(crate) const PACKED_PIXEL_BYTES: usize = 512 * 1024;
/// Largest register tile any tier uses (`MR * NR`), sizing the stack tile for edges.
pub(crate) const MAX_TILE: usize = 16 * 64;
/// Below this many flops a call stays on the calling thread.
pub(crate) const PARALLEL_MIN_FLOPS: usize = 1 << 22;

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

/// Everything a unit needs, borrowed from the plan and the call's arguments.
pub(crate) struct Job<'a> {
    pub geom: Geometry,
    /// Index of the tier's tile (`Tier::tiles`) the plan chose for this call.
    pub tile: usize,
    pub orient: Orientation,
    /// Whether full tiles can be stored straight into the output (their vector lanes are
    /// contiguous there); otherwise every tile goes through a stack tile and is scattered.
    pub direct: bool,
    /// Whether a gemm spans all images (pixel axis of length `n * p`).
    pub folded: bool,
    pub x: &'a [f32],
    pub y: OutPtr,
    /// The residual (output-shaped), or null. It may be the output itself (an in-place
    /// residual): every path reads a residual element before it writes that output element.
    pub residual: InPtr,
    pub bias: Option<&'a [f32]>,
    /// Per-channel PReLU slopes (`[K]`), when the activation is PReLU.
    pub slope: Option<&'a [f32]>,
    /// Packed weights (microkernels), with lanes matching the orientation.
    pub panels: Option<&'a WeightPanels>,
    /// Raw `[K, C/G]` weights (matrixmultiply).
    pub weights: &'a [f32],
    pub act: Activation,
    /// Pixels per packed block (a multiple of the pixel lanes).
    pub pixel_block: usize,
    /// Output channels per weight range of a unit.
    pub channels_per_split: usize,
    pub blocks_per_gemm: usize,
    pub splits: usize,
    pub units: usize,
}

/// One unit's coordinates.
pub(crate) struct Unit {
    pub group: usize,
    /// Folded pixel range.
    pub pixels: Range<usize>,
    /// Output-channel range within the group.
    pub channels: Range<usize>,
}

impl Job<'_> {
    pub fn gemm_pixels(&self) -> usize {
        if self.folded {
            self.geom.n * self.geom.p
        } else {
            self.geom.p
        }
    }

    pub fn unit(&self, u: usize) -> Unit {
        let split = u % self.splits;
        let rest = u / self.splits;
        let block = rest % self.blocks_per_gemm;
        let gemm = rest / self.blocks_per_gemm;
        let group = gemm % self.geom.groups;
        let img = if self.folded { 0 } else { gemm / self.geom.groups };
        let start = img * self.geom.p;
        let len = self.gemm_pixels();
        let j0 = start + block * self.pixel_block;
        let j1 = (j0 + self.pixel_block).min(start + len);
        let k0 = split * self.channels_per_split;
        let k1 = (k0 + self.channels_per_split).min(self.geom.kg);
        Unit {
            group,
            pixels: j0..j1,
            channels: k0..k1,
        }
    }

    /// The scalar form of the job's output stage.
    pub fn scalar_epilogue(&self) -> ScalarEpilogue<'_> {
        ScalarEpilogue {
            bias: self.bias,
            slope: self.slope,
            act: self.act,
        }
    }

    /// The channel axis of a tile in this orientation.
    fn channel_axis(weight_rows: bool) -> ChannelAxis {
        if weight_rows {
            ChannelAxis::Rows
        } else {
            ChannelAxis::Cols
        }
    }

    /// Output offset of (folded pixel, global output channel).
    #[inline(always)]
    fn out_offset(&self, pixel: usize, channel: usize) -> usize {
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
    /// matrixmultiply's output staging (grown by its user).
    pub out: &'a mut Vec<f32>,
    /// matrixmultiply's output offset of each pixel (grown by its user).
    pub out_pixels: &'a mut Vec<usize>,
}

impl TaskScratch {
    pub fn buffers(&mut self, packed_len: usize, pixels: usize, panels: usize) -> UnitBuffers<'_> {
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
            out: &mut self.out,
            out_pixels: &mut self.out_pixels,
        }
    }
}

/// The microkernel loop nest for one orientation, `MR x (NV * V::LANES)` tiles.
///
/// # Safety
/// The CPU must support `V`'s tier; `job` must describe buffers of the lengths its geometry
/// implies (the plan checked them), with `job.panels` packed with lanes matching this tile.
#[inline(always)]
pub(crate) unsafe fn run_units<V: SimdF32, const MR: usize, const NV: usize>(
    job: &Job,
    units: Range<usize>,
    scratch: &mut TaskScratch,
) {
    let nr = NV * V::LANES;
    let weight_rows = job.orient == Orientation::WeightRows;
    let (wl, pl) = if weight_rows { (MR, nr) } else { (nr, MR) };
    let Some(panels) = job.panels else { return };
    debug_assert_eq!(panels.lanes, wl);
    let g = &job.geom;
    let cg = g.cg;
    let ics = g.input_channel_stride();
    // Pixels are read straight from the input instead of packed where the layout already
    // gives the tile what it needs: NHWC pixel rows (evenly spaced pixels, contiguous
    // channels: one broadcast per row and step), and NCHW weight rows (NR consecutive pixels
    // of a channel plane: one vector load per step).
    let read_in_place = if weight_rows { ics != 1 } else { ics == 1 };
    let in_place_spacing = |offs: &[isize]| match uniform_spacing(offs, pl) {
        Some(d) if read_in_place && (!weight_rows || d == 1) => Some(d),
        _ => None,
    };
    for u in units {
        let unit = job.unit(u);
        let npix = unit.pixels.len();
        let buffers = scratch.buffers(npix.div_ceil(pl) * pl * cg, npix, npix.div_ceil(pl));
        let (packed, offsets, spacing, padded) = (buffers.packed, buffers.offsets, buffers.in_place, buffers.padded);
        pixel_offsets(g, unit.pixels.start, offsets);
        let c0 = unit.group * cg;
        debug_assert!(pl <= 64);
        // Decided once per panel: read in place, or packed here; and which pixels are padding
        // (their outputs are the epilogue of a zero sum and never read the weights).
        for (panel, offs) in offsets.chunks(pl).enumerate() {
            padded[panel] = offs
                .iter()
                .enumerate()
                .filter(|&(_, &o)| o == PADDED)
                .fold(0u64, |mask, (i, _)| mask | 1 << i);
            spacing[panel] = in_place_spacing(offs);
            if spacing[panel].is_none() {
                let dst = &mut packed[panel * cg * pl..(panel + 1) * cg * pl];
                pack_pixel_panels(job.x, offs, c0, cg, ics, pl, dst);
            }
        }
        let first_panel = unit.channels.start / wl;
        let last_panel = unit.channels.end.div_ceil(wl);
        for wp in first_panel..last_panel {
            let k0 = wp * wl;
            let kn = wl.min(g.kg - k0);
            let wptr = panels.panel_ptr(unit.group, wp);
            let chan0 = unit.group * g.kg + k0;
            for (pp, ppanel) in packed.chunks_exact(cg * pl).enumerate() {
                let j0 = unit.pixels.start + pp * pl;
                let jn = pl.min(unit.pixels.end - j0);
                // In place, offsets[j0] + c0 * ics is an input element; lanes offsets[j0] + r * d,
                // r < pl, are the panel's pixels, each with cg channels ics apart.
                let first = offsets[pp * pl] as usize;
                let in_place = spacing[pp].map(|d| (job.x[first + c0 * ics..].as_ptr(), d));
                let (a, b, m, n) = if weight_rows {
                    let b = match in_place {
                        Some((ptr, _)) => ColOperand {
                            ptr,
                            ks: ics,
                            packed: false,
                        },
                        None => ColOperand::packed(ppanel.as_ptr()),
                    };
                    (RowOperand::packed(wptr), b, kn, jn)
                } else {
                    let a = match in_place {
                        Some((ptr, d)) => RowOperand {
                            ptr,
                            rs: d,
                            ks: ics,
                            packed: false,
                        },
                        None => RowOperand::packed(ppanel.as_ptr()),
                    };
                    (a, ColOperand::packed(wptr), jn, kn)
                };
                // SAFETY: a and b address full panels of cg steps (packed, or MR evenly spaced
                // input pixels of cg channels each); the tile targets are checked below or
                // are stack arrays of MAX_TILE >= MR * NR elements.
                unsafe {
                    if job.direct && m == MR && n == nr && padded[pp] == 0 {
                        store_direct::<V, MR, NV>(job, a, b, j0, chan0, weight_rows);
                    } else {
                        let tile = TilePlace {
                            j0,
                            chan0,
                            m,
                            n,
                            padded: padded[pp],
                        };
                        store_scattered::<V, MR, NV>(job, a, b, tile, weight_rows);
                    }
                }
            }
        }
    }
}

/// A full tile whose vector lanes are contiguous in the output: computed straight into it.
#[inline(always)]
unsafe fn store_direct<V: SimdF32, const MR: usize, const NV: usize>(
    job: &Job,
    a: RowOperand,
    b: ColOperand,
    j0: usize,
    chan0: usize,
    weight_rows: bool,
) {
    let g = &job.geom;
    let origin = job.out_offset(j0, chan0);
    // Row stride: between output channels (NCHW, weight rows) or between pixels (NHWC).
    let ldc = if weight_rows { g.output_channel_stride() } else { g.k };
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
    // SAFETY: `direct` is only set when a full tile's rows are `ldc` apart and its lanes
    // contiguous inside the output (and the residual, which has the output's shape). An
    // in-place residual is read register by register just before the same register is stored.
    unsafe { gemm_tile::<V, MR, NV>(job.geom.cg, a, b, job.y.0.add(origin), ldc, &ep) }
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

/// An edge tile, a tile over padded pixels, or any tile whose lanes are not contiguous in the
/// output: computed into a stack tile (with bias and residual copied in), then the valid
/// `m x n` part is scattered.
#[inline(always)]
unsafe fn store_scattered<V: SimdF32, const MR: usize, const NV: usize>(
    job: &Job,
    a: RowOperand,
    b: ColOperand,
    t: TilePlace,
    weight_rows: bool,
) {
    let addr = |r: usize, l: usize| {
        if weight_rows {
            job.out_offset(t.j0 + l, t.chan0 + r)
        } else {
            job.out_offset(t.j0 + r, t.chan0 + l)
        }
    };
    let edge = EdgeTile {
        kc: job.geom.cg,
        m: t.m,
        n: t.n,
        bias: job.bias.map(|b| &b[t.chan0..]),
        slope: job.slope.map(|s| &s[t.chan0..]),
        axis: Job::channel_axis(weight_rows),
        residual: (!job.residual.0.is_null()).then_some(job.residual.0),
        act: job.act,
        padded_pixels: t.padded,
    };
    // SAFETY: addr(r, l) for r < m, l < n are elements of this unit's part of the output (and
    // of the residual, which has the output's shape); a and b are full panels.
    unsafe { edge.run::<V, MR, NV>(a, b, addr, addr, job.y.0) }
}

/// A tile computed through the stack: bias and residual are copied into full-size stack
/// arrays, the register tile writes a stack tile, and the `m x n` valid part is copied out to
/// `out + addr(r, l)`. This is how partial tiles avoid touching memory past the caller's
/// buffers.
pub(crate) struct EdgeTile<'a> {
    pub kc: usize,
    pub m: usize,
    pub n: usize,
    /// Bias starting at the tile's first channel, at least `m` (or `n`) values.
    pub bias: Option<&'a [f32]>,
    /// PReLU slopes starting at the tile's first channel, likewise.
    pub slope: Option<&'a [f32]>,
    pub axis: ChannelAxis,
    /// Residual base; element (r, l) is at `res_addr(r, l)`.
    pub residual: Option<*const f32>,
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
    pub(crate) unsafe fn run<V: SimdF32, const MR: usize, const NV: usize>(
        &self,
        a: RowOperand,
        b: ColOperand,
        out_addr: impl Fn(usize, usize) -> usize,
        res_addr: impl Fn(usize, usize) -> usize,
        out: *mut f32,
    ) {
        let nr = NV * V::LANES;
        debug_assert!(self.m <= MR && self.n <= nr && MR * nr <= MAX_TILE && MR.max(nr) <= 64);
        // The register tile writes all MR x NR values of `tile` before any is read, so it needs
        // no initialisation; `res` is read in full, so its MR x NR part is zeroed first.
        let mut tile = [MaybeUninit::<f32>::uninit(); MAX_TILE];
        let mut res = [MaybeUninit::<f32>::uninit(); MAX_TILE];
        let mut bias = [0.0f32; 64];
        let mut slope = [0.0f32; 64];
        if let Some(rsrc) = self.residual {
            for v in &mut res[..MR * nr] {
                v.write(0.0);
            }
            for r in 0..self.m {
                for l in 0..self.n {
                    // SAFETY: the caller guarantees res_addr(r, l) is inside the residual.
                    res[r * nr + l].write(unsafe { *rsrc.add(res_addr(r, l)) });
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
        unsafe { gemm_tile::<V, MR, NV>(self.kc, a, b, tile.as_mut_ptr().cast::<f32>(), nr, &ep) };
        if self.padded_pixels != 0 {
            // The epilogue of a zero sum (kc = 0: the operands are not read), with the same
            // operations as any other tile, for the padded pixels.
            let mut zero_sum = [MaybeUninit::<f32>::uninit(); MAX_TILE];
            // SAFETY: as above; with kc = 0 the operand pointers are not dereferenced.
            unsafe { gemm_tile::<V, MR, NV>(0, a, b, zero_sum.as_mut_ptr().cast::<f32>(), nr, &ep) };
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
        for r in 0..self.m {
            for l in 0..self.n {
                // SAFETY: the caller guarantees out_addr(r, l) is inside `out`, and gemm_tile
                // initialised every element of the MR x NR tile.
                unsafe { *out.add(out_addr(r, l)) = tile[r * nr + l].assume_init() };
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

/// Runs a [`TileCall`] with an `MR x (NV * LANES)` tile.
///
/// # Safety
/// The CPU must support `V`'s tier; the call's slices must have been checked against the tile
/// shape (`crate::testing::run_tile` does), and `c` must be valid for `m` rows of `n` values
/// at stride `ldc` (`MR` rows of `NR` when the tile is full).
#[inline(always)]
pub(crate) unsafe fn run_tile_call<V: SimdF32, const MR: usize, const NV: usize>(call: &TileCall) {
    let nr = NV * V::LANES;
    if call.m == MR && call.n == nr {
        let ep = TileEpilogue {
            bias: call.bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
            slope: call.slope.map_or(std::ptr::null(), <[f32]>::as_ptr),
            axis: call.axis,
            residual: call.residual.map_or(std::ptr::null(), |(r, _)| r.as_ptr()),
            ldr: call.residual.map_or(0, |(_, ld)| ld),
            act: call.act,
        };
        // SAFETY: full tile inside the checked extents.
        unsafe {
            gemm_tile::<V, MR, NV>(
                call.kc,
                RowOperand::packed(call.a.as_ptr()),
                ColOperand::packed(call.b.as_ptr()),
                call.c,
                call.ldc,
                &ep,
            )
        };
        return;
    }
    let ldr = call.residual.map_or(0, |(_, ld)| ld);
    let ldc = call.ldc;
    let edge = EdgeTile {
        kc: call.kc,
        m: call.m,
        n: call.n,
        bias: call.bias,
        slope: call.slope,
        axis: call.axis,
        residual: call.residual.map(|(r, _)| r.as_ptr()),
        act: call.act,
        padded_pixels: 0,
    };
    // SAFETY: the caller checked m rows of n values at stride ldc (output) and ldr (residual).
    unsafe {
        edge.run::<V, MR, NV>(
            RowOperand::packed(call.a.as_ptr()),
            ColOperand::packed(call.b.as_ptr()),
            |r, l| r * ldc + l,
            |r, l| r * ldr + l,
            call.c,
        )
    };
}

/// The matrixmultiply kernel for a range of units: gather the block into a `cg x npix`
/// matrix, then one `sgemm` and the scalar epilogue. When the block's outputs form a strided
/// matrix in the output, have no padded pixel and the residual is not the output itself, the
/// product is written straight into the output and finished in place; otherwise it is staged
/// in scratch and scattered (padded pixels take the epilogue of a zero sum, so they never see
/// the weights, and an in-place residual is read before it is overwritten).
pub(crate) fn run_units_matrixmultiply(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    let g = &job.geom;
    let cg = g.cg;
    let ics = g.input_channel_stride();
    let ocs = g.output_channel_stride();
    let ep = job.scalar_epilogue();
    let residual_is_output = job.residual.0 == job.y.0.cast_const();
    for u in units {
        let unit = job.unit(u);
        let npix = unit.pixels.len();
        let kn = unit.channels.len();
        let chan0 = unit.group * g.kg + unit.channels.start;
        let buffers = scratch.buffers(npix * cg, npix, 0);
        let (packed, offsets, out_scratch, out_pixel) =
            (buffers.packed, buffers.offsets, buffers.out, buffers.out_pixels);
        pixel_offsets(g, unit.pixels.start, offsets);
        // One panel as wide as the block: a row-major cg x npix matrix.
        pack_pixel_panels(job.x, offsets, unit.group * cg, cg, ics, npix, packed);
        let w = &job.weights[chan0 * cg..(chan0 + kn) * cg];
        let padded = offsets.contains(&PADDED);
        // Pixels evenly spaced in the output: NHWC, or NCHW within one image.
        let (first, last) = (unit.pixels.start, unit.pixels.end - 1);
        let pixel_stride = match g.layout {
            Layout::Nhwc => Some(g.k),
            Layout::Nchw => (first / g.p == last / g.p).then_some(1),
        };
        let direct = pixel_stride.is_some() && !padded && !residual_is_output;
        let origin = job.out_offset(first, chan0);
        let (c, rs, cs) = if let (true, Some(stride)) = (direct, pixel_stride) {
            // SAFETY: `origin` is an element of the output.
            (unsafe { job.y.0.add(origin) }, ocs, stride)
        } else {
            if out_scratch.len() < kn * npix {
                out_scratch.resize(kn * npix, 0.0);
            }
            (out_scratch.as_mut_ptr(), npix, 1)
        };
        // SAFETY: C is kn x npix at strides (rs, cs): straight in the output (channels
        // chan0.. of the unit's pixels, which no other unit writes) or the scratch buffer;
        // `w` is kn x cg, `packed` cg x npix.
        unsafe {
            matrixmultiply::sgemm(
                kn,
                cg,
                npix,
                1.0,
                w.as_ptr(),
                cg as isize,
                1,
                packed.as_ptr(),
                npix as isize,
                1,
                0.0,
                c,
                rs as isize,
                cs as isize,
            );
        }
        let res = job.residual.0;
        if direct {
            // The product sits in the output: finish it in place, row by row.
            for r in 0..kn {
                let channel = ep.channel(chan0 + r);
                for l in 0..npix {
                    let at = origin + r * rs + l * cs;
                    // SAFETY: `at` is element (r, l) of the product, inside the output, whose
                    // shape the residual (a separate buffer here) has.
                    unsafe {
                        let r = (!res.is_null()).then(|| *res.add(at));
                        *job.y.0.add(at) = channel.finish(*job.y.0.add(at), r);
                    }
                }
            }
            continue;
        }
        // Output offset of each pixel of the unit (computed once: it divides by Ho * Wo).
        out_pixel.clear();
        out_pixel.extend((0..npix).map(|l| job.out_offset(first + l, 0)));
        for r in 0..kn {
            let chan = chan0 + r;
            let channel = ep.channel(chan);
            for (l, (&pixel, &offset)) in out_pixel.iter().zip(offsets.iter()).enumerate() {
                let at = pixel + chan * ocs;
                // SAFETY: `at` is an element of this unit's part of the output, whose shape
                // the residual has; `c` holds the product at (r, l); the residual element is
                // read before the output element is written (they may be the same element).
                unsafe {
                    let acc = if offset == PADDED { 0.0 } else { *c.add(r * rs + l * cs) };
                    let r = (!res.is_null()).then(|| *res.add(at));
                    *job.y.0.add(at) = channel.finish(acc, r);
                }
            }
        }
    }
}

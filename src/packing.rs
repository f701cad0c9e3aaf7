//! Packing: the only place that knows about stride and padding.
//!
//! Both operands of the microkernel are stored as *lane panels* in a named [`PackedFormat`]:
//! `rows` consecutive groups of `lanes` values, where a row is one reduction step (one input
//! channel) and a lane is one output channel (weights) or one output pixel (activations);
//! with `k_group` > 1 (bf16 and int8 dot-product instructions, which consume the reduction in
//! pairs or fours) each lane holds `k_group` consecutive steps together. Lanes and steps past
//! the end, and padded pixels, hold the format's padding value (zero for a sum).
//!
//! - Weights are packed once, at plan time, by [`pack_weight_panels`].
//! - Activations are gathered per call by [`pack_pixel_panels`]: output pixel `j` reads the
//!   input pixel that stride and padding map it to (`Geometry::input_pixel_offset`), or zero
//!   when it falls in the padding. This is the strided gather; there is no separate im2col.
use crate::conv::{Geometry, Layout};
use crate::element::{bf16, widen};
use crate::kernels::simd::{Simd, SimdF32};
use aligned_vec::{AVec, ConstAlign};

/// Cache-line aligned f32 storage for packed panels.
pub(crate) type PanelBuf = AVec<f32, ConstAlign<64>>;

/// The input values a pixel packer reads: f32, or bf16 widened to f32 as they are read
/// (exact), so that a bf16 call's panels hold the values an f32 call on the widened input
/// would pack, without a widened copy of the whole input.
pub(crate) trait PixelValues: Copy {
    fn len(self) -> usize;
    /// Values `start..start + len` (panics past the end, as slicing does).
    fn sub(self, start: usize, len: usize) -> Self;
    /// Value `i` as f32 (panics past the end, as indexing does).
    fn value(self, i: usize) -> f32;
    /// A register of values `i..i + LANES`.
    ///
    /// # Safety
    /// `i + LANES <= self.len()`.
    unsafe fn load<S: Simd>(self, s: S, i: usize) -> S::F32;
    /// A register of values `i..i + n` (`n <= LANES`), zeros past them.
    ///
    /// # Safety
    /// `i + n <= self.len()`.
    unsafe fn load_first<S: Simd>(self, s: S, i: usize, n: usize) -> S::F32;
    /// A pointer to values `i..i + 8` as f32: into the input itself, or, for bf16, into
    /// `stage`, where they are widened (panics past the end).
    fn eight_f32(self, i: usize, stage: &mut [f32; 8]) -> *const f32;
    /// Values `0, d, 2d, ...` into `out`, as many as it holds or the values give.
    fn every_nth_into(self, d: usize, out: &mut [f32]);
}

impl PixelValues for &[f32] {
    #[inline(always)]
    fn len(self) -> usize {
        <[f32]>::len(self)
    }
    #[inline(always)]
    fn sub(self, start: usize, len: usize) -> Self {
        &self[start..][..len]
    }
    #[inline(always)]
    fn value(self, i: usize) -> f32 {
        self[i]
    }
    #[inline(always)]
    unsafe fn load<S: Simd>(self, s: S, i: usize) -> S::F32 {
        // SAFETY: the caller guarantees LANES values from i.
        unsafe { s.load(self.as_ptr().add(i)) }
    }
    #[inline(always)]
    unsafe fn load_first<S: Simd>(self, s: S, i: usize, n: usize) -> S::F32 {
        // SAFETY: the caller guarantees n values from i.
        unsafe { s.load_first(self.as_ptr().add(i), n) }
    }
    #[inline(always)]
    fn eight_f32(self, i: usize, _stage: &mut [f32; 8]) -> *const f32 {
        self[i..][..8].as_ptr()
    }
    #[inline(always)]
    fn every_nth_into(self, d: usize, out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(self.iter().step_by(d)) {
            *o = v;
        }
    }
}

impl PixelValues for &[bf16] {
    #[inline(always)]
    fn len(self) -> usize {
        <[bf16]>::len(self)
    }
    #[inline(always)]
    fn sub(self, start: usize, len: usize) -> Self {
        &self[start..][..len]
    }
    #[inline(always)]
    fn value(self, i: usize) -> f32 {
        widen(self[i])
    }
    #[inline(always)]
    unsafe fn load<S: Simd>(self, s: S, i: usize) -> S::F32 {
        // SAFETY: the caller guarantees LANES values from i; bf16 is a u16 in memory.
        unsafe { s.load_bf16(self.as_ptr().add(i).cast()) }
    }
    #[inline(always)]
    unsafe fn load_first<S: Simd>(self, s: S, i: usize, n: usize) -> S::F32 {
        // SAFETY: the caller guarantees n values from i; bf16 is a u16 in memory.
        unsafe { s.load_first_bf16(self.as_ptr().add(i).cast(), n) }
    }
    #[inline(always)]
    fn eight_f32(self, i: usize, stage: &mut [f32; 8]) -> *const f32 {
        for (t, &v) in stage.iter_mut().zip(&self[i..][..8]) {
            *t = widen(v);
        }
        stage.as_ptr()
    }
    #[inline(always)]
    fn every_nth_into(self, d: usize, out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(self.iter().step_by(d)) {
            *o = widen(v);
        }
    }
}

/// The input of a call whose pixels are packed (the register tiles and the matrixmultiply
/// kernel): f32, or bf16, which the packers widen as they read it.
#[derive(Clone, Copy)]
pub(crate) enum PixelInput<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl<'a> PixelInput<'a> {
    /// The f32 input, which may be read in place; `None` for bf16, which is always packed.
    pub fn f32(self) -> Option<&'a [f32]> {
        match self {
            PixelInput::F32(x) => Some(x),
            PixelInput::Bf16(_) => None,
        }
    }

    /// [`pack_pixel_panels`] from this input.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn pack_pixel_panels<S: Simd>(
        self,
        s: S,
        offsets: &[isize],
        c0: usize,
        cg: usize,
        ics: usize,
        lanes: usize,
        pad: f32,
        out: &mut [f32],
    ) {
        match self {
            PixelInput::F32(x) => pack_pixel_panels(s, x, offsets, c0, cg, ics, lanes, pad, out),
            PixelInput::Bf16(x) => pack_pixel_panels(s, x, offsets, c0, cg, ics, lanes, pad, out),
        }
    }

    /// [`pack_consecutive_pixels`] from this input.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn pack_consecutive_pixels<S: Simd>(
        self,
        s: S,
        first: usize,
        npix: usize,
        c0: usize,
        rows: usize,
        ics: usize,
        lanes: usize,
        panel_len: usize,
        pad: f32,
        out: &mut [f32],
    ) {
        match self {
            PixelInput::F32(x) => pack_consecutive_pixels(s, x, first, npix, c0, rows, ics, lanes, panel_len, pad, out),
            PixelInput::Bf16(x) => {
                pack_consecutive_pixels(s, x, first, npix, c0, rows, ics, lanes, panel_len, pad, out)
            }
        }
    }

    /// [`pack_consecutive_pixels`] into bf16 pairs: straight from a bf16 input
    /// ([`pack_consecutive_pairs`]); an f32 one (whose values the caller guarantees are bf16
    /// values) packed, then paired in place.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn pack_consecutive_pairs<S: Simd>(
        self,
        s: S,
        first: usize,
        npix: usize,
        c0: usize,
        rows: usize,
        ics: usize,
        lanes: usize,
        panel_len: usize,
        out: &mut [f32],
    ) {
        match self {
            PixelInput::Bf16(x) => pack_consecutive_pairs(s, x, first, npix, c0, rows, ics, lanes, panel_len, out),
            PixelInput::F32(x) => {
                pack_consecutive_pixels(s, x, first, npix, c0, rows, ics, lanes, panel_len, 0.0, out);
                for panel in out.chunks_mut(panel_len) {
                    pair_panel_in_place(panel, rows, lanes);
                }
            }
        }
    }
}

/// Values `i..i + valid` (`valid <= LANES`) of `run` widened, zero lanes past `valid`.
///
/// # Safety
/// `i + valid <= run.len()`.
#[inline(always)]
unsafe fn load_run<S: Simd>(s: S, run: &[bf16], i: usize, valid: usize) -> S::F32 {
    // SAFETY: the caller's contract.
    unsafe {
        if valid == S::F32::LANES {
            run.load(s, i)
        } else {
            run.load_first(s, i, valid)
        }
    }
}

/// The bf16 pairs of values `i..i + valid` (`valid <= LANES`) of two runs (`odd` absent:
/// zero high halves), zero lanes past `valid`.
///
/// # Safety
/// `i + valid` is within both runs.
#[inline(always)]
unsafe fn load_pairs<S: Simd>(s: S, even: &[bf16], odd: Option<&[bf16]>, i: usize, valid: usize) -> S::F32 {
    // SAFETY: the caller's contract.
    unsafe {
        let odd = match odd {
            Some(odd) => load_run(s, odd, i, valid),
            None => s.zero(),
        };
        s.bf16_pairs(load_run(s, even, i, valid), odd)
    }
}

/// One pair row of [`pack_consecutive_pairs`] for panels narrower than a register (pixel-row
/// tiles, a few pixels per panel): the pairs of a chunk of the run are formed a whole register
/// at a time on the stack, then each panel's `lanes` slots copied to `out + panel *
/// panel_len`, zero past the run. (A masked register per panel was about 7% of NCHW 1024 ->
/// 256 at 14x14, AMD Zen 4.)
#[inline(always)]
fn pair_short_panels<S: Simd>(
    s: S,
    even: &[bf16],
    odd: Option<&[bf16]>,
    lanes: usize,
    panel_len: usize,
    out: &mut [f32],
) {
    const CHUNK: usize = 64;
    let simd_lanes = S::F32::LANES;
    debug_assert!(lanes < simd_lanes && simd_lanes <= 16);
    let npix = even.len();
    let chunk = CHUNK / lanes * lanes;
    // A chunk, and room for the last register's whole store past it.
    let mut pairs = [0.0f32; CHUNK + 16];
    for start in (0..npix).step_by(chunk) {
        let m = (npix - start).min(chunk);
        let mut i = 0;
        while i < m {
            let valid = (m - i).min(simd_lanes);
            // SAFETY: values start + i..start + i + valid are inside both runs (npix long);
            // the store writes LANES slots from i < m <= CHUNK, inside `pairs`.
            unsafe { load_pairs(s, even, odd, start + i, valid).store(pairs.as_mut_ptr().add(i)) };
            i += valid;
        }
        // A partial last panel's slots past the run are zero, as every packer pads (no
        // stored output reads them, but the panels stay deterministic).
        pairs[m..m.div_ceil(lanes) * lanes].fill(0.0);
        for k in 0..m.div_ceil(lanes) {
            let panel = (start + k * lanes) / lanes;
            out[panel * panel_len..][..lanes].copy_from_slice(&pairs[k * lanes..][..lanes]);
        }
    }
}

/// A padded pixel in an offset list.
pub(crate) const PADDED: isize = -1;

/// How a kernel wants an operand packed: `lanes` per panel row, the reduction grouped by
/// `k_group` (1: one step per row; 2 or 4: that many consecutive steps per lane, side by side).
///
/// With `bf16`, the `k_group = 2` steps of a lane are two bf16 values sharing one 32-bit slot
/// (the even step in the low half), as `vdpbf16ps` reads them: a panel row is `lanes` slots
/// of two steps each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedFormat {
    pub lanes: usize,
    pub k_group: usize,
    pub bf16: bool,
}

impl PackedFormat {
    /// f32 lanes, one reduction step per row.
    pub const fn f32(lanes: usize) -> PackedFormat {
        PackedFormat {
            lanes,
            k_group: 1,
            bf16: false,
        }
    }

    /// bf16 pairs: each 32-bit slot of a lane holds two consecutive reduction steps.
    pub const fn bf16_pairs(lanes: usize) -> PackedFormat {
        PackedFormat {
            lanes,
            k_group: 2,
            bf16: true,
        }
    }

    /// 32-bit slots in one panel of `k` reduction steps (rounded up to whole groups).
    pub fn panel_len(&self, k: usize) -> usize {
        let values = k.div_ceil(self.k_group) * self.k_group * self.lanes;
        if self.bf16 {
            values / 2
        } else {
            values
        }
    }

    /// Index in a panel of (reduction step `c`, lane `lane`).
    #[inline(always)]
    pub fn index(&self, c: usize, lane: usize) -> usize {
        let (group, within) = (c / self.k_group, c % self.k_group);
        (group * self.lanes + lane) * self.k_group + within
    }
}

/// Weights of every group packed into `lanes`-wide panels over output channels.
#[derive(Clone)]
pub(crate) struct WeightPanels {
    pub data: PanelBuf,
    pub format: PackedFormat,
    pub lanes: usize,
    /// Groups packed apart (1 when all groups are fused into one gemm).
    pub groups: usize,
    /// Panels per group, `ceil(kg / lanes)`.
    pub panels: usize,
    /// Rows per panel (the reduction length `C / groups`).
    pub cg: usize,
}

impl WeightPanels {
    /// Start of panel `panel` of group `g`.
    #[inline]
    pub fn panel_ptr(&self, g: usize, panel: usize) -> *const f32 {
        // The index is inside `data` for g < groups and panel < panels (see pack_weight_panels).
        self.data[(g * self.panels + panel) * self.format.panel_len(self.cg)..].as_ptr()
    }
}

/// Weights packed for group-lanes tiles (`simd::group_lanes_block`): each register of
/// `lanes` output channels holds `per_block` whole groups, and a block's input channels (the
/// same groups' `per_block * cg` channels) fit one register, from which each lane takes its
/// own group's channel by a permutation.
#[derive(Clone)]
pub(crate) struct GroupLanePanels {
    pub lanes: usize,
    /// Groups per register (block).
    pub per_block: usize,
    /// Blocks, `ceil(groups / per_block)`.
    pub blocks: usize,
    /// Reduction steps per output channel (`C / groups`).
    pub cg: usize,
    /// Per block, per step `j`: `lanes` weights, `W[k0 + l][j]` for the block's first output
    /// channel `k0` (zero past the block's channels).
    pub weights: PanelBuf,
    /// Per step `j`: the lane permutation, lane `l` taking input `(l / kg) * cg + j` of the
    /// block's register (0 past the block's channels). The same for every block.
    pub indices: Vec<u32>,
}

impl GroupLanePanels {
    /// Groups per register for `kg` output and `cg` input channels per group, or `None` when
    /// one group's output or input channels do not fit in `lanes`.
    pub fn groups_per_register(lanes: usize, kg: usize, cg: usize) -> Option<usize> {
        let per_block = (lanes / kg.max(1)).min(lanes / cg.max(1));
        (per_block > 0).then_some(per_block)
    }

    /// Packs `weights` (`[groups * kg, cg]` row-major), or `None` when a group does not fit
    /// in a register ([`Self::groups_per_register`]). The caller has checked
    /// `weights.len() == groups * kg * cg`.
    pub fn pack(weights: &[f32], groups: usize, kg: usize, cg: usize, lanes: usize) -> Option<GroupLanePanels> {
        let per_block = Self::groups_per_register(lanes, kg, cg)?;
        let blocks = groups.div_ceil(per_block);
        let mut packed = PanelBuf::from_iter(64, std::iter::repeat_n(0.0f32, blocks.checked_mul(cg * lanes)?));
        for (b, block) in packed.chunks_exact_mut(cg * lanes).enumerate() {
            let k0 = b * per_block * kg;
            let channels = (groups - b * per_block).min(per_block) * kg;
            for l in 0..channels {
                for (j, &w) in weights[(k0 + l) * cg..][..cg].iter().enumerate() {
                    block[j * lanes + l] = w;
                }
            }
        }
        let mut indices = vec![0u32; cg * lanes];
        for (j, step) in indices.chunks_exact_mut(lanes).enumerate() {
            for (l, index) in step.iter_mut().enumerate().take(per_block * kg) {
                // Below per_block * cg <= lanes.
                *index = ((l / kg) * cg + j) as u32;
            }
        }
        Some(GroupLanePanels {
            lanes,
            per_block,
            blocks,
            cg,
            weights: packed,
            indices,
        })
    }
}

/// Weights packed for the flat-lanes loop (`driver::run_flat_lanes`): NHWC layers of one group
/// and few input and output channels, whose output (pixel-major, `K` values per pixel) is
/// computed a register of `lanes` consecutive values at a time. A register may hold the
/// outputs of several pixels; lane `l` of step `c` multiplies its output channel's weight by
/// input channel `c` of its own pixel, taken by a lane permutation from one register of
/// consecutive input values starting at the register's first pixel. Lane patterns repeat
/// every `phases = K / gcd(K, lanes)` registers, which cover `block_pixels` pixels.
#[derive(Clone)]
pub(crate) struct FlatLanePanels {
    pub lanes: usize,
    /// Input channels `C` (reduction steps).
    pub c: usize,
    /// Output channels `K`.
    pub k: usize,
    /// Pixels per block (`lanes / gcd(K, lanes)`).
    pub block_pixels: usize,
    /// Per phase (register of a block, `K / gcd(K, lanes)` of them): the block's pixel that
    /// its register starts in.
    pub first_pixel: Vec<usize>,
    /// Per phase, per step `c`: `lanes` weights, lane `l` `W[(phase * lanes + l) % K][c]`.
    pub weights: PanelBuf,
    /// Per phase, per step `c`: lane `l` takes input `(pixel(l) - first_pixel) * C + c`, where
    /// `pixel(l) = (phase * lanes + l) / K`.
    pub indices: Vec<u32>,
    /// Per phase: the bias and PReLU slopes of each lane's output channel (when the plan
    /// has them).
    pub bias: Option<Vec<f32>>,
    pub slope: Option<Vec<f32>>,
}

impl FlatLanePanels {
    /// Packs `weights` (`[k, c]` row-major) and the per-channel `bias` and `slope` for
    /// registers of `lanes` values, or `None` when a register's inputs do not fit one register
    /// (see `schedule::uses_flat_lanes`). The caller has checked `weights.len() == k * c` and
    /// that `bias` and `slope` hold `k` values.
    pub fn pack(
        weights: &[f32],
        bias: Option<&[f32]>,
        slope: Option<&[f32]>,
        c: usize,
        k: usize,
        lanes: usize,
    ) -> Option<Self> {
        if k == 0 || crate::schedule::flat_lanes_span(k, lanes).checked_mul(c)? > lanes {
            return None;
        }
        let common = crate::schedule::gcd(k, lanes);
        let (phases, block_pixels) = (k / common, lanes / common);
        let len = phases.checked_mul(c)?.checked_mul(lanes)?;
        let mut packed = PanelBuf::from_iter(64, std::iter::repeat_n(0.0f32, len));
        let mut indices = vec![0u32; len];
        let first_pixel: Vec<usize> = (0..phases).map(|j| j * lanes / k).collect();
        for (j, &first) in first_pixel.iter().enumerate() {
            for l in 0..lanes {
                let (pixel, channel) = ((j * lanes + l) / k, (j * lanes + l) % k);
                for step in 0..c {
                    let at = (j * c + step) * lanes + l;
                    packed[at] = weights[channel * c + step];
                    // Below flat_lanes_span(k) * c <= lanes.
                    indices[at] = ((pixel - first) * c + step) as u32;
                }
            }
        }
        let pattern = |values: &[f32]| channel_pattern(values, phases * lanes);
        Some(FlatLanePanels {
            lanes,
            c,
            k,
            block_pixels,
            first_pixel,
            weights: packed,
            indices,
            bias: bias.map(pattern),
            slope: slope.map(pattern),
        })
    }
}

/// Per-channel values (`values.len()` = `K` channels) in the order of `len` consecutive
/// outputs of NHWC pixels: value `e` is channel `e % K`'s (the bias and slope registers of
/// the lane loops, whose registers hold consecutive outputs).
fn channel_pattern(values: &[f32], len: usize) -> Vec<f32> {
    (0..len).map(|e| values[e % values.len()]).collect()
}

/// Weights packed for the pixel-lanes loop (`driver::run_pixel_lanes`): NHWC layers of one
/// group with few output channels, whose pixels are the lanes of the sums
/// (`simd::pixel_lanes_run`).
pub(crate) struct PixelLanePanels {
    pub lanes: usize,
    /// Input channels `C` (reduction steps).
    pub c: usize,
    /// Output channels `K`.
    pub k: usize,
    /// `W^T`: `C` rows of `K` weights, so that a step's weights are adjacent.
    pub weights: Vec<f32>,
    /// The bias and PReLU slopes (when the plan has them) as `K` registers of the output's
    /// channel pattern: lane `l` of register `m` holds channel `(m * lanes + l) % K`'s.
    pub bias: Option<Vec<f32>>,
    pub slope: Option<Vec<f32>>,
}

impl PixelLanePanels {
    /// Packs `weights` (`[k, c]` row-major) and the per-channel `bias` and `slope` for
    /// registers of `lanes` values; `None` when `weights` does not hold `k * c` values or
    /// `bias` or `slope` not `k`.
    pub fn pack(
        weights: &[f32],
        bias: Option<&[f32]>,
        slope: Option<&[f32]>,
        c: usize,
        k: usize,
        lanes: usize,
    ) -> Option<Self> {
        let len = k.checked_mul(c)?;
        let short = |v: Option<&[f32]>| v.is_some_and(|v| v.len() != k);
        if k == 0 || weights.len() != len || short(bias) || short(slope) {
            return None;
        }
        let mut transposed = vec![0.0f32; len];
        for (channel, row) in weights.chunks_exact(c.max(1)).enumerate() {
            for (step, &w) in row.iter().enumerate() {
                transposed[step * k + channel] = w;
            }
        }
        let pattern = |values: &[f32]| channel_pattern(values, k * lanes);
        Some(PixelLanePanels {
            lanes,
            c,
            k,
            weights: transposed,
            bias: bias.map(pattern),
            slope: slope.map(pattern),
        })
    }
}

/// Weights, bias and slopes as the few-inputs loops (`kernels::few_inputs`: dense layers with
/// at most four input channels per group, one group in NHWC) and the few-outputs loop
/// (`kernels::few_outputs`: dense NCHW layers of one group with at most four output
/// channels) read them.
pub(crate) struct FewChannelPanels {
    /// Input channels per group `C/G`.
    pub c: usize,
    /// Output channels `K`.
    pub k: usize,
    /// NHWC: `K` rounded up to whole registers; NCHW: `K`.
    pub k_padded: usize,
    /// NCHW: `W`, `K` rows of `C/G`; NHWC: `W^T`, `C` rows of `k_padded` (zeros past `K`),
    /// so that a register of output channels' weights for one input channel is adjacent.
    pub weights: Vec<f32>,
    /// Per output channel (`k_padded` values, zeros past `K`), when the plan has them.
    pub bias: Option<Vec<f32>>,
    pub slope: Option<Vec<f32>>,
}

impl FewChannelPanels {
    /// Packs `weights` (`[k, c]` row-major, `c` input channels per group) and the
    /// per-channel `bias` and `slope` for the layout's loop with registers of `lanes` values
    /// (NHWC: one group); `None` when `weights` does not hold
    /// `k * c` values, `bias` or `slope` not `k`, or the sizes overflow.
    pub fn pack(
        layout: Layout,
        weights: &[f32],
        bias: Option<&[f32]>,
        slope: Option<&[f32]>,
        c: usize,
        k: usize,
        lanes: usize,
    ) -> Option<Self> {
        let short = |v: Option<&[f32]>| v.is_some_and(|v| v.len() != k);
        if k == 0 || c == 0 || weights.len() != k.checked_mul(c)? || short(bias) || short(slope) {
            return None;
        }
        let k_padded = match layout {
            Layout::Nchw => k,
            Layout::Nhwc => k.checked_next_multiple_of(lanes)?,
        };
        let packed = match layout {
            Layout::Nchw => weights.to_vec(),
            Layout::Nhwc => {
                let mut transposed = vec![0.0f32; c.checked_mul(k_padded)?];
                for (channel, row) in weights.chunks_exact(c).enumerate() {
                    for (step, &w) in row.iter().enumerate() {
                        transposed[step * k_padded + channel] = w;
                    }
                }
                transposed
            }
        };
        let padded = |v: &[f32]| {
            let mut out = v.to_vec();
            out.resize(k_padded, 0.0);
            out
        };
        Some(FewChannelPanels {
            c,
            k,
            k_padded,
            weights: packed,
            bias: bias.map(padded),
            slope: slope.map(padded),
        })
    }
}

/// Packs `weights` (`[groups * kg, cg]` row-major) into panels of `format.lanes` output
/// channels: element `(g, panel, c, lane)` is `W[g*kg + panel*lanes + lane][c]` at
/// `format.index(c, lane)` of its panel, `pad` past `kg` and past `cg` in the last group.
/// The caller has checked `weights.len() == groups * kg * cg` and that the packed size fits.
pub(crate) fn pack_weight_panels(
    weights: &[f32],
    groups: usize,
    kg: usize,
    cg: usize,
    format: PackedFormat,
    pad: f32,
) -> WeightPanels {
    let lanes = format.lanes;
    let panels = kg.div_ceil(lanes);
    // Packed in f32 first (bf16 pairs: each pair's two values side by side, then narrowed).
    let panel_len = PackedFormat { bf16: false, ..format }.panel_len(cg);
    let total = groups * panels * panel_len;
    let mut data = PanelBuf::from_iter(64, std::iter::repeat_n(pad, total));
    // Reduction steps in blocks whose part of the panel stays in L1 while each lane's
    // source row streams through it: lane by lane over a whole panel would rewrite a panel
    // larger than the cache once per lane (long reductions: the weight gradient's panels).
    const STEPS_PER_BLOCK: usize = 64;
    for g in 0..groups {
        for panel in 0..panels {
            let dst = &mut data[(g * panels + panel) * panel_len..][..panel_len];
            let rows = lanes.min(kg - panel * lanes);
            for c0 in (0..cg).step_by(STEPS_PER_BLOCK) {
                let c1 = (c0 + STEPS_PER_BLOCK).min(cg);
                for lane in 0..rows {
                    let k = g * kg + panel * lanes + lane;
                    let src = &weights[k * cg + c0..k * cg + c1];
                    // The step grouping as a constant, so `index` needs no division.
                    match format.k_group {
                        1 => place_row::<1>(dst, src, c0, lane, lanes),
                        2 => place_row::<2>(dst, src, c0, lane, lanes),
                        4 => place_row::<4>(dst, src, c0, lane, lanes),
                        _ => {
                            for (c, &w) in (c0..c1).zip(src) {
                                dst[format.index(c, lane)] = w;
                            }
                        }
                    }
                }
            }
        }
    }
    if format.bf16 {
        pair_in_place(&mut data);
        data.truncate(total / 2);
    }
    WeightPanels {
        data,
        format,
        lanes,
        groups,
        panels,
        cg,
    }
}

/// The bf16 bits of `v`, a bf16 value widened to f32 (its low half is zero).
#[inline(always)]
fn bf16_bits(v: f32) -> u32 {
    debug_assert_eq!(v.to_bits() & 0xFFFF, 0, "{v} is not a bf16 value");
    v.to_bits() >> 16
}

/// One 32-bit slot of a bf16 pair: `even` in the low half, `odd` in the high half (both bf16
/// values widened to f32).
#[inline(always)]
fn bf16_pair(even: f32, odd: f32) -> f32 {
    f32::from_bits(bf16_bits(odd) << 16 | bf16_bits(even))
}

/// Narrows values packed with `k_group = 2` in f32 (each lane's two steps side by side,
/// every value a bf16 value widened) into bf16 pairs, one slot per two values, in the first
/// half of `data`; the second half is left as it was.
fn pair_in_place(data: &mut [f32]) {
    for i in 0..data.len() / 2 {
        // Slot i reads values 2i and 2i + 1, at or after every slot written before it.
        data[i] = bf16_pair(data[2 * i], data[2 * i + 1]);
    }
}

/// Narrows a packed f32 pixel panel of `rows` reduction steps by `lanes` lanes (the layout of
/// [`pack_pixel_panels`], every value a bf16 value widened) into bf16 pairs in place: slot
/// `(p, lane)` of the result, at `p * lanes + lane`, holds steps `2p` (low half) and `2p + 1`
/// (high half, zero past `rows`). The first `ceil(rows / 2) * lanes` values are rewritten.
#[inline(always)]
pub(crate) fn pair_panel_in_place(panel: &mut [f32], rows: usize, lanes: usize) {
    debug_assert!(panel.len() >= rows * lanes);
    for p in 0..rows.div_ceil(2) {
        let odd_present = 2 * p + 1 < rows;
        if p == 0 {
            // Pair row 0 is step row 0, rewritten value by value after it is read.
            let (even, rest) = panel.split_at_mut(lanes);
            if odd_present {
                for (e, &o) in even.iter_mut().zip(&rest[..lanes]) {
                    *e = bf16_pair(*e, o);
                }
            } else {
                for e in even.iter_mut() {
                    *e = bf16_pair(*e, 0.0);
                }
            }
            continue;
        }
        // Pair row p (p >= 1) lies before step rows 2p and 2p + 1.
        let (head, tail) = panel.split_at_mut(2 * p * lanes);
        let dst = &mut head[p * lanes..(p + 1) * lanes];
        let (even, odd) = tail.split_at(lanes);
        if odd_present {
            for ((d, &e), &o) in dst.iter_mut().zip(even).zip(&odd[..lanes]) {
                *d = bf16_pair(e, o);
            }
        } else {
            for (d, &e) in dst.iter_mut().zip(even) {
                *d = bf16_pair(e, 0.0);
            }
        }
    }
}

/// Places `src` (reduction steps `c0..` of one output channel) at lane `lane` of a panel of
/// `lanes` lanes whose steps are grouped by `K_GROUP` (the layout of [`PackedFormat::index`]).
#[inline(always)]
fn place_row<const K_GROUP: usize>(dst: &mut [f32], src: &[f32], c0: usize, lane: usize, lanes: usize) {
    for (c, &w) in (c0..).zip(src) {
        dst[((c / K_GROUP) * lanes + lane) * K_GROUP + c % K_GROUP] = w;
    }
}

/// Fills `offsets[i]` with the input offset of folded output pixel `j0 + i` (or [`PADDED`]).
/// The output position advances by counters (one division for the first pixel, none per
/// pixel), so the map costs a few cycles per pixel.
pub(crate) fn pixel_offsets(geom: &Geometry, j0: usize, offsets: &mut [isize]) {
    if offsets.is_empty() {
        return;
    }
    if geom.is_dense() {
        // Arithmetic runs, one per image the range touches.
        let d = geom.input_pixel_spacing();
        let image = geom.p * geom.c;
        let mut j = j0;
        let mut rest = &mut offsets[..];
        while !rest.is_empty() {
            let (img, q) = (j / geom.p, j % geom.p);
            let len = (geom.p - q).min(rest.len());
            let (run, tail) = rest.split_at_mut(len);
            let mut offset = (img * image + q * d) as isize;
            for o in run.iter_mut() {
                *o = offset;
                offset += d as isize;
            }
            rest = tail;
            j += len;
        }
        return;
    }
    let (mut img, q) = (j0 / geom.p, j0 % geom.p);
    let (mut oy, mut ox) = (q / geom.wo, q % geom.wo);
    for o in offsets.iter_mut() {
        *o = match geom.input_offset(img, oy, ox) {
            Some(off) => off as isize,
            None => PADDED,
        };
        ox += 1;
        if ox == geom.wo {
            ox = 0;
            oy += 1;
            if oy * geom.wo == geom.p {
                oy = 0;
                img += 1;
            }
        }
    }
}

/// The common spacing `d` of a full panel of `lanes` pixels at `offs[0] + r * d`, none of
/// them padded; `None` otherwise. Such a panel can be read in place instead of packed.
#[inline(always)]
pub(crate) fn uniform_spacing(offs: &[isize], lanes: usize) -> Option<usize> {
    if offs.len() != lanes || offs[0] == PADDED {
        return None;
    }
    let d = if lanes > 1 { offs[1] - offs[0] } else { 0 };
    if d < 0 {
        return None;
    }
    offs.iter()
        .enumerate()
        .all(|(r, &o)| o != PADDED && o == offs[0] + r as isize * d)
        .then_some(d as usize)
}

/// Gathers the input pixels listed in `offsets` into `lanes`-wide panels of `cg` rows:
/// element `(panel, c, lane)` is `x[offsets[panel*lanes + lane] + (c0 + c) * ics]`, `pad` for
/// padded pixels and for lanes past `offsets.len()`. `ics` is the input's channel stride
/// (`H*W` in NCHW, 1 in NHWC) and `c0` the group's first channel.
/// `out` must hold `ceil(offsets.len() / lanes) * cg * lanes` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_pixel_panels<S: Simd, X: PixelValues>(
    s: S,
    x: X,
    offsets: &[isize],
    c0: usize,
    cg: usize,
    ics: usize,
    lanes: usize,
    pad: f32,
    out: &mut [f32],
) {
    for (panel, offs) in offsets.chunks(lanes).enumerate() {
        let dst = &mut out[panel * cg * lanes..(panel + 1) * cg * lanes];
        if ics == 1 {
            pack_channel_contiguous(s, x, offs, c0, cg, lanes, pad, dst);
        } else {
            pack_pixel_contiguous(s, x, offs, c0, cg, ics, lanes, pad, dst);
        }
    }
}

/// NHWC: each pixel's `cg` channels are contiguous; transpose them into the panel, in
/// blocks of 8 pixels by 8 channels by the tier's register shuffles
/// ([`Simd::transpose_8x8`]; a value at a time, one strided write each, ran at about 4 cycles
/// per value, and scalar 8 x 8 blocks at about 3).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_channel_contiguous<S: Simd, X: PixelValues>(
    s: S,
    x: X,
    offs: &[isize],
    c0: usize,
    cg: usize,
    lanes: usize,
    pad: f32,
    dst: &mut [f32],
) {
    const B: usize = 8;
    if offs.len() < lanes {
        dst.fill(pad);
    }
    for (block_index, block) in offs.chunks(B).enumerate() {
        let lane0 = block_index * B;
        if block.len() == B && block.iter().all(|&o| o != PADDED) {
            // Loops, not `std::array::from_fn`: its closure was compiled out of line (a fifth
            // of the time of NHWC 16 -> 1 at 112x112, Xeon Ice Lake).
            let mut src: [X; B] = [x.sub(0, 0); B];
            for (row, &offset) in src.iter_mut().zip(block) {
                *row = x.sub(offset as usize + c0, cg);
            }
            // bf16 rows are widened into here, 8 values each, before the transposition.
            let mut stage = [[0.0f32; B]; B];
            let mut c = 0;
            while c + B <= cg {
                // The last write of the block, (c + 7) * lanes + lane0 + 7, is inside dst.
                let out = &mut dst[c * lanes + lane0..(c + B - 1) * lanes + lane0 + B];
                let mut rows = [std::ptr::null(); B];
                for ((p, row), stage) in rows.iter_mut().zip(&src).zip(stage.iter_mut()) {
                    *p = row.eight_f32(c, stage);
                }
                // SAFETY: each row pointer addresses 8 values (`eight_f32` checked them
                // against its source row, or staged them); the writes at j * lanes + i,
                // i, j < 8, end inside `out` (sliced to the last one), a buffer apart from
                // the input and the stage.
                unsafe { s.transpose_8x8(rows, out.as_mut_ptr(), lanes) };
                c += B;
            }
            for c in c..cg {
                let out = &mut dst[c * lanes + lane0..][..B];
                for (o, row) in out.iter_mut().zip(&src) {
                    *o = row.value(c);
                }
            }
            continue;
        }
        for (i, &off) in block.iter().enumerate() {
            let lane = lane0 + i;
            if off == PADDED {
                for c in 0..cg {
                    dst[c * lanes + lane] = pad;
                }
            } else {
                let src = x.sub(off as usize + c0, cg);
                for c in 0..cg {
                    dst[c * lanes + lane] = src.value(c);
                }
            }
        }
    }
}

/// NCHW pixels that are one run of consecutive values of each channel plane (stride 1, no
/// padding, one image): packs all of the run's `lanes`-wide panels (`panel_len` values apart
/// in `out`) at once, a channel row at a time, so that the reads follow each plane in order.
/// Element `(panel, c, lane)` is `x[first + panel * lanes + lane + (c0 + c) * ics]`, and `pad`
/// past the run's `npix` pixels.
///
/// Panel by panel, each panel's rows were as many interleaved streams as channels, which the
/// prefetchers do not follow, and each row a `memcpy` call: NCHW 256 -> 64 at 56x56 spent half
/// of its time packing (Xeon Ice Lake, `perf`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_consecutive_pixels<S: Simd, X: PixelValues>(
    s: S,
    x: X,
    first: usize,
    npix: usize,
    c0: usize,
    rows: usize,
    ics: usize,
    lanes: usize,
    panel_len: usize,
    pad: f32,
    out: &mut [f32],
) {
    for c in 0..rows {
        let run = x.sub(first + (c0 + c) * ics, npix);
        for panel in 0..npix.div_ceil(lanes) {
            let src = run.sub(panel * lanes, lanes.min(npix - panel * lanes));
            let dst = &mut out[panel * panel_len + c * lanes..][..lanes];
            copy_row(s, src, dst, pad);
        }
    }
}

/// [`pack_consecutive_pixels`] straight into bf16 pairs (the layout [`pair_panel_in_place`]
/// makes of its f32 panels, without the f32 pass): pair row `p` of each panel holds channels
/// `c0 + 2p` (low halves) and `c0 + 2p + 1` (high halves, zero past `rows`) of its pixels,
/// zero slots past the run's `npix` pixels; `panel_len` slots apart.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_consecutive_pairs<S: Simd>(
    s: S,
    x: &[bf16],
    first: usize,
    npix: usize,
    c0: usize,
    rows: usize,
    ics: usize,
    lanes: usize,
    panel_len: usize,
    out: &mut [f32],
) {
    let simd_lanes = S::F32::LANES;
    for p in 0..rows.div_ceil(2) {
        let even = x.sub(first + (c0 + 2 * p) * ics, npix);
        let odd = (2 * p + 1 < rows).then(|| x.sub(first + (c0 + 2 * p + 1) * ics, npix));
        if lanes < simd_lanes {
            pair_short_panels(s, even, odd, lanes, panel_len, &mut out[p * lanes..]);
            continue;
        }
        for panel in 0..npix.div_ceil(lanes) {
            let start = panel * lanes;
            let n = lanes.min(npix - start);
            let dst = &mut out[panel * panel_len + p * lanes..][..lanes];
            let (head, tail) = dst.split_at_mut(n);
            let mut i = 0;
            while i < n {
                let valid = (n - i).min(simd_lanes);
                // SAFETY: values start + i..start + i + valid are inside both runs (npix
                // long), and slots i..i + valid inside `head` (n long).
                unsafe {
                    let pair = load_pairs(s, even, odd, start + i, valid);
                    if valid == simd_lanes {
                        pair.store(head.as_mut_ptr().add(i));
                    } else {
                        pair.store_first(head.as_mut_ptr().add(i), valid);
                    }
                }
                i += valid;
            }
            tail.fill(0.0);
        }
    }
}

/// Copies `src` into the start of `dst` (at least as long) a register at a time, and fills
/// the rest of `dst` with `pad`.
#[inline(always)]
fn copy_row<S: Simd, X: PixelValues>(s: S, src: X, dst: &mut [f32], pad: f32) {
    let lanes = S::F32::LANES;
    let (head, tail) = dst.split_at_mut(src.len());
    let mut i = 0;
    while i + lanes <= src.len() {
        // SAFETY: values i..i + lanes are inside `src` and inside `head`, which is as long.
        unsafe { src.load(s, i).store(head.as_mut_ptr().add(i)) };
        i += lanes;
    }
    let rest = src.len() - i;
    if rest > 0 {
        // A part register by masked moves where the tier has them: a short slice copy was a
        // `memcpy` call per channel row (NCHW pixel-row panels of 6 pixels, Xeon Ice Lake).
        // SAFETY: values i..src.len() are inside `src` and inside `head`, which is as long.
        unsafe { src.load_first(s, i, rest).store_first(head.as_mut_ptr().add(i), rest) };
    }
    tail.fill(pad);
}

/// NCHW: each channel is a plane; copy runs of consecutive pixels row by row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_pixel_contiguous<S: Simd, X: PixelValues>(
    s: S,
    x: X,
    offs: &[isize],
    c0: usize,
    cg: usize,
    ics: usize,
    lanes: usize,
    pad: f32,
    dst: &mut [f32],
) {
    // The panel's pixels (all of its lanes, or the first of a last panel) evenly spaced.
    let n = offs.len();
    if let Some(d) = uniform_spacing(offs, n) {
        let first = offs[0] as usize;
        for c in 0..cg {
            let src = first + (c0 + c) * ics;
            // d is 0 for a one-lane panel: a copy of one value per row.
            if d <= 1 {
                // Stride 1 and no padding across the panel: straight row copies.
                copy_row(s, x.sub(src, n), &mut dst[c * lanes..(c + 1) * lanes], pad);
                continue;
            }
            // A strided row of one output line (stride d, no padding): a strided copy per
            // channel, with one bounds check per row.
            let (row, tail) = dst[c * lanes..(c + 1) * lanes].split_at_mut(n);
            x.sub(src, (n - 1) * d + 1).every_nth_into(d, row);
            tail.fill(pad);
        }
        return;
    }
    for c in 0..cg {
        let row = &mut dst[c * lanes..(c + 1) * lanes];
        let base = (c0 + c) * ics;
        for (lane, v) in row.iter_mut().enumerate() {
            *v = match offs.get(lane) {
                Some(&o) if o != PADDED => x.value(o as usize + base),
                _ => pad,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::portable::Portable;
    use crate::kernels::simd::WithSimd;

    /// `[K, C]` weights whose value names its position: `k * 1000 + c`.
    fn named_weights(k: usize, c: usize) -> Vec<f32> {
        (0..k * c).map(|i| ((i / c) * 1000 + i % c) as f32).collect()
    }

    #[test]
    fn weight_panels_hold_every_weight_once_and_pad_the_rest() {
        for k_group in [1, 2, 4] {
            for (groups, kg, cg, lanes) in [
                (1, 8, 5, 8),
                (2, 13, 3, 4),
                (3, 1, 7, 16),
                (1, 33, 1, 32),
                (2, 5, 131, 4),
            ] {
                let w = named_weights(groups * kg, cg);
                let format = PackedFormat {
                    lanes,
                    k_group,
                    bf16: false,
                };
                let p = pack_weight_panels(&w, groups, kg, cg, format, -1.0);
                let panel_len = format.panel_len(cg);
                assert_eq!(p.data.len(), groups * kg.div_ceil(lanes) * panel_len);
                let mut seen = 0;
                for g in 0..groups {
                    for panel in 0..p.panels {
                        let base = (g * p.panels + panel) * panel_len;
                        assert_eq!(p.panel_ptr(g, panel), p.data[base..].as_ptr());
                        for c in 0..cg.div_ceil(k_group) * k_group {
                            for lane in 0..lanes {
                                let v = p.data[base + format.index(c, lane)];
                                let k = panel * lanes + lane;
                                if k < kg && c < cg {
                                    assert_eq!(v, ((g * kg + k) * 1000 + c) as f32, "{format:?} g{g} k{k} c{c}");
                                    seen += 1;
                                } else {
                                    assert_eq!(v, -1.0, "{format:?} padding at g{g} k{k} c{c}");
                                }
                            }
                        }
                    }
                }
                assert_eq!(seen, w.len());
            }
        }
    }

    #[test]
    fn grouped_formats_keep_k_group_steps_side_by_side() {
        let f = PackedFormat {
            lanes: 4,
            k_group: 2,
            bf16: false,
        };
        // Steps 0 and 1 of lane 0, then steps 0 and 1 of lane 1, ...
        assert_eq!(
            [f.index(0, 0), f.index(1, 0), f.index(0, 1), f.index(1, 1)],
            [0, 1, 2, 3]
        );
        assert_eq!(f.index(2, 0), 8);
        assert_eq!(f.panel_len(3), 16);
        let f1 = PackedFormat::f32(8);
        assert_eq!((f1.index(3, 5), f1.panel_len(3)), (29, 24));
    }

    #[test]
    fn pixel_panels_gather_strided_pixels_and_pad() {
        // NCHW, 2 channels of a 1 x 6 image; pixels 0, 2, padding, 5, and one lane past the end.
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let offsets = [0, 2, PADDED, 5];
        for (ics, lanes) in [(6, 4), (6, 5), (6, 3)] {
            let panels = offsets.len().div_ceil(lanes);
            let mut out = vec![f32::NAN; panels * 2 * lanes];
            pack_pixel_panels(Portable::TOKEN, &x[..], &offsets, 0, 2, ics, lanes, 7.5, &mut out);
            for (i, &o) in offsets.iter().enumerate() {
                let (panel, lane) = (i / lanes, i % lanes);
                for c in 0..2 {
                    let want = if o == PADDED { 7.5 } else { x[o as usize + c * ics] };
                    assert_eq!(
                        out[(panel * 2 + c) * lanes + lane],
                        want,
                        "lanes {lanes} pixel {i} c{c}"
                    );
                }
            }
            for i in offsets.len()..panels * lanes {
                let (panel, lane) = (i / lanes, i % lanes);
                assert_eq!(out[(panel * 2) * lanes + lane], 7.5);
                assert_eq!(out[(panel * 2 + 1) * lanes + lane], 7.5);
            }
        }
        // NHWC: channels contiguous; group offset c0.
        let offsets = [0, 4, PADDED];
        let mut out = vec![f32::NAN; 2 * 4];
        pack_pixel_panels(Portable::TOKEN, &x[..], &offsets, 1, 2, 1, 4, 0.0, &mut out);
        assert_eq!(out, [1.0, 5.0, 0.0, 0.0, 2.0, 6.0, 0.0, 0.0]);
    }

    /// Packs NHWC panels with tier `S` (inside its `#[target_feature]` entry) and checks every
    /// value.
    struct CheckPixelPanels;

    impl WithSimd for CheckPixelPanels {
        type Output = ();
        fn with_simd<S: Simd>(self, s: S) {
            // 40 pixels of 30 channels; the panel reads channels 3..3 + cg of some of them.
            let x: Vec<f32> = (0..40 * 30).map(|v| v as f32).collect();
            for (cg, lanes) in [(19, 24), (8, 16), (3, 8), (27, 32), (16, 64)] {
                let mut offsets: Vec<isize> = (0..lanes as isize + 5).map(|p| (p * 37 % 40) * 30).collect();
                offsets[2] = PADDED;
                offsets[lanes + 1] = PADDED;
                let panels = offsets.len().div_ceil(lanes);
                let mut out = vec![f32::NAN; panels * cg * lanes];
                pack_pixel_panels(s, &x[..], &offsets, 3, cg, 1, lanes, -2.0, &mut out);
                for i in 0..panels * lanes {
                    let (panel, lane) = (i / lanes, i % lanes);
                    for c in 0..cg {
                        let want = match offsets.get(i) {
                            Some(&o) if o != PADDED => x[o as usize + 3 + c],
                            _ => -2.0,
                        };
                        assert_eq!(
                            out[(panel * cg + c) * lanes + lane],
                            want,
                            "{}: cg {cg} lanes {lanes} pixel {i} c{c}",
                            S::KERNEL.name()
                        );
                    }
                }
            }
            // NCHW runs: 5 planes of 100 pixels; a run of `npix` pixels from pixel 7 of
            // channels 1..1 + rows, into panels `panel_len` apart (longer than a panel's rows).
            for (npix, lanes, rows) in [
                (64usize, 32usize, 4usize),
                (70, 32, 3),
                (23, 7, 4),
                (5, 8, 2),
                (33, 16, 1),
                (1, 1, 4),
            ] {
                let panels = npix.div_ceil(lanes);
                let panel_len = rows * lanes + 3;
                let mut out = vec![f32::NAN; panels * panel_len];
                let x: Vec<f32> = (0..500).map(|v| v as f32).collect();
                pack_consecutive_pixels(s, &x[..], 7, npix, 1, rows, 100, lanes, panel_len, -2.0, &mut out);
                for i in 0..panels * lanes {
                    let (panel, lane) = (i / lanes, i % lanes);
                    for c in 0..rows {
                        let want = if i < npix { x[7 + i + (1 + c) * 100] } else { -2.0 };
                        let at = panel * panel_len + c * lanes + lane;
                        assert_eq!(
                            out[at],
                            want,
                            "{}: npix {npix} lanes {lanes} pixel {i} c{c}",
                            S::KERNEL.name()
                        );
                    }
                }
                // Past each panel's rows nothing is written.
                for panel in 0..panels {
                    assert!(out[panel * panel_len + rows * lanes..][..3].iter().all(|v| v.is_nan()));
                }
            }
            // A bf16 input packs as its widened f32 values do, through every branch: NHWC
            // transpositions and tails, NCHW runs, strided rows and gathers, padding.
            let x16: Vec<bf16> = (0..2000).map(|v| bf16::from_f32(v as f32 * 0.37 - 300.0)).collect();
            let x32: Vec<f32> = x16.iter().map(|&v| widen(v)).collect();
            let (x16, x32) = (&x16[..], &x32[..]);
            for (cg, lanes, ics, spacing) in [
                (19, 24, 1, 30),
                (16, 64, 1, 21),
                (3, 8, 1, 3),
                (4, 16, 100, 1),
                (5, 6, 100, 1),
                (3, 7, 100, 2),
                (2, 5, 100, 3),
            ] {
                for padded_at in [None, Some(1)] {
                    let mut offsets: Vec<isize> = (0..lanes as isize + 3).map(|p| p * spacing).collect();
                    if let Some(at) = padded_at {
                        offsets[at] = PADDED;
                    }
                    let panels = offsets.len().div_ceil(lanes);
                    let (mut from16, mut from32) =
                        (vec![f32::NAN; panels * cg * lanes], vec![0.0; panels * cg * lanes]);
                    pack_pixel_panels(s, x16, &offsets, 2, cg, ics, lanes, -2.0, &mut from16);
                    pack_pixel_panels(s, x32, &offsets, 2, cg, ics, lanes, -2.0, &mut from32);
                    let same = from16.iter().zip(&from32).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{}: bf16, cg {cg} lanes {lanes} ics {ics}", S::KERNEL.name());
                }
            }
            for (npix, lanes, rows) in [
                (64usize, 32usize, 4usize),
                (23, 7, 4),
                (5, 8, 2),
                (33, 16, 1),
                (31, 6, 3),
            ] {
                let len = npix.div_ceil(lanes) * rows * lanes;
                let (mut from16, mut from32) = (vec![f32::NAN; len], vec![0.0; len]);
                pack_consecutive_pixels(s, x16, 7, npix, 1, rows, 100, lanes, rows * lanes, -2.0, &mut from16);
                pack_consecutive_pixels(s, x32, 7, npix, 1, rows, 100, lanes, rows * lanes, -2.0, &mut from32);
                let same = from16.iter().zip(&from32).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{}: bf16 runs, npix {npix} lanes {lanes}", S::KERNEL.name());
            }
        }
    }

    #[test]
    fn pixel_panels_transpose_nhwc_blocks_and_copy_nchw_runs_on_every_tier() {
        Portable::TOKEN.vectorize(CheckPixelPanels);
        let mut ran = 1;
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::x86_64::{avx2::Avx2, avx512::Avx512, avx512_bf16::Avx512Bf16};
            ran += Avx512Bf16::try_new()
                .map(|s| s.vectorize(CheckPixelPanels))
                .into_iter()
                .count();
            ran += Avx2::try_new()
                .map(|s| s.vectorize(CheckPixelPanels))
                .into_iter()
                .count();
            ran += Avx512::try_new()
                .map(|s| s.vectorize(CheckPixelPanels))
                .into_iter()
                .count();
        }
        #[cfg(target_arch = "aarch64")]
        {
            use crate::kernels::aarch64::{neon::Neon, neon_bf16::NeonBf16};
            ran += Neon::try_new()
                .map(|s| s.vectorize(CheckPixelPanels))
                .into_iter()
                .count();
            ran += NeonBf16::try_new()
                .map(|s| s.vectorize(CheckPixelPanels))
                .into_iter()
                .count();
        }
        // Every tier this CPU has ran (scripts/test.sh runs this on each tier, under qemu).
        let tiers = crate::dispatch::available_kernels();
        assert_eq!(
            ran,
            tiers.iter().filter(|k| !crate::kernels::tiles(**k).is_empty()).count()
        );
    }

    #[test]
    fn pixel_panels_narrow_into_bf16_pairs_in_place() {
        // Values that name their place (step, lane), all bf16 values (integers to 256).
        for rows in [1, 2, 3, 6, 7] {
            for lanes in [1, 5, 16, 32] {
                let value = |c: usize, l: usize| (c * 32 + l + 1) as f32;
                let mut panel = vec![f32::NAN; rows * lanes + 3];
                for c in 0..rows {
                    for l in 0..lanes {
                        panel[c * lanes + l] = value(c, l);
                    }
                }
                pair_panel_in_place(&mut panel, rows, lanes);
                for p in 0..rows.div_ceil(2) {
                    for l in 0..lanes {
                        let bits = panel[p * lanes + l].to_bits();
                        let (even, odd) = (f32::from_bits(bits << 16), f32::from_bits(bits & 0xFFFF_0000));
                        assert_eq!(even, value(2 * p, l), "rows {rows} lanes {lanes} ({p}, {l})");
                        let want_odd = if 2 * p + 1 < rows { value(2 * p + 1, l) } else { 0.0 };
                        assert_eq!(odd, want_odd, "rows {rows} lanes {lanes} ({p}, {l})");
                    }
                }
                // Nothing past the panel's rows is written.
                assert!(panel[rows * lanes..].iter().all(|v| v.is_nan()));
            }
        }
    }

    #[test]
    fn weight_panels_of_bf16_pairs_hold_each_pair_in_one_slot() {
        let (k, cg) = (5, 7);
        let weights: Vec<f32> = (0..k * cg).map(|i| (i + 1) as f32).collect();
        let format = PackedFormat::bf16_pairs(4);
        let panels = pack_weight_panels(&weights, 1, k, cg, format, 0.0);
        assert_eq!(format.panel_len(cg), 4 * 4);
        assert_eq!(panels.data.len(), 2 * format.panel_len(cg));
        for panel in 0..2 {
            let p = panels.panel_ptr(0, panel);
            for pair in 0..4 {
                for lane in 0..4 {
                    // SAFETY: inside the panel (pair < 4 rows of 4 lanes).
                    let bits = unsafe { *p.add(pair * 4 + lane) }.to_bits();
                    let kk = panel * 4 + lane;
                    let w = |c: usize| if kk < k && c < cg { weights[kk * cg + c] } else { 0.0 };
                    assert_eq!(f32::from_bits(bits << 16), w(2 * pair), "{panel} {pair} {lane}");
                    assert_eq!(
                        f32::from_bits(bits & 0xFFFF_0000),
                        w(2 * pair + 1),
                        "{panel} {pair} {lane}"
                    );
                }
            }
        }
    }

    #[test]
    fn uniform_spacing_needs_a_full_unpadded_panel() {
        assert_eq!(uniform_spacing(&[3, 5, 7, 9], 4), Some(2));
        assert_eq!(uniform_spacing(&[3, 5, 7], 4), None);
        assert_eq!(uniform_spacing(&[3, PADDED, 7, 9], 4), None);
        assert_eq!(uniform_spacing(&[3, 5, 8, 9], 4), None);
        assert_eq!(uniform_spacing(&[4], 1), Some(0));
    }

    #[test]
    fn pixel_offsets_follow_the_pixel_map_from_any_start() {
        use crate::conv::{Conv1x1, InputDims, Layout, Padding};
        for layout in [Layout::Nchw, Layout::Nhwc] {
            for (stride, pad) in [(1, 0), (2, 1), (3, 2)] {
                let conv = Conv1x1::new(3, 4)
                    .with_layout(layout)
                    .with_stride(stride, stride)
                    .with_padding(Padding::uniform(pad));
                let dims = InputDims::new(3, 5, 7);
                let input = conv.input_len(dims).unwrap();
                let output = conv.output_dims(dims).unwrap().len().unwrap();
                let g = Geometry::new(&conv, dims, input, None, output).unwrap().unwrap();
                let total = g.n * g.p;
                for j0 in 0..total {
                    let mut offs = vec![0isize; total - j0];
                    pixel_offsets(&g, j0, &mut offs);
                    for (i, &o) in offs.iter().enumerate() {
                        let want = g.input_pixel_offset(j0 + i).map_or(PADDED, |v| v as isize);
                        assert_eq!(o, want, "{layout:?} stride {stride} pad {pad} j0 {j0} i {i}");
                    }
                }
            }
        }
    }
}

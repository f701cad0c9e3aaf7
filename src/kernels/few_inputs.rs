//! The few-inputs loops: dense layers of one group with at most [`FEW_INPUTS_MAX_C`] input
//! channels (image stems, channel-expanding layers after a 1- to 4-channel input), written
//! once on top of [`Simd`] and compiled into each tier's entry point.
//!
//! With `C <= 4` a register tile does `C` multiply-adds per output register, so the register
//! tiles' fixed costs per tile (the pixel panel, the store's place and mode, the epilogue's
//! setup) outweigh their arithmetic, and a tile over 8 or 16 output channels leaves most of
//! its steps unused. These loops keep a block of output channels' weights, bias and slopes in
//! registers and stream the pixels past them: per output register, `C` multiply-adds (a fused
//! chain from zero in channel order, then bias, residual and activation: the bits of every
//! register tile), and one store straight into the output.
//! - NCHW ([`few_inputs_planes`]): lanes are consecutive pixels; a register of each input
//!   channel plane feeds a block of output channel planes.
//! - NHWC ([`few_inputs_rows`]): lanes are consecutive output channels; each pixel's `C`
//!   inputs are broadcast against registers of `W^T`.
use super::simd::{register_epilogue, store_register, Simd, SimdF32};
use crate::epilogue::Activation;

/// The most input channels the few-inputs loops take.
pub(crate) const FEW_INPUTS_MAX_C: usize = 4;

/// Pixels per chunk: a chunk's inputs (at most `4 * 4 * 1024` bytes) stay in L1 while every
/// block of output channels streams past them.
const CHUNK_PIXELS: usize = 1024;

/// Output channels per block of the NCHW loop: `4 * C` weights, 4 biases and slopes, `C`
/// input registers and the sums fit AVX-512's and NEON's 32 registers.
const PLANE_ROWS: usize = 4;

/// Registers of output channels per block of the NHWC loop (as [`PLANE_ROWS`]).
const ROW_VECTORS: usize = 4;

/// The operands of a run of consecutive pixels of one image (see [`few_inputs_planes`] and
/// [`few_inputs_rows`]).
#[derive(Clone, Copy)]
pub(crate) struct FewInputsRun {
    /// Input channel 0 of the run's first pixel.
    pub x: *const f32,
    /// NCHW: the distance between input channel planes (`H * W`); NHWC: unused.
    pub x_plane: usize,
    /// Output channel 0 of the run's first pixel, and the residual's (output-shaped), or null;
    /// the residual may be the output itself (each value is read just before it is stored).
    pub y: *mut f32,
    pub residual: *const f32,
    /// NCHW: the distance between output channel planes; NHWC: unused.
    pub y_plane: usize,
    pub pixels: usize,
    /// Output channels `K`.
    pub k: usize,
    /// NCHW: `W`, `K` rows of `C`; NHWC: `W^T`, `C` rows of `k_padded` (zeros past `K`).
    pub weights: *const f32,
    /// NHWC: `K` rounded up to whole registers.
    pub k_padded: usize,
    /// Per output channel (NHWC: `k_padded` values), or null.
    pub bias: *const f32,
    pub slope: *const f32,
}

/// Computes an NCHW run with `C` input channels: output channel `k` of pixel `i` at
/// `y + k * y_plane + i` from the inputs at `x + c * x_plane + i`.
///
/// # Safety
/// The input planes hold `pixels` values from `x` for each of the `C` channels; the output
/// (and the residual, when not null) `pixels` values from `y` in each of the `K` planes;
/// `weights` `K * C` values; `bias` and `slope`, when not null, `K`.
#[inline(always)]
pub(crate) unsafe fn few_inputs_planes<S: Simd, const C: usize>(s: S, run: &FewInputsRun, act: Activation) {
    // The common activations as constants, so that the epilogue of each register inlines
    // without a branch on the activation (it is as much work as the multiply-adds here).
    // SAFETY (each arm): forwarded contract.
    match act {
        Activation::Identity => unsafe { planes_with::<S, C>(s, run, Activation::Identity) },
        Activation::Relu => unsafe { planes_with::<S, C>(s, run, Activation::Relu) },
        act => unsafe { planes_with::<S, C>(s, run, act) },
    }
}

/// [`few_inputs_planes`] with the activation given apart (a constant where the caller matched
/// it): chunks of pixels, and in each, blocks of [`PLANE_ROWS`] output channels, then one
/// block of the 1 to 3 channels left (so that each register of inputs feeds every channel of
/// a group with up to 4 output channels).
///
/// # Safety
/// As [`few_inputs_planes`].
#[inline(always)]
unsafe fn planes_with<S: Simd, const C: usize>(s: S, run: &FewInputsRun, act: Activation) {
    for p0 in (0..run.pixels).step_by(CHUNK_PIXELS) {
        let pn = (run.pixels - p0).min(CHUNK_PIXELS);
        let mut k0 = 0;
        // SAFETY (every call): channels k0.. of the chunk's pixels p0..p0 + pn, inside the
        // run (the caller's contract).
        while k0 + PLANE_ROWS <= run.k {
            unsafe { plane_rows::<S, C, PLANE_ROWS>(s, run, act, p0, pn, k0) };
            k0 += PLANE_ROWS;
        }
        match run.k - k0 {
            1 => unsafe { plane_rows::<S, C, 1>(s, run, act, p0, pn, k0) },
            2 => unsafe { plane_rows::<S, C, 2>(s, run, act, p0, pn, k0) },
            3 => unsafe { plane_rows::<S, C, 3>(s, run, act, p0, pn, k0) },
            _ => {}
        }
    }
}

/// Output channels `k0..k0 + R` of pixels `p0..p0 + pn` of an NCHW run: whole registers of
/// pixels, then the partial last one.
///
/// # Safety
/// As [`few_inputs_planes`], with those channels and pixels inside the run.
#[inline(always)]
unsafe fn plane_rows<S: Simd, const C: usize, const R: usize>(
    s: S,
    run: &FewInputsRun,
    act: Activation,
    p0: usize,
    pn: usize,
    k0: usize,
) {
    let lanes = S::F32::LANES;
    // SAFETY (weights, bias, slopes): rows k0..k0 + R of K (the caller's contract).
    let block = PlaneBlock::<S, C, R> {
        w: std::array::from_fn(|r| std::array::from_fn(|c| s.splat(unsafe { *run.weights.add((k0 + r) * C + c) }))),
        bias: std::array::from_fn(|r| (!run.bias.is_null()).then(|| s.splat(unsafe { *run.bias.add(k0 + r) }))),
        slope: std::array::from_fn(|r| {
            if run.slope.is_null() {
                s.zero()
            } else {
                s.splat(unsafe { *run.slope.add(k0 + r) })
            }
        }),
    };
    let whole = pn / lanes * lanes;
    let mut i = 0;
    // SAFETY (both): pixels p0 + i.. of the chunk, rows k0..k0 + R (the caller's contract).
    while i < whole {
        unsafe { plane_step(s, run, act, &block, k0, p0 + i, lanes) };
        i += lanes;
    }
    if i < pn {
        unsafe { plane_step(s, run, act, &block, k0, p0 + i, pn - i) };
    }
}

/// The weights, biases and slopes of a block of `R` output channels, in registers.
struct PlaneBlock<S: Simd, const C: usize, const R: usize> {
    w: [[S::F32; C]; R],
    bias: [Option<S::F32>; R],
    slope: [S::F32; R],
}

/// One register of `n` pixels from `at` for each output channel of a block.
///
/// # Safety
/// As [`plane_rows`], for pixels `at..at + n` (`n <= LANES`).
#[inline(always)]
unsafe fn plane_step<S: Simd, const C: usize, const R: usize>(
    s: S,
    run: &FewInputsRun,
    act: Activation,
    block: &PlaneBlock<S, C, R>,
    k0: usize,
    at: usize,
    n: usize,
) {
    let lanes = S::F32::LANES;
    // SAFETY: pixels at..at + n of each input plane (the caller's contract).
    let xv: [S::F32; C] = std::array::from_fn(|c| unsafe {
        let p = run.x.add(c * run.x_plane + at);
        if n == lanes {
            s.load(p)
        } else {
            s.load_first(p, n)
        }
    });
    for r in 0..R {
        let mut acc = s.zero();
        for (&w, &x) in block.w[r].iter().zip(&xv) {
            acc = S::F32::mul_add(w, x, acc);
        }
        let out = (k0 + r) * run.y_plane + at;
        let residual = if run.residual.is_null() {
            std::ptr::null()
        } else {
            run.residual.wrapping_add(out)
        };
        // SAFETY: n values of plane k0 + r from pixel `at`, in the output and the residual.
        unsafe {
            let z = register_epilogue(s, acc, block.bias[r], residual, n, act, block.slope[r]);
            store_register::<S>(z, run.y.add(out), n);
        }
    }
}

/// Computes an NHWC run with `C` input channels: output channel `k` of pixel `i` at
/// `y + i * K + k` from the inputs at `x + i * C + c`.
///
/// # Safety
/// `x` holds `pixels * C` values; the output (and the residual, when not null)
/// `pixels * K`; `weights` `C * k_padded`; `bias` and `slope`, when not null, `k_padded`,
/// with `k_padded` a multiple of `LANES` of at least `K`.
#[inline(always)]
pub(crate) unsafe fn few_inputs_rows<S: Simd, const C: usize>(s: S, run: &FewInputsRun, act: Activation) {
    // SAFETY (each arm): forwarded contract.
    match act {
        Activation::Identity => unsafe { rows_with::<S, C>(s, run, Activation::Identity) },
        Activation::Relu => unsafe { rows_with::<S, C>(s, run, Activation::Relu) },
        act => unsafe { rows_with::<S, C>(s, run, act) },
    }
}

/// [`few_inputs_rows`] with the activation given apart: chunks of pixels, and in each, blocks
/// of [`ROW_VECTORS`] registers of output channels, then one block of the 1 to 3 whole
/// registers left, then the partial last register.
///
/// # Safety
/// As [`few_inputs_rows`].
#[inline(always)]
unsafe fn rows_with<S: Simd, const C: usize>(s: S, run: &FewInputsRun, act: Activation) {
    let lanes = S::F32::LANES;
    let whole = run.k / lanes;
    for p0 in (0..run.pixels).step_by(CHUNK_PIXELS) {
        let pn = (run.pixels - p0).min(CHUNK_PIXELS);
        let mut v0 = 0;
        // SAFETY (all three): registers v0.. of the chunk's pixels, inside the run.
        while v0 + ROW_VECTORS <= whole {
            unsafe { row_vectors::<S, C, ROW_VECTORS>(s, run, act, p0, pn, v0, lanes) };
            v0 += ROW_VECTORS;
        }
        match whole - v0 {
            1 => unsafe { row_vectors::<S, C, 1>(s, run, act, p0, pn, v0, lanes) },
            2 => unsafe { row_vectors::<S, C, 2>(s, run, act, p0, pn, v0, lanes) },
            3 => unsafe { row_vectors::<S, C, 3>(s, run, act, p0, pn, v0, lanes) },
            _ => {}
        }
        if whole * lanes < run.k {
            unsafe { row_vectors::<S, C, 1>(s, run, act, p0, pn, whole, run.k - whole * lanes) };
        }
    }
}

/// Registers `v0..v0 + V` of output channels (the last holding `n` valid lanes) of pixels
/// `p0..p0 + pn` of an NHWC run.
///
/// # Safety
/// As [`few_inputs_rows`], with those registers (`(v0 + V - 1) * LANES + n <= K`) and pixels
/// inside the run.
#[inline(always)]
unsafe fn row_vectors<S: Simd, const C: usize, const V: usize>(
    s: S,
    run: &FewInputsRun,
    act: Activation,
    p0: usize,
    pn: usize,
    v0: usize,
    n: usize,
) {
    let lanes = S::F32::LANES;
    let k = run.k;
    // SAFETY (weights, bias, slopes): registers v0..v0 + V of rows of k_padded values (the
    // caller's contract).
    let w: [[S::F32; V]; C] = std::array::from_fn(|c| {
        std::array::from_fn(|v| unsafe { s.load(run.weights.add(c * run.k_padded + (v0 + v) * lanes)) })
    });
    let channel = |p: *const f32, v: usize| (!p.is_null()).then(|| unsafe { s.load(p.add((v0 + v) * lanes)) });
    let bias: [Option<S::F32>; V] = std::array::from_fn(|v| channel(run.bias, v));
    let slope: [S::F32; V] = std::array::from_fn(|v| channel(run.slope, v).unwrap_or(s.zero()));
    for i in p0..p0 + pn {
        // SAFETY: pixel i's C inputs (the caller's contract).
        let xs: [S::F32; C] = std::array::from_fn(|c| s.splat(unsafe { *run.x.add(i * C + c) }));
        for v in 0..V {
            let mut acc = s.zero();
            for c in 0..C {
                acc = S::F32::mul_add(xs[c], w[c][v], acc);
            }
            let valid = if v + 1 == V { n } else { lanes };
            let out = i * k + (v0 + v) * lanes;
            let residual = if run.residual.is_null() {
                std::ptr::null()
            } else {
                run.residual.wrapping_add(out)
            };
            // SAFETY: `valid` output channels of pixel i from (v0 + v) * LANES, in the output
            // and the residual.
            unsafe {
                let z = register_epilogue(s, acc, bias[v], residual, valid, act, slope[v]);
                store_register::<S>(z, run.y.add(out), valid);
            }
        }
    }
}

//! The few-outputs loop: dense NCHW layers of one group with at most [`FEW_OUTPUTS_MAX_K`]
//! output channels (heads that map many channels to a mask, a depth or a few classes per
//! pixel), written once on top of [`Simd`] and compiled into each tier's entry point.
//!
//! The register tiles have 1 and 4 rows of output channels, so `K = 2` or `3` ran a 4-row
//! tile with a quarter to half of its multiply-adds on padding rows. This loop keeps `K`
//! rows (a constant from 1 to 4) of [`BLOCK_VECTORS`] registers of consecutive pixels as
//! accumulators, reads each input channel plane's block in place (one load per register and
//! channel, the weights as broadcasts), and runs the fused chain from zero in channel order,
//! then bias, residual and activation: the bits of every register tile.
use super::simd::{register_epilogue, store_register, Simd, SimdF32};
use crate::epilogue::Activation;

/// The most output channels the few-outputs loop takes.
pub(crate) const FEW_OUTPUTS_MAX_K: usize = 4;

/// Registers of pixels per block: `4 K` accumulators, 4 input registers and `K` weights
/// stay within 16 registers for `K <= 2` and 32 for `K <= 4`, and a step's 4 loads and `K`
/// broadcasts feed `4 K` multiply-adds.
const BLOCK_VECTORS: usize = 4;

/// The operands of a run of consecutive pixels of one NCHW image (see [`few_outputs_planes`]).
#[derive(Clone, Copy)]
pub(crate) struct FewOutputsRun {
    /// Input channel 0 of the run's first pixel; channel `c` is `c * plane` further.
    pub x: *const f32,
    /// Input channels `C`.
    pub c: usize,
    /// Output channel 0 of the run's first pixel; channel `k` is `k * plane` further (the
    /// residual's likewise, or null; it may be the output itself: each value is read just
    /// before it is stored).
    pub y: *mut f32,
    pub residual: *const f32,
    /// The distance between channel planes (`H * W`) of the input and of the output.
    pub plane: usize,
    pub pixels: usize,
    /// `W`, `K` rows of `C`.
    pub weights: *const f32,
    /// `K` values each, or null.
    pub bias: *const f32,
    pub slope: *const f32,
}

/// Computes an NCHW run with `K` output channels: output channel `k` of pixel `i` at
/// `y + k * plane + i` from the inputs at `x + c * plane + i`.
///
/// # Safety
/// The input planes hold `pixels` values from `x` for each of the `C` channels; the output
/// (and the residual, when not null) `pixels` values from `y` in each of the `K` planes;
/// `weights` `K * C` values; `bias` and `slope`, when not null, `K`.
#[inline(always)]
pub(crate) unsafe fn few_outputs_planes<S: Simd, const K: usize>(s: S, run: &FewOutputsRun, act: Activation) {
    let lanes = S::F32::LANES;
    let block = BLOCK_VECTORS * lanes;
    let whole_blocks = run.pixels / block * block;
    let whole_registers = run.pixels / lanes * lanes;
    let mut i = 0;
    // SAFETY (every call): registers of pixels i.. inside the run (the caller's contract).
    while i < whole_blocks {
        unsafe { few_outputs_block::<S, K, BLOCK_VECTORS>(s, run, act, i, lanes) };
        i += block;
    }
    while i < whole_registers {
        unsafe { few_outputs_block::<S, K, 1>(s, run, act, i, lanes) };
        i += lanes;
    }
    if i < run.pixels {
        unsafe { few_outputs_block::<S, K, 1>(s, run, act, i, run.pixels - i) };
    }
}

/// `V` registers of pixels from `at` (the last holding `n` valid lanes) for every output
/// channel of an NCHW run.
///
/// # Safety
/// As [`few_outputs_planes`], with pixels `at..at + (V - 1) * LANES + n` inside the run.
#[inline(always)]
unsafe fn few_outputs_block<S: Simd, const K: usize, const V: usize>(
    s: S,
    run: &FewOutputsRun,
    act: Activation,
    at: usize,
    n: usize,
) {
    let lanes = S::F32::LANES;
    let valid = |v: usize| if v + 1 == V { n } else { lanes };
    let mut acc = [[s.zero(); V]; K];
    for c in 0..run.c {
        // SAFETY: channel c's plane holds the block's pixels (the caller's contract).
        let xv: [S::F32; V] = std::array::from_fn(|v| unsafe {
            let p = run.x.add(c * run.plane + at + v * lanes);
            if valid(v) == lanes {
                s.load(p)
            } else {
                s.load_first(p, valid(v))
            }
        });
        for (k, row) in acc.iter_mut().enumerate() {
            // SAFETY: W holds K rows of C (the caller's contract).
            let w = s.splat(unsafe { *run.weights.add(k * run.c + c) });
            for (a, &x) in row.iter_mut().zip(&xv) {
                *a = S::F32::mul_add(w, x, *a);
            }
        }
    }
    for (k, row) in acc.iter().enumerate() {
        // SAFETY: K values of bias and slopes when not null (the caller's contract).
        let bias = (!run.bias.is_null()).then(|| s.splat(unsafe { *run.bias.add(k) }));
        let slope = if run.slope.is_null() {
            s.zero()
        } else {
            s.splat(unsafe { *run.slope.add(k) })
        };
        for (v, &sum) in row.iter().enumerate() {
            let out = k * run.plane + at + v * lanes;
            let residual = if run.residual.is_null() {
                std::ptr::null()
            } else {
                run.residual.wrapping_add(out)
            };
            // SAFETY: valid(v) values of plane k from the register's first pixel, in the
            // output and the residual.
            unsafe {
                let z = register_epilogue(s, sum, bias, residual, valid(v), act, slope);
                store_register::<S>(z, run.y.add(out), valid(v));
            }
        }
    }
}

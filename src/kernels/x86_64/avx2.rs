//! AVX2 + FMA tier: `__m256` (8 lanes), 16 ymm registers.
//!
//! Tile sizes. Two 256-bit FMA ports with a 4-5 cycle latency need at least 8-10 independent
//! accumulators. A 6 x 16 tile holds 12 accumulators, plus 2 B vectors and 1 broadcast:
//! 15 of the 16 registers, no spill. Per reduction step: 2 loads + 6 broadcasts per 12 FMAs.
//! The same shape serves both orientations. (4 x 24 tiles, 12 accumulators + 3 B vectors +
//! the broadcast, which AVX2 cannot fold into the FMA, fill all 16 registers and ran at half
//! speed here; 8 x 8 tiles, at one B vector per 8 FMAs, lost 20-40% to 6 x 16.)
// The trait methods below are one-intrinsic wrappers whose safety condition is the trait's
// (the tier's CPU features, valid pointers), so their bodies are not wrapped one by one.
#![allow(unsafe_op_in_unsafe_fn)]

use crate::dispatch::KernelId;
use crate::driver::{Job, TaskScratch, TileCall};
use crate::kernels::simd::SimdF32;
use crate::kernels::{tile_table, Tier};
use std::arch::x86_64::*;
use std::ops::Range;

#[derive(Clone, Copy)]
pub(crate) struct Ymm(__m256);

// SAFETY: only reached from `run`, which requires AVX2 and FMA; the pointer contracts are
// the trait's.
unsafe impl SimdF32 for Ymm {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Ymm(_mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Ymm(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable values.
        Ymm(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Ymm(_mm256_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Ymm(_mm256_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Ymm(_mm256_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Ymm(_mm256_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Ymm(_mm256_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn select_lt(self, t: Self, then: Self) -> Self {
        let m = _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, t.0);
        Ymm(_mm256_blendv_ps(self.0, then.0, m))
    }
    #[inline(always)]
    unsafe fn select_gt(self, t: Self, then: Self) -> Self {
        let m = _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, t.0);
        Ymm(_mm256_blendv_ps(self.0, then.0, m))
    }
    #[inline(always)]
    unsafe fn blend_lt(a: Self, b: Self, then: Self, otherwise: Self) -> Self {
        let m = _mm256_cmp_ps::<_CMP_LT_OQ>(a.0, b.0);
        Ymm(_mm256_blendv_ps(otherwise.0, then.0, m))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Ymm(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            self.0,
        ))
    }
    #[inline(always)]
    unsafe fn pow2i(self) -> Self {
        let n = _mm256_add_epi32(_mm256_cvtps_epi32(self.0), _mm256_set1_epi32(127));
        Ymm(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(n)))
    }
}

/// Entry point: the whole loop nest for a range of units, compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA (dispatch checks it); the job's contract is `run_units`'s.
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    // SAFETY: forwarded contract.
    unsafe { run_tile(job, units, scratch) }
}

unsafe fn run(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    // SAFETY: the plan only selects this tier when dispatch found AVX2 and FMA.
    unsafe { run_avx2(job, units, scratch) }
}

tile_table!(Ymm;
    0 => (WeightRows, 6 x 2),
    1 => (PixelRows, 6 x 2),
);

/// Entry point for one microkernel call (tests).
///
/// # Safety
/// As `driver::run_tile_call`; the CPU must have this tier's features (dispatch checks it).
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_call(index: usize, call: &TileCall) {
    // SAFETY: forwarded contract.
    unsafe { run_one_tile(index, call) }
}

pub(crate) const TIER: Tier = Tier {
    id: KernelId::Avx2,
    tiles: TILES,
    run,
    tile_call,
};

//! AVX-512F tier: `__m512` (16 lanes), 32 zmm registers.
//!
//! Tile sizes. Each 512-bit FMA has a 4-cycle latency; with one or two FMA pipes per core at
//! least 4-8 independent accumulators keep them busy, and more amortize the loads of each
//! reduction step (`NR / 16` vector loads of B and `MR` broadcasts of A, folded into the FMA
//! as embedded broadcasts, so they cost no register). With 32 zmm registers:
//! - weight rows (NCHW), 8 x 32: 16 accumulators + 2 B vectors. MR = 8 divides every channel
//!   count of ResNet and MobileNet, so no row is wasted, and 32 pixels divide 56x56;
//! - pixel rows (NHWC, and NCHW with few pixels), 8 x 32 (16 acc), 7 x 32 (14 acc), 8 x 48
//!   (24 acc) and 8 x 16 (8 acc): the lane counts cover channel counts that are multiples of
//!   48, 32 or 16 without computing padding, and 7 rows tile 7x7 and 14x14 outputs exactly.
//!   A 7 x 64 tile (28 acc + 4 B = all 32 registers) measured 15-20% slower than 8 x 32 on
//!   small reductions here, so it is not offered.
//!
//! Pixel-row tiles have at most 8 rows because NHWC pixels are read in place, one base
//! address per row: 8 row pointers plus the loop state fit the 16 general registers, while
//! 12 or 14 rows spilled them and ran at half speed (measured).
//!
//! The plan picks the tile per call with a cost model (`Plan::choose_tiling`).
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
pub(crate) struct Zmm(__m512);

// SAFETY: only reached from `run`, which requires AVX-512F; the pointer contracts are the
// trait's.
unsafe impl SimdF32 for Zmm {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Zmm(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Zmm(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable values.
        Zmm(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable values.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Zmm(_mm512_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Zmm(_mm512_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Zmm(_mm512_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Zmm(_mm512_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Zmm(_mm512_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn select_lt(self, t: Self, then: Self) -> Self {
        let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, t.0);
        Zmm(_mm512_mask_blend_ps(m, self.0, then.0))
    }
    #[inline(always)]
    unsafe fn select_gt(self, t: Self, then: Self) -> Self {
        let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, t.0);
        Zmm(_mm512_mask_blend_ps(m, self.0, then.0))
    }
    #[inline(always)]
    unsafe fn blend_lt(a: Self, b: Self, then: Self, otherwise: Self) -> Self {
        let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a.0, b.0);
        Zmm(_mm512_mask_blend_ps(m, otherwise.0, then.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Zmm(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0))
    }
    #[inline(always)]
    unsafe fn pow2i(self) -> Self {
        let n = _mm512_add_epi32(_mm512_cvtps_epi32(self.0), _mm512_set1_epi32(127));
        Zmm(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(n)))
    }
}

/// Entry point: the whole loop nest for a range of units, compiled for AVX-512F.
///
/// # Safety
/// The CPU must have AVX-512F (dispatch checks it); the job's contract is `run_units`'s.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    // SAFETY: forwarded contract.
    unsafe { run_tile(job, units, scratch) }
}

unsafe fn run(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    // SAFETY: the plan only selects this tier when dispatch found AVX-512F.
    unsafe { run_avx512(job, units, scratch) }
}

tile_table!(Zmm;
    0 => (WeightRows, 8 x 2),
    1 => (PixelRows, 8 x 2),
    2 => (PixelRows, 7 x 2),
    3 => (PixelRows, 8 x 3),
    4 => (PixelRows, 8 x 1),
);

/// Entry point for one microkernel call (tests).
///
/// # Safety
/// As `driver::run_tile_call`; the CPU must have this tier's features (dispatch checks it).
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_call(index: usize, call: &TileCall) {
    // SAFETY: forwarded contract.
    unsafe { run_one_tile(index, call) }
}

pub(crate) const TIER: Tier = Tier {
    id: KernelId::Avx512,
    tiles: TILES,
    run,
    tile_call,
};

//! NEON tier: `float32x4_t` (4 lanes), 32 q registers.
//!
//! Tile sizes. Typical cores issue two 128-bit FMAs per cycle with a 4-cycle latency: at
//! least 8 accumulators. An 8 x 12 tile holds 24 accumulators, plus 3 B vectors and 1
//! broadcast: 28 of 32 registers, no spill; per step 3 loads + 8 broadcasts per 24 FMAs.
// The trait methods below are one-intrinsic wrappers whose safety condition is the trait's
// (the tier's CPU features, valid pointers), so their bodies are not wrapped one by one.
#![allow(unsafe_op_in_unsafe_fn)]

use crate::dispatch::KernelId;
use crate::driver::{Job, TaskScratch, TileCall};
use crate::kernels::simd::SimdF32;
use crate::kernels::{tile_table, Tier};
use std::arch::aarch64::*;
use std::ops::Range;

#[derive(Clone, Copy)]
pub(crate) struct Q(float32x4_t);

// SAFETY: only reached from `run`, which requires NEON; the pointer contracts are the trait's.
unsafe impl SimdF32 for Q {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Q(vdupq_n_f32(0.0))
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Q(vdupq_n_f32(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 4 readable values.
        Q(unsafe { vld1q_f32(p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 4 writable values.
        unsafe { vst1q_f32(p, self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Q(vfmaq_f32(c.0, a.0, b.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Q(vaddq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Q(vsubq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Q(vmulq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Q(vdivq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn select_lt(self, t: Self, then: Self) -> Self {
        Q(vbslq_f32(vcltq_f32(self.0, t.0), then.0, self.0))
    }
    #[inline(always)]
    unsafe fn select_gt(self, t: Self, then: Self) -> Self {
        Q(vbslq_f32(vcgtq_f32(self.0, t.0), then.0, self.0))
    }
    #[inline(always)]
    unsafe fn blend_lt(a: Self, b: Self, then: Self, otherwise: Self) -> Self {
        Q(vbslq_f32(vcltq_f32(a.0, b.0), then.0, otherwise.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Q(vrndnq_f32(self.0))
    }
    #[inline(always)]
    unsafe fn pow2i(self) -> Self {
        let n = vaddq_s32(vcvtnq_s32_f32(self.0), vdupq_n_s32(127));
        Q(vreinterpretq_f32_s32(vshlq_n_s32::<23>(n)))
    }
}

/// Entry point: the whole loop nest for a range of units, compiled for NEON.
///
/// # Safety
/// The CPU must have NEON (dispatch checks it); the job's contract is `run_units`'s.
#[target_feature(enable = "neon")]
unsafe fn run_neon(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    // SAFETY: forwarded contract.
    unsafe { run_tile(job, units, scratch) }
}

unsafe fn run(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    // SAFETY: the plan only selects this tier when dispatch found NEON.
    unsafe { run_neon(job, units, scratch) }
}

tile_table!(Q;
    0 => (WeightRows, 8 x 3),
    1 => (PixelRows, 8 x 3),
);

/// Entry point for one microkernel call (tests).
///
/// # Safety
/// As `driver::run_tile_call`; the CPU must have this tier's features (dispatch checks it).
#[target_feature(enable = "neon")]
unsafe fn tile_call(index: usize, call: &TileCall) {
    // SAFETY: forwarded contract.
    unsafe { run_one_tile(index, call) }
}

pub(crate) const TIER: Tier = Tier {
    id: KernelId::Neon,
    tiles: TILES,
    run,
    tile_call,
};

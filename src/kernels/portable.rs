//! The portable tier: the `wide` crate's `f32x8`, whose implementation (one AVX register, two
//! SSE/NEON registers, or scalar lanes) is fixed when the crate is compiled; see
//! `dispatch::portable_width_bits`. No runtime dispatch: this is what any target gets.
//!
//! Tile: 6 rows x 8 lanes = 6 accumulators. With 128-bit registers that is 12 of the 16 SSE
//! registers, leaving room for the B row and the broadcast without spills; the tier aims at
//! correctness everywhere, not at peak.
use super::simd::SimdF32;
use super::{tile_table, Tier};
use crate::dispatch::KernelId;
use crate::driver::{Job, TaskScratch, TileCall};
use std::ops::Range;
use wide::f32x8;

#[derive(Clone, Copy)]
pub(crate) struct Wide(f32x8);

// SAFETY: `wide` is safe code on every target; the pointer contracts are the trait's.
unsafe impl SimdF32 for Wide {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Wide(f32x8::ZERO)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Wide(f32x8::splat(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable values.
        Wide(f32x8::from(unsafe { (p as *const [f32; 8]).read_unaligned() }))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { (p as *mut [f32; 8]).write_unaligned(self.0.to_array()) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Wide(a.0.mul_add(b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Wide(self.0 + o.0)
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Wide(self.0 - o.0)
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Wide(self.0 * o.0)
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Wide(self.0 / o.0)
    }
    #[inline(always)]
    unsafe fn select_lt(self, t: Self, then: Self) -> Self {
        Wide(self.0.simd_lt(t.0).bitselect(then.0, self.0))
    }
    #[inline(always)]
    unsafe fn select_gt(self, t: Self, then: Self) -> Self {
        Wide(self.0.simd_gt(t.0).bitselect(then.0, self.0))
    }
    #[inline(always)]
    unsafe fn blend_lt(a: Self, b: Self, then: Self, otherwise: Self) -> Self {
        Wide(a.0.simd_lt(b.0).bitselect(then.0, otherwise.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Wide(self.0.round())
    }
    #[inline(always)]
    unsafe fn pow2i(self) -> Self {
        // Integral lanes in [-126, 127]: build the exponent field lane by lane.
        let n = self.0.round_int().to_array();
        Wide(f32x8::from(n.map(|e| f32::from_bits(((e + 127) as u32) << 23))))
    }
}

/// Entry point: the whole loop nest for a range of units.
///
/// # Safety
/// As `driver::run_units`; `wide` needs no CPU feature beyond the build's.
unsafe fn run(job: &Job, units: Range<usize>, scratch: &mut TaskScratch) {
    // SAFETY: forwarded contract.
    unsafe { run_tile(job, units, scratch) }
}

tile_table!(Wide;
    0 => (WeightRows, 6 x 1),
    1 => (PixelRows, 6 x 1),
);

/// Entry point for one microkernel call (tests).
///
/// # Safety
/// As `driver::run_tile_call`; the CPU must have this tier's features (dispatch checks it).
unsafe fn tile_call(index: usize, call: &TileCall) {
    // SAFETY: forwarded contract.
    unsafe { run_one_tile(index, call) }
}

pub(crate) const TIER: Tier = Tier {
    id: KernelId::Portable,
    tiles: TILES,
    run,
    tile_call,
};

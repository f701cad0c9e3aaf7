//! The portable tier: the `wide` crate's `f32x8`, whose implementation (one AVX register, two
//! SSE/NEON registers, or scalar lanes) is fixed when the crate is compiled; see
//! `dispatch::portable_width_bits`. No runtime dispatch: this is what any target gets.
//!
//! Tile: 6 rows x 8 lanes = 6 accumulators. With 128-bit registers that is 12 of the 16 SSE
//! registers, leaving room for the B row and the broadcast without spills; the tier aims at
//! correctness everywhere, not at peak.
use crate::dispatch::KernelId;
use crate::kernels::simd::{Simd, SimdF32, WithSimd};
use wide::f32x8;

/// The portable tier's token: `wide` is safe code on every target, so it always exists.
#[derive(Clone, Copy)]
pub(crate) struct Portable(());

impl Portable {
    /// The token (it needs no CPU feature).
    pub(crate) const TOKEN: Portable = Portable(());
}

/// Eight f32 lanes of `wide`.
#[derive(Clone, Copy)]
pub(crate) struct Wide(f32x8);

impl Simd for Portable {
    type F32 = Wide;
    const KERNEL: KernelId = KernelId::Portable;

    fn try_new() -> Option<Self> {
        Some(Portable::TOKEN)
    }

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        op.with_simd(self)
    }

    crate::kernels::simd::outlined_activation!(Portable);

    #[inline(always)]
    fn zero(self) -> Wide {
        Wide(f32x8::ZERO)
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Wide {
        Wide(f32x8::splat(x))
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Wide {
        // SAFETY: the caller guarantees 8 readable values.
        Wide(f32x8::from(unsafe { (p as *const [f32; 8]).read_unaligned() }))
    }
    type LaneIndices = [u32; 8];
    #[inline(always)]
    unsafe fn load_lane_indices(self, p: *const u32) -> [u32; 8] {
        // SAFETY: the caller guarantees 8 readable values.
        unsafe { (p as *const [u32; 8]).read_unaligned() }
    }
    #[inline(always)]
    fn permute(self, v: Wide, indices: [u32; 8]) -> Wide {
        let lanes = v.0.to_array();
        // `& 7` keeps an out-of-range index (a broken caller contract) inside the register.
        Wide(f32x8::from(indices.map(|i| lanes[i as usize & 7])))
    }
}

impl SimdF32 for Wide {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { (p as *mut [f32; 8]).write_unaligned(self.0.to_array()) }
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Wide(a.0.mul_add(b.0, c.0))
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Wide(self.0 + o.0)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Wide(self.0 - o.0)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Wide(self.0 * o.0)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Wide(self.0 / o.0)
    }
    #[inline(always)]
    fn select_lt(self, t: Self, then: Self) -> Self {
        Self::blend_lt(self, t, then, self)
    }
    #[inline(always)]
    fn select_gt(self, t: Self, then: Self) -> Self {
        Self::blend_lt(t, self, then, self)
    }
    #[inline(always)]
    fn blend_lt(a: Self, b: Self, then: Self, otherwise: Self) -> Self {
        Wide(a.0.simd_lt(b.0).bitselect(then.0, otherwise.0))
    }
    #[inline(always)]
    fn round(self) -> Self {
        Wide(self.0.round())
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        // Integral lanes in [-126, 127]: build the exponent field lane by lane.
        let n = self.0.round_int().to_array();
        Wide(f32x8::from(n.map(|e| f32::from_bits(((e + 127) as u32) << 23))))
    }
}

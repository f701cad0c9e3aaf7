//! NEON tier: `float32x4_t` (4 lanes), 32 q registers.
//!
//! Tile sizes (the registry in `kernels/mod.rs` lists them). Typical cores issue two 128-bit
//! FMAs per cycle with a 4-cycle latency: at least 8 accumulators. An 8 x 12 tile holds 24
//! accumulators, plus 3 B vectors and 1 broadcast: 28 of 32 registers, no spill; per step
//! 3 loads + 8 broadcasts per 24 FMAs. Flat tiles for one output channel (weight rows
//! 1 x 16) and one pixel (pixel rows 1 x 16) keep such layers from computing mostly padding
//! rows; see the AVX-512 tier.
use crate::dispatch::{cpu_features, KernelId};
use crate::kernels::simd::{Simd, SimdF32, WithSimd};
use std::arch::aarch64::*;

/// The NEON capability token: exists only where dispatch found Advanced SIMD.
#[derive(Clone, Copy)]
pub(crate) struct Neon(pub(super) ());

/// One q register of 4 f32 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Q(pub(super) float32x4_t);

impl Simd for Neon {
    type F32 = Q;
    const KERNEL: KernelId = KernelId::Neon;

    fn try_new() -> Option<Self> {
        cpu_features().neon.then_some(Neon(()))
    }

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        #[target_feature(enable = "neon")]
        unsafe fn entry<Op: WithSimd>(s: Neon, op: Op) -> Op::Output {
            op.with_simd(s)
        }
        // SAFETY: the token proves the CPU has NEON.
        unsafe { entry(self, op) }
    }

    crate::kernels::simd::outlined_activation!(Neon, "neon");

    #[inline(always)]
    fn zero(self) -> Q {
        // SAFETY (all intrinsics of this impl): the token proves NEON.
        Q(unsafe { vdupq_n_f32(0.0) })
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Q {
        Q(unsafe { vdupq_n_f32(x) })
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Q {
        // SAFETY: the caller guarantees 4 readable values.
        Q(unsafe { vld1q_f32(p) })
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> Q {
        // SAFETY: the caller guarantees 4 readable values; the token proves NEON.
        Q(unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p))) })
    }
    /// Byte indices for `vqtbl1q_u8`: lane index `i` becomes bytes `4i .. 4i + 3`.
    type LaneIndices = uint8x16_t;
    #[inline(always)]
    unsafe fn load_lane_indices(self, p: *const u32) -> uint8x16_t {
        // SAFETY: the caller guarantees 4 readable values; the token proves NEON.
        unsafe {
            let lanes = vld1q_u32(p);
            let bytes = vmlaq_u32(vdupq_n_u32(0x0302_0100), lanes, vdupq_n_u32(0x0404_0404));
            vreinterpretq_u8_u32(bytes)
        }
    }
    #[inline(always)]
    fn permute(self, v: Q, indices: uint8x16_t) -> Q {
        Q(unsafe { vreinterpretq_f32_u8(vqtbl1q_u8(vreinterpretq_u8_f32(v.0), indices)) })
    }
    /// Four 4 x 4 quarter blocks, each transposed by two rounds of `trn` (lanes, then lane
    /// pairs).
    #[inline(always)]
    unsafe fn transpose_8x8(self, rows: [*const f32; 8], dst: *mut f32, dst_stride: usize) {
        // SAFETY: the token proves NEON; the caller guarantees the reads and writes.
        unsafe {
            for bi in 0..2 {
                for bj in 0..2 {
                    let r: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(rows[4 * bi + i].add(4 * bj)));
                    let t0 = vtrn1q_f32(r[0], r[1]);
                    let t1 = vtrn2q_f32(r[0], r[1]);
                    let t2 = vtrn1q_f32(r[2], r[3]);
                    let t3 = vtrn2q_f32(r[2], r[3]);
                    let pairs = |a: float32x4_t| vreinterpretq_f64_f32(a);
                    let cols = [
                        vtrn1q_f64(pairs(t0), pairs(t2)),
                        vtrn1q_f64(pairs(t1), pairs(t3)),
                        vtrn2q_f64(pairs(t0), pairs(t2)),
                        vtrn2q_f64(pairs(t1), pairs(t3)),
                    ];
                    for (j, col) in cols.iter().enumerate() {
                        vst1q_f32(dst.add((4 * bj + j) * dst_stride + 4 * bi), vreinterpretq_f32_f64(*col));
                    }
                }
            }
        }
    }
    /// Two rounds of `trn`: lanes, then lane pairs.
    #[inline(always)]
    fn transpose_lanes(self, rows: &mut [Q; 16]) {
        // SAFETY: the token proves NEON; register operations only.
        unsafe {
            let t0 = vreinterpretq_f64_f32(vtrn1q_f32(rows[0].0, rows[1].0));
            let t1 = vreinterpretq_f64_f32(vtrn2q_f32(rows[0].0, rows[1].0));
            let t2 = vreinterpretq_f64_f32(vtrn1q_f32(rows[2].0, rows[3].0));
            let t3 = vreinterpretq_f64_f32(vtrn2q_f32(rows[2].0, rows[3].0));
            rows[0] = Q(vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));
            rows[1] = Q(vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));
            rows[2] = Q(vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));
            rows[3] = Q(vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));
        }
    }
}

// SAFETY (every intrinsic below): a Q is only made through a Neon token, which proves the CPU
// has NEON.
impl SimdF32 for Q {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 4 writable values.
        unsafe { vst1q_f32(p, self.0) }
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Q(unsafe { vfmaq_f32(c.0, a.0, b.0) })
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Q(unsafe { vaddq_f32(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Q(unsafe { vsubq_f32(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Q(unsafe { vmulq_f32(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Q(unsafe { vdivq_f32(self.0, o.0) })
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
        Q(unsafe { vbslq_f32(vcltq_f32(a.0, b.0), then.0, otherwise.0) })
    }
    #[inline(always)]
    fn round(self) -> Self {
        Q(unsafe { vrndnq_f32(self.0) })
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        unsafe {
            let n = vaddq_s32(vcvtnq_s32_f32(self.0), vdupq_n_s32(127));
            Q(vreinterpretq_f32_s32(vshlq_n_s32::<23>(n)))
        }
    }
}

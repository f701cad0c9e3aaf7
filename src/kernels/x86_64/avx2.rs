//! AVX2 + FMA tier: `__m256` (8 lanes), 16 ymm registers.
//!
//! Tile sizes (the registry in `kernels/mod.rs` lists them). Two 256-bit FMA ports with a
//! 4-5 cycle latency need at least 8-10 independent accumulators. A 6 x 16 tile holds 12
//! accumulators, plus 2 B vectors and 1 broadcast: 15 of the 16 registers, no spill. Per
//! reduction step: 2 loads + 6 broadcasts per 12 FMAs. The same shape serves both
//! orientations. (4 x 24 tiles, 12 accumulators + 3 B vectors + the broadcast, which AVX2
//! cannot fold into the FMA, fill all 16 registers and ran at half speed; 8 x 8 tiles, at one
//! B vector per 8 FMAs, lost 20-40% to 6 x 16.) Flat tiles for one output channel (weight
//! rows 1 x 32) and one pixel (pixel rows 1 x 32, a matrix-vector product) are load-bound,
//! which the cost model charges; see the AVX-512 tier.
use crate::dispatch::{cpu_features, KernelId};
use crate::kernels::simd::{Interleave, Simd, SimdF32, WithSimd};
use std::arch::x86_64::*;

/// The AVX2 capability token: exists only where dispatch found AVX2 and FMA.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(());

/// One ymm register of 8 f32 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Ymm(__m256);

impl Simd for Avx2 {
    type F32 = Ymm;
    const KERNEL: KernelId = KernelId::Avx2;

    fn try_new() -> Option<Self> {
        cpu_features().avx2_fma.then_some(Avx2(()))
    }

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn entry<Op: WithSimd>(s: Avx2, op: Op) -> Op::Output {
            op.with_simd(s)
        }
        // SAFETY: the token proves the CPU has AVX2 and FMA.
        unsafe { entry(self, op) }
    }

    crate::kernels::simd::outlined_activation!(Avx2, "avx2,fma");

    #[inline(always)]
    fn zero(self) -> Ymm {
        // SAFETY (all intrinsics of this impl): the token proves AVX2.
        Ymm(unsafe { _mm256_setzero_ps() })
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Ymm {
        Ymm(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Ymm {
        // SAFETY: the caller guarantees 8 readable values.
        Ymm(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    fn bf16_pairs(self, even: Ymm, odd: Ymm) -> Ymm {
        // SAFETY: integer lane operations of AVX2, which the token proves.
        unsafe {
            let low = _mm256_srli_epi32::<16>(_mm256_castps_si256(even.0));
            Ymm(_mm256_castsi256_ps(_mm256_or_si256(low, _mm256_castps_si256(odd.0))))
        }
    }
    /// The rounding of `round_to_bf16_bits` on 32-bit lanes, then packed to 16 bits (the
    /// rounded bits are below 2^16, so the unsigned saturation of `vpackusdw` keeps them).
    #[inline(always)]
    unsafe fn store_bf16(self, v: Ymm, p: *mut u16) {
        // SAFETY: the token proves AVX2; the caller guarantees 8 writable values (16 bytes).
        unsafe {
            let bits = _mm256_castps_si256(v.0);
            let high = _mm256_srli_epi32::<16>(bits);
            let bias = _mm256_add_epi32(_mm256_and_si256(high, _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7FFF));
            let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(bits, bias));
            let quiet_nan = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
            let magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFF_FFFF));
            let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7F80_0000));
            let out = _mm256_blendv_epi8(rounded, quiet_nan, nan);
            // Packing works within 128-bit halves: values 0-3 and 4-7 land in 64-bit words 0
            // and 2.
            let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(out, out));
            _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(packed));
        }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> Ymm {
        // SAFETY: the caller guarantees 8 readable values (16 bytes); the token proves AVX2.
        unsafe {
            let halves = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            Ymm(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(halves)))
        }
    }
    /// `vmaskmovps`: masked-off lanes are not read (no fault past the end) and load zero.
    #[inline(always)]
    unsafe fn load_first(self, p: *const f32, n: usize) -> Ymm {
        debug_assert!(n <= 8);
        // SAFETY: the token proves AVX2; lanes at or past n are masked off and not accessed,
        // and the caller guarantees n readable values.
        unsafe {
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            Ymm(_mm256_maskload_ps(p, mask))
        }
    }
    type LaneIndices = __m256i;
    #[inline(always)]
    unsafe fn load_lane_indices(self, p: *const u32) -> __m256i {
        // SAFETY: the caller guarantees 8 readable values.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    fn permute(self, v: Ymm, indices: __m256i) -> Ymm {
        Ymm(unsafe { _mm256_permutevar8x32_ps(v.0, indices) })
    }
    #[inline(always)]
    unsafe fn transpose_8x8(self, rows: [*const f32; 8], dst: *mut f32, dst_stride: usize) {
        // SAFETY: the token proves AVX; the caller guarantees the reads and writes.
        unsafe { super::transpose_8x8_avx(rows, dst, dst_stride) }
    }
    #[inline(always)]
    fn transpose_lanes(self, rows: &mut [Ymm; 16]) {
        // SAFETY: the token proves AVX; register operations only.
        let cols = unsafe {
            super::transpose_8x8_registers([
                rows[0].0, rows[1].0, rows[2].0, rows[3].0, rows[4].0, rows[5].0, rows[6].0, rows[7].0,
            ])
        };
        for (r, c) in rows.iter_mut().zip(cols) {
            *r = Ymm(c);
        }
    }
    /// One permutation per register and channel, blended in under the channel's lanes.
    #[inline(always)]
    fn interleave<const K: usize>(self, cols: [Ymm; K]) -> [Ymm; K] {
        if K == 1 {
            return cols;
        }
        let mut out = cols;
        for (m, o) in out.iter_mut().enumerate() {
            // SAFETY: the token proves AVX2; the table row holds 16 u32 values.
            unsafe {
                let pixel = _mm256_loadu_si256(Interleave::<K, 8>::PIXEL[m].as_ptr().cast());
                let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
                let mut v = _mm256_permutevar8x32_ps(cols[0].0, pixel);
                for (k, c) in cols.iter().enumerate().skip(1) {
                    let lanes = _mm256_set1_epi32(i32::from(Interleave::<K, 8>::CHANNEL[m][k]));
                    let select = _mm256_cmpeq_epi32(_mm256_and_si256(lanes, bits), bits);
                    v = _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(c.0, pixel), _mm256_castsi256_ps(select));
                }
                *o = Ymm(v);
            }
        }
        out
    }
}

// SAFETY (every intrinsic below): a Ymm is only made through an Avx2 token, which proves the
// CPU has AVX2 and FMA.
impl SimdF32 for Ymm {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Ymm(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Ymm(unsafe { _mm256_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Ymm(unsafe { _mm256_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Ymm(unsafe { _mm256_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Ymm(unsafe { _mm256_div_ps(self.0, o.0) })
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
        unsafe {
            let m = _mm256_cmp_ps::<_CMP_LT_OQ>(a.0, b.0);
            Ymm(_mm256_blendv_ps(otherwise.0, then.0, m))
        }
    }
    #[inline(always)]
    fn round(self) -> Self {
        Ymm(unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0) })
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        unsafe {
            let n = _mm256_add_epi32(_mm256_cvtps_epi32(self.0), _mm256_set1_epi32(127));
            Ymm(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(n)))
        }
    }
}

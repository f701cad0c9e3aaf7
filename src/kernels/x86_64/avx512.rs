//! AVX-512F tier: `__m512` (16 lanes), 32 zmm registers; partial tiles store through masks.
//!
//! Tile sizes (the registry in `kernels/mod.rs` lists them). Each 512-bit FMA has a 4-cycle
//! latency; with one or two FMA pipes per core at least 4-8 independent accumulators keep them
//! busy, and more amortize the loads of each reduction step (`NR / 16` vector loads of B and
//! `MR` broadcasts of A, folded into the FMA as embedded broadcasts, so they cost no
//! register). With 32 zmm registers:
//! - weight rows (NCHW), 8 x 32: 16 accumulators + 2 B vectors. MR = 8 divides every channel
//!   count of ResNet and MobileNet, so no row is wasted, and 32 pixels divide 56x56;
//! - pixel rows (NHWC, and NCHW with few pixels), 8 x 32 (16 acc), 7 x 32 (14 acc), 8 x 48
//!   (24 acc) and 8 x 16 (8 acc): the lane counts cover channel counts that are multiples of
//!   48, 32 or 16 without computing padding, and 7 rows tile 7x7 and 14x14 outputs exactly.
//!   A 7 x 64 tile (28 acc + 4 B = all 32 registers) measured 15-20% slower than 8 x 32 on
//!   small reductions, so it is not offered;
//! - 6 x 64, both orientations (24 acc + 4 B): 10 loads per 24 FMAs, where 8 x 32 issues 10
//!   per 16. Loads did not overlap the FMAs on Xeon Ice Lake (one core, a loop of broadcast
//!   FMAs in L1, ns per step: 8 x 32 5.1, 6 x 64 6.0 for 1.5x the FMAs, 8 x 48 6.4; the cost
//!   model charges them, see `schedule::L1_LOAD_COST`), and 64 lanes divide every channel
//!   count of ResNet-50's outputs. NHWC ResNet-50 1x1 layers ran 1.1-1.3x faster with it;
//! - flat tiles for few output channels or few pixels: weight rows 8 x 16 (an NCHW image of
//!   16 pixels or fewer), 4 x 64 and 1 x 64 (1 to 4 output channels: an 8-row tile computed
//!   up to 7 padding rows), and pixel rows 1 x 64 (one pixel, a fully connected layer at
//!   batch 1: a matrix-vector product over the output channels). The 1-row tiles are bound by
//!   their loads (4 vector loads and a broadcast per 4 FMAs), which the cost model charges.
//!   2-row tiles were tried and left out: every tile adds a loop nest to compile (the build
//!   and the test suite's time grow with the tile count), and 1- and 4-row tiles cover them.
//!   Measured before and after on Xeon Cascade Lake, NCHW, 1 thread (the 8 x 32 weight-row
//!   tile before): 16 -> 1 channels at 112x112 3.7 -> 7.9 GFLOP/s, 3 -> 3 at 56x56 3.0 -> 4.6,
//!   256 -> 5 at 4x4 4.9 -> 26.6, 1024 -> 32 at 1x1 6.8 -> 17.5.
//!
//! Pixel-row tiles have at most 8 rows because NHWC pixels are read in place, one base
//! address per row: 8 row pointers plus the loop state fit the 16 general registers, while
//! 12 or 14 rows spilled them and ran at half speed (measured).
use crate::dispatch::{cpu_features, KernelId};
use crate::kernels::simd::{Interleave, Simd, SimdF32, WithSimd};
use std::arch::x86_64::*;

/// The AVX-512 capability token: exists only where dispatch found AVX-512F, AVX2 and FMA.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token, made by a tier whose own token already proves what this one does.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX2 and FMA.
    #[inline(always)]
    pub(crate) const unsafe fn new_unchecked() -> Avx512 {
        Avx512(())
    }
}

/// One zmm register of 16 f32 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Zmm(pub(super) __m512);

/// The bits of each lane's value rounded to bf16, in the low half of its 32 bits: to nearest,
/// ties to even, a NaN made quiet (the lane arithmetic of `element::round_to_bf16_bits`).
#[inline(always)]
fn bf16_bits(v: Zmm) -> __m512i {
    // SAFETY: lane operations of AVX-512F, which the register proves the CPU has (a `Zmm`
    // is only made through the tier's token).
    unsafe {
        let bits = _mm512_castps_si512(v.0);
        let high = _mm512_srli_epi32::<16>(bits);
        let bias = _mm512_add_epi32(_mm512_and_si512(high, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
        let quiet_nan = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
        let magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7FFF_FFFF));
        let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7F80_0000));
        _mm512_mask_blend_epi32(nan, rounded, quiet_nan)
    }
}

/// The mask of the first `n` of 16 lanes.
#[inline(always)]
fn first_lanes(n: usize) -> __mmask16 {
    debug_assert!(n <= 16);
    ((1u32 << n) - 1) as __mmask16
}

impl Simd for Avx512 {
    type F32 = Zmm;
    const KERNEL: KernelId = KernelId::Avx512;

    fn try_new() -> Option<Self> {
        cpu_features().avx512.then_some(Avx512(()))
    }

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn entry<Op: WithSimd>(s: Avx512, op: Op) -> Op::Output {
            op.with_simd(s)
        }
        // SAFETY: the token proves the CPU has AVX-512F, AVX2 and FMA.
        unsafe { entry(self, op) }
    }

    crate::kernels::simd::outlined_activation!(Avx512, "avx512f,avx2,fma");

    #[inline(always)]
    fn zero(self) -> Zmm {
        // SAFETY (all intrinsics of this impl): the token proves AVX-512F.
        Zmm(unsafe { _mm512_setzero_ps() })
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Zmm {
        Zmm(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Zmm {
        // SAFETY: the caller guarantees 16 readable values.
        Zmm(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_first(self, p: *const f32, n: usize) -> Zmm {
        // SAFETY: masked-off lanes are not accessed; the caller guarantees n readable values.
        Zmm(unsafe { _mm512_maskz_loadu_ps(first_lanes(n), p) })
    }
    /// The pairs of values as masked 32-bit loads (AVX-512F has no 16-bit masks without
    /// AVX-512BW), the odd last value set on its own, then widened.
    #[inline(always)]
    unsafe fn load_first_bf16(self, p: *const u16, n: usize) -> Zmm {
        debug_assert!(n <= 16);
        let pairs = n / 2;
        // SAFETY: the masked load reads `pairs` 32-bit words, 2 * pairs <= n values; masked-off
        // words are not accessed; value n - 1 is read only when n is odd, and it is in bounds.
        unsafe {
            let mut v = _mm512_maskz_loadu_epi32(((1u32 << pairs) - 1) as __mmask16, p.cast());
            if n % 2 == 1 {
                v = _mm512_mask_set1_epi32(v, (1u32 << pairs) as __mmask16, i32::from(*p.add(n - 1)));
            }
            let halves = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(v));
            Zmm(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(halves)))
        }
    }
    #[inline(always)]
    fn bf16_pairs(self, even: Zmm, odd: Zmm) -> Zmm {
        // SAFETY: integer lane operations of AVX-512F, which the token proves.
        unsafe {
            let low = _mm512_srli_epi32::<16>(_mm512_castps_si512(even.0));
            Zmm(_mm512_castsi512_ps(_mm512_or_si512(low, _mm512_castps_si512(odd.0))))
        }
    }
    /// The rounding of `round_to_bf16_bits` on 32-bit lanes, then `vpmovdw` (AVX-512F).
    #[inline(always)]
    unsafe fn store_bf16(self, v: Zmm, p: *mut u16) {
        // SAFETY: the caller guarantees 16 writable values (32 bytes).
        unsafe { _mm256_storeu_si256(p.cast(), _mm512_cvtepi32_epi16(bf16_bits(v))) }
    }
    /// `vpmovdw` with a store mask: lanes at or past `n` are not written.
    #[inline(always)]
    unsafe fn store_first_bf16(self, v: Zmm, p: *mut u16, n: usize) {
        // SAFETY: masked-off lanes are not accessed; the caller guarantees n writable values.
        unsafe { _mm512_mask_cvtepi32_storeu_epi16(p.cast(), first_lanes(n), bf16_bits(v)) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> Zmm {
        // SAFETY: the caller guarantees 16 readable values (32 bytes); the token proves
        // AVX-512F, whose zero-extension and shift these are.
        unsafe {
            let halves = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
            Zmm(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(halves)))
        }
    }
    type LaneIndices = __m512i;
    #[inline(always)]
    unsafe fn load_lane_indices(self, p: *const u32) -> __m512i {
        // SAFETY: the caller guarantees 16 readable values.
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    fn permute(self, v: Zmm, indices: __m512i) -> Zmm {
        Zmm(unsafe { _mm512_permutexvar_ps(indices, v.0) })
    }
    #[inline(always)]
    unsafe fn transpose_8x8(self, rows: [*const f32; 8], dst: *mut f32, dst_stride: usize) {
        // SAFETY: the token proves AVX; the caller guarantees the reads and writes.
        unsafe { super::transpose_8x8_avx(rows, dst, dst_stride) }
    }
    /// 16 x 16 in four rounds of 16 shuffles: rows interleaved by lanes, then by lane pairs
    /// (each 128-bit block then holds one 4 x 4 block, transposed), then the 128-bit blocks
    /// moved by two rounds of `vshuff32x4`. On Intel cores every round runs on one port, so
    /// the transposition costs a quarter cycle per value.
    #[inline(always)]
    fn transpose_lanes(self, rows: &mut [Zmm; 16]) {
        // SAFETY: the token proves AVX-512F; register operations only.
        unsafe {
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(rows[2 * i].0, rows[2 * i + 1].0);
                t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i].0, rows[2 * i + 1].0);
            }
            // u[4g + q], block b: column 4b + q of rows 4g..4g + 4.
            let mut u = [_mm512_setzero_ps(); 16];
            for g in 0..4 {
                let (a0, a1) = (_mm512_castps_pd(t[4 * g]), _mm512_castps_pd(t[4 * g + 1]));
                let (b0, b1) = (_mm512_castps_pd(t[4 * g + 2]), _mm512_castps_pd(t[4 * g + 3]));
                u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
                u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
                u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
                u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
            }
            // Column 4b + q gathers block b of u[q], u[4 + q], u[8 + q], u[12 + q].
            for q in 0..4 {
                let v0 = _mm512_shuffle_f32x4::<0x44>(u[q], u[4 + q]);
                let v1 = _mm512_shuffle_f32x4::<0xEE>(u[q], u[4 + q]);
                let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + q], u[12 + q]);
                let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + q], u[12 + q]);
                rows[q] = Zmm(_mm512_shuffle_f32x4::<0x88>(v0, v2));
                rows[4 + q] = Zmm(_mm512_shuffle_f32x4::<0xDD>(v0, v2));
                rows[8 + q] = Zmm(_mm512_shuffle_f32x4::<0x88>(v1, v3));
                rows[12 + q] = Zmm(_mm512_shuffle_f32x4::<0xDD>(v1, v3));
            }
        }
    }
    /// One permutation per register and channel, each merged under the channel's lane mask.
    #[inline(always)]
    fn interleave<const K: usize>(self, cols: [Zmm; K]) -> [Zmm; K] {
        if K == 1 {
            return cols;
        }
        let mut out = cols;
        for (m, o) in out.iter_mut().enumerate() {
            // SAFETY: the token proves AVX-512F; the table row holds 16 u32 values.
            unsafe {
                let pixel = _mm512_loadu_si512(Interleave::<K, 16>::PIXEL[m].as_ptr().cast());
                let mut v = _mm512_setzero_ps();
                for (k, c) in cols.iter().enumerate() {
                    v = _mm512_mask_permutexvar_ps(v, Interleave::<K, 16>::CHANNEL[m][k], pixel, c.0);
                }
                *o = Zmm(v);
            }
        }
        out
    }
}

// SAFETY (every intrinsic below): a Zmm is only made through an Avx512 token, which proves
// the CPU has AVX-512F.
impl SimdF32 for Zmm {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable values.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: masked-off lanes are not written; the caller guarantees n writable values.
        unsafe { _mm512_mask_storeu_ps(p, first_lanes(n), self.0) }
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        Zmm(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Zmm(unsafe { _mm512_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Zmm(unsafe { _mm512_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Zmm(unsafe { _mm512_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Zmm(unsafe { _mm512_div_ps(self.0, o.0) })
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
            let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a.0, b.0);
            Zmm(_mm512_mask_blend_ps(m, otherwise.0, then.0))
        }
    }
    #[inline(always)]
    fn round(self) -> Self {
        Zmm(unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0) })
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        unsafe {
            let n = _mm512_add_epi32(_mm512_cvtps_epi32(self.0), _mm512_set1_epi32(127));
            Zmm(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(n)))
        }
    }
}

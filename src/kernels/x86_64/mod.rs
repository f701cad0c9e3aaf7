//! x86_64 tiers: AVX-512F (with BF16 products in `avx512_bf16`) and AVX2+FMA. Both run with the caller's floating-point
//! environment untouched (no MXCSR writes): IEEE results, denormals included.
pub(crate) mod avx2;
pub(crate) mod avx512;
pub(crate) mod avx512_bf16;

use std::arch::x86_64::*;

/// `Simd::transpose_8x8` for both x86 tiers, in 256-bit registers: 8 row loads,
/// [`transpose_8x8_registers`], 8 stores: about 3/8 of a shuffle per value where the scalar
/// form moves each value on its own (about 3 cycles per value, measured on NHWC packing).
///
/// # Safety
/// The CPU has AVX (both tiers' tokens prove it, and callers run inside their
/// `#[target_feature]` entry); otherwise as `Simd::transpose_8x8`.
#[inline(always)]
pub(crate) unsafe fn transpose_8x8_avx(rows: [*const f32; 8], dst: *mut f32, dst_stride: usize) {
    // SAFETY: the caller guarantees AVX, 8 readable values per row and the 8 x 8 writes.
    unsafe {
        let cols = transpose_8x8_registers([
            _mm256_loadu_ps(rows[0]),
            _mm256_loadu_ps(rows[1]),
            _mm256_loadu_ps(rows[2]),
            _mm256_loadu_ps(rows[3]),
            _mm256_loadu_ps(rows[4]),
            _mm256_loadu_ps(rows[5]),
            _mm256_loadu_ps(rows[6]),
            _mm256_loadu_ps(rows[7]),
        ]);
        for (j, col) in cols.iter().enumerate() {
            _mm256_storeu_ps(dst.add(j * dst_stride), *col);
        }
    }
}

/// Transposes 8 registers of 8 lanes (lane `j` of `r[i]` to lane `i` of the result's `j`):
/// three rounds of 8 shuffles (pairs of rows interleaved by lanes, then by lane pairs, then
/// the 128-bit halves swapped).
///
/// # Safety
/// The CPU has AVX (as [`transpose_8x8_avx`]).
#[inline(always)]
pub(crate) unsafe fn transpose_8x8_registers(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: the caller guarantees AVX; register operations only.
    unsafe {
        // Lanes interleaved pairwise: t0 = r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5].
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        // Pairs of pairs: u0 = column 0 of rows 0-3 | column 4 of rows 0-3.
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        // Column j (< 4) joins the low halves of rows 0-3 and 4-7; column j + 4 the high ones.
        [
            _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
            _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
        ]
    }
}

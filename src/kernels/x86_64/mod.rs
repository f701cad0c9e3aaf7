//! x86_64 tiers: AVX-512F and AVX2+FMA. Both run with the caller's floating-point
//! environment untouched (no MXCSR writes): IEEE results, denormals included.
pub(crate) mod avx2;
pub(crate) mod avx512;

/// The sum of a ymm register's 8 lanes: the upper 128 bits added to the lower, then the upper
/// 64 to the lower, then lane 1 to lane 0.
///
/// # Safety
/// The CPU must have AVX (every x86 tier that calls it has AVX2).
#[inline(always)]
pub(crate) unsafe fn sum_m256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract (AVX; SSE is baseline).
    unsafe {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps::<0b01>(d, d)))
    }
}

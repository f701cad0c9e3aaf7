//! x86_64 tiers: AVX-512F and AVX2+FMA. Both run with the caller's floating-point
//! environment untouched (no MXCSR writes): IEEE results, denormals included.
pub(crate) mod avx2;
pub(crate) mod avx512;

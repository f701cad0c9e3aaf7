//! x86_64 tiers (AVX-512F, AVX2+FMA) and the denormal flush they run under.
pub(crate) mod avx2;
pub(crate) mod avx512;

use std::arch::asm;

/// Sets FTZ and DAZ in MXCSR for the current thread and restores the previous value on drop:
/// denormal operands and results would otherwise slow the FMA pipes several times over.
/// Denormal results therefore become zero (an absolute error below `2^-126`).
pub(crate) struct FlushDenormals {
    saved: u32,
}

const MXCSR_FTZ: u32 = 1 << 15;
const MXCSR_DAZ: u32 = 1 << 6;

impl FlushDenormals {
    #[inline]
    pub(crate) fn new() -> Self {
        let mut saved: u32 = 0;
        // SAFETY: stmxcsr writes 4 bytes to a valid local; SSE is baseline on x86_64.
        unsafe { asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack, preserves_flags)) };
        let flushed = saved | MXCSR_FTZ | MXCSR_DAZ;
        // SAFETY: ldmxcsr reads 4 bytes from a valid local; the value only changes the
        // denormal handling bits of the saved control word.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &flushed, options(nostack, preserves_flags, readonly)) };
        FlushDenormals { saved }
    }
}

impl Drop for FlushDenormals {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: restores the control word read in `new`.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, preserves_flags, readonly)) };
    }
}

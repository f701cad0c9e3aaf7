//! AVX-512 BF16 tier: the AVX-512F registers and operations (`avx512::Zmm`), plus
//! `vdpbf16ps`, which multiplies bf16 pairs: each 32-bit lane of its operands holds two
//! consecutive reduction steps, and one instruction adds both products to the lane's f32 sum
//! (two multiply-adds per lane where `vfmadd231ps` does one).
//!
//! Its tiles (the registry in `kernels/mod.rs`) read panels packed as bf16 pairs
//! (`PackedFormat::bf16_pairs`): weight panels at plan time, pixel panels per unit. They run
//! only for calls whose input and weights are bf16; every other call on this kernel runs the
//! AVX-512F tiles.
//!
//! Tile shapes follow the AVX-512F ones (same registers, same loads per step, each step now
//! two reduction steps): 8 x 32 and 6 x 64 in both orientations.
//!
//! Numerics: the instruction rounds each product's addition to nearest even (the product of
//! two bf16 values is exact in f32), the odd step's first; it reads denormal inputs as zero
//! and flushes denormal results to zero, whatever MXCSR holds (it neither reads nor writes
//! it, so the caller's floating-point environment stays untouched). These tiles are the only
//! ones in the crate that flush.
use super::avx512::{Avx512, Zmm};
use crate::dispatch::{cpu_features, KernelId};
use crate::kernels::simd::{Simd, WithSimd};
use std::arch::x86_64::*;

/// The AVX-512 BF16 capability token: exists only where dispatch found AVX-512F, AVX-512 BF16,
/// AVX2 and FMA.
#[derive(Clone, Copy)]
pub(crate) struct Avx512Bf16(Avx512);

impl Simd for Avx512Bf16 {
    type F32 = Zmm;
    const KERNEL: KernelId = KernelId::Avx512Bf16;

    fn try_new() -> Option<Self> {
        let f = cpu_features();
        // SAFETY: `f.avx512` is AVX-512F with AVX2 and FMA (dispatch).
        (f.avx512 && f.avx512bf16).then(|| Avx512Bf16(unsafe { Avx512::new_unchecked() }))
    }

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        #[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
        unsafe fn entry<Op: WithSimd>(s: Avx512Bf16, op: Op) -> Op::Output {
            op.with_simd(s)
        }
        // SAFETY: the token proves the CPU has AVX-512F, AVX-512 BF16, AVX2 and FMA.
        unsafe { entry(self, op) }
    }

    #[inline(always)]
    fn activate_outlined(self, z: Zmm, act: crate::epilogue::Activation) -> Zmm {
        self.0.activate_outlined(z, act)
    }

    #[inline(always)]
    fn zero(self) -> Zmm {
        self.0.zero()
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Zmm {
        self.0.splat(x)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Zmm {
        // SAFETY: forwarded contract.
        unsafe { self.0.load(p) }
    }
    #[inline(always)]
    unsafe fn load_first(self, p: *const f32, n: usize) -> Zmm {
        // SAFETY: forwarded contract.
        unsafe { self.0.load_first(p, n) }
    }
    #[inline(always)]
    unsafe fn load_first_bf16(self, p: *const u16, n: usize) -> Zmm {
        // SAFETY: forwarded contract.
        unsafe { self.0.load_first_bf16(p, n) }
    }
    #[inline(always)]
    fn bf16_pairs(self, even: Zmm, odd: Zmm) -> Zmm {
        self.0.bf16_pairs(even, odd)
    }
    #[inline(always)]
    unsafe fn store_bf16(self, v: Zmm, p: *mut u16) {
        // SAFETY: forwarded contract.
        unsafe { self.0.store_bf16(v, p) }
    }
    #[inline(always)]
    unsafe fn store_first_bf16(self, v: Zmm, p: *mut u16, n: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.0.store_first_bf16(v, p, n) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> Zmm {
        // SAFETY: forwarded contract.
        unsafe { self.0.load_bf16(p) }
    }
    type LaneIndices = __m512i;
    #[inline(always)]
    unsafe fn load_lane_indices(self, p: *const u32) -> __m512i {
        // SAFETY: forwarded contract.
        unsafe { self.0.load_lane_indices(p) }
    }
    #[inline(always)]
    fn permute(self, v: Zmm, indices: __m512i) -> Zmm {
        self.0.permute(v, indices)
    }
    #[inline(always)]
    unsafe fn transpose_8x8(self, rows: [*const f32; 8], dst: *mut f32, dst_stride: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.0.transpose_8x8(rows, dst, dst_stride) }
    }
    #[inline(always)]
    fn transpose_lanes(self, rows: &mut [Zmm; 16]) {
        self.0.transpose_lanes(rows)
    }
    #[inline(always)]
    fn interleave<const K: usize>(self, cols: [Zmm; K]) -> [Zmm; K] {
        self.0.interleave(cols)
    }
    #[inline(always)]
    fn dot_bf16_pairs(self, a: Zmm, b: Zmm, c: Zmm) -> Zmm {
        // SAFETY: the token proves AVX-512 BF16; the transmutes reinterpret 512 bits as 512
        // bits (both types are plain vectors, every bit pattern valid).
        unsafe {
            let (a, b) = (
                std::mem::transmute::<__m512, __m512bh>(a.0),
                std::mem::transmute::<__m512, __m512bh>(b.0),
            );
            Zmm(_mm512_dpbf16_ps(c.0, a, b))
        }
    }
}

/// The time of one `vdpbf16ps` over the time of one `vfmadd231ps` (zmm, 16 independent sums
/// each, operands in registers), measured on this core: how much a step of bf16 pairs (two
/// multiply-adds per lane) costs beside an f32 step (one). `None` without AVX-512 BF16.
///
/// Measured: 3.8-4.2 on an Intel Xeon of family 6, model 207 (the instruction issued once
/// per two cycles, beside two FMAs per cycle), where pairs run at half the f32 rate; AMD's
/// Zen 5 issues it about as fast as an FMA (1.83x the f32 rate in flops, by the bf16
/// issue's measurement: a cost near 1.1).
pub(crate) fn pair_step_cost_vs_fma() -> Option<f64> {
    Some(crate::kernels::simd::pair_step_cost_vs_fma(Avx512Bf16::try_new()?))
}

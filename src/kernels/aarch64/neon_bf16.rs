//! NEON BF16 tier (Armv8.6 FEAT_BF16): the NEON registers and operations (`neon::Q`), plus
//! `BFDOT`, which multiplies bf16 pairs: each 32-bit lane of its operands holds two
//! consecutive reduction steps, and one instruction adds both products to the lane's f32 sum
//! (two multiply-adds per lane where `FMLA` does one).
//!
//! Its tiles (the registry in `kernels/mod.rs`) read panels packed as bf16 pairs
//! (`PackedFormat::bf16_pairs`), as the AVX-512 BF16 tiles do, and run only for calls whose
//! input and weights are bf16; every other call on this kernel runs the NEON tiles.
//!
//! Tile shape: 8 x 12 in both orientations, the NEON tile (24 accumulators, 3 vectors of
//! pairs and a broadcast pair: 28 of 32 registers), each step now two reduction steps.
//!
//! `BFDOT` has no stable `std::arch` intrinsic yet, so it is one instruction of inline
//! assembly in a function whose target features include `bf16`.
//!
//! Numerics (Arm ARM, `BFDotAdd`, with FPCR.EBF clear, as every process starts): the two
//! products of a lane (exact in f32) are added, then that sum is added to the accumulator,
//! each addition rounded to odd (an error below one unit in the last place, where rounding
//! to nearest gives half); denormal inputs are read as zero and denormal results flushed to
//! zero, whatever FPCR.FZ says. The instruction neither reads nor writes FPCR's rounding
//! mode, so the caller's floating-point environment stays untouched. A caller who sets
//! FPCR.EBF (FEAT_EBF16) gets the extended behaviour: one rounding to nearest per
//! instruction and denormals as FPCR.FZ says, within the same error bound.
use super::neon::{Neon, Q};
use crate::dispatch::{cpu_features, KernelId};
use crate::kernels::simd::{Simd, WithSimd};
use std::arch::aarch64::*;
use std::arch::asm;

/// The NEON BF16 capability token: exists only where dispatch found NEON and FEAT_BF16.
#[derive(Clone, Copy)]
pub(crate) struct NeonBf16(Neon);

impl Simd for NeonBf16 {
    type F32 = Q;
    const KERNEL: KernelId = KernelId::NeonBf16;

    fn try_new() -> Option<Self> {
        let f = cpu_features();
        (f.neon && f.neon_bf16).then_some(NeonBf16(Neon(())))
    }

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        #[target_feature(enable = "neon,bf16")]
        unsafe fn entry<Op: WithSimd>(s: NeonBf16, op: Op) -> Op::Output {
            op.with_simd(s)
        }
        // SAFETY: the token proves the CPU has NEON and FEAT_BF16.
        unsafe { entry(self, op) }
    }

    crate::kernels::simd::outlined_activation!(NeonBf16, "neon,bf16");

    #[inline(always)]
    fn zero(self) -> Q {
        self.0.zero()
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Q {
        self.0.splat(x)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Q {
        // SAFETY: forwarded contract.
        unsafe { self.0.load(p) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> Q {
        // SAFETY: forwarded contract.
        unsafe { self.0.load_bf16(p) }
    }
    type LaneIndices = uint8x16_t;
    #[inline(always)]
    unsafe fn load_lane_indices(self, p: *const u32) -> uint8x16_t {
        // SAFETY: forwarded contract.
        unsafe { self.0.load_lane_indices(p) }
    }
    #[inline(always)]
    fn permute(self, v: Q, indices: uint8x16_t) -> Q {
        self.0.permute(v, indices)
    }
    #[inline(always)]
    unsafe fn transpose_8x8(self, rows: [*const f32; 8], dst: *mut f32, dst_stride: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.0.transpose_8x8(rows, dst, dst_stride) }
    }
    #[inline(always)]
    fn transpose_lanes(self, rows: &mut [Q; 16]) {
        self.0.transpose_lanes(rows)
    }
    #[inline(always)]
    fn interleave<const K: usize>(self, cols: [Q; K]) -> [Q; K] {
        self.0.interleave(cols)
    }
    /// `BFDOT`: per lane, `c + (a.even * b.even + a.odd * b.odd)`, both additions rounded
    /// to odd (see the module comment).
    #[inline(always)]
    fn dot_bf16_pairs(self, a: Q, b: Q, c: Q) -> Q {
        let mut acc = c.0;
        // SAFETY: the token proves FEAT_BF16; the instruction reads two registers and
        // updates a third, touching no memory, stack or flags (`.arch_extension` lets the
        // assembler accept it wherever this body is emitted).
        unsafe {
            asm!(
                ".arch_extension bf16",
                "bfdot {acc:v}.4s, {a:v}.8h, {b:v}.8h",
                acc = inout(vreg) acc,
                a = in(vreg) a.0,
                b = in(vreg) b.0,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        Q(acc)
    }
}

/// The time of one `BFDOT` over the time of one `FMLA` (16 independent sums each, operands
/// in registers), measured on this core: how much a step of bf16 pairs (two multiply-adds
/// per lane) costs beside an f32 step (one). `None` without FEAT_BF16.
pub(crate) fn pair_step_cost_vs_fma() -> Option<f64> {
    Some(crate::kernels::simd::pair_step_cost_vs_fma(NeonBf16::try_new()?))
}

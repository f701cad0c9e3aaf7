//! The vector operations a microkernel needs, as one trait each SIMD tier implements, and the
//! parts written once on top of it: the register-tile body, the vectorized exponential and
//! the fused epilogue. Everything here is `#[inline(always)]`, so it compiles into the
//! `#[target_feature]` entry point of the tier that instantiates it.
use crate::epilogue::{
    Activation, ChannelAxis, TileEpilogue, ERFC_POLY, FRAC_1_SQRT_2, GELU_CUBIC, GELU_SQRT_2_OVER_PI, HARD_SWISH_FLOOR,
    ONE_SIXTH, SMOOTH_FLOOR, TANH_POLY, TANH_POLY_LIMIT,
};

/// One SIMD register of f32 lanes.
///
/// # Safety
/// Implementations use intrinsics of their tier; callers must only run them on a CPU that has
/// the tier's features (the dispatch layer guarantees it), and pointers must be valid for
/// `LANES` elements.
pub(crate) unsafe trait SimdF32: Copy {
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `a * b + c`, fused where the tier has FMA.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// Lane-wise `if self < t { then } else { self }` (NaN stays NaN).
    unsafe fn select_lt(self, t: Self, then: Self) -> Self;
    /// Lane-wise `if self > t { then } else { self }` (NaN stays NaN).
    unsafe fn select_gt(self, t: Self, then: Self) -> Self;
    /// Lane-wise `if a < b { then } else { otherwise }` (a NaN comparison takes `otherwise`).
    unsafe fn blend_lt(a: Self, b: Self, then: Self, otherwise: Self) -> Self;
    /// Round to nearest integer, ties to even.
    unsafe fn round(self) -> Self;
    /// `2^n` for integral lanes `n` in `[-126, 127]`.
    unsafe fn pow2i(self) -> Self;
}

/// `exp(x)` with a relative error of about 2 ulp for results in the normal range: `+inf` for
/// `x > 88` (past `exp(88) = 1.65e38`; the true overflow is at 88.72), `0` for `x < -87`
/// (where the result is below the normal range). NaN propagates.
#[inline(always)]
pub(crate) unsafe fn exp<V: SimdF32>(x: V) -> V {
    // SAFETY (whole body): plain lane arithmetic on the caller's tier.
    unsafe {
        let hi = V::splat(88.0);
        let lo = V::splat(-87.0);
        let xc = x.select_gt(hi, hi).select_lt(lo, lo);
        let n = xc.mul(V::splat(std::f32::consts::LOG2_E)).round();
        // Cody-Waite reduction: r = x - n ln2 in two steps, |r| <= ln2 / 2.
        let r = V::mul_add(n, V::splat(-0.693_359_4), xc);
        let r = V::mul_add(n, V::splat(2.121_944_4e-4), r);
        // Minimax polynomial for (e^r - 1 - r) / r^2 (the Cephes expf coefficients).
        let mut p = V::splat(1.987_569_1e-4);
        p = V::mul_add(p, r, V::splat(1.398_2e-3));
        p = V::mul_add(p, r, V::splat(8.333_452e-3));
        p = V::mul_add(p, r, V::splat(4.166_579_6e-2));
        p = V::mul_add(p, r, V::splat(1.666_666_5e-1));
        p = V::mul_add(p, r, V::splat(0.5));
        let r2 = r.mul(r);
        let e = V::mul_add(p, r2, r).add(V::splat(1.0)).mul(n.pow2i());
        let e = V::blend_lt(hi, x, V::splat(f32::INFINITY), e);
        V::blend_lt(x, lo, V::zero(), e)
    }
}

/// The activation on one register, with the formulas of [`Activation`] (the same operations
/// as `Activation::apply`, in the same order); `slope` holds the lanes' PReLU slopes.
#[inline(always)]
pub(crate) unsafe fn activate<V: SimdF32>(z: V, act: Activation, slope: V) -> V {
    // SAFETY (whole body): plain lane arithmetic on the caller's tier.
    unsafe {
        let zero = V::zero();
        let one = V::splat(1.0);
        match act {
            Activation::Identity => z,
            Activation::Relu => z.select_lt(zero, zero),
            Activation::Relu6 => {
                let six = V::splat(6.0);
                z.select_lt(zero, zero).select_gt(six, six)
            }
            Activation::Clamp { min, max } => {
                let (lo, hi) = (V::splat(min), V::splat(max));
                z.select_lt(lo, lo).select_gt(hi, hi)
            }
            Activation::LeakyRelu { alpha } => z.select_lt(zero, z.mul(V::splat(alpha))),
            Activation::Prelu => z.select_lt(zero, z.mul(slope)),
            Activation::HardSwish => {
                let six = V::splat(6.0);
                let floor = V::splat(HARD_SWISH_FLOOR);
                let z = z.select_lt(floor, floor);
                let r = z.add(V::splat(3.0)).select_lt(zero, zero).select_gt(six, six);
                z.mul(r.mul(V::splat(ONE_SIXTH)))
            }
            Activation::HardSigmoid { alpha, beta } => {
                let t = z.mul(V::splat(alpha)).add(V::splat(beta));
                t.select_lt(zero, zero).select_gt(one, one)
            }
            Activation::Sigmoid => one.div(one.add(exp(zero.sub(z)))),
            Activation::Tanh => {
                let a = V::blend_lt(z, zero, zero.sub(z), z);
                let z2 = z.mul(z);
                let mut p = V::splat(TANH_POLY[0]);
                for &c in &TANH_POLY[1..] {
                    p = p.mul(z2).add(V::splat(c));
                }
                let small = a.add(a.mul(z2).mul(p));
                let two = V::splat(2.0);
                let large = one.sub(two.div(exp(two.mul(a)).add(one)));
                let r = V::blend_lt(a, V::splat(TANH_POLY_LIMIT), small, large);
                V::blend_lt(z, zero, zero.sub(r), r)
            }
            Activation::Silu => {
                let floor = V::splat(SMOOTH_FLOOR);
                let z = z.select_lt(floor, floor);
                z.div(one.add(exp(zero.sub(z))))
            }
            Activation::Gelu => {
                let floor = V::splat(SMOOTH_FLOOR);
                let z = z.select_lt(floor, floor);
                let x = V::blend_lt(z, zero, zero.sub(z), z).mul(V::splat(FRAC_1_SQRT_2));
                let t = one.div(one.add(V::splat(0.5).mul(x)));
                let mut p = zero;
                for &c in &ERFC_POLY {
                    p = p.mul(t).add(V::splat(c));
                }
                let half_erfc = V::splat(0.5).mul(t.mul(exp(p.sub(x.mul(x)))));
                z.mul(V::blend_lt(z, zero, half_erfc, one.sub(half_erfc)))
            }
            Activation::GeluTanh => {
                let floor = V::splat(SMOOTH_FLOOR);
                let z = z.select_lt(floor, floor);
                let cube = V::splat(GELU_CUBIC).mul(z).mul(z).mul(z);
                let t = V::splat(GELU_SQRT_2_OVER_PI).mul(z.add(cube));
                z.div(one.add(exp(V::splat(-2.0).mul(t))))
            }
        }
    }
}

/// Where the MR-lane operand of a tile lives: a packed panel (`kc` rows of `MR` values), or
/// straight in the caller's input, lane `r` of reduction step `k` at `ptr + r * rs + k * ks`
/// (an NHWC pixel block read without packing).
#[derive(Clone, Copy)]
pub(crate) struct RowOperand {
    pub ptr: *const f32,
    pub rs: usize,
    pub ks: usize,
    pub packed: bool,
}

impl RowOperand {
    /// A packed panel.
    pub fn packed(ptr: *const f32) -> Self {
        RowOperand {
            ptr,
            rs: 1,
            ks: 0,
            packed: true,
        }
    }
}

/// Where the NR-lane operand of a tile lives: a packed panel (`kc` rows of `NR` values), or
/// the caller's input, step `k` at `ptr + k * ks` (NR contiguous NCHW pixels read in place).
#[derive(Clone, Copy)]
pub(crate) struct ColOperand {
    pub ptr: *const f32,
    pub ks: usize,
    pub packed: bool,
}

impl ColOperand {
    /// A packed panel.
    pub fn packed(ptr: *const f32) -> Self {
        ColOperand {
            ptr,
            ks: 0,
            packed: true,
        }
    }
}

/// A full `MR x (NV * LANES)` register tile: `C = act(A * B + bias + R)`.
///
/// `a` is the MR-lane operand (see [`RowOperand`]), `b` the NR-lane one (`kc` steps of
/// `NR = NV * LANES` values, see [`ColOperand`]); the whole reduction runs in registers and the epilogue is
/// applied before the one store of each register.
///
/// # Safety
/// `a` must address `kc` steps of `MR` lanes and `b` `kc` steps of `NR` values; `c` must be
/// writable for `MR` rows of `NR` values at row stride `ldc`; the epilogue's bias (MR or NR
/// values along its axis) and residual (`MR` rows of `NR` at stride `ldr`) must be readable
/// when non-null.
#[inline(always)]
pub(crate) unsafe fn gemm_tile<V: SimdF32, const MR: usize, const NV: usize>(
    kc: usize,
    a: RowOperand,
    b: ColOperand,
    c: *mut f32,
    ldc: usize,
    ep: &TileEpilogue,
) {
    // SAFETY: forwarded contract; the packed flags select constant-stride instantiations.
    unsafe {
        match (a.packed, b.packed) {
            (true, true) => gemm_tile_strided::<V, MR, NV, true, true>(kc, a, b, c, ldc, ep),
            (false, true) => gemm_tile_strided::<V, MR, NV, false, true>(kc, a, b, c, ldc, ep),
            (true, false) => gemm_tile_strided::<V, MR, NV, true, false>(kc, a, b, c, ldc, ep),
            (false, false) => gemm_tile_strided::<V, MR, NV, false, false>(kc, a, b, c, ldc, ep),
        }
    }
}

/// [`gemm_tile`] with the strides fixed at compile time for packed operands.
#[inline(always)]
unsafe fn gemm_tile_strided<V: SimdF32, const MR: usize, const NV: usize, const PA: bool, const PB: bool>(
    kc: usize,
    a: RowOperand,
    b: ColOperand,
    c: *mut f32,
    ldc: usize,
    ep: &TileEpilogue,
) {
    let (rs, ks) = if PA { (1, MR) } else { (a.rs, a.ks) };
    let b_ks = if PB { NV * V::LANES } else { b.ks };
    let a = a.ptr;
    let b = b.ptr;
    // SAFETY: every access below stays inside the extents the caller guarantees.
    unsafe {
        let mut acc = [[V::zero(); NV]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let mut bv = [V::zero(); NV];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = V::load(b.add(j * V::LANES));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let ar = V::splat(*a.add(r * rs));
                for j in 0..NV {
                    row[j] = V::mul_add(ar, bv[j], row[j]);
                }
            }
            // After the last step these point one step past the operand, which for an operand
            // read in place can be past the end of the caller's buffer: wrapping arithmetic
            // keeps that unread pointer free of undefined behaviour.
            a = a.wrapping_add(ks);
            b = b.wrapping_add(b_ks);
        }
        let rows_axis = ep.axis == ChannelAxis::Rows;
        for (r, row) in acc.iter().enumerate() {
            // Per-row channel values (weight rows), broadcast once per row.
            let row_bias = if !ep.bias.is_null() && rows_axis {
                V::splat(*ep.bias.add(r))
            } else {
                V::zero()
            };
            let row_slope = if !ep.slope.is_null() && rows_axis {
                V::splat(*ep.slope.add(r))
            } else {
                V::zero()
            };
            for (j, &v) in row.iter().enumerate() {
                let mut z = v;
                if !ep.bias.is_null() {
                    z = if rows_axis {
                        z.add(row_bias)
                    } else {
                        z.add(V::load(ep.bias.add(j * V::LANES)))
                    };
                }
                if !ep.residual.is_null() {
                    z = z.add(V::load(ep.residual.add(r * ep.ldr + j * V::LANES)));
                }
                let slope = if ep.slope.is_null() || rows_axis {
                    row_slope
                } else {
                    V::load(ep.slope.add(j * V::LANES))
                };
                activate(z, ep.act, slope).store(c.add(r * ldc + j * V::LANES));
            }
        }
    }
}

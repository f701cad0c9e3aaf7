//! The SIMD abstraction every microkernel is written against, and the parts written once on
//! top of it: the register-tile body, the vectorized exponential and the fused epilogue.
//!
//! - [`Simd`] is a tier's *capability token*: a zero-sized value that only
//!   [`Simd::try_new`] makes, after dispatch found the tier's CPU features. Its
//!   [`Simd::vectorize`] runs a generic operation ([`WithSimd`], the pattern of the `pulp`
//!   crate) inside the tier's one `#[target_feature]` function, into which the whole
//!   operation inlines.
//! - [`SimdF32`] is the tier's register of f32 lanes. Registers are only made through a token
//!   (`zero`, `splat`, `load`), so holding one proves the CPU has the tier: the arithmetic on
//!   them is safe. Loads and stores through raw pointers stay `unsafe`.
//!
//! Everything here is `#[inline(always)]`, so it compiles into the entry point of the tier
//! that instantiates it; the one exception is the transcendental activations, which each
//! tier compiles once, out of line, with its target features ([`Simd::activate_outlined`]).
use crate::dispatch::KernelId;
use crate::element::round_to_bf16_bits;
use crate::epilogue::{
    Activation, ChannelAxis, TileEpilogue, ERFC_POLY, FRAC_1_SQRT_2, GELU_CUBIC, GELU_SQRT_2_OVER_PI, HARD_SWISH_FLOOR,
    ONE_SIXTH, SMOOTH_FLOOR, TANH_POLY, TANH_POLY_LIMIT,
};

/// A SIMD tier's capability token (see the module docs).
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// The tier's register of f32 lanes.
    type F32: SimdF32;
    /// The kernel this tier implements.
    const KERNEL: KernelId;
    /// The token, when this CPU (and this build) can run the tier.
    fn try_new() -> Option<Self>;
    /// Runs `op` inside the tier's `#[target_feature]` function.
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output;
    /// The transcendental activations on one register, in a function of the tier's own that
    /// is not inlined (see [`activate`]; written by `outlined_activation!`).
    fn activate_outlined(self, z: Self::F32, act: Activation) -> Self::F32;
    /// A register of zeros.
    fn zero(self) -> Self::F32;
    /// A register with every lane `x`.
    fn splat(self, x: f32) -> Self::F32;
    /// Loads `LANES` values.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` f32 values.
    unsafe fn load(self, p: *const f32) -> Self::F32;
    /// Loads `LANES` bf16 values (their bits), each widened to f32 (exact: a bf16 value is
    /// the upper half of an f32's bits).
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` u16 values.
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const u16) -> Self::F32 {
        let lanes = Self::F32::LANES;
        debug_assert!(lanes <= 16);
        let mut tmp = [0.0f32; 16];
        for (i, t) in tmp.iter_mut().enumerate().take(lanes) {
            // SAFETY: the caller guarantees LANES readable values.
            *t = f32::from_bits(u32::from(unsafe { *p.add(i) }) << 16);
        }
        // SAFETY: tmp holds 16 >= LANES values.
        unsafe { self.load(tmp.as_ptr()) }
    }
    /// Loads the first `n` bf16 values (`n <= LANES`), each widened to f32; the other
    /// lanes are zero.
    ///
    /// # Safety
    /// `p` must be valid for reading `n` u16 values.
    #[inline(always)]
    unsafe fn load_first_bf16(self, p: *const u16, n: usize) -> Self::F32 {
        debug_assert!(n <= Self::F32::LANES && Self::F32::LANES <= 16);
        let mut tmp = [0.0f32; 16];
        for (i, t) in tmp.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees n readable values.
            *t = f32::from_bits(u32::from(unsafe { *p.add(i) }) << 16);
        }
        // SAFETY: tmp holds 16 >= LANES values.
        unsafe { self.load(tmp.as_ptr()) }
    }
    /// Each lane's bf16 pair (see `PackedFormat::bf16_pairs`) from two registers of bf16
    /// values widened to f32 (zero low halves, as [`Simd::load_bf16`] gives them): the even
    /// step's bits in the low half, the odd step's in the high half. Tiers with integer
    /// shifts override this scalar form.
    #[inline(always)]
    fn bf16_pairs(self, even: Self::F32, odd: Self::F32) -> Self::F32 {
        let (mut e, mut o) = ([0.0f32; 16], [0.0f32; 16]);
        // SAFETY: both arrays hold 16 >= LANES values.
        unsafe {
            even.store(e.as_mut_ptr());
            odd.store(o.as_mut_ptr());
        }
        for (e, o) in e.iter_mut().zip(o) {
            *e = f32::from_bits(o.to_bits() | e.to_bits() >> 16);
        }
        // SAFETY: as above.
        unsafe { self.load(e.as_ptr()) }
    }
    /// Rounds the `LANES` values of `v` to bf16 and stores their bits at `p`: to nearest,
    /// ties to even, NaNs made quiet ([`round_to_bf16_bits`], whose bits every tier gives).
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` u16 values.
    #[inline(always)]
    unsafe fn store_bf16(self, v: Self::F32, p: *mut u16) {
        // SAFETY: the caller guarantees LANES writable values.
        unsafe { self.store_first_bf16(v, p, Self::F32::LANES) }
    }
    /// [`Simd::store_bf16`] of the first `n` values (`n <= LANES`); nothing past them is
    /// written.
    ///
    /// # Safety
    /// `p` must be valid for writing `n` u16 values.
    #[inline(always)]
    unsafe fn store_first_bf16(self, v: Self::F32, p: *mut u16, n: usize) {
        debug_assert!(n <= Self::F32::LANES && Self::F32::LANES <= 16);
        let mut tmp = [0.0f32; 16];
        // SAFETY: tmp holds 16 >= LANES values.
        unsafe { v.store(tmp.as_mut_ptr()) };
        for (i, &t) in tmp.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees n writable values.
            unsafe { *p.add(i) = round_to_bf16_bits(t) };
        }
    }
    /// Loads the first `n` values (`n <= LANES`); the other lanes are zero.
    ///
    /// # Safety
    /// `p` must be valid for reading `n` f32 values.
    #[inline(always)]
    unsafe fn load_first(self, p: *const f32, n: usize) -> Self::F32 {
        debug_assert!(n <= Self::F32::LANES && Self::F32::LANES <= 16);
        let mut tmp = [0.0f32; 16];
        // SAFETY: the caller guarantees n readable values; tmp holds 16 >= n.
        unsafe { std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), n) };
        // SAFETY: tmp holds 16 >= LANES values.
        unsafe { self.load(tmp.as_ptr()) }
    }
    /// A register of lane indices for [`Simd::permute`], in the tier's own form.
    type LaneIndices: Copy;
    /// Loads `LANES` lane indices, each below `LANES`.
    ///
    /// # Safety
    /// `p` must be valid for reading `LANES` u32 values, each below `LANES`.
    unsafe fn load_lane_indices(self, p: *const u32) -> Self::LaneIndices;
    /// Lane `l` of the result is lane `indices[l]` of `v` (one register permutation).
    fn permute(self, v: Self::F32, indices: Self::LaneIndices) -> Self::F32;
    /// Transposes an 8 x 8 block: writes `rows[i][j]` to `dst[j * dst_stride + i]` for
    /// `i, j < 8` (the NHWC pixel packer's step: 8 pixels' 8 channels into 8 panel rows).
    /// Tiers with register shuffles override this scalar form.
    ///
    /// # Safety
    /// Each `rows[i]` must be valid for reading 8 f32 values, and `dst` for writing at
    /// `j * dst_stride + i` for `i, j < 8`; the block's source and destination do not overlap.
    #[inline(always)]
    unsafe fn transpose_8x8(self, rows: [*const f32; 8], dst: *mut f32, dst_stride: usize) {
        for (i, row) in rows.iter().enumerate() {
            for j in 0..8 {
                // SAFETY: the caller guarantees these reads and writes.
                unsafe { *dst.add(j * dst_stride + i) = *row.add(j) };
            }
        }
    }
    /// Transposes the `LANES x LANES` block held in `rows[..LANES]` in place: lane `j` of
    /// `rows[i]` moves to lane `i` of `rows[j]` (the pixel-lanes kernel's step: `LANES`
    /// pixels' channels in, one register of pixels per channel out). It moves values only.
    /// Tiers with register shuffles override this form, which goes through memory.
    #[inline(always)]
    fn transpose_lanes(self, rows: &mut [Self::F32; 16]) {
        let lanes = Self::F32::LANES;
        debug_assert!(lanes <= 16);
        let mut block = [[0.0f32; 16]; 16];
        for (r, b) in rows.iter().zip(block.iter_mut()).take(lanes) {
            // SAFETY: each row of `block` holds 16 >= LANES values.
            unsafe { r.store(b.as_mut_ptr()) };
        }
        let mut t = [[0.0f32; 16]; 16];
        for (i, b) in block.iter().enumerate().take(lanes) {
            for (j, &v) in b.iter().enumerate().take(lanes) {
                t[j][i] = v;
            }
        }
        for (r, t) in rows.iter_mut().zip(&t).take(lanes) {
            // SAFETY: each row of `t` holds 16 >= LANES values.
            *r = unsafe { self.load(t.as_ptr()) };
        }
    }
    /// Interleaves `K` registers of per-channel values (`cols[k]` lane `i`: channel `k` of
    /// pixel `i`) into pixel-major order, `LANES` pixels of `K` channels each: lane `l` of
    /// `out[m]` is value `e = m * LANES + l` of that run, lane `e / K` of `cols[e % K]`
    /// ([`Interleave`]). It moves values only. Tiers with lane permutations override this
    /// form, which goes through memory.
    #[inline(always)]
    fn interleave<const K: usize>(self, cols: [Self::F32; K]) -> [Self::F32; K] {
        let lanes = Self::F32::LANES;
        debug_assert!(lanes <= 16);
        let mut src = [[0.0f32; 16]; K];
        for (c, s) in cols.iter().zip(src.iter_mut()) {
            // SAFETY: each row of `src` holds 16 >= LANES values.
            unsafe { c.store(s.as_mut_ptr()) };
        }
        let mut dst = [[0.0f32; 16]; K];
        for e in 0..K * lanes {
            dst[e / lanes][e % lanes] = src[e % K][e / K];
        }
        let mut out = cols;
        for (o, d) in out.iter_mut().zip(&dst) {
            // SAFETY: each row of `dst` holds 16 >= LANES values.
            *o = unsafe { self.load(d.as_ptr()) };
        }
        out
    }
    /// `c + a.odd * b.odd + a.even * b.even` per lane, where each 32-bit lane of `a` and `b`
    /// holds two bf16 values (the even reduction step in the low half). Each tier with
    /// bf16-pair tiles (`Tile::pairs`) implements it with its instruction, whose rounding is
    /// that tier's: AVX-512 BF16's `vdpbf16ps` rounds each product's addition (a product of
    /// two bf16 values is exact in f32), the odd step's first; Arm's `BFDOT` adds the two
    /// products, then the sum, rounding each addition to odd. This lane-by-lane form (the
    /// `vdpbf16ps` order, without its flushes) serves tiers without such an instruction.
    #[inline(always)]
    fn dot_bf16_pairs(self, a: Self::F32, b: Self::F32, c: Self::F32) -> Self::F32 {
        let lanes = Self::F32::LANES;
        debug_assert!(lanes <= 16);
        let (mut av, mut bv, mut cv) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
        // SAFETY: each array holds 16 >= LANES values.
        unsafe {
            a.store(av.as_mut_ptr());
            b.store(bv.as_mut_ptr());
            c.store(cv.as_mut_ptr());
        }
        let half = |v: f32, odd: bool| {
            f32::from_bits(if odd {
                v.to_bits() & 0xFFFF_0000
            } else {
                v.to_bits() << 16
            })
        };
        for ((c, &a), &b) in cv.iter_mut().zip(&av).zip(&bv).take(lanes) {
            *c = half(a, true).mul_add(half(b, true), *c);
            *c = half(a, false).mul_add(half(b, false), *c);
        }
        // SAFETY: cv holds 16 >= LANES values.
        unsafe { self.load(cv.as_ptr()) }
    }
}

/// The lane tables of [`Simd::interleave`] for `K` channels and `LANES` lanes: lane `l` of
/// output register `m` holds value `e = m * LANES + l` of the pixel-major run, channel
/// `e % K` of pixel `e / K` (lanes past `LANES` are zero). The x86 tiers' permutations read
/// them; the other tiers interleave through memory.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Interleave<const K: usize, const LANES: usize>;

impl<const K: usize, const LANES: usize> Interleave<K, LANES> {
    /// `PIXEL[m][l]`: the pixel (source lane) of lane `l` of register `m`.
    pub const PIXEL: [[u32; 16]; K] = {
        let mut t = [[0u32; 16]; K];
        let mut m = 0;
        while m < K {
            let mut l = 0;
            while l < LANES {
                t[m][l] = ((m * LANES + l) / K) as u32;
                l += 1;
            }
            m += 1;
        }
        t
    };
    /// `CHANNEL[m][k]`: the lanes of register `m` that hold channel `k`, one bit per lane.
    pub const CHANNEL: [[u16; K]; K] = {
        let mut t = [[0u16; K]; K];
        let mut m = 0;
        while m < K {
            let mut l = 0;
            while l < LANES {
                t[m][(m * LANES + l) % K] |= 1 << l;
                l += 1;
            }
            m += 1;
        }
        t
    };
}

/// An operation generic over the SIMD tier, run by [`Simd::vectorize`].
pub(crate) trait WithSimd {
    type Output;
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output;
}

/// One SIMD register of f32 lanes; a value exists only through a [`Simd`] token.
pub(crate) trait SimdF32: Copy {
    const LANES: usize;
    /// Stores the `LANES` values.
    ///
    /// # Safety
    /// `p` must be valid for writing `LANES` f32 values.
    unsafe fn store(self, p: *mut f32);
    /// Stores the first `n` values (`n <= LANES`) and nothing else.
    ///
    /// # Safety
    /// `p` must be valid for writing `n` f32 values.
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        debug_assert!(n <= Self::LANES && Self::LANES <= 16);
        let mut tmp = [0.0f32; 16];
        // SAFETY: tmp holds 16 >= LANES values; the caller guarantees n writable values.
        unsafe {
            self.store(tmp.as_mut_ptr());
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
        }
    }
    /// `a * b + c`, fused where the tier has FMA.
    fn mul_add(a: Self, b: Self, c: Self) -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// Lane-wise `if self < t { then } else { self }` (NaN stays NaN).
    fn select_lt(self, t: Self, then: Self) -> Self;
    /// Lane-wise `if self > t { then } else { self }` (NaN stays NaN).
    fn select_gt(self, t: Self, then: Self) -> Self;
    /// Lane-wise `if a < b { then } else { otherwise }` (a NaN comparison takes `otherwise`).
    fn blend_lt(a: Self, b: Self, then: Self, otherwise: Self) -> Self;
    /// Round to nearest integer, ties to even.
    fn round(self) -> Self;
    /// `2^n` for integral lanes `n` in `[-126, 127]`.
    fn pow2i(self) -> Self;
}

/// `exp(x)` with a relative error of about 2 ulp for results in the normal range: `+inf` for
/// `x > 88` (past `exp(88) = 1.65e38`; the true overflow is at 88.72), `0` for `x < -87`
/// (where the result is below the normal range). NaN propagates.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::F32) -> S::F32 {
    type V<S> = <S as Simd>::F32;
    let hi = s.splat(88.0);
    let lo = s.splat(-87.0);
    let xc = x.select_gt(hi, hi).select_lt(lo, lo);
    let n = xc.mul(s.splat(std::f32::consts::LOG2_E)).round();
    // Cody-Waite reduction: r = x - n ln2 in two steps, |r| <= ln2 / 2.
    let r = V::<S>::mul_add(n, s.splat(-0.693_359_4), xc);
    let r = V::<S>::mul_add(n, s.splat(2.121_944_4e-4), r);
    // Minimax polynomial for (e^r - 1 - r) / r^2 (the Cephes expf coefficients).
    let mut p = s.splat(1.987_569_1e-4);
    p = V::<S>::mul_add(p, r, s.splat(1.398_2e-3));
    p = V::<S>::mul_add(p, r, s.splat(8.333_452e-3));
    p = V::<S>::mul_add(p, r, s.splat(4.166_579_6e-2));
    p = V::<S>::mul_add(p, r, s.splat(1.666_666_5e-1));
    p = V::<S>::mul_add(p, r, s.splat(0.5));
    let r2 = r.mul(r);
    let e = V::<S>::mul_add(p, r2, r).add(s.splat(1.0)).mul(n.pow2i());
    let e = V::<S>::blend_lt(hi, x, s.splat(f32::INFINITY), e);
    V::<S>::blend_lt(x, lo, s.zero(), e)
}

/// The activation on one register, with the formulas of [`Activation`] (the same operations
/// as `Activation::apply`, in the same order); `slope` holds the lanes' PReLU slopes.
///
/// The piecewise-linear activations inline at the store. The transcendental ones (sigmoid,
/// tanh, SiLU, GELU: an exponential and a polynomial each, some 40 operations) run in the
/// tier's one out-of-line copy ([`Simd::activate_outlined`]): inlined at each of a tile's
/// `MR x NV` stores in every loop of every tile, they were three quarters of the crate's
/// code, and their call costs a few cycles beside their own.
#[inline(always)]
pub(crate) fn activate<S: Simd>(s: S, z: S::F32, act: Activation, slope: S::F32) -> S::F32 {
    let zero = s.zero();
    let one = s.splat(1.0);
    match act {
        Activation::Identity => z,
        Activation::Relu => z.select_lt(zero, zero),
        Activation::Relu6 => {
            let six = s.splat(6.0);
            z.select_lt(zero, zero).select_gt(six, six)
        }
        Activation::Clamp { min, max } => {
            let (lo, hi) = (s.splat(min), s.splat(max));
            z.select_lt(lo, lo).select_gt(hi, hi)
        }
        Activation::LeakyRelu { alpha } => z.select_lt(zero, z.mul(s.splat(alpha))),
        Activation::Prelu => z.select_lt(zero, z.mul(slope)),
        Activation::HardSwish => {
            let six = s.splat(6.0);
            let floor = s.splat(HARD_SWISH_FLOOR);
            let z = z.select_lt(floor, floor);
            let r = z.add(s.splat(3.0)).select_lt(zero, zero).select_gt(six, six);
            z.mul(r.mul(s.splat(ONE_SIXTH)))
        }
        Activation::HardSigmoid { alpha, beta } => {
            let t = z.mul(s.splat(alpha)).add(s.splat(beta));
            t.select_lt(zero, zero).select_gt(one, one)
        }
        Activation::Sigmoid | Activation::Tanh | Activation::Silu | Activation::Gelu | Activation::GeluTanh => {
            s.activate_outlined(z, act)
        }
    }
}

/// Implements [`Simd::activate_outlined`] in a tier's `impl Simd`: `outlined_activation!(Tier,
/// "features")` for a tier whose entry enables those target features, `outlined_activation!(Tier)`
/// for one that needs none.
macro_rules! outlined_activation {
    ($tier:ty $(, $features:literal)?) => {
        #[inline(always)]
        fn activate_outlined(self, z: Self::F32, act: $crate::epilogue::Activation) -> Self::F32 {
            $(#[target_feature(enable = $features)])?
            #[inline(never)]
            unsafe fn outlined(s: $tier, z: <$tier as Simd>::F32, act: $crate::epilogue::Activation) -> <$tier as Simd>::F32 {
                $crate::kernels::simd::activate_transcendental(s, z, act)
            }
            // SAFETY: the token proves the CPU has the tier's target features.
            unsafe { outlined(self, z, act) }
        }
    };
}
pub(crate) use outlined_activation;

/// The transcendental activations' formulas (see [`activate`]); the others, which
/// [`activate`] computes itself and never sends here, go back to it.
#[inline(always)]
pub(crate) fn activate_transcendental<S: Simd>(s: S, z: S::F32, act: Activation) -> S::F32 {
    type V<S> = <S as Simd>::F32;
    let zero = s.zero();
    let one = s.splat(1.0);
    match act {
        Activation::Sigmoid => one.div(one.add(exp(s, zero.sub(z)))),
        Activation::Tanh => {
            let a = V::<S>::blend_lt(z, zero, zero.sub(z), z);
            let z2 = z.mul(z);
            let mut p = s.splat(TANH_POLY[0]);
            for &c in &TANH_POLY[1..] {
                p = p.mul(z2).add(s.splat(c));
            }
            let small = a.add(a.mul(z2).mul(p));
            let two = s.splat(2.0);
            let large = one.sub(two.div(exp(s, two.mul(a)).add(one)));
            let r = V::<S>::blend_lt(a, s.splat(TANH_POLY_LIMIT), small, large);
            V::<S>::blend_lt(z, zero, zero.sub(r), r)
        }
        Activation::Silu => {
            let floor = s.splat(SMOOTH_FLOOR);
            let z = z.select_lt(floor, floor);
            z.div(one.add(exp(s, zero.sub(z))))
        }
        Activation::Gelu => {
            let floor = s.splat(SMOOTH_FLOOR);
            let z = z.select_lt(floor, floor);
            let x = V::<S>::blend_lt(z, zero, zero.sub(z), z).mul(s.splat(FRAC_1_SQRT_2));
            let t = one.div(one.add(s.splat(0.5).mul(x)));
            let mut p = zero;
            for &c in &ERFC_POLY {
                p = p.mul(t).add(s.splat(c));
            }
            let half_erfc = s.splat(0.5).mul(t.mul(exp(s, p.sub(x.mul(x)))));
            z.mul(V::<S>::blend_lt(z, zero, half_erfc, one.sub(half_erfc)))
        }
        Activation::GeluTanh => {
            let floor = s.splat(SMOOTH_FLOOR);
            let z = z.select_lt(floor, floor);
            let cube = s.splat(GELU_CUBIC).mul(z).mul(z).mul(z);
            let t = s.splat(GELU_SQRT_2_OVER_PI).mul(z.add(cube));
            z.div(one.add(exp(s, s.splat(-2.0).mul(t))))
        }
        Activation::Identity
        | Activation::Relu
        | Activation::Relu6
        | Activation::Clamp { .. }
        | Activation::LeakyRelu { .. }
        | Activation::Prelu
        | Activation::HardSwish
        | Activation::HardSigmoid { .. } => activate(s, z, act, zero),
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

    /// An operand of a tile with no reduction steps, which is never read.
    pub fn unread() -> Self {
        Self::packed(std::ptr::NonNull::dangling().as_ptr())
    }
}

/// Where the NR-lane operand of a tile lives: a packed panel (`kc` rows of `NR` values), or
/// the caller's input, step `k` at `ptr + k * ks` (NR contiguous NCHW pixels read in place).
///
/// With `row_steps` (fused groups), tile row `r` reads its step `k` at step
/// `row_steps[r] + k` of the operand: each row reduces its own group's channels.
#[derive(Clone, Copy)]
pub(crate) struct ColOperand {
    pub ptr: *const f32,
    pub ks: usize,
    pub packed: bool,
    /// Null, or `MR` first steps, one per tile row.
    pub row_steps: *const usize,
}

impl ColOperand {
    /// A packed panel.
    pub fn packed(ptr: *const f32) -> Self {
        ColOperand {
            ptr,
            ks: 0,
            packed: true,
            row_steps: std::ptr::null(),
        }
    }

    /// The same operand with each tile row starting at its own step (see the type's docs).
    pub fn with_row_steps(self, row_steps: *const usize) -> Self {
        ColOperand { row_steps, ..self }
    }

    /// An operand of a tile with no reduction steps, which is never read.
    pub fn unread() -> Self {
        Self::packed(std::ptr::NonNull::dangling().as_ptr())
    }
}

/// The valid part of a register tile: the first `m` rows and `n` lanes are stored (and their
/// residual and column-axis channel values read); nothing outside them is touched.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Extent {
    pub m: usize,
    pub n: usize,
}

/// A `MR x (NV * LANES)` register tile: `C = act(init + A * B + bias + R)` over its `extent`.
///
/// With `PAIRS`, both operands are packed bf16 pairs (`PackedFormat::bf16_pairs`: each
/// 32-bit value holds two consecutive reduction steps) and `kc` counts reduction steps, two
/// per packed row (an odd `kc` ends on a pair whose second step is zero in both operands).
///
/// `a` is the MR-lane operand (see [`RowOperand`]), `b` the NR-lane one (`kc` steps of
/// `NR = NV * LANES` values, see [`ColOperand`]); the reduction runs in registers, starting
/// from zero or, when `init` is non-null, from the partial sums of earlier reduction blocks
/// (an `MR x NR` tile, row-major), and the epilogue is applied before the one store of each
/// register. (Storing partial sums is the epilogue [`TileEpilogue::partial_sums`].) A partial
/// extent stores its last register of each row with [`SimdF32::store_first`] (masked on
/// AVX-512).
///
/// # Safety
/// `a` must address `kc` steps of `MR` lanes and `b` `kc` steps of `NR` values; `init`, when
/// non-null, `MR * NR` readable values; `c` must be writable for `extent.m` rows of
/// `extent.n` values at row stride `ldc`; the epilogue's bias and slopes (`MR` values, or
/// `extent.n` along columns) and residual (`extent.m` rows of `extent.n` at stride `ldr`)
/// must be readable when non-null.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_tile<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(
    s: S,
    kc: usize,
    init: *const f32,
    a: RowOperand,
    b: ColOperand,
    c: *mut f32,
    ldc: usize,
    ep: &TileEpilogue,
    extent: Extent,
) {
    // One epilogue for every reduction loop below: inlined at each loop's end, it was most
    // of each tile's code.
    // SAFETY: forwarded contract; the packed flags select constant-stride instantiations.
    let acc = unsafe {
        if PAIRS {
            debug_assert!(
                a.packed && b.packed && b.row_steps.is_null(),
                "bf16 pairs are always packed"
            );
            tile_sums_pairs::<S, MR, NV>(s, kc.div_ceil(2), init, a.ptr, b.ptr)
        } else if !b.row_steps.is_null() && a.packed {
            if b.packed {
                tile_sums_row_steps::<S, MR, NV, true>(s, kc, init, a, b)
            } else {
                tile_sums_row_steps::<S, MR, NV, false>(s, kc, init, a, b)
            }
        } else {
            debug_assert!(b.row_steps.is_null(), "row steps need packed weights");
            match (a.packed, b.packed) {
                (true, true) => tile_sums_strided::<S, MR, NV, true, true>(s, kc, init, a, b),
                (false, true) => tile_sums_strided::<S, MR, NV, false, true>(s, kc, init, a, b),
                (true, false) => tile_sums_strided::<S, MR, NV, true, false>(s, kc, init, a, b),
                (false, false) => tile_sums_strided::<S, MR, NV, false, false>(s, kc, init, a, b),
            }
        }
    };
    // SAFETY: forwarded contract.
    unsafe { finish::<S, MR, NV>(s, acc, c, ldc, ep, extent) }
}

/// [`gemm_tile`]'s sums with the strides fixed at compile time for packed operands.
#[inline(always)]
unsafe fn tile_sums_strided<S: Simd, const MR: usize, const NV: usize, const PA: bool, const PB: bool>(
    s: S,
    kc: usize,
    init: *const f32,
    a: RowOperand,
    b: ColOperand,
) -> [[S::F32; NV]; MR] {
    let lanes = S::F32::LANES;
    let (rs, ks) = if PA { (1, MR) } else { (a.rs, a.ks) };
    let b_ks = if PB { NV * lanes } else { b.ks };
    // SAFETY: init, when non-null, holds MR x NR values (the caller's contract).
    let mut acc = unsafe { initial_sums::<S, MR, NV>(s, init) };
    let (mut a, mut b) = (a.ptr, b.ptr);
    for _ in 0..kc {
        let mut bv = [s.zero(); NV];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: b addresses kc steps of NR values (the caller's contract).
            *v = unsafe { s.load(b.add(j * lanes)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: a addresses kc steps of MR lanes (the caller's contract).
            let ar = s.splat(unsafe { *a.add(r * rs) });
            for j in 0..NV {
                row[j] = S::F32::mul_add(ar, bv[j], row[j]);
            }
        }
        // After the last step these point one step past the operand, which for an operand
        // read in place can be past the end of the caller's buffer: wrapping arithmetic keeps
        // that unread pointer free of undefined behaviour.
        a = a.wrapping_add(ks);
        b = b.wrapping_add(b_ks);
    }
    acc
}

/// [`gemm_tile`]'s sums on operands packed as bf16 pairs: `pairs` packed rows, each `MR`
/// pair values of `a` (broadcast, one per tile row) and `NR` of `b`, multiplied by
/// [`Simd::dot_bf16_pairs`] (two reduction steps per accumulator and instruction).
///
/// # Safety
/// `a` must address `pairs * MR` readable values and `b` `pairs * NR`; otherwise as
/// [`gemm_tile`].
#[inline(always)]
unsafe fn tile_sums_pairs<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    pairs: usize,
    init: *const f32,
    a: *const f32,
    b: *const f32,
) -> [[S::F32; NV]; MR] {
    let lanes = S::F32::LANES;
    // SAFETY: init, when non-null, holds MR x NR values (the caller's contract).
    let mut acc = unsafe { initial_sums::<S, MR, NV>(s, init) };
    let (mut a, mut b) = (a, b);
    for _ in 0..pairs {
        let mut bv = [s.zero(); NV];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: b addresses `pairs` rows of NR values (the caller's contract).
            *v = unsafe { s.load(b.add(j * lanes)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // The pair's 32 bits broadcast as they are (an f32 move changes no bits).
            // SAFETY: a addresses `pairs` rows of MR values (the caller's contract).
            let ar = s.splat(unsafe { *a.add(r) });
            for j in 0..NV {
                row[j] = s.dot_bf16_pairs(ar, bv[j], row[j]);
            }
        }
        // Wrapping: one row past the last is never read (as in tile_sums_strided).
        a = a.wrapping_add(MR);
        b = b.wrapping_add(NV * lanes);
    }
    acc
}

/// [`gemm_tile`]'s sums for an operand with per-row first steps (fused groups): packed
/// weights, and row `r` reading `b` from step `row_steps[r]`; one load per row and vector,
/// since rows of different groups read different channels.
#[inline(always)]
unsafe fn tile_sums_row_steps<S: Simd, const MR: usize, const NV: usize, const PB: bool>(
    s: S,
    kc: usize,
    init: *const f32,
    a: RowOperand,
    b: ColOperand,
) -> [[S::F32; NV]; MR] {
    let lanes = S::F32::LANES;
    let b_ks = if PB { NV * lanes } else { b.ks };
    // SAFETY: init, when non-null, holds MR x NR values (the caller's contract).
    let mut acc = unsafe { initial_sums::<S, MR, NV>(s, init) };
    let mut rows = [b.ptr; MR];
    for (r, p) in rows.iter_mut().enumerate() {
        // SAFETY: row_steps holds MR values (the caller's contract). Wrapping: see below.
        *p = b.ptr.wrapping_add(unsafe { *b.row_steps.add(r) } * b_ks);
    }
    let mut a = a.ptr;
    let mut at = 0;
    for _ in 0..kc {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: a addresses kc steps of MR lanes; row r's operand kc steps of NR values
            // from its first step (the caller's contract).
            let ar = s.splat(unsafe { *a.add(r) });
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: as above.
                let bv = unsafe { s.load(rows[r].add(at + j * lanes)) };
                *v = S::F32::mul_add(ar, bv, *v);
            }
        }
        // Wrapping: one step past the last is never read (as in tile_sums_strided).
        a = a.wrapping_add(MR);
        at += b_ks;
    }
    acc
}

/// One block of a group-lanes layer (grouped layers with fewer output channels per group
/// than a register has lanes) over a run of output pixels: one register of output channels
/// that belong to several whole groups, for every pixel of the run, `MR` pixels at a time.
/// Lane `l` of step `j` multiplies weight lane `l` of step `j` by its own group's input
/// channel `j`, taken from the pixel's register of the block's input channels by a lane
/// permutation (`indices`, one register per step), so no zero weight is multiplied and each
/// output sums the same products in the same order as any other tile: a fused multiply-add
/// chain from zero, in channel order.
///
/// Pixel `i` of the run reads its inputs at `x + offsets[i] + in0`, where `x` holds `x_len`
/// values; an offset of [`PADDED`](crate::packing::PADDED) is a padded pixel (products of
/// zero). Its outputs are the first `n` lanes at `c + i * ldc` (the residual's at
/// `ep.residual + i * ep.ldr`); the bias and slopes are read once, for the block.
///
/// # Safety
/// Each offset other than `PADDED`, plus `in0`, must be below `x_len`, with the lanes the
/// permutations select (the block's inputs) inside `x`; `weights` and `indices` must hold
/// `cg` registers each (indices below `LANES`); for every pixel of the run, `c` and the
/// residual as [`gemm_tile`] with one row of `n <= LANES` channels; `ep`'s bias and slopes,
/// when non-null, `n` values.
#[inline(always)]
pub(crate) unsafe fn group_lanes_block<S: Simd, const MR: usize>(s: S, block: &GroupLanesBlock, ep: &TileEpilogue) {
    // The common activations as constants, so that the per-pixel epilogue inlines without a
    // branch on the activation (it is most of the work when C/G is small).
    // SAFETY (each arm): forwarded contract.
    match ep.act {
        Activation::Identity => unsafe { group_lanes_block_with::<S, MR>(s, block, ep, Activation::Identity) },
        Activation::Relu => unsafe { group_lanes_block_with::<S, MR>(s, block, ep, Activation::Relu) },
        act => unsafe { group_lanes_block_with::<S, MR>(s, block, ep, act) },
    }
}

/// The operands of [`group_lanes_block`] (see there for each).
#[derive(Clone, Copy)]
pub(crate) struct GroupLanesBlock<'a> {
    pub cg: usize,
    pub x: *const f32,
    pub x_len: usize,
    pub offsets: &'a [isize],
    pub in0: usize,
    pub weights: *const f32,
    pub indices: *const u32,
    pub c: *mut f32,
    pub ldc: usize,
    pub n: usize,
}

/// [`group_lanes_block`] with the activation given apart (a constant where the caller
/// matched it).
///
/// # Safety
/// As [`group_lanes_block`].
#[inline(always)]
unsafe fn group_lanes_block_with<S: Simd, const MR: usize>(
    s: S,
    block: &GroupLanesBlock,
    ep: &TileEpilogue,
    act: Activation,
) {
    let GroupLanesBlock {
        x_len, offsets, in0, n, ..
    } = *block;
    let lanes = S::F32::LANES;
    // SAFETY: n channels of bias and slopes (the caller's contract).
    let channel = |p: *const f32| unsafe {
        match (p.is_null(), n == lanes) {
            (true, _) => s.zero(),
            (false, true) => s.load(p),
            (false, false) => s.load_first(p, n),
        }
    };
    let (bias, slope) = (channel(ep.bias), channel(ep.slope));
    for (t, tile) in offsets.chunks(MR).enumerate() {
        // A full tile of pixels with whole registers of inputs (every tile of a flat-lanes
        // layer but its last) loads and stores with constant trip counts, so that its inputs
        // and sums stay in registers.
        let whole = tile.len() == MR
            && tile
                .iter()
                .all(|&o| o != crate::packing::PADDED && o as usize + in0 + lanes <= x_len);
        // SAFETY: forwarded contract; `whole` as required.
        unsafe {
            if whole {
                group_lanes_tile::<S, MR, true>(s, block, ep, act, t, tile, bias, slope)
            } else {
                group_lanes_tile::<S, MR, false>(s, block, ep, act, t, tile, bias, slope)
            }
        }
    }
}

/// Tile `t` of [`group_lanes_block`] (pixel offsets `tile`); `WHOLE`: `MR` pixels, none
/// padded, each with a whole register of inputs inside `x`.
///
/// # Safety
/// As [`group_lanes_block`], and `WHOLE` only as described.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn group_lanes_tile<S: Simd, const MR: usize, const WHOLE: bool>(
    s: S,
    block: &GroupLanesBlock,
    ep: &TileEpilogue,
    act: Activation,
    t: usize,
    tile: &[isize],
    bias: S::F32,
    slope: S::F32,
) {
    let GroupLanesBlock {
        cg,
        x,
        x_len,
        in0,
        weights,
        indices,
        c,
        ldc,
        n,
        ..
    } = *block;
    let lanes = S::F32::LANES;
    let rows = if WHOLE { MR } else { tile.len() };
    let mut acc = [s.zero(); MR];
    let mut inputs = [s.zero(); MR];
    if WHOLE {
        for (v, &offset) in inputs.iter_mut().zip(tile) {
            // SAFETY: a whole register at offset + in0 inside x (WHOLE).
            *v = unsafe { s.load(x.add(offset as usize + in0)) };
        }
    } else {
        for (v, &offset) in inputs.iter_mut().zip(tile) {
            if offset != crate::packing::PADDED {
                let at = offset as usize + in0;
                // SAFETY: `at` is inside x (the caller's contract); a full register where
                // x has one, else the values to its end, which hold the block's inputs.
                *v = unsafe {
                    if at + lanes <= x_len {
                        s.load(x.add(at))
                    } else {
                        s.load_first(x.add(at), x_len - at)
                    }
                };
            }
        }
    }
    for j in 0..cg {
        // SAFETY: cg registers of weights and indices (the caller's contract).
        let (w, idx) = unsafe {
            (
                s.load(weights.add(j * lanes)),
                s.load_lane_indices(indices.add(j * lanes)),
            )
        };
        for (a, &v) in acc.iter_mut().zip(&inputs) {
            *a = S::F32::mul_add(w, s.permute(v, idx), *a);
        }
    }
    for (r, &z) in acc.iter().enumerate().take(rows) {
        let row = t * MR + r;
        let mut z = z;
        if !ep.bias.is_null() {
            z = z.add(bias);
        }
        // SAFETY (residual and output): pixel `row` of the run, n channels (the
        // caller's contract).
        if !ep.residual.is_null() {
            let p = unsafe { ep.residual.add(row * ep.ldr) };
            z = z.add(unsafe {
                if n == lanes {
                    s.load(p)
                } else {
                    s.load_first(p, n)
                }
            });
        }
        let out = activate(s, z, act, slope);
        unsafe {
            let dst = c.add(row * ldc);
            if n == lanes {
                out.store(dst);
            } else {
                out.store_first(dst, n);
            }
        }
    }
}

/// The operands of [`pixel_lanes_run`] (see there for each).
#[derive(Clone, Copy)]
pub(crate) struct PixelLanesRun<'a> {
    pub c: usize,
    pub x: *const f32,
    pub pixels: PixelRows<'a>,
    pub weights: *const f32,
    pub y: *mut f32,
    pub residual: *const f32,
    pub bias: *const f32,
    pub slope: *const f32,
}

/// Where the pixels of a [`pixel_lanes_run`] read their inputs.
#[derive(Clone, Copy)]
pub(crate) enum PixelRows<'a> {
    /// Pixel `i` at `offsets[i]` (an offset of [`PADDED`](crate::packing::PADDED): a padded
    /// pixel, products of zero): the pixel map of a strided or padded layer.
    Mapped(&'a [isize]),
    /// `count` pixels, pixel `i` at `first + i * spacing`, none padded (a dense layer: no
    /// pixel map to fill, and one address per block).
    Uniform { first: usize, spacing: usize, count: usize },
}

impl PixelRows<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        match *self {
            PixelRows::Mapped(offsets) => offsets.len(),
            PixelRows::Uniform { count, .. } => count,
        }
    }
}

/// How [`pixel_lanes_rows`] finds a block's pixels.
const ROWS_UNIFORM: u8 = 0;
const ROWS_MAPPED_WHOLE: u8 = 1;
const ROWS_MAPPED: u8 = 2;

/// A run of output pixels of an NHWC layer of one group and `K` output channels (fewer than
/// a register has lanes), `LANES` pixels at a time with the pixels as lanes. Each pixel's
/// input channels are loaded `LANES` at a time and transposed in registers
/// ([`Simd::transpose_lanes`]), so that a register holds one channel of every pixel of the
/// block; each of the `K` accumulators (one output channel of the block's pixels) runs the
/// fused multiply-add chain from zero in channel order, the bits of every other tile. The
/// sums are then interleaved into the output's pixel-major order ([`Simd::interleave`]), and
/// each register of `LANES` consecutive outputs gets the epilogue and one store. Nothing is
/// packed and no output is scattered, which is what the weight-row tiles over transposed
/// pixel panels spent most of their time on.
///
/// Pixel `i` of the run reads its `c` input channels at `x` plus its offset in `pixels`
/// ([`PixelRows`]) and writes its `K` outputs at `y + i * K` (the residual's at
/// `residual + i * K`). `weights` holds `W^T`,
/// `c` rows of `K` values. `bias` and `slope`, when not null, hold `K` registers of the
/// output's channel pattern: lane `l` of register `m` has channel `(m * LANES + l) % K`'s.
///
/// # Safety
/// Each pixel's offset other than `PADDED` plus `c` must be at most the length of `x`;
/// `weights` must hold `c * K` values; `y` (and the residual, when not null)
/// `pixels.len() * K` values; `bias` and `slope`, when not null, `K * LANES`.
#[inline(always)]
pub(crate) unsafe fn pixel_lanes_run<S: Simd, const K: usize>(s: S, run: &PixelLanesRun, act: Activation) {
    // One instance per K and tier, the activation a runtime value: the epilogue runs once
    // per register of outputs, after `C * K` multiply-adds, so constant activations (as in
    // `group_lanes_block`) would buy little here, and three arms tripled the loop's compile
    // time (the fuzz build compiles the crate as one codegen unit).
    let lanes = S::F32::LANES;
    let count = run.pixels.len();
    for b in 0..count.div_ceil(lanes) {
        let pixels = (count - b * lanes).min(lanes);
        // SAFETY (sums): the caller's contract; each mode as `pixel_lanes_rows` requires it.
        let sums = unsafe {
            match run.pixels {
                PixelRows::Uniform { first, spacing, .. } if pixels == lanes => {
                    pixel_lanes_sums::<S, K, ROWS_UNIFORM>(s, run, &[], first + b * lanes * spacing, spacing)
                }
                PixelRows::Uniform { first, spacing, .. } => {
                    let mut offsets = [crate::packing::PADDED; 16];
                    for (i, o) in offsets.iter_mut().enumerate().take(pixels) {
                        *o = (first + (b * lanes + i) * spacing) as isize;
                    }
                    pixel_lanes_sums::<S, K, ROWS_MAPPED>(s, run, &offsets[..pixels], 0, 0)
                }
                PixelRows::Mapped(offsets) => {
                    let block = &offsets[b * lanes..][..pixels];
                    if pixels == lanes && block.iter().all(|&o| o != crate::packing::PADDED) {
                        pixel_lanes_sums::<S, K, ROWS_MAPPED_WHOLE>(s, run, block, 0, 0)
                    } else {
                        pixel_lanes_sums::<S, K, ROWS_MAPPED>(s, run, block, 0, 0)
                    }
                }
            }
        };
        let valid = pixels * K;
        let first = b * lanes * K;
        for (m, &z) in s.interleave(sums).iter().enumerate() {
            let at = m * lanes;
            if at >= valid {
                break;
            }
            let n = (valid - at).min(lanes);
            let mut z = z;
            // SAFETY (bias, slopes, residual, output): K registers of bias and slopes; the
            // run's outputs and residual hold `valid` values from `first` (the caller's
            // contract), of which this register's are the `n` from `first + at`.
            unsafe {
                if !run.bias.is_null() {
                    z = z.add(s.load(run.bias.add(at)));
                }
                if !run.residual.is_null() {
                    let r = run.residual.add(first + at);
                    z = z.add(if n == lanes { s.load(r) } else { s.load_first(r, n) });
                }
                let slope = if run.slope.is_null() {
                    s.zero()
                } else {
                    s.load(run.slope.add(at))
                };
                let out = activate(s, z, act, slope);
                let dst = run.y.add(first + at);
                if n == lanes {
                    out.store(dst);
                } else {
                    out.store_first(dst, n);
                }
            }
        }
    }
}

/// The `K` channel sums of one block of [`pixel_lanes_run`], lane `i` of `sums[k]` output
/// channel `k` of pixel `i`; the block's pixels as [`pixel_lanes_rows`] finds them.
///
/// # Safety
/// As [`pixel_lanes_run`], and the block as [`pixel_lanes_rows`] requires.
#[inline(always)]
unsafe fn pixel_lanes_sums<S: Simd, const K: usize, const MODE: u8>(
    s: S,
    run: &PixelLanesRun,
    block: &[isize],
    first: usize,
    spacing: usize,
) -> [S::F32; K] {
    let lanes = S::F32::LANES;
    let (c, x, w) = (run.c, run.x, run.weights);
    let mut acc = [s.zero(); K];
    let full = c / lanes * lanes;
    // Whole registers of channels, then the rest: constant trip counts in the first, so
    // that the rows stay in registers and no step checks the channel count.
    let mut c0 = 0;
    while c0 < full {
        // SAFETY: channels c0..c0 + lanes <= c of each pixel, and rows c0.. of `W^T`.
        unsafe { pixel_lanes_add_channels::<S, K, MODE>(s, x, w, block, first, spacing, c0, lanes, &mut acc) };
        c0 += lanes;
    }
    if c0 < c {
        // SAFETY: as above, for the last c - c0 channels.
        unsafe { pixel_lanes_add_channels::<S, K, MODE>(s, x, w, block, first, spacing, c0, c - c0, &mut acc) };
    }
    acc
}

/// Adds channels `c0..c0 + n` (`n <= LANES`) of the block's pixels to the sums `acc`: the
/// block's rows of those channels transposed into one register per channel, each multiplied
/// by its channel's `K` weights (rows `c0..` of `W^T`, `K` apart at `w`) in channel order.
///
/// # Safety
/// As [`pixel_lanes_rows`], and `w` holds rows `c0..c0 + n` of `K` weights.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pixel_lanes_add_channels<S: Simd, const K: usize, const MODE: u8>(
    s: S,
    x: *const f32,
    w: *const f32,
    block: &[isize],
    first: usize,
    spacing: usize,
    c0: usize,
    n: usize,
    acc: &mut [S::F32; K],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut rows = pixel_lanes_rows::<S, MODE>(s, x, block, first, spacing, c0, n);
        s.transpose_lanes(&mut rows);
        for (j, v) in rows.iter().enumerate().take(n) {
            let wj = w.add((c0 + j) * K);
            for (k, a) in acc.iter_mut().enumerate() {
                *a = S::F32::mul_add(s.splat(*wj.add(k)), *v, *a);
            }
        }
    }
}

/// Channels `c0..c0 + n` (`n <= LANES`) of the block's pixels, a register per pixel (zero
/// for padded pixels and past the block), the rest of each register zero. The pixels, by
/// `MODE`: [`ROWS_UNIFORM`], `LANES` pixels at `first + i * spacing`; [`ROWS_MAPPED_WHOLE`],
/// `LANES` offsets in `block`, none padded; [`ROWS_MAPPED`], the offsets in `block` (at most
/// `LANES`), padded ones read as zero.
///
/// # Safety
/// As [`pixel_lanes_sums`], with channels `c0..c0 + n` inside each pixel's, and `block` or
/// `first` and `spacing` as `MODE` requires.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pixel_lanes_rows<S: Simd, const MODE: u8>(
    s: S,
    x: *const f32,
    block: &[isize],
    first: usize,
    spacing: usize,
    c0: usize,
    n: usize,
) -> [S::F32; 16] {
    let lanes = S::F32::LANES;
    let mut rows = [s.zero(); 16];
    // A constant trip count, so that the rows stay in registers.
    for (i, row) in rows.iter_mut().enumerate().take(lanes) {
        let offset = match MODE {
            ROWS_UNIFORM => first + i * spacing,
            // SAFETY: a whole block holds `lanes` offsets, none padded.
            ROWS_MAPPED_WHOLE => unsafe { *block.get_unchecked(i) as usize },
            _ => match block.get(i) {
                Some(&o) if o != crate::packing::PADDED => o as usize,
                _ => continue,
            },
        };
        // SAFETY: channels c0..c0 + n of the pixel are inside x (the caller's contract).
        let p = unsafe { x.add(offset + c0) };
        *row = unsafe {
            if n == lanes {
                s.load(p)
            } else {
                s.load_first(p, n)
            }
        };
    }
    rows
}

/// The epilogue of one register of sums, as every register tile's: bias (when present),
/// residual (when present), activation.
///
/// # Safety
/// `residual`, when not null, holds `n` readable values (all `LANES` when `n == LANES`).
#[inline(always)]
pub(crate) unsafe fn register_epilogue<S: Simd>(
    s: S,
    sum: S::F32,
    bias: Option<S::F32>,
    residual: *const f32,
    n: usize,
    act: Activation,
    slope: S::F32,
) -> S::F32 {
    let mut z = sum;
    if let Some(b) = bias {
        z = z.add(b);
    }
    if !residual.is_null() {
        // SAFETY: the caller's contract.
        z = z.add(unsafe {
            if n == S::F32::LANES {
                s.load(residual)
            } else {
                s.load_first(residual, n)
            }
        });
    }
    activate(s, z, act, slope)
}

/// Stores `n` values of `v` at `p` (a whole register when `n == LANES`).
///
/// # Safety
/// `p` is valid for writing `n` values.
#[inline(always)]
pub(crate) unsafe fn store_register<S: Simd>(v: S::F32, p: *mut f32, n: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        if n == S::F32::LANES {
            v.store(p)
        } else {
            v.store_first(p, n)
        }
    }
}

/// A tile's accumulators at the start of its reduction: zero, or the partial sums of earlier
/// reduction blocks at `init` (an `MR x NR` tile, row-major).
///
/// # Safety
/// `init` is null or holds `MR * NR` readable values.
#[inline(always)]
unsafe fn initial_sums<S: Simd, const MR: usize, const NV: usize>(s: S, init: *const f32) -> [[S::F32; NV]; MR] {
    let lanes = S::F32::LANES;
    let mut acc = [[s.zero(); NV]; MR];
    if !init.is_null() {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: the caller's contract.
                *v = unsafe { s.load(init.add((r * NV + j) * lanes)) };
            }
        }
    }
    acc
}

/// The epilogue and stores of a computed register tile (see [`gemm_tile`]).
///
/// # Safety
/// As [`gemm_tile`] for `c`, `ldc`, `ep` and `extent`.
#[inline(always)]
unsafe fn finish<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: [[S::F32; NV]; MR],
    c: *mut f32,
    ldc: usize,
    ep: &TileEpilogue,
    extent: Extent,
) {
    let lanes = S::F32::LANES;
    if extent.n == NV * lanes {
        // SAFETY: full rows: the caller's contract covers rows 0..extent.m of the tile.
        unsafe { finish_full::<S, MR, NV>(s, &acc, c, ldc, ep, extent.m) }
    } else {
        // A partial tile (rare) works on a copy in memory, so that its extent-dependent loops
        // cannot keep the accumulators above out of registers.
        let acc = std::hint::black_box(acc);
        // SAFETY: forwarded contract.
        unsafe { finish_partial::<S, MR, NV>(s, acc, c, ldc, ep, extent) }
    }
}

/// Row `r`'s channel values when channels run along rows (weight rows): its bias and PReLU
/// slope broadcast; zero when absent or when channels run along columns.
///
/// # Safety
/// Along rows, the bias and slopes (when non-null) hold a value for row `r`.
#[inline(always)]
unsafe fn row_channel_values<S: Simd>(s: S, ep: &TileEpilogue, r: usize) -> (S::F32, S::F32) {
    let rows_axis = ep.axis == ChannelAxis::Rows;
    // SAFETY: the caller's contract.
    let at = |p: *const f32| {
        if !p.is_null() && rows_axis {
            s.splat(unsafe { *p.add(r) })
        } else {
            s.zero()
        }
    };
    (at(ep.bias), at(ep.slope))
}

/// The epilogue of the first `m` full rows of a tile: bias, residual, activation, one store
/// per register. (Rows end the unrolled loop early, so the accumulators stay in registers;
/// tiles with a partial last row go through [`finish_partial`].)
///
/// # Safety
/// As [`gemm_tile`] with an extent of `m` rows of `NV * LANES` lanes.
#[inline(always)]
unsafe fn finish_full<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &[[S::F32; NV]; MR],
    c: *mut f32,
    ldc: usize,
    ep: &TileEpilogue,
    m: usize,
) {
    let lanes = S::F32::LANES;
    let rows_axis = ep.axis == ChannelAxis::Rows;
    for (r, row) in acc.iter().enumerate() {
        if r == m {
            break;
        }
        // SAFETY: along rows, bias and slopes hold MR values (the caller's contract).
        let (row_bias, row_slope) = unsafe { row_channel_values(s, ep, r) };
        for (j, &v) in row.iter().enumerate() {
            // SAFETY (every access below): the whole tile's bias, slopes, residual and output
            // are inside the caller's buffers.
            unsafe {
                let mut z = v;
                if !ep.bias.is_null() {
                    z = if rows_axis {
                        z.add(row_bias)
                    } else {
                        z.add(s.load(ep.bias.add(j * lanes)))
                    };
                }
                if !ep.residual.is_null() {
                    z = z.add(s.load(ep.residual.add(r * ep.ldr + j * lanes)));
                }
                let slope = if ep.slope.is_null() || rows_axis {
                    row_slope
                } else {
                    s.load(ep.slope.add(j * lanes))
                };
                activate(s, z, ep.act, slope).store(c.add(r * ldc + j * lanes));
            }
        }
    }
}

/// The epilogue of a partial tile: the same operations as [`finish_full`] on the extent's
/// rows and lanes only, with masked (or lane-by-lane) loads and stores at its right edge.
///
/// # Safety
/// As [`gemm_tile`].
#[inline(always)]
unsafe fn finish_partial<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: [[S::F32; NV]; MR],
    c: *mut f32,
    ldc: usize,
    ep: &TileEpilogue,
    extent: Extent,
) {
    let lanes = S::F32::LANES;
    let rows_axis = ep.axis == ChannelAxis::Rows;
    for (r, row) in acc.iter().enumerate().take(extent.m) {
        // SAFETY: along rows, bias and slopes hold a value per row of the extent.
        let (row_bias, row_slope) = unsafe { row_channel_values(s, ep, r) };
        for (j, &v) in row.iter().enumerate() {
            let first = j * lanes;
            if first >= extent.n {
                break;
            }
            let valid = (extent.n - first).min(lanes);
            // Reads `valid` values at `p`: a full register, or the first lanes of one.
            // SAFETY (callers): `p` addresses at least `valid` readable values of the bias,
            // slopes or residual (the caller's contract).
            let read = |p: *const f32| unsafe {
                if valid == lanes {
                    s.load(p)
                } else {
                    s.load_first(p, valid)
                }
            };
            let mut z = v;
            if !ep.bias.is_null() {
                z = if rows_axis {
                    z.add(row_bias)
                } else {
                    z.add(read(ep.bias.wrapping_add(first)))
                };
            }
            if !ep.residual.is_null() {
                z = z.add(read(ep.residual.wrapping_add(r * ep.ldr + first)));
            }
            let slope = if ep.slope.is_null() || rows_axis {
                row_slope
            } else {
                read(ep.slope.wrapping_add(first))
            };
            let out = activate(s, z, ep.act, slope);
            let dst = c.wrapping_add(r * ldc + first);
            // SAFETY: row r < extent.m, lanes first..first + valid <= extent.n are inside the
            // output (the caller's contract).
            unsafe {
                if valid == lanes {
                    out.store(dst);
                } else {
                    out.store_first(dst, valid);
                }
            }
        }
    }
}

/// The time of one [`Simd::dot_bf16_pairs`] over the time of one f32 FMA of the same width
/// (16 independent sums each, operands in registers), measured on this core with tier `s`:
/// how much a step of bf16 pairs (two multiply-adds per lane) costs beside an f32 step (one).
/// Each tier with bf16-pair tiles calls it from its own file.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) fn pair_step_cost_vs_fma<S: Simd>(s: S) -> f64 {
    s.vectorize(MeasurePairStepCost)
}

/// [`pair_step_cost_vs_fma`] as an operation inside the tier's entry point.
struct MeasurePairStepCost;

impl WithSimd for MeasurePairStepCost {
    type Output = f64;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> f64 {
        // The least time of several short runs of each (a few microseconds each), taken in
        // turns, so that an interruption or a frequency step spoils one run, not the ratio.
        let (mut dot, mut fma) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..7 {
            dot = dot.min(time_chains::<S, true>(s));
            fma = fma.min(time_chains::<S, false>(s));
        }
        if fma > 0.0 && dot.is_finite() {
            dot / fma
        } else {
            1.0
        }
    }
}

/// Seconds for 1024 steps of 16 independent sums, by `dot_bf16_pairs` (`DOT`) or `mul_add`.
#[inline(always)]
fn time_chains<S: Simd, const DOT: bool>(s: S) -> f64 {
    // Pairs of bf16 ones (1.0 in both halves): sums grow by 2 (or by about 1) a step, far
    // from overflow and from denormals.
    let a = s.splat(std::hint::black_box(f32::from_bits(0x3f80_3f80)));
    let mut acc = [s.zero(); 16];
    let start = std::time::Instant::now();
    for _ in 0..1024 {
        for v in acc.iter_mut() {
            *v = if DOT {
                s.dot_bf16_pairs(a, a, *v)
            } else {
                S::F32::mul_add(a, a, *v)
            };
        }
    }
    std::hint::black_box(&acc);
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::portable::Portable;

    /// Checks [`Simd::transpose_lanes`] and [`Simd::interleave`] (for every `K` the
    /// pixel-lanes loop uses) on one tier, with values that name their place.
    #[derive(Clone, Copy)]
    struct CheckLaneMoves;

    impl CheckLaneMoves {
        #[inline(always)]
        fn interleave<S: Simd, const K: usize>(s: S) {
            let lanes = S::F32::LANES;
            // cols[k] lane i: channel k of pixel i, valued i * 100 + k.
            let mut cols = [s.zero(); K];
            for (k, c) in cols.iter_mut().enumerate() {
                let v: Vec<f32> = (0..16).map(|i| (i * 100 + k) as f32).collect();
                // SAFETY: v holds 16 >= LANES values.
                *c = unsafe { s.load(v.as_ptr()) };
            }
            let out = s.interleave(cols);
            let mut got = vec![0.0f32; 16 * K];
            for (m, o) in out.iter().enumerate() {
                // SAFETY: got holds 16 values from m * 16.
                unsafe { o.store(got.as_mut_ptr().add(m * 16)) };
            }
            for m in 0..K {
                for l in 0..lanes {
                    let e = m * lanes + l;
                    assert_eq!(
                        got[m * 16 + l],
                        ((e / K) * 100 + e % K) as f32,
                        "{} K {K} ({m}, {l})",
                        S::KERNEL
                    );
                }
            }
        }
    }

    impl WithSimd for CheckLaneMoves {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            let lanes = S::F32::LANES;
            let mut rows = [s.zero(); 16];
            for (i, r) in rows.iter_mut().enumerate().take(lanes) {
                let v: Vec<f32> = (0..16).map(|j| (i * 100 + j) as f32).collect();
                // SAFETY: v holds 16 >= LANES values.
                *r = unsafe { s.load(v.as_ptr()) };
            }
            s.transpose_lanes(&mut rows);
            for (j, r) in rows.iter().enumerate().take(lanes) {
                let mut got = [0.0f32; 16];
                // SAFETY: got holds 16 >= LANES values.
                unsafe { r.store(got.as_mut_ptr()) };
                for (i, &g) in got.iter().enumerate().take(lanes) {
                    assert_eq!(g, (i * 100 + j) as f32, "{} transpose ({i}, {j})", S::KERNEL);
                }
            }
            Self::interleave::<S, 1>(s);
            Self::interleave::<S, 2>(s);
            Self::interleave::<S, 3>(s);
            Self::interleave::<S, 4>(s);
            Self::interleave::<S, 5>(s);
            Self::interleave::<S, 6>(s);
            Self::interleave::<S, 7>(s);
            Self::interleave::<S, 8>(s);
        }
    }

    /// Checks [`Simd::store_bf16`] and [`Simd::store_first_bf16`] on one tier: the bits of
    /// [`round_to_bf16_bits`] for every pattern of its test (ties, NaNs, denormals,
    /// infinities), and nothing written past the first `n`.
    #[derive(Clone, Copy)]
    struct CheckBf16Stores;

    impl WithSimd for CheckBf16Stores {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            let lanes = S::F32::LANES;
            let values: Vec<f32> = crate::element::bf16_rounding_patterns().map(f32::from_bits).collect();
            for chunk in values.chunks_exact(lanes) {
                let mut tmp = [0.0f32; 16];
                tmp[..lanes].copy_from_slice(chunk);
                // SAFETY: tmp holds 16 >= LANES values.
                let v = unsafe { s.load(tmp.as_ptr()) };
                let want: Vec<u16> = chunk.iter().map(|&x| round_to_bf16_bits(x)).collect();
                let mut got = [0xABCDu16; 17];
                // SAFETY: got holds 17 > LANES values.
                unsafe { s.store_bf16(v, got.as_mut_ptr()) };
                assert_eq!(&got[..lanes], &want[..], "{} store_bf16 of {chunk:?}", S::KERNEL);
                assert_eq!(got[lanes], 0xABCD, "{} store_bf16 wrote past LANES", S::KERNEL);
                for n in 0..=lanes {
                    let mut got = [0xABCDu16; 17];
                    // SAFETY: got holds 17 > n values.
                    unsafe { s.store_first_bf16(v, got.as_mut_ptr(), n) };
                    assert_eq!(&got[..n], &want[..n], "{} store_first_bf16 n {n}", S::KERNEL);
                    assert!(
                        got[n..].iter().all(|&g| g == 0xABCD),
                        "{} n {n} wrote past n",
                        S::KERNEL
                    );
                }
            }
        }
    }

    /// Runs `op` on every tier this CPU has, and checks that each ran (scripts/test.sh runs
    /// the tests on each tier, under qemu).
    fn on_every_tier<Op: WithSimd<Output = ()> + Copy>(op: Op) {
        Portable::TOKEN.vectorize(op);
        let mut ran = 1;
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::x86_64::{avx2::Avx2, avx512::Avx512, avx512_bf16::Avx512Bf16};
            ran += Avx512Bf16::try_new().map(|s| s.vectorize(op)).into_iter().count();
            ran += Avx2::try_new().map(|s| s.vectorize(op)).into_iter().count();
            ran += Avx512::try_new().map(|s| s.vectorize(op)).into_iter().count();
        }
        #[cfg(target_arch = "aarch64")]
        {
            use crate::kernels::aarch64::{neon::Neon, neon_bf16::NeonBf16};
            ran += Neon::try_new().map(|s| s.vectorize(op)).into_iter().count();
            ran += NeonBf16::try_new().map(|s| s.vectorize(op)).into_iter().count();
        }
        let tiers = crate::dispatch::available_kernels();
        assert_eq!(
            ran,
            tiers.iter().filter(|k| !crate::kernels::tiles(**k).is_empty()).count()
        );
    }

    #[test]
    fn lane_transposition_and_interleaving_on_every_tier() {
        on_every_tier(CheckLaneMoves);
    }

    #[test]
    fn bf16_stores_round_to_nearest_even_on_every_tier() {
        on_every_tier(CheckBf16Stores);
    }
}

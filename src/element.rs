//! Element types of the tensors a plan reads and writes: `f32`, and `bf16` (the `half`
//! crate's [`bf16`], re-exported as [`crate::bf16`]).
//!
//! A bf16 value is the upper half of an f32's bits, so widening is exact (a shift) and
//! narrowing is one rounding, to nearest with ties to even (IEEE's default), NaNs kept NaN.
//! Every sum is formed in f32 whatever the element types: a bf16 operand is widened before
//! it is multiplied, and a bf16 output is the f32 result rounded once.
//!
//! The crate's kernels compute in f32 on every tier. A bf16 input is widened by the pixel
//! packers as they read it where the call packs its pixels, and into the
//! [`Workspace`](crate::Workspace) first where the call reads its input in place; a bf16
//! output (and its residual) goes through an f32 buffer in the workspace. So a bf16 call
//! gives exactly the bits of the f32 call on the widened values, rounded to bf16 where the
//! output is bf16.
pub use half::bf16;

mod sealed {
    use half::bf16;

    /// A borrowed tensor of either element type. The public generic calls turn their slices
    /// into this at once, so that everything below them is ordinary code compiled once, in
    /// this crate (generic code is compiled in the caller's crate, with the caller's
    /// optimization level, and the engine below a call is large).
    pub enum Tensor<'a> {
        F32(&'a [f32]),
        Bf16(&'a [bf16]),
    }

    /// A mutably borrowed tensor of either element type (see [`Tensor`]).
    pub enum TensorMut<'a> {
        F32(&'a mut [f32]),
        Bf16(&'a mut [bf16]),
    }

    /// What [`super::Element`] can do, out of the public API.
    pub trait Sealed: Copy + Send + Sync + 'static {
        /// The slice as a tensor of its element type.
        fn tensor(s: &[Self]) -> Tensor<'_>;
        /// The slice as a mutable tensor of its element type.
        fn tensor_mut(s: &mut [Self]) -> TensorMut<'_>;
    }

    impl Sealed for f32 {
        #[inline(always)]
        fn tensor(s: &[f32]) -> Tensor<'_> {
            Tensor::F32(s)
        }
        #[inline(always)]
        fn tensor_mut(s: &mut [f32]) -> TensorMut<'_> {
            TensorMut::F32(s)
        }
    }

    impl Sealed for bf16 {
        #[inline(always)]
        fn tensor(s: &[bf16]) -> Tensor<'_> {
            Tensor::Bf16(s)
        }
        #[inline(always)]
        fn tensor_mut(s: &mut [bf16]) -> TensorMut<'_> {
            TensorMut::Bf16(s)
        }
    }
}

pub(crate) use sealed::{Tensor, TensorMut};

impl Tensor<'_> {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            Tensor::F32(s) => s.len(),
            Tensor::Bf16(s) => s.len(),
        }
    }
}

impl TensorMut<'_> {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            TensorMut::F32(s) => s.len(),
            TensorMut::Bf16(s) => s.len(),
        }
    }
}

/// An element type a plan's weights, inputs, residuals and outputs may have: `f32` or
/// [`bf16`]. Sealed: the crate implements it for exactly those two.
///
/// Sums are always formed in f32: see [`Plan::forward`](crate::Plan::forward).
pub trait Element: sealed::Sealed {}
impl Element for f32 {}
impl Element for bf16 {}

/// `v` widened to f32 (exact: its bits are the upper half of the f32's).
#[inline(always)]
pub(crate) fn widen(v: bf16) -> f32 {
    f32::from_bits(u32::from(v.to_bits()) << 16)
}

/// The bits of `v` rounded to bf16: to nearest, ties to even (the discarded low half is
/// added to half an ulp minus one, plus the kept lowest bit, and the carry rounds up); a NaN
/// keeps its sign and upper payload and is made quiet, so that no NaN rounds to infinity.
/// Branch-free apart from the NaN select, so that slice loops vectorize.
#[inline(always)]
pub(crate) fn round_to_bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    let is_nan = bits & 0x7FFF_FFFF > 0x7F80_0000;
    (if is_nan { quiet_nan } else { rounded }) as u16
}

/// Widens `src` into `dst` (same length).
pub(crate) fn widen_into(src: &[bf16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = widen(s);
    }
}

/// Rounds `src` into `dst` (same length), to nearest with ties to even.
pub(crate) fn narrow_into(src: &[f32], dst: &mut [bf16]) {
    debug_assert_eq!(src.len(), dst.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16::from_bits(round_to_bf16_bits(s));
    }
}

#[cfg(test)]
/// Bit patterns covering every exponent, both signs, the rounding boundaries of the low
/// half (ties, one below, one above, odd and even kept bits), denormals, infinities and
/// NaNs (the tests of every rounding to bf16).
pub(crate) fn bf16_rounding_patterns() -> impl Iterator<Item = u32> {
    let lows = [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234, 0xC000];
    (0..=0x1FFu32).flat_map(move |sign_exp| {
        [0u32, 1, 0x40, 0x7F].into_iter().flat_map(move |high_mantissa| {
            lows.into_iter()
                .map(move |low| (sign_exp << 23) | (high_mantissa << 16) | low)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bf16_matches_the_half_crate_to_nearest_even() {
        for bits in bf16_rounding_patterns() {
            let v = f32::from_bits(bits);
            let ours = round_to_bf16_bits(v);
            let theirs = half::bf16::from_f32(v);
            if v.is_nan() {
                assert!(half::bf16::from_bits(ours).is_nan(), "{bits:#010x}");
                assert_eq!(ours & 0x8000, (bits >> 16) as u16 & 0x8000, "{bits:#010x}: sign");
            } else {
                assert_eq!(ours, theirs.to_bits(), "{bits:#010x} ({v:e})");
            }
        }
    }

    #[test]
    fn rounding_picks_the_nearest_and_the_even_one_on_ties() {
        let bf = |v: f32| f32::from_bits(u32::from(round_to_bf16_bits(v)) << 16);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1).
        assert_eq!(bf(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
        assert_eq!(bf(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(bf(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 1.0 + 2f32.powi(-7));
        assert_eq!(bf(f32::MAX), f32::INFINITY);
        assert_eq!(bf(-f32::MAX), f32::NEG_INFINITY);
        assert_eq!(bf(f32::INFINITY), f32::INFINITY);
        assert!(bf(f32::NAN).is_nan());
        // The lowest NaN payload would round to infinity without the quiet bit.
        assert!(bf(f32::from_bits(0x7F80_0001)).is_nan());
        // Denormals round like any other value.
        assert_eq!(bf(f32::from_bits(0x0000_8000)), 0.0);
        assert_eq!(bf(f32::from_bits(0x0001_8000)), f32::from_bits(0x0002_0000));
    }

    #[test]
    fn widening_is_exact_and_round_trips() {
        for bits in 0..=u16::MAX {
            let b = bf16::from_bits(bits);
            let wide = widen(b);
            assert_eq!(wide.to_bits(), u32::from(bits) << 16, "{bits:#06x}: the bits shifted");
            if wide.is_nan() {
                // The half crate quiets a signalling NaN when it widens; widening keeps it.
                assert!(half::bf16::to_f32(b).is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(wide.to_bits(), half::bf16::to_f32(b).to_bits(), "{bits:#06x}");
                assert_eq!(round_to_bf16_bits(wide), bits, "{bits:#06x}");
            }
        }
        let mut out = [0.0f32; 3];
        widen_into(&[bf16::from_f32(1.5), bf16::from_f32(-2.0), bf16::ZERO], &mut out);
        assert_eq!(out, [1.5, -2.0, 0.0]);
        let mut back = [bf16::ZERO; 3];
        narrow_into(&out, &mut back);
        assert_eq!(back.map(bf16::to_f32), [1.5, -2.0, 0.0]);
    }
}

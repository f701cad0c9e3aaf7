//! The fused output stage, `Y = act(acc + bias + R)`: the activation list with its formulas,
//! its validation, and the scalar form used by the reference and matrixmultiply kernels.
//! The SIMD tiers run the same formulas in registers (see `kernels::simd`).
use crate::error::{Error, Result};

/// Activation fused into the store. `z` is the pre-activation value `W*X + bias + R`.
///
/// NaN propagates through every activation (a NaN `z` gives a NaN output).
///
/// Error bounds (f32 result against the formula evaluated in f64 on the same `z`, `u = 2^-24`):
/// the piecewise-linear ones (Identity, ReLU, ReLU6, Clamp, LeakyReLU) are exact up to the
/// one rounding of `alpha * z`; HardSwish is within `3u * |y| `; SiLU and GELU, which evaluate
/// an exponential, are within `2^-20 * (|y| + |z|)` on every tier (tested).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// `y = z`.
    #[default]
    Identity,
    /// `y = max(z, 0)`.
    Relu,
    /// `y = min(max(z, 0), 6)`.
    Relu6,
    /// `y = min(max(z, min), max)`; requires `min <= max`, neither NaN.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `y = z` for `z >= 0`, `alpha * z` otherwise; `alpha` must be finite.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `y = z * min(max(z + 3, 0), 6) / 6` (MobileNetV3's h-swish, evaluated as `z * r * (1/6)`).
    HardSwish,
    /// `y = z * sigmoid(z) = z / (1 + exp(-z))`.
    Silu,
    /// GELU, tanh form: `y = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))`, evaluated as
    /// `z / (1 + exp(-2 sqrt(2/pi) (z + 0.044715 z^3)))`, which is the same function without
    /// the cancellation of `1 + tanh` for negative `z`.
    Gelu,
}

/// `sqrt(2/pi)`, the GELU tanh-form constant.
pub(crate) const GELU_SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the GELU tanh form.
pub(crate) const GELU_CUBIC: f32 = 0.044_715;
/// `1/6`, HardSwish's scale.
pub(crate) const ONE_SIXTH: f32 = 1.0 / 6.0;

impl Activation {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidActivation`] for a Clamp bound that is NaN, `min > max`, or a LeakyReLU
    /// slope that is not finite.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Activation::Clamp { min, max } => {
                if min.is_nan() || max.is_nan() {
                    Err(Error::InvalidActivation("Clamp bound is NaN"))
                } else if min > max {
                    Err(Error::InvalidActivation("Clamp has min > max"))
                } else {
                    Ok(())
                }
            }
            Activation::LeakyRelu { alpha } if !alpha.is_finite() => {
                Err(Error::InvalidActivation("LeakyRelu slope is not finite"))
            }
            _ => Ok(()),
        }
    }

    /// The activation applied to one value, as the scalar kernels compute it.
    #[inline]
    pub fn apply(&self, z: f32) -> f32 {
        match *self {
            Activation::Identity => z,
            Activation::Relu => clamp_below(z, 0.0),
            Activation::Relu6 => clamp_above(clamp_below(z, 0.0), 6.0),
            Activation::Clamp { min, max } => clamp_above(clamp_below(z, min), max),
            Activation::LeakyRelu { alpha } => {
                if z < 0.0 {
                    alpha * z
                } else {
                    z
                }
            }
            Activation::HardSwish => z * clamp_above(clamp_below(z + 3.0, 0.0), 6.0) * ONE_SIXTH,
            Activation::Silu => z / (1.0 + (-z).exp()),
            Activation::Gelu => {
                let t = GELU_SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z);
                z / (1.0 + (-2.0 * t).exp())
            }
        }
    }
}

/// `max(z, lo)` that keeps NaN (`f32::max` would drop it).
#[inline(always)]
fn clamp_below(z: f32, lo: f32) -> f32 {
    if z < lo {
        lo
    } else {
        z
    }
}

/// `min(z, hi)` that keeps NaN.
#[inline(always)]
fn clamp_above(z: f32, hi: f32) -> f32 {
    if z > hi {
        hi
    } else {
        z
    }
}

/// How the bias vector maps onto a tile: per row (NCHW, rows are output channels) or per
/// column (NHWC, columns are output channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BiasAxis {
    Rows,
    Cols,
}

/// The fused output operations for one `rows x cols` tile, in the order they run:
/// add bias, add residual, activation, store.
#[derive(Clone, Copy)]
pub(crate) struct TileEpilogue {
    /// Bias for the tile's first row (or column); null when there is no bias.
    pub bias: *const f32,
    pub bias_axis: BiasAxis,
    /// Residual element at the tile's origin; null when there is no residual.
    pub residual: *const f32,
    /// Row stride of the residual.
    pub ldr: usize,
    pub act: Activation,
}

impl TileEpilogue {
    /// Scalar epilogue over a `rows x cols` tile stored at `c` with row stride `ldc`
    /// (unit column stride), as the reference and matrixmultiply kernels use it.
    ///
    /// # Safety
    /// `c` (and `residual`, `bias` when non-null) must be valid for the tile's extent.
    pub unsafe fn apply_scalar(&self, c: *mut f32, ldc: usize, rows: usize, cols: usize) {
        for r in 0..rows {
            for j in 0..cols {
                // SAFETY: the caller guarantees the tile extent is in bounds.
                unsafe {
                    let mut z = *c.add(r * ldc + j);
                    if !self.bias.is_null() {
                        z += match self.bias_axis {
                            BiasAxis::Rows => *self.bias.add(r),
                            BiasAxis::Cols => *self.bias.add(j),
                        };
                    }
                    if !self.residual.is_null() {
                        z += *self.residual.add(r * self.ldr + j);
                    }
                    *c.add(r * ldc + j) = self.act.apply(z);
                }
            }
        }
    }
}

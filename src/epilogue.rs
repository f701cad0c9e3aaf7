//! The fused output stage, `Y = act(acc + bias + R)`: the activation list with its formulas,
//! its validation, and its one scalar definition ([`ScalarEpilogue`]), which the reference
//! loop, the small-problem loop and the matrixmultiply kernel share. The SIMD tiers run the
//! same formulas in registers (`kernels::simd::activate`).
use crate::error::{Error, Result};

/// Activation fused into the store. `z` is the pre-activation value `W*X + bias + R`.
///
/// NaN propagates through every activation (a NaN `z` gives a NaN output). Infinite `z` gives
/// the function's limit on every kernel and size: `±inf` for the unbounded side of ReLU-like
/// functions, SiLU and GELU, `0` (or `-0`) for SiLU and GELU at `-inf`, `0`/`1` for Sigmoid,
/// `±1` for Tanh, `-0` for HardSwish at `-inf`.
///
/// Error bounds (f32 result against the formula evaluated in f64 on the same `z`, `u = 2^-24`),
/// tested on every kernel:
/// - Identity, ReLU, ReLU6, Clamp: exact; LeakyReLU and PReLU: one rounding of `slope * z`;
/// - HardSwish: within `3u|y| + u|z|`; HardSigmoid: within `u(|y| + 2|alpha z| + |beta|)`;
/// - Sigmoid, Tanh: within `2^-20 |y| + 2^-126`;
/// - SiLU, GELU (both forms): within `2^-20 (|y| + |z|)`; the exact GELU also within
///   `2^-16 |y| + 2^-126` for `-10 < z < 0`, where its value is small.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
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
    /// PReLU with one slope per output channel: `y = z` for `z >= 0`, `slope[k] * z`
    /// otherwise (PyTorch's `nn.PReLU(num_parameters=K)`, ONNX `PRelu` with a `[K, 1, 1]`
    /// slope). The slopes (`[K]`, finite) are given to the plan with
    /// [`PlanBuilder::prelu_slope`](crate::PlanBuilder::prelu_slope).
    Prelu,
    /// `y = z * min(max(z + 3, 0), 6) / 6` (MobileNetV3's h-swish, evaluated as `z * (r * (1/6))`,
    /// which cannot overflow where `y` does not).
    HardSwish,
    /// `y = min(max(alpha * z + beta, 0), 1)` (ONNX `HardSigmoid`, whose defaults are
    /// `alpha = 0.2`, `beta = 0.5`; PyTorch's `nn.Hardsigmoid` is `alpha = 1/6`, `beta = 0.5`).
    /// Both must be finite.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `y = 1 / (1 + exp(-z))`.
    Sigmoid,
    /// `y = tanh(z)`.
    Tanh,
    /// `y = z * sigmoid(z) = z / (1 + exp(-z))`.
    Silu,
    /// GELU, exact form: `y = z * Phi(z) = 0.5 z (1 + erf(z / sqrt(2)))` (PyTorch's
    /// `nn.GELU()` and ONNX `Gelu` by default), evaluated as `z * 0.5 * erfc(-z / sqrt(2))`
    /// so that negative `z` does not cancel.
    Gelu,
    /// GELU, tanh form: `y = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))` (PyTorch's
    /// `nn.GELU(approximate='tanh')`), evaluated as
    /// `z / (1 + exp(-2 sqrt(2/pi) (z + 0.044715 z^3)))`, the same function without the
    /// cancellation of `1 + tanh` for negative `z`. It differs from [`Activation::Gelu`] by up
    /// to 4.7e-4.
    GeluTanh,
}

/// `sqrt(2/pi)`, the GELU tanh-form constant.
pub(crate) const GELU_SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the GELU tanh form.
pub(crate) const GELU_CUBIC: f32 = 0.044_715;
/// `1/6`, HardSwish's scale.
pub(crate) const ONE_SIXTH: f32 = 1.0 / 6.0;
/// `1/sqrt(2)`, the exact GELU's argument scale.
pub(crate) const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Below this `z`, SiLU and GELU are evaluated at this `z` instead: their value there already
/// rounds to `-0`, and `-inf` would otherwise give `-inf * 0 = NaN`.
pub(crate) const SMOOTH_FLOOR: f32 = -200.0;
/// HardSwish evaluates `max(z, -4)`: the same value (`-0`) for every `z <= -3`, and `-0` rather
/// than NaN at `-inf`.
pub(crate) const HARD_SWISH_FLOOR: f32 = -4.0;
/// Tanh switches from its odd polynomial to the exponential form at this `|z|`.
pub(crate) const TANH_POLY_LIMIT: f32 = 0.625;
/// Odd polynomial for `tanh(z) = z + z^3 P(z^2)` on `|z| < 0.625` (Cephes `tanhf`), highest
/// degree first.
pub(crate) const TANH_POLY: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];
/// `erfc(x) ~= t exp(P(t) - x^2)`, `t = 1 / (1 + x/2)`, for `x >= 0`: the Chebyshev fit of
/// Numerical Recipes' `erfcc`, relative error below 1.2e-7 for every `x >= 0` (so the exact
/// GELU keeps its relative accuracy for negative `z`, where it is tiny). Highest degree first.
pub(crate) const ERFC_POLY: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

impl Activation {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidActivation`] for a Clamp bound that is NaN, `min > max`, a LeakyReLU
    /// slope or a HardSigmoid parameter that is not finite.
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
            Activation::HardSigmoid { alpha, beta } if !alpha.is_finite() || !beta.is_finite() => {
                Err(Error::InvalidActivation("HardSigmoid alpha or beta is not finite"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the activation takes a per-channel slope ([`Activation::Prelu`]).
    pub fn needs_slope(&self) -> bool {
        matches!(self, Activation::Prelu)
    }

    /// `y[i] = act(z[i])` for an activation without slopes (PReLU: see
    /// [`crate::OutputDims`]'s channel runs). The activation is matched once, outside the
    /// loop, so the piecewise-linear ones run as vectorized selects.
    pub(crate) fn apply_slice(&self, z: &[f32], y: &mut [f32]) {
        macro_rules! each {
            ($act:expr) => {{
                let act = $act;
                for (y, &z) in y.iter_mut().zip(z) {
                    *y = act.apply(z, 0.0);
                }
            }};
        }
        match *self {
            Activation::Identity => y.copy_from_slice(&z[..y.len()]),
            Activation::Relu => each!(Activation::Relu),
            Activation::Relu6 => each!(Activation::Relu6),
            Activation::Clamp { min, max } => each!(Activation::Clamp { min, max }),
            Activation::LeakyRelu { alpha } => each!(Activation::LeakyRelu { alpha }),
            other => each!(other),
        }
    }

    /// The activation applied to one value `z`, as every scalar path computes it; `slope` is
    /// the channel's PReLU slope (ignored by the others).
    #[inline(always)]
    pub(crate) fn apply(&self, z: f32, slope: f32) -> f32 {
        match *self {
            Activation::Identity => z,
            Activation::Relu => clamp_below(z, 0.0),
            Activation::Relu6 => clamp_above(clamp_below(z, 0.0), 6.0),
            Activation::Clamp { min, max } => clamp_above(clamp_below(z, min), max),
            Activation::LeakyRelu { alpha } => negative_slope(z, alpha),
            Activation::Prelu => negative_slope(z, slope),
            Activation::HardSwish => {
                // Below -3 the value is -0 whatever z is; the floor keeps -inf from giving NaN.
                let z = clamp_below(z, HARD_SWISH_FLOOR);
                z * (clamp_above(clamp_below(z + 3.0, 0.0), 6.0) * ONE_SIXTH)
            }
            Activation::HardSigmoid { alpha, beta } => clamp_above(clamp_below(alpha * z + beta, 0.0), 1.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Activation::Tanh => z.tanh(),
            Activation::Silu => {
                let z = clamp_below(z, SMOOTH_FLOOR);
                z / (1.0 + (-z).exp())
            }
            Activation::Gelu => {
                let z = clamp_below(z, SMOOTH_FLOOR);
                z * normal_cdf(z)
            }
            Activation::GeluTanh => {
                let z = clamp_below(z, SMOOTH_FLOOR);
                let t = GELU_SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z);
                z / (1.0 + (-2.0 * t).exp())
            }
        }
    }
}

/// `Phi(z) = erfc(-z / sqrt(2)) / 2`, the standard normal distribution function, with the
/// relative accuracy of [`ERFC_POLY`] on the negative side (the exact GELU is `z * Phi(z)`).
#[inline(always)]
pub(crate) fn normal_cdf(z: f32) -> f32 {
    let x = z.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = ERFC_POLY.iter().fold(0.0f32, |p, &c| p * t + c);
    let half_erfc = 0.5 * (t * (poly - x * x).exp());
    if z < 0.0 {
        half_erfc
    } else {
        1.0 - half_erfc
    }
}

/// `z` for `z >= 0` (and NaN), `slope * z` otherwise.
#[inline(always)]
fn negative_slope(z: f32, slope: f32) -> f32 {
    if z < 0.0 {
        slope * z
    } else {
        z
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

/// How the per-channel vectors (bias, PReLU slope) map onto a tile: per row (rows are output
/// channels, NCHW) or per column (columns are output channels, NHWC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelAxis {
    Rows,
    Cols,
}

/// The fused output operations for one register tile, in the order they run: add bias, add
/// residual, activation (with the PReLU slopes), store. Pointers address the tile's first
/// row or column; null means absent.
#[derive(Clone, Copy)]
pub(crate) struct TileEpilogue {
    /// Bias for the tile's first channel; null when there is no bias.
    pub bias: *const f32,
    /// PReLU slope for the tile's first channel; null unless the activation is PReLU.
    pub slope: *const f32,
    pub axis: ChannelAxis,
    /// Residual element at the tile's origin; null when there is no residual.
    pub residual: *const f32,
    /// Row stride of the residual.
    pub ldr: usize,
    pub act: Activation,
}

impl TileEpilogue {
    /// The output stage of a reduction block that is not the last: store the partial sums as
    /// they are (no bias, no residual, identity).
    pub fn partial_sums() -> TileEpilogue {
        TileEpilogue {
            bias: std::ptr::null(),
            slope: std::ptr::null(),
            axis: ChannelAxis::Rows,
            residual: std::ptr::null(),
            ldr: 0,
            act: Activation::Identity,
        }
    }
}

/// The scalar epilogue: `act(acc + bias[k] + r)` for one output element of channel `k`.
/// The one scalar definition of the output stage.
#[derive(Clone, Copy)]
pub(crate) struct ScalarEpilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub slope: Option<&'a [f32]>,
    pub act: Activation,
}

impl ScalarEpilogue<'_> {
    /// The output value for accumulator `acc` of global channel `k` and residual `r`.
    #[inline(always)]
    pub fn finish(&self, acc: f32, k: usize, r: Option<f32>) -> f32 {
        self.channel(k).finish(acc, r)
    }

    /// The output stage of channel `k`, for loops that run over one channel's outputs.
    #[inline(always)]
    pub fn channel(&self, k: usize) -> ChannelEpilogue {
        ChannelEpilogue {
            bias: self.bias.map(|b| b[k]),
            slope: self.slope.map_or(0.0, |s| s[k]),
            act: self.act,
        }
    }
}

/// [`ScalarEpilogue`] for one output channel.
#[derive(Clone, Copy)]
pub(crate) struct ChannelEpilogue {
    bias: Option<f32>,
    slope: f32,
    act: Activation,
}

impl ChannelEpilogue {
    /// `act(acc + bias + r)`.
    #[inline(always)]
    pub fn finish(&self, acc: f32, r: Option<f32>) -> f32 {
        let mut z = acc;
        if let Some(b) = self.bias {
            z += b;
        }
        if let Some(r) = r {
            z += r;
        }
        self.act.apply(z, self.slope)
    }
}

/// Where a call's residual comes from.
#[derive(Clone, Copy)]
pub(crate) enum Residual<'a> {
    /// No residual.
    None,
    /// A separate output-shaped buffer.
    Separate(&'a [f32]),
    /// The output buffer itself, read before it is overwritten (`y = act(W x + b + y)`).
    InOutput,
}

impl Residual<'_> {
    /// The residual of output element `at`, read from `output` when it is the output itself.
    #[inline(always)]
    pub fn at(self, at: usize, output: &[f32]) -> Option<f32> {
        match self {
            Residual::None => None,
            Residual::Separate(r) => Some(r[at]),
            Residual::InOutput => Some(output[at]),
        }
    }
}

//! Shared test support: an f64 reference written from the definition (independent of the
//! crate's packing code), data generators, and the error bound.
#![allow(dead_code)]
pub mod gradients;
use pointwise::{Activation, Conv1x1, InputDims, KernelId, Layout, Plan, PlanOptions, Workspace};

/// The PReLU slope of channel `k` of a test problem (exact in f32 on integer data).
pub fn slope_for(k: usize, data: Data) -> f32 {
    match data {
        Data::Exact => [0.25, -0.5, 2.0, 0.0][k % 4],
        Data::Real => 0.05 + 0.1 * (k % 5) as f32,
    }
}
use rand::{Rng, SeedableRng};

/// The data generator. Under miri, ChaCha (`StdRng`) would dominate a tiny test's run time;
/// xoshiro (`SmallRng`) draws the same distributions for a fraction of the interpreted work.
#[cfg(not(miri))]
type DataRng = rand::rngs::StdRng;
#[cfg(miri)]
type DataRng = rand::rngs::SmallRng;

pub const U: f64 = 1.0 / (1u64 << 24) as f64;

/// `gamma_n = n u / (1 - n u)`.
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// The activation in f64, from its textbook formula; `slope` is the channel's PReLU slope.
pub fn act64(act: Activation, z: f64, slope: f64) -> f64 {
    match act {
        Activation::Identity => z,
        Activation::Relu => {
            if z < 0.0 {
                0.0
            } else {
                z
            }
        }
        Activation::Relu6 => z.clamp(0.0, 6.0),
        Activation::Clamp { min, max } => z.clamp(min as f64, max as f64),
        Activation::LeakyRelu { alpha } => {
            if z < 0.0 {
                alpha as f64 * z
            } else {
                z
            }
        }
        Activation::Prelu => {
            if z < 0.0 {
                slope * z
            } else {
                z
            }
        }
        Activation::HardSwish => {
            if z <= -3.0 {
                -0.0
            } else {
                z * (z + 3.0).clamp(0.0, 6.0) / 6.0
            }
        }
        Activation::HardSigmoid { alpha, beta } => (alpha as f64 * z + beta as f64).clamp(0.0, 1.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        Activation::Tanh => z.tanh(),
        Activation::Silu => {
            if z == f64::NEG_INFINITY {
                0.0
            } else {
                z / (1.0 + (-z).exp())
            }
        }
        Activation::Gelu => {
            if z == f64::NEG_INFINITY {
                0.0
            } else {
                z * 0.5 * erfc64(-z / std::f64::consts::SQRT_2)
            }
        }
        Activation::GeluTanh => {
            if z == f64::NEG_INFINITY {
                0.0
            } else {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * z * (1.0 + (c * (z + 0.044715 * z * z * z)).tanh())
            }
        }
        other => panic!("no f64 reference for {other:?}"),
    }
}

/// `erfc(x)` in f64 with a relative error below 1e-13 (continued fraction for `x > 3`,
/// Taylor series of erf otherwise), independent of the crate's f32 approximation.
pub fn erfc64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return 2.0 - erfc64(-x);
    }
    if x > 3.0 {
        // Lentz's continued fraction: erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))).
        let mut f = x;
        for k in (1..200).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        return (-x * x).exp() / std::f64::consts::PI.sqrt() / f;
    }
    // erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
    let mut sum = 0.0f64;
    let mut term = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
    }
    1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
}

/// Lipschitz constant of the activation (bounds how input error grows).
pub fn lipschitz(act: Activation, slope: f64) -> f64 {
    match act {
        Activation::LeakyRelu { alpha } => (alpha.abs() as f64).max(1.0),
        Activation::Prelu => slope.abs().max(1.0),
        Activation::HardSigmoid { alpha, .. } => alpha.abs() as f64,
        Activation::HardSwish => 1.5,
        Activation::Sigmoid => 0.25,
        Activation::Silu | Activation::Gelu | Activation::GeluTanh => 1.2,
        _ => 1.0,
    }
}

/// The activation's own f32 evaluation error at pre-activation `z` with result `y`, as the
/// crate documents it (`Activation`'s error bounds).
pub fn act_error(act: Activation, z: f64, y: f64) -> f64 {
    let rounding = U * y.abs();
    rounding
        + match act {
            Activation::HardSwish => 3.0 * U * y.abs() + U * z.abs(),
            Activation::HardSigmoid { alpha, beta } => U * (2.0 * (alpha as f64 * z).abs() + (beta as f64).abs()),
            Activation::Sigmoid | Activation::Tanh => y.abs() / (1u64 << 20) as f64 + f32::MIN_POSITIVE as f64,
            Activation::Silu | Activation::Gelu | Activation::GeluTanh => (y.abs() + z.abs()) / (1u64 << 20) as f64,
            _ => 0.0,
        }
}

/// Whether the activation is exact on integer data (no rounding beyond the sums).
pub fn exact_activation(act: Activation) -> bool {
    matches!(
        act,
        Activation::Identity
            | Activation::Relu
            | Activation::Relu6
            | Activation::Clamp { .. }
            | Activation::LeakyRelu { .. }
            | Activation::Prelu
    )
}

/// The paddings the sweeps use: none, one all round, asymmetric (top 0, bottom 2, left 1,
/// right 0).
pub const PADDINGS: [pointwise::Padding; 3] = [
    pointwise::Padding::Valid,
    pointwise::Padding::Explicit {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    },
    pointwise::Padding::Explicit {
        top: 0,
        bottom: 2,
        left: 1,
        right: 0,
    },
];

pub const ACTIVATIONS: [Activation; 13] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Relu6,
    Activation::Clamp { min: -2.5, max: 3.0 },
    Activation::LeakyRelu { alpha: 0.25 },
    Activation::HardSwish,
    Activation::Silu,
    Activation::Gelu,
    Activation::Prelu,
    Activation::HardSigmoid { alpha: 0.25, beta: 0.5 },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::GeluTanh,
];

/// One test problem with its data.
#[derive(Clone, Debug)]
pub struct Problem {
    pub conv: Conv1x1,
    pub dims: InputDims,
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub residual: Option<Vec<f32>>,
    /// PReLU slopes, present exactly when the activation is PReLU.
    pub slope: Option<Vec<f32>>,
}

/// Which data to draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Data {
    /// Small integers: every f32 sum is exact.
    Exact,
    /// Uniform in [-1, 1].
    Real,
}

impl Problem {
    pub fn new(conv: Conv1x1, dims: InputDims, bias: bool, residual: bool, data: Data, seed: u64) -> Problem {
        let mut rng = DataRng::seed_from_u64(seed);
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| match data {
                    Data::Exact => rng.random_range(-4i32..=4) as f32,
                    Data::Real => rng.random_range(-1.0f32..=1.0),
                })
                .collect()
        };
        let x = draw(conv.input_len(dims).unwrap());
        let w = draw(conv.weights_len().unwrap());
        let out_len = conv.output_dims(dims).unwrap().len().unwrap();
        let bias = bias.then(|| draw(conv.out_channels));
        let residual = residual.then(|| draw(out_len));
        let slope = conv
            .activation
            .needs_slope()
            .then(|| (0..conv.out_channels).map(|k| slope_for(k, data)).collect());
        Problem {
            conv,
            dims,
            x,
            w,
            bias,
            residual,
            slope,
        }
    }

    pub fn output_len(&self) -> usize {
        self.conv.output_dims(self.dims).unwrap().len().unwrap()
    }

    /// The f64 reference: returns `(y, z, magnitude)` per output element, where `z` is the
    /// pre-activation and `magnitude = sum|w||x| + |b| + |r|`.
    pub fn reference(&self) -> Vec<(f64, f64, f64)> {
        let c = &self.conv;
        let (n, h, w) = (self.dims.n, self.dims.h, self.dims.w);
        let out = c.output_dims(self.dims).unwrap();
        let (ho, wo) = (out.h, out.w);
        let (top, _, left, _) = c.padding.borders();
        let (sh, sw) = c.stride;
        let cg = c.in_channels / c.groups;
        let kg = c.out_channels / c.groups;
        let mut res = vec![(0.0, 0.0, 0.0); self.output_len()];
        for img in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    let iy = (oy * sh) as isize - top as isize;
                    let ix = (ox * sw) as isize - left as isize;
                    let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                    for k in 0..c.out_channels {
                        let g = k / kg;
                        let (mut acc, mut mag) = (0.0f64, 0.0f64);
                        if inside {
                            for cc in 0..cg {
                                let ch = g * cg + cc;
                                let xi = match c.layout {
                                    Layout::Nchw => ((img * c.in_channels + ch) * h + iy as usize) * w + ix as usize,
                                    Layout::Nhwc => ((img * h + iy as usize) * w + ix as usize) * c.in_channels + ch,
                                    other => panic!("no reference for {other:?}"),
                                };
                                let prod = self.w[k * cg + cc] as f64 * self.x[xi] as f64;
                                acc += prod;
                                mag += prod.abs();
                            }
                        }
                        let oi = match c.layout {
                            Layout::Nchw => ((img * c.out_channels + k) * ho + oy) * wo + ox,
                            Layout::Nhwc => ((img * ho + oy) * wo + ox) * c.out_channels + k,
                            other => panic!("no reference for {other:?}"),
                        };
                        if let Some(b) = &self.bias {
                            acc += b[k] as f64;
                            mag += (b[k] as f64).abs();
                        }
                        if let Some(r) = &self.residual {
                            acc += r[oi] as f64;
                            mag += (r[oi] as f64).abs();
                        }
                        let slope = self.slope.as_ref().map_or(0.0, |s| s[k] as f64);
                        res[oi] = (act64(c.activation, acc, slope), acc, mag);
                    }
                }
            }
        }
        res
    }

    /// The problem's plan (bias and PReLU slopes included).
    pub fn plan(&self, options: PlanOptions) -> Plan {
        let mut b = Plan::builder(&self.conv, &self.w).options(options);
        if let Some(bias) = &self.bias {
            b = b.bias(bias);
        }
        if let Some(slope) = &self.slope {
            b = b.prelu_slope(slope);
        }
        b.build().unwrap()
    }

    /// Runs the problem with the register tile named `tile` forced (folded or not); output
    /// pre-filled with NaN.
    pub fn run_tiled(&self, options: PlanOptions, tile: &str, fold: bool) -> Vec<f32> {
        let mut plan = self.plan(options);
        plan.force_tile(tile, fold).unwrap();
        let mut y = vec![f32::NAN; self.output_len()];
        plan.forward(
            &self.x,
            self.dims,
            self.residual.as_deref(),
            &mut y,
            &mut Workspace::new(),
        )
        .unwrap();
        y
    }

    /// Runs `plan` on the problem with its residual, separate or (`in_place`) in the output
    /// buffer itself; output pre-filled with NaN (or with the residual).
    pub fn run_plan_with_residual(&self, plan: &Plan, in_place: bool) -> Vec<f32> {
        let mut ws = Workspace::new();
        let r = self.residual.as_deref().expect("a problem with a residual");
        let mut y = vec![f32::NAN; self.output_len()];
        if in_place {
            y.copy_from_slice(r);
            plan.forward_residual_in_place(&self.x, self.dims, &mut y, &mut ws)
                .unwrap();
        } else {
            plan.forward(&self.x, self.dims, Some(r), &mut y, &mut ws).unwrap();
        }
        y
    }

    /// Runs the problem on a kernel with options; output pre-filled with NaN.
    pub fn run(&self, options: PlanOptions) -> Vec<f32> {
        let plan = self.plan(options);
        let mut y = vec![f32::NAN; self.output_len()];
        let mut ws = Workspace::new();
        plan.forward(&self.x, self.dims, self.residual.as_deref(), &mut y, &mut ws)
            .unwrap();
        y
    }

    /// Checks `y` against the reference: bit-exact where `data` is exact and the activation
    /// adds no rounding, otherwise within the bound from the reduction length.
    pub fn check(&self, y: &[f32], data: Data, kernel: KernelId) -> Result<(), String> {
        self.check_with(&self.reference(), y, data, kernel)
    }

    /// [`Problem::check`] against a reference computed once by [`Problem::reference`], for
    /// callers that check several outputs of the same problem.
    pub fn check_with(
        &self,
        reference: &[(f64, f64, f64)],
        y: &[f32],
        data: Data,
        kernel: KernelId,
    ) -> Result<(), String> {
        assert_eq!(y.len(), reference.len(), "{kernel}: output length");
        let act = self.conv.activation;
        let n_terms = self.conv.in_channels / self.conv.groups + 2;
        let out = self.conv.output_dims(self.dims).unwrap();
        let channel_of = |i: usize| match self.conv.layout {
            Layout::Nchw => i / (out.h * out.w) % out.k,
            Layout::Nhwc => i % out.k,
            other => panic!("no reference for {other:?}"),
        };
        for (i, (&got, &(want, z, mag))) in y.iter().zip(reference.iter()).enumerate() {
            let slope = self.slope.as_ref().map_or(0.0, |s| s[channel_of(i)] as f64);
            if data == Data::Exact && exact_activation(act) {
                if got as f64 != want {
                    return Err(format!(
                        "{kernel}: element {i}: got {got}, want exactly {want} ({:?})",
                        self.conv
                    ));
                }
                continue;
            }
            // Pre-activation error: the f32 sum of n_terms products and addends, plus at most
            // one underflow (half the smallest subnormal) per term. On the bf16 kernels, whose
            // pair instructions flush denormal results and read denormal inputs as zero: one
            // flush (below the smallest normal) and one operand read as zero (below the
            // smallest normal times the other operand, at most 1 in magnitude in these
            // problems) per term. neonbf16's BFDOT rounds to odd, an error below one unit in
            // the last place where rounding to nearest gives half: twice the unit roundoff.
            let pair_kernel = matches!(kernel, KernelId::Avx512Bf16 | KernelId::NeonBf16);
            let per_term = if pair_kernel {
                2.0 * f64::from(f32::MIN_POSITIVE)
            } else {
                f64::from(f32::from_bits(1))
            };
            let sum_error = if kernel == KernelId::NeonBf16 {
                gamma(2 * n_terms)
            } else {
                gamma(n_terms)
            };
            let z_err = 2.0 * sum_error * mag + n_terms as f64 * per_term;
            let bound = lipschitz(act, slope) * z_err + act_error(act, z, want) + f32::MIN_POSITIVE as f64;
            let err = (got as f64 - want).abs();
            if err.is_nan() || err > bound {
                return Err(format!(
                    "{kernel}: element {i}: got {got}, want {want}, error {err:e} > bound {bound:e} ({:?}, {:?})",
                    self.conv, self.dims
                ));
            }
        }
        Ok(())
    }
}

/// Kernels to test on f32 calls: every available one except the bf16 kernels, whose f32 calls
/// run their base tier's tiles (`KernelId::f32_kernel`; tests/bf16.rs checks that they give
/// its bits), or the one `POINTWISE_KERNEL` forces.
pub fn kernels_under_test() -> Vec<KernelId> {
    match std::env::var("POINTWISE_KERNEL") {
        Ok(name) if !name.is_empty() && name != "auto" => vec![KernelId::from_name(&name).unwrap()],
        _ => pointwise::available_kernels()
            .into_iter()
            .filter(|&k| k.f32_kernel() == k)
            .collect(),
    }
}

/// Kernels to test on bf16 calls: every available one, or the one `POINTWISE_KERNEL` forces.
pub fn kernels_under_test_bf16() -> Vec<KernelId> {
    match std::env::var("POINTWISE_KERNEL") {
        Ok(name) if !name.is_empty() && name != "auto" => vec![KernelId::from_name(&name).unwrap()],
        _ => pointwise::available_kernels(),
    }
}

/// `POINTWISE_TEST_SCALE=reduced` (set when tests run under an emulator) thins the sweeps.
pub fn reduced() -> bool {
    std::env::var("POINTWISE_TEST_SCALE").is_ok_and(|v| v == "reduced")
}

/// Tiny mode for `cargo miri test` (see `scripts/miri.sh`): `cfg(miri)`, or
/// `POINTWISE_TEST_SCALE=miri` to preview natively what miri runs. Tests that honour it shrink
/// to a few cases of a few channels and pixels.
pub fn tiny() -> bool {
    cfg!(miri) || std::env::var("POINTWISE_TEST_SCALE").is_ok_and(|v| v == "miri")
}

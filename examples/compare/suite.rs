//! The built-in layer suite, and running one layer on one kernel: median GFLOP/s over
//! repeated runs, checked against an f64 reference on sampled outputs.
use pointwise::{
    bf16, Accumulate, Activation, BackwardPlan, Conv1x1, Element, Gradients, InputDims, KernelChoice, KernelId, Layout,
    Padding, Plan, PlanOptions, Saved, Threads, Workspace,
};
use std::time::Instant;

/// The test suite's f64 activation formulas and their error bounds.
#[path = "../../tests/common/mod.rs"]
mod common;

/// The fused activation of a run: `--activation NAME`, with fixed parameters where it takes
/// any (PReLU's slopes are drawn per channel in `[0.05, 0.45]`).
pub fn activation_by_name(name: &str) -> Option<Activation> {
    Some(match name {
        "identity" => Activation::Identity,
        "relu" => Activation::Relu,
        "relu6" => Activation::Relu6,
        "clamp" => Activation::Clamp { min: -1.0, max: 1.0 },
        "leaky_relu" => Activation::LeakyRelu { alpha: 0.1 },
        "prelu" => Activation::Prelu,
        "hardswish" => Activation::HardSwish,
        "hardsigmoid" => Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "silu" => Activation::Silu,
        "gelu" => Activation::Gelu,
        "gelu_tanh" => Activation::GeluTanh,
        _ => return None,
    })
}

/// The names [`activation_by_name`] takes.
pub const ACTIVATION_NAMES: &str =
    "identity, relu, relu6, clamp, leaky_relu, prelu, hardswish, hardsigmoid, sigmoid, tanh, silu, gelu, gelu_tanh";

/// Which pass of a layer a measurement times: `--pass fwd,bwd_data,bwd_weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pass {
    /// The forward call `y = act(W x + b)`.
    #[value(name = "fwd")]
    Fwd,
    /// The forward call with bf16 weights, input and output (sums in f32): the same data
    /// rounded to bf16, checked with half a bf16 ulp of the output added to the bound.
    #[value(name = "fwd_bf16")]
    FwdBf16,
    /// [`BackwardPlan::data`]: `dx = W^T dz`.
    #[value(name = "bwd_data")]
    BwdData,
    /// [`BackwardPlan::weights`]: `dw = dz x^T`.
    #[value(name = "bwd_weights")]
    BwdWeights,
    /// A whole training step with ReLU and bias: [`Plan::forward_training`], then
    /// [`BackwardPlan::backward`] (activation gradient, dx, dw, db). Counted as three
    /// products' flops, so its time is `3 * fwd / step` times the forward's.
    #[value(name = "step")]
    Step,
}

impl Pass {
    /// The name `--pass` takes and the `pass` column shows.
    pub fn name(self) -> &'static str {
        match self {
            Pass::Fwd => "fwd",
            Pass::FwdBf16 => "fwd_bf16",
            Pass::BwdData => "bwd_data",
            Pass::BwdWeights => "bwd_weights",
            Pass::Step => "step",
        }
    }
}

/// One layer: `n` images of `c x h x w` to `k` channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    pub n: usize,
    pub c: usize,
    pub k: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    /// Whether the layer is limited by memory traffic rather than FMAs (reported against the
    /// bandwidth bound).
    pub memory_bound: bool,
}

impl Layer {
    pub fn new(name: &str, n: usize, c: usize, k: usize, hw: usize, stride: usize) -> Layer {
        Layer {
            name: name.into(),
            n,
            c,
            k,
            h: hw,
            w: hw,
            stride,
            pad: 0,
            groups: 1,
            memory_bound: false,
        }
    }

    pub fn conv(&self, layout: Layout) -> Conv1x1 {
        Conv1x1::new(self.c, self.k)
            .with_stride(self.stride, self.stride)
            .with_padding(Padding::uniform(self.pad))
            .with_groups(self.groups)
            .with_layout(layout)
    }

    pub fn dims(&self) -> InputDims {
        InputDims::new(self.n, self.h, self.w)
    }

    /// `2 * K * C/G * Ho * Wo * N`.
    pub fn flops(&self) -> f64 {
        let out = self
            .conv(Layout::Nchw)
            .output_dims(self.dims())
            .expect("suite layers are valid");
        2.0 * (self.k * (self.c / self.groups) * out.h * out.w * self.n) as f64
    }

    /// Bytes a forward call must move at least once: input, weights, output (written).
    pub fn bytes(&self) -> f64 {
        let out = self
            .conv(Layout::Nchw)
            .output_dims(self.dims())
            .expect("suite layers are valid");
        4.0 * (self.n * self.c * self.h * self.w + self.k * self.c / self.groups + self.n * self.k * out.h * out.w)
            as f64
    }
}

/// The default suite: ResNet-50's 1x1 layers, MobileNetV2 pointwise layers, a ShuffleNet
/// grouped layer, a Linear layer as 1x1, a tiny-channel layer and the seed example.
pub fn default_suite() -> Vec<Layer> {
    let mut v = vec![
        Layer::new("resnet 64->256 56x56", 1, 64, 256, 56, 1),
        Layer::new("resnet 256->64 56x56", 1, 256, 64, 56, 1),
        Layer::new("resnet 512->128 28x28", 1, 512, 128, 28, 1),
        Layer::new("resnet 1024->256 14x14", 1, 1024, 256, 14, 1),
        Layer::new("resnet 2048->512 7x7", 1, 2048, 512, 7, 1),
        Layer::new("resnet 256->512 56x56 s2", 1, 256, 512, 56, 2),
        Layer::new("resnet 1024->2048 14x14 s2", 1, 1024, 2048, 14, 2),
        Layer::new("mobilenet 32->16 112x112", 1, 32, 16, 112, 1),
        Layer::new("mobilenet 24->144 56x56", 1, 24, 144, 56, 1),
        Layer::new("mobilenet 96->576 14x14", 1, 96, 576, 14, 1),
        Layer::new("mobilenet 960->320 7x7", 1, 960, 320, 7, 1),
        Layer {
            groups: 3,
            ..Layer::new("shufflenet 240->240 28x28 g3", 1, 240, 240, 28, 1)
        },
        Layer {
            memory_bound: true,
            ..Layer::new("linear 2048->1000 N=1", 1, 2048, 1000, 1, 1)
        },
        Layer::new("linear 2048->1000 N=64", 64, 2048, 1000, 1, 1),
        Layer {
            memory_bound: true,
            ..Layer::new("tiny 3->64 224x224", 1, 3, 64, 224, 1)
        },
        Layer::new("seed 3->2 3x3", 1, 3, 2, 3, 1),
        Layer::new("seed 3->2 3x3 s2", 1, 3, 2, 3, 2),
    ];
    for l in &mut v {
        l.name = l.name.replace(' ', "_");
    }
    v
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The register tile the plan ran, or `-`.
    pub tile: &'static str,
    pub gflops: f64,
    pub max_rel_err: f64,
    pub ok: bool,
}

/// Deterministic data in [-1, 1].
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs `layer` on `kernel`: times it for about `seconds` (median of runs, each run long
/// enough to time reliably) and checks sampled outputs against an f64 reference. With
/// `bf16`, weights, input and output are bf16.
pub fn measure(
    layer: &Layer,
    layout: Layout,
    act: Activation,
    kernel: KernelId,
    threads: Threads,
    seconds: f64,
    bf16: bool,
) -> Measurement {
    let conv = layer.conv(layout).with_activation(act);
    let dims = layer.dims();
    let x = data(conv.input_len(dims).expect("valid"), 1);
    let w = data(conv.weights_len().expect("valid"), 2);
    let run = Run {
        layer,
        layout,
        act,
        kernel,
        threads,
        seconds,
    };
    if !bf16 {
        return measure_typed(&run, [&x, &w], [&x, &w], (f32::NAN, |v| v), 0.0);
    }
    let to_bf16 = |v: &[f32]| v.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>();
    let (x16, w16) = (to_bf16(&x), to_bf16(&w));
    // The f32 copies hold the bf16 values, for the reference.
    let (x, w): (Vec<f32>, Vec<f32>) = (
        x16.iter().map(|v| v.to_f32()).collect(),
        w16.iter().map(|v| v.to_f32()).collect(),
    );
    // Rounding to bf16 moves a value by at most half of 2^-7 of its magnitude.
    let rounding = 2f64.powi(-8);
    measure_typed(&run, [&x, &w], [&x16, &w16], (bf16::NAN, bf16::to_f32), rounding)
}

/// What one forward measurement runs: a layer in a layout with an activation, on a kernel and
/// a thread count, for about `seconds`.
struct Run<'a> {
    layer: &'a Layer,
    layout: Layout,
    act: Activation,
    kernel: KernelId,
    threads: Threads,
    seconds: f64,
}

/// [`measure`] with input, weights and output of element type `E`: `[xe, we]` are the input
/// and weights, `[x, w]` their f32 values (for the reference), `nan` fills the output before
/// the call (so that an output left unwritten fails the check), `widen` reads an output back,
/// and `rounding` is the output's relative rounding error.
fn measure_typed<E: Element>(
    run: &Run,
    [x, w]: [&[f32]; 2],
    [xe, we]: [&[E]; 2],
    (nan, widen): (E, fn(E) -> f32),
    rounding: f64,
) -> Measurement {
    let conv = run.layer.conv(run.layout).with_activation(run.act);
    let dims = run.layer.dims();
    let bias = data(run.layer.k, 3);
    let slope: Vec<f32> = data(run.layer.k, 4).iter().map(|v| 0.25 + 0.2 * v).collect();
    let options = PlanOptions::default()
        .with_kernel(KernelChoice::Force(run.kernel))
        .with_threads(run.threads);
    let mut builder = Plan::builder(&conv, we).bias(&bias).options(options);
    if run.act.needs_slope() {
        builder = builder.prelu_slope(&slope);
    }
    let plan = builder.build().expect("kernel is available");
    let out = plan.output_dims(dims).expect("valid");
    let mut ye = vec![nan; out.len().expect("valid")];
    let mut ws = Workspace::new();
    plan.forward(xe, dims, None, &mut ye, &mut ws).expect("valid");
    let y: Vec<f32> = ye.iter().map(|&v| widen(v)).collect();
    let (max_rel_err, ok) = verify(run.layer, run.layout, run.act, x, w, &bias, &slope, &y, rounding);
    // The tile the call runs: a bf16 call may run bf16-pair tiles.
    let tile = if std::any::type_name::<E>() == std::any::type_name::<bf16>() {
        plan.tile_for_bf16(dims)
    } else {
        plan.tile_for(dims)
    };
    let tile = tile.ok().flatten().unwrap_or("-");
    let median = median_seconds(run.seconds, || {
        plan.forward(xe, dims, None, &mut ye, &mut ws).expect("valid")
    });
    Measurement {
        tile,
        gflops: run.layer.flops() / median / 1e9,
        max_rel_err,
        ok,
    }
}

/// The median time of one `call`: batches of at least ~2 ms, median over about `seconds` (at
/// least 5 batches, at most 1000).
fn median_seconds(seconds: f64, mut call: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    call();
    let once = t0.elapsed().as_secs_f64().max(1e-7);
    let per_batch = ((2e-3 / once).ceil() as usize).max(1);
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed().as_secs_f64() < seconds && samples.len() < 1000) {
        let t = Instant::now();
        for _ in 0..per_batch {
            call();
        }
        samples.push(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Runs a backward pass of `layer` on `kernel` through [`BackwardPlan`] (the activation
/// plays no part in it): times it as [`measure`] does, with the forward's flop count, and
/// checks sampled results against an f64 reference. `pass` is [`Pass::BwdData`],
/// [`Pass::BwdWeights`] or [`Pass::Step`].
pub fn measure_backward(
    layer: &Layer,
    layout: Layout,
    pass: Pass,
    kernel: KernelId,
    threads: Threads,
    seconds: f64,
) -> Measurement {
    let conv = layer.conv(layout);
    let dims = layer.dims();
    let x = data(conv.input_len(dims).expect("valid"), 1);
    let w = data(conv.weights_len().expect("valid"), 2);
    let dz = data(conv.output_dims(dims).expect("valid").len().expect("valid"), 5);
    let options = PlanOptions::default()
        .with_kernel(KernelChoice::Force(kernel))
        .with_threads(threads);
    let grads = BackwardPlan::new(&conv, &w, options).expect("kernel is available");
    let mut ws = Workspace::new();
    let (median, (max_rel_err, ok)) = match pass {
        Pass::BwdData => {
            let mut dx = vec![f32::NAN; x.len()];
            grads
                .data(&dz, dims, &mut dx, Accumulate::Overwrite, &mut ws)
                .expect("valid");
            let check = verify_backward(layer, layout, pass, &x, &w, &dz, &dx);
            let median = median_seconds(seconds, || {
                grads
                    .data(&dz, dims, &mut dx, Accumulate::Overwrite, &mut ws)
                    .expect("valid")
            });
            (median, check)
        }
        Pass::BwdWeights => {
            let mut dw = vec![f32::NAN; w.len()];
            grads
                .weights(&x, &dz, dims, &mut dw, Accumulate::Overwrite, &mut ws)
                .expect("valid");
            let check = verify_backward(layer, layout, pass, &x, &w, &dz, &dw);
            let median = median_seconds(seconds, || {
                grads
                    .weights(&x, &dz, dims, &mut dw, Accumulate::Overwrite, &mut ws)
                    .expect("valid")
            });
            (median, check)
        }
        Pass::Step => {
            let conv = conv.with_activation(Activation::Relu);
            let bias = data(conv.out_channels, 3);
            let plan = Plan::new(&conv, &w, Some(&bias), options).expect("kernel is available");
            let grads = BackwardPlan::new(&conv, &w, options).expect("kernel is available");
            let (mut z, mut y) = (vec![f32::NAN; dz.len()], vec![f32::NAN; dz.len()]);
            let (mut dx, mut dw, mut db) = (vec![f32::NAN; x.len()], vec![f32::NAN; w.len()], vec![0.0; bias.len()]);
            let mut step = || {
                plan.forward_training(&x, dims, None, &mut z, &mut y, &mut ws)
                    .expect("valid");
                let gradients = Gradients::new().input(&mut dx).weights(&mut dw).bias(&mut db);
                grads
                    .backward(&x, &dz, Saved::Output(&y), dims, gradients, &mut ws)
                    .expect("valid");
            };
            step();
            let median = median_seconds(seconds, step);
            // The data gradient of the step against the reference of the ReLU's dz.
            let relu_dz: Vec<f32> = dz
                .iter()
                .zip(&y)
                .map(|(&d, &v)| if v > 0.0 { d } else { 0.0 })
                .collect();
            let check = verify_backward(layer, layout, Pass::BwdData, &x, &w, &relu_dz, &dx);
            (median / 3.0, check)
        }
        Pass::Fwd | Pass::FwdBf16 => panic!("measure_backward times the backward passes only"),
    };
    Measurement {
        tile: "-",
        gflops: layer.flops() / median / 1e9,
        max_rel_err,
        ok,
    }
}

/// Compares up to ~4096 sampled results of a backward pass (`got`: `dx` for
/// [`Pass::BwdData`], `dw` for [`Pass::BwdWeights`]) with an f64 reference:
/// `dx[c, pixel] = sum_k W[k, c] dz[k, pixel]` through stride and padding (0 where no output
/// reads the pixel), `dw[k, c] = sum over images and output pixels of dz[k, p] x[c, p]`. The
/// error of each, divided by the sum of its terms' magnitudes, must stay within
/// `2 gamma_(L + 1)`, `L` the reduction's length: `K/G` for the data pass, `N*Ho*Wo` for the
/// weights pass.
fn verify_backward(
    layer: &Layer,
    layout: Layout,
    pass: Pass,
    x: &[f32],
    w: &[f32],
    dz: &[f32],
    got: &[f32],
) -> (f64, bool) {
    let out = layer.conv(layout).output_dims(layer.dims()).expect("valid");
    let (ho, wo) = (out.h, out.w);
    let (cg, kg) = (layer.c / layer.groups, layer.k / layer.groups);
    let x_at = |img: usize, ch: usize, iy: usize, ix: usize| match layout {
        Layout::Nchw => ((img * layer.c + ch) * layer.h + iy) * layer.w + ix,
        Layout::Nhwc => ((img * layer.h + iy) * layer.w + ix) * layer.c + ch,
        other => panic!("no reference for {other:?}"),
    };
    let dz_at = |img: usize, k: usize, oy: usize, ox: usize| match layout {
        Layout::Nchw => ((img * layer.k + k) * ho + oy) * wo + ox,
        Layout::Nhwc => ((img * ho + oy) * wo + ox) * layer.k + k,
        other => panic!("no reference for {other:?}"),
    };
    // The output pixel that reads input pixel (iy, ix), if any.
    let reader = |iy: usize, ix: usize| {
        let (py, px) = (iy + layer.pad, ix + layer.pad);
        let (oy, ox) = (py / layer.stride, px / layer.stride);
        (py % layer.stride == 0 && px % layer.stride == 0 && oy < ho && ox < wo).then_some((oy, ox))
    };
    let reduction = match pass {
        Pass::BwdData => kg,
        Pass::BwdWeights => layer.n * ho * wo,
        Pass::Fwd | Pass::FwdBf16 | Pass::Step => panic!("verify_backward checks the data and weight passes"),
    };
    let u = 1.0 / (1u64 << 24) as f64;
    let n_terms = (reduction + 1) as f64;
    let bound = 2.0 * n_terms * u / (1.0 - n_terms * u);
    let step = (got.len() / 4096).max(1) | 1;
    let mut worst = 0.0f64;
    let mut ok = got.iter().all(|v| v.is_finite());
    for i in (0..got.len()).step_by(step) {
        let (mut want, mut mag) = (0.0f64, 0.0f64);
        let mut add = |a: f32, b: f32| {
            let prod = a as f64 * b as f64;
            want += prod;
            mag += prod.abs();
        };
        match pass {
            Pass::BwdData => {
                let (img, ch, iy, ix) = unflatten(layout, i, layer.c, layer.h, layer.w);
                debug_assert_eq!(x_at(img, ch, iy, ix), i);
                if let Some((oy, ox)) = reader(iy, ix) {
                    let (g, cc) = (ch / cg, ch % cg);
                    for kk in 0..kg {
                        let k = g * kg + kk;
                        add(w[k * cg + cc], dz[dz_at(img, k, oy, ox)]);
                    }
                }
            }
            _ => {
                let (k, cc) = (i / cg, i % cg);
                let ch = (k / kg) * cg + cc;
                for img in 0..layer.n {
                    for oy in 0..ho {
                        let iy = (oy * layer.stride) as isize - layer.pad as isize;
                        for ox in 0..wo {
                            let ix = (ox * layer.stride) as isize - layer.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < layer.h && (ix as usize) < layer.w {
                                add(dz[dz_at(img, k, oy, ox)], x[x_at(img, ch, iy as usize, ix as usize)]);
                            }
                        }
                    }
                }
            }
        }
        let err = (got[i] as f64 - want).abs();
        worst = worst.max(err / mag.max(f64::MIN_POSITIVE));
        if err > bound * mag + 1e-30 {
            ok = false;
        }
    }
    (worst, ok)
}

/// `(image, channel, y, x)` of element `i` of a `[N, channels, h, w]` tensor (NCHW) or a
/// `[N, h, w, channels]` one (NHWC).
fn unflatten(layout: Layout, i: usize, channels: usize, h: usize, w: usize) -> (usize, usize, usize, usize) {
    let (img, ch, p) = match layout {
        Layout::Nchw => (i / (channels * h * w), (i / (h * w)) % channels, i % (h * w)),
        _ => (i / (channels * h * w), i % channels, (i / channels) % (h * w)),
    };
    (img, ch, p / w, p % w)
}

/// Compares up to ~4096 sampled outputs with an f64 reference. The error of each is divided
/// by `sum |w x| + |b|`, and must stay within `2 gamma_(C/G + 1)` times the activation's
/// Lipschitz constant, plus the activation's own stated error, plus `output_rounding` times
/// the output's magnitude (a bf16 output's rounding).
#[allow(clippy::too_many_arguments)]
fn verify(
    layer: &Layer,
    layout: Layout,
    act: Activation,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    slope: &[f32],
    y: &[f32],
    output_rounding: f64,
) -> (f64, bool) {
    let conv = layer.conv(layout);
    let out = conv.output_dims(layer.dims()).expect("valid");
    let (cg, kg) = (layer.c / layer.groups, layer.k / layer.groups);
    let step = (y.len() / 4096).max(1) | 1;
    let u = 1.0 / (1u64 << 24) as f64;
    let n_terms = (cg + 1) as f64;
    let bound = 2.0 * n_terms * u / (1.0 - n_terms * u);
    let mut worst = 0.0f64;
    let mut ok = y.iter().all(|v| v.is_finite());
    for oi in (0..y.len()).step_by(step) {
        let (img, k, oy, ox) = unflatten(layout, oi, layer.k, out.h, out.w);
        let iy = (oy * layer.stride) as isize - layer.pad as isize;
        let ix = (ox * layer.stride) as isize - layer.pad as isize;
        let mut z = bias[k] as f64;
        let mut mag = z.abs();
        if iy >= 0 && ix >= 0 && (iy as usize) < layer.h && (ix as usize) < layer.w {
            let (iy, ix) = (iy as usize, ix as usize);
            let g = k / kg;
            for cc in 0..cg {
                let ch = g * cg + cc;
                let xi = match layout {
                    Layout::Nchw => ((img * layer.c + ch) * layer.h + iy) * layer.w + ix,
                    Layout::Nhwc => ((img * layer.h + iy) * layer.w + ix) * layer.c + ch,
                    other => panic!("no reference for {other:?}"),
                };
                let prod = w[k * cg + cc] as f64 * x[xi] as f64;
                z += prod;
                mag += prod.abs();
            }
        }
        let s = f64::from(slope[k]);
        let want = common::act64(act, z, s);
        let err = (y[oi] as f64 - want).abs();
        let rel = err / mag.max(f64::MIN_POSITIVE);
        worst = worst.max(rel);
        let f32_allowed = common::lipschitz(act, s) * bound * mag + common::act_error(act, z, want);
        let allowed = f32_allowed + output_rounding * (want.abs() + f32_allowed) + 1e-30;
        if err > allowed {
            ok = false;
        }
    }
    (worst, ok)
}

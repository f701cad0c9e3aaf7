//! pointwise as a candle op (feature `candle`): the 1x1 convolution of a candle CPU tensor in
//! NCHW, f32 or bf16, with candle's `conv2d` semantics (symmetric `padding`, one `stride`, `groups`)
//! plus a fused activation.
//!
//! - [`conv1x1`]: a function like `Tensor::conv2d` that packs the weights on each call
//!   (weights that change every step, as in training);
//! - [`PointwiseConv2d`]: a [`Module`] that packs its weights once (inference, frozen weights).
//!
//! Both run one candle custom op on the inputs `(x, w)` or `(x, w, b)`: `CustomOp2` without a
//! bias, `CustomOp3` with one. Inputs in any candle layout are accepted: contiguous ones are
//! read in place, others (a transposed or narrowed view) are copied once into NCHW order.
//!
//! Element types: `x` may be f32 or bf16, and the result has `x`'s type (as candle's
//! `conv2d`); `w` and `b` may each be f32 or bf16. Sums are formed in f32: see
//! [`Plan::forward`].
//!
//! Gradients: the op's backward is candle's own: it rebuilds `act(conv2d(x, w) + b)` from
//! candle ops on the saved inputs (the activation written with candle's elementwise ops, by
//! the formulas of [`Activation`]) and back-propagates through it, so `dx`, `dw` and `db` are
//! what candle gives for that graph.
//!
//! Threads: [`conv1x1`] builds a plan per call, so give it `Threads::Rayon` (rayon's pool,
//! shared with candle) rather than `Threads::Count(n)`, whose dedicated pool would start and
//! stop with every call.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use pointwise::interop::candle::{Conv1x1Config, PointwiseConv2d};
//! use pointwise::Activation;
//! let dev = Device::Cpu;
//! let w = Tensor::ones((8, 4, 1, 1), candle_core::DType::F32, &dev).unwrap();
//! let b = Tensor::zeros(8, candle_core::DType::F32, &dev).unwrap();
//! let conv = PointwiseConv2d::new(w, Some(b), Conv1x1Config::default().with_activation(Activation::Relu6)).unwrap();
//! let x = Tensor::ones((1, 4, 5, 5), candle_core::DType::F32, &dev).unwrap();
//! let y = conv.forward(&x).unwrap();
//! assert_eq!(y.dims(), &[1, 8, 5, 5]);
//! assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 4.0);
//! ```
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout as TensorLayout, Module, Shape, Tensor, Var};

use crate::{bf16, Activation, Conv1x1, Element, InputDims, Padding, Plan, PlanOptions, Workspace};

/// The convolution's parameters, named as candle's `Conv2dConfig`, plus a fused activation and
/// pointwise's plan options. `Default`: padding 0, stride 1, dilation 1, groups 1, identity,
/// the fastest kernel on the calling thread.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Conv1x1Config {
    /// Zero padding on every side.
    pub padding: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Dilation; a 1x1 kernel has no taps to spread, so any value gives the same result.
    pub dilation: usize,
    /// Groups, dividing both channel counts.
    pub groups: usize,
    /// Activation applied before the store ([`Activation::Prelu`] is not available here: its
    /// slopes have no place in the op).
    pub activation: Activation,
    /// Kernel choice and threads.
    pub options: PlanOptions,
}

impl Default for Conv1x1Config {
    fn default() -> Self {
        Conv1x1Config {
            padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
            activation: Activation::Identity,
            options: PlanOptions::default(),
        }
    }
}

impl Conv1x1Config {
    /// This config with zero padding `padding` on every side.
    #[must_use]
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
    /// This config with a stride.
    #[must_use]
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    /// This config with groups.
    #[must_use]
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// This config with a fused activation.
    #[must_use]
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
    /// This config with plan options (kernel, threads).
    #[must_use]
    pub fn with_options(mut self, options: PlanOptions) -> Self {
        self.options = options;
        self
    }

    /// The convolution from `C` input channels to `K` output channels, NCHW.
    fn conv(&self, in_channels: usize, out_channels: usize) -> candle_core::Result<Conv1x1> {
        if self.activation == Activation::Prelu {
            candle_core::bail!("pointwise candle op: PReLU needs per-channel slopes; use pointwise::Plan::builder");
        }
        if self.dilation == 0 {
            candle_core::bail!("pointwise candle op: dilation must be at least 1");
        }
        Ok(Conv1x1::new(in_channels, out_channels)
            .with_stride(self.stride, self.stride)
            .with_padding(Padding::uniform(self.padding))
            .with_groups(self.groups)
            .with_activation(self.activation))
    }
}

/// `act(conv2d(x, w) + b)` for a 1x1 kernel, computed by pointwise, packing `w` on this call.
///
/// # Shapes
/// `x`: `[N, C, H, W]`; `w`: `[K, C/G, 1, 1]` (or `[K, C/G]`); `b`: `[K]`; result
/// `[N, K, Ho, Wo]` with `Ho = (H + 2 padding - 1) / stride + 1`, likewise `Wo`.
///
/// # Errors
/// A candle error for a tensor that is not f32 or bf16 on the CPU or has the wrong rank or
/// shape, and
/// for every pointwise [`Error`](crate::Error) (its message kept).
pub fn conv1x1(x: &Tensor, w: &Tensor, b: Option<&Tensor>, config: &Conv1x1Config) -> candle_core::Result<Tensor> {
    let op = PointwiseOp {
        config: *config,
        packed: None,
    };
    match b {
        Some(b) => x.apply_op3(w, b, op),
        None => x.apply_op2(w, op),
    }
}

/// A 1x1 convolution layer whose weights pointwise packs once, at construction: candle's
/// `Conv2d` for frozen weights. It keeps `w` and `b` as tensors for the backward pass; a
/// training loop that updates them in place (`Var::set`) must call [`conv1x1`] instead, which
/// packs on each call.
#[derive(Debug, Clone)]
pub struct PointwiseConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv1x1Config,
    plan: Arc<Plan>,
}

impl PointwiseConv2d {
    /// Packs `weight` (`[K, C/G, 1, 1]` or `[K, C/G]`) and `bias` (`[K]`) into a plan.
    ///
    /// # Errors
    /// As [`conv1x1`].
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv1x1Config) -> candle_core::Result<Self> {
        let (k, cg) = weight_dims(weight.dims())?;
        if config.groups == 0 {
            candle_core::bail!("pointwise candle op: groups must be at least 1");
        }
        let in_channels = cg
            .checked_mul(config.groups)
            .ok_or_else(|| candle_core::Error::msg("pointwise candle op: C/G * groups overflows"))?;
        let conv = config.conv(in_channels, k)?;
        // bf16 weights and bias widen to f32 exactly.
        let w = weight
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let b = bias
            .as_ref()
            .map(|b| b.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>())
            .transpose()?;
        let plan = Plan::new(&conv, &w, b.as_deref(), config.options).map_err(candle_core::Error::wrap)?;
        Ok(PointwiseConv2d {
            weight,
            bias,
            config,
            plan: Arc::new(plan),
        })
    }

    /// The weights, `[K, C/G, 1, 1]` (or `[K, C/G]`) as given.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[K]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The plan that runs the layer (its kernel, tile, convolution).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

impl Module for PointwiseConv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let op = PointwiseOp {
            config: self.config,
            packed: Some(Arc::clone(&self.plan)),
        };
        match &self.bias {
            Some(b) => x.apply_op3(&self.weight, b, op),
            None => x.apply_op2(&self.weight, op),
        }
    }
}

/// The custom op: its config, and the plan when the weights were packed ahead.
#[derive(Debug, Clone)]
struct PointwiseOp {
    config: Conv1x1Config,
    packed: Option<Arc<Plan>>,
}

/// `(K, C/G)` from a weight shape `[K, C/G, 1, 1]` or `[K, C/G]`.
fn weight_dims(dims: &[usize]) -> candle_core::Result<(usize, usize)> {
    match *dims {
        [k, cg, 1, 1] | [k, cg] => Ok((k, cg)),
        _ => candle_core::bail!("pointwise candle op: weights must be [K, C/G, 1, 1] or [K, C/G], got {dims:?}"),
    }
}

/// A tensor's f32 elements in row-major order of its shape, bf16 widened (exactly).
fn row_major_f32<'a>(storage: &'a CpuStorage, layout: &TensorLayout) -> candle_core::Result<Cow<'a, [f32]>> {
    match storage {
        CpuStorage::F32(v) => row_major(v, layout),
        CpuStorage::BF16(v) => Ok(Cow::Owned(row_major(v, layout)?.iter().map(|v| v.to_f32()).collect())),
        other => candle_core::bail!("pointwise candle op: f32 or bf16 tensors only, got {:?}", other.dtype()),
    }
}

/// A tensor's elements in row-major order of its shape: borrowed when its layout is
/// contiguous, gathered through its strides once otherwise.
fn row_major<'a, T: Clone>(data: &'a [T], layout: &TensorLayout) -> candle_core::Result<Cow<'a, [T]>> {
    if let Some((start, end)) = layout.contiguous_offsets() {
        return data
            .get(start..end)
            .map(Cow::Borrowed)
            .ok_or_else(|| candle_core::Error::msg("pointwise candle op: layout outside its storage"));
    }
    let dims = layout.dims();
    let strides = layout.stride();
    let len: usize = dims.iter().product();
    let mut out = Vec::with_capacity(len);
    let mut index = vec![0usize; dims.len()];
    for _ in 0..len {
        let offset = layout.start_offset() + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        let value = data
            .get(offset)
            .ok_or_else(|| candle_core::Error::msg("pointwise candle op: layout outside its storage"))?;
        out.push(value.clone());
        for axis in (0..dims.len()).rev() {
            index[axis] += 1;
            if index[axis] < dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(Cow::Owned(out))
}

thread_local! {
    /// One workspace per calling thread, so that steady-state forward calls do not allocate
    /// scratch (candle allocates the output).
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::new());
}

/// `plan` on `input`, into a new output of `len` elements of the input's type.
fn run_plan<T: Element>(plan: &Plan, input: &[T], dims: InputDims, len: usize, zero: T) -> candle_core::Result<Vec<T>> {
    // Zeroed pages from the allocator: no separate pass writes them before the kernel does.
    let mut y = vec![zero; len];
    // Taken out of the cell for the call: a rayon worker running this op may run another
    // pointwise op on the same thread while it waits (that one then starts empty).
    let mut workspace = WORKSPACE.with(RefCell::take);
    let result = plan.forward(input, dims, None, &mut y, &mut workspace);
    WORKSPACE.with(|cell| cell.replace(workspace));
    result.map_err(candle_core::Error::wrap)?;
    Ok(y)
}

impl PointwiseOp {
    fn forward(
        &self,
        x: (&CpuStorage, &TensorLayout),
        w: (&CpuStorage, &TensorLayout),
        b: Option<(&CpuStorage, &TensorLayout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let [n, c, h, width] = match *x.1.dims() {
            [n, c, h, w] => [n, c, h, w],
            _ => candle_core::bail!("pointwise candle op: input must be [N, C, H, W], got {:?}", x.1.dims()),
        };
        let (k, cg) = weight_dims(w.1.dims())?;
        if cg.checked_mul(self.config.groups) != Some(c) {
            candle_core::bail!(
                "pointwise candle op: weights [{k}, {cg}, 1, 1] with {} groups do not fit {c} input channels",
                self.config.groups
            );
        }
        if let Some((_, layout)) = b {
            if layout.dims() != [k] {
                candle_core::bail!("pointwise candle op: bias must be [{k}], got {:?}", layout.dims());
            }
        }
        let per_call;
        let plan = match &self.packed {
            Some(plan) => plan.as_ref(),
            None => {
                let weights = row_major_f32(w.0, w.1)?;
                let bias = b.map(|(s, l)| row_major_f32(s, l)).transpose()?;
                let conv = self.config.conv(c, k)?;
                per_call = Plan::new(&conv, &weights, bias.as_deref(), self.config.options)
                    .map_err(candle_core::Error::wrap)?;
                &per_call
            }
        };
        let dims = InputDims::new(n, h, width);
        let out = plan.output_dims(dims).map_err(candle_core::Error::wrap)?;
        let shape = Shape::from((out.n, out.k, out.h, out.w));
        let len = out.len().map_err(candle_core::Error::wrap)?;
        // The result has the input's element type, as candle's conv2d.
        match x.0 {
            CpuStorage::F32(v) => {
                let y = run_plan(plan, &row_major(v, x.1)?, dims, len, 0.0f32)?;
                Ok((CpuStorage::F32(y), shape))
            }
            CpuStorage::BF16(v) => {
                let y = run_plan(plan, &row_major(v, x.1)?, dims, len, bf16::ZERO)?;
                Ok((CpuStorage::BF16(y), shape))
            }
            other => candle_core::bail!("pointwise candle op: f32 or bf16 tensors only, got {:?}", other.dtype()),
        }
    }

    /// candle's own gradients of `sum(act(conv2d(x, w) + b) * grad)` with respect to `x`, `w`
    /// and `b`, from candle ops on detached copies of the saved inputs.
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let (k, cg) = weight_dims(w.dims())?;
        let xv = Var::from_tensor(&x.detach())?;
        let wv = Var::from_tensor(&w.detach().reshape((k, cg, 1, 1))?)?;
        let bv = b.map(|b| Var::from_tensor(&b.detach())).transpose()?;
        let cfg = &self.config;
        let mut z = xv
            .as_tensor()
            .conv2d(wv.as_tensor(), cfg.padding, cfg.stride, cfg.dilation, cfg.groups)?;
        if let Some(bv) = &bv {
            z = z.broadcast_add(&bv.as_tensor().reshape((1, k, 1, 1))?)?;
        }
        let y = activation_in_candle(&z, cfg.activation)?;
        let grads = (y * grad)?.sum_all()?.backward()?;
        let missing = || candle_core::Error::msg("pointwise candle op: candle gave no gradient");
        let dx = grads.get(xv.as_tensor()).ok_or_else(missing)?.clone();
        let dw = grads.get(wv.as_tensor()).ok_or_else(missing)?.reshape(w.dims())?;
        let db = match &bv {
            Some(bv) => Some(grads.get(bv.as_tensor()).ok_or_else(missing)?.clone()),
            None => None,
        };
        Ok((dx, dw, db))
    }
}

/// `activation(z)` written with candle's differentiable ops (the formulas of [`Activation`]).
fn activation_in_candle(z: &Tensor, activation: Activation) -> candle_core::Result<Tensor> {
    let sigmoid = |t: &Tensor| t.neg()?.exp()?.affine(1.0, 1.0)?.recip();
    match activation {
        Activation::Identity => Ok(z.clone()),
        Activation::Relu => z.relu(),
        Activation::Relu6 => z.clamp(0f32, 6f32),
        Activation::Clamp { min, max } => z.clamp(min, max),
        Activation::LeakyRelu { alpha } => z.ge(0f32)?.where_cond(z, &z.affine(f64::from(alpha), 0.0)?),
        Activation::HardSwish => z * z.affine(1.0, 3.0)?.clamp(0f32, 6f32)?.affine(1.0 / 6.0, 0.0)?,
        Activation::HardSigmoid { alpha, beta } => z.affine(f64::from(alpha), f64::from(beta))?.clamp(0f32, 1f32),
        Activation::Sigmoid => sigmoid(z),
        Activation::Tanh => z.tanh(),
        Activation::Silu => z.silu(),
        Activation::Gelu => z.gelu_erf(),
        Activation::GeluTanh => z.gelu(),
        Activation::Prelu => candle_core::bail!("pointwise candle op: PReLU is not available"),
    }
}

impl CustomOp2 for PointwiseOp {
    fn name(&self) -> &'static str {
        "pointwise-conv1x1"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &TensorLayout,
        s2: &CpuStorage,
        l2: &TensorLayout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, None, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for PointwiseOp {
    fn name(&self) -> &'static str {
        "pointwise-conv1x1-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &TensorLayout,
        s2: &CpuStorage,
        l2: &TensorLayout,
        s3: &CpuStorage,
        l3: &TensorLayout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, Some(b), grad)?;
        Ok((Some(dx), Some(dw), db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The activation the backward graph rebuilds is the one the forward pass applied.
    #[test]
    fn candle_activations_follow_pointwise_formulas() {
        let z: Vec<f32> = (-80..=80).map(|i| i as f32 * 0.1).collect();
        let zt = Tensor::from_vec(z.clone(), z.len(), &Device::Cpu).unwrap();
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::Relu6,
            Activation::Clamp { min: -1.5, max: 2.5 },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::LeakyRelu { alpha: -0.5 },
            Activation::HardSwish,
            Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Silu,
            Activation::Gelu,
            Activation::GeluTanh,
        ] {
            let ours: Vec<f32> = z.iter().map(|&v| act.apply(v, 0.0)).collect();
            let theirs = activation_in_candle(&zt, act).unwrap().to_vec1::<f32>().unwrap();
            for ((&v, &a), &b) in z.iter().zip(&ours).zip(&theirs) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "{act:?} at {v}: pointwise {a}, candle {b}"
                );
            }
        }
        assert!(activation_in_candle(&zt, Activation::Prelu).is_err());
    }
}

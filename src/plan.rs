//! The plan: validate once, choose the kernel once, pack the weights once; then `forward`
//! as many times as needed, writing into the caller's buffer.
use crate::conv::{Conv1x1, Geometry, InputDims, Layout, OutputDims};
use crate::dispatch::{KernelChoice, KernelId};
use crate::driver::{Bf16Out, GroupLanesJob, InPtr, Job, LanesJob, OutPtr, Phase, TaskScratch};
use crate::element::{bf16, narrow_into, widen, widen_into, Element, Tensor, TensorMut};
use crate::epilogue::{Activation, Residual, ScalarEpilogue};
use crate::error::{checked_product, Error, Result};
use crate::kernels::{self, GroupLanesKernel, Orientation, TileKernel};
use crate::machine::{bf16_pair_step_cost, machine};
use crate::packing::{
    pack_weight_panels, FewChannelPanels, FlatLanePanels, GroupLanePanels, PixelInput, PixelLanePanels, WeightPanels,
};
use crate::schedule::{
    fuses_groups, schedule, uses_few_inputs, uses_few_outputs, uses_flat_lanes, uses_group_lanes, uses_pixel_lanes,
    Forced, Schedule, PARALLEL_MIN_FLOPS,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// With [`KernelChoice::Auto`], calls whose product per image has at most this many
/// multiply-adds (`Ho * Wo * K * (C/G)`, all groups together) run the plain reference loop: packing and tiling
/// cost more than such an image's arithmetic (the seed's 3x3 example has 54). A forced kernel
/// runs at every size. [`Plan::kernel_for`] says which kernel a call of given dims runs.
pub const SMALL_PROBLEM_MACS: usize = 2048;

/// What [`Plan::run`] found out about a call, handed to the path that runs it.
#[derive(Clone, Copy)]
struct Call<'p> {
    geom: Geometry,
    kernel: KernelId,
    path: CallPath<'p>,
    dims: InputDims,
    act: Activation,
    pairs: bool,
}

/// Where a call's results go, with the residual it adds.
enum CallOutput<'a> {
    /// An f32 buffer.
    F32(&'a mut [f32], Residual<'a>),
    /// A bf16 buffer, whose residual is bf16 too: the register tiles round their results
    /// to bf16 in their stores, the other paths run into an f32 buffer first.
    Bf16(&'a mut [bf16], Bf16Residual<'a>),
}

/// The residual of a bf16 output.
#[derive(Clone, Copy)]
enum Bf16Residual<'a> {
    None,
    /// A separate output-shaped buffer.
    Separate(&'a [bf16]),
    /// The output buffer itself, read before it is overwritten.
    InOutput,
}

/// Which loop runs a call ([`Plan::path_for`]): decided once per call, before the input is
/// widened for it or not.
#[derive(Clone, Copy)]
enum CallPath<'p> {
    /// The plain reference loop (small problems, or the reference kernel).
    Reference,
    /// The group-lanes tile, reading the input in place.
    GroupLanes(&'static GroupLanesKernel, &'p GroupLanePanels),
    /// The flat-lanes tile, reading the input in place.
    FlatLanes(&'static GroupLanesKernel, &'p FlatLanePanels),
    /// The pixel-lanes loop, reading the input in place.
    PixelLanes(&'static GroupLanesKernel, &'p PixelLanePanels),
    FewInputs(&'static GroupLanesKernel, &'p FewChannelPanels),
    FewOutputs(&'static GroupLanesKernel, &'p FewChannelPanels),
    /// The register tiles on the driver's loop nest, which pack the pixels (or read f32 ones
    /// in place where the schedule says so).
    Tiles,
}

/// bf16 calls run the bf16-pair tiles only where a pair step (two multiply-adds per lane)
/// costs at most this many f32 FMAs ([`bf16_pair_step_cost`], measured on the core), so that
/// pairs multiply at least 1.33x as fast as f32 FMAs. At 2 the two break even; AMD Zen 5
/// issues `vdpbf16ps` about as fast as an FMA (about 1.1: 1.83x the rate, by the bf16
/// issue's measurement), and an Intel Xeon of family 6, model 207 at a quarter of that rate
/// (3.8-4.2), where the pair tiles ran ResNet-50 and MobileNetV2 layers at 0.61x the f32
/// tiles' bf16 calls (geometric mean 54 against 89 GFLOP/s, NCHW, 1 thread, one `compare`
/// run).
const PAIRS_MAX_STEP_COST: f64 = 1.5;

/// Pixel ranges split across threads (group-lanes calls) start at multiples
/// of this: whole tiles, and whole cache lines of most outputs.
const PIXEL_RANGE_ALIGN: usize = 16;

/// How many threads a forward call may use. Work is split over images, pixel blocks and
/// output-channel blocks, and the reduction only where the problem alone decides it (with a
/// combine in fixed order), so the result is bit-identical for every choice. Calls below about 4 MFLOP always stay on the calling thread.
///
/// For a whole network (one plan per layer), use [`Threads::Rayon`] with one pool installed
/// around the network (or rayon's global pool), or one `Count(n)`: plans with the same count
/// share one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum Threads {
    /// Run on the calling thread.
    #[default]
    Single,
    /// A rayon pool of this many threads (0 and 1 mean the calling thread only; counts above
    /// [`MAX_THREADS`] are capped there). Pools are shared process-wide: every plan with the
    /// same count uses the same pool, started by the first such plan (tens of microseconds,
    /// once) and stopped when the last plan using it is dropped.
    Count(usize),
    /// rayon's current pool (the global one, or the one installed around the call); costs
    /// nothing at plan time.
    Rayon,
}

/// The process-wide pools by thread count; a pool lives while a plan holds it.
type PoolRegistry = Mutex<HashMap<usize, Weak<rayon::ThreadPool>>>;

fn pool_registry() -> std::sync::MutexGuard<'static, HashMap<usize, Weak<rayon::ThreadPool>>> {
    static POOLS: OnceLock<PoolRegistry> = OnceLock::new();
    // A poisoned lock only means another thread panicked while holding it; the map of weak
    // pointers stays valid.
    POOLS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The live shared pools as `(threads of the pool, plans holding it)`, sorted (test hook).
#[cfg(feature = "testing")]
pub(crate) fn live_pools() -> Vec<(usize, usize)> {
    let mut live: Vec<(usize, usize)> = pool_registry()
        .values()
        .filter_map(Weak::upgrade)
        .map(|p| (p.current_num_threads(), Arc::strong_count(&p) - 1))
        .collect();
    live.sort_unstable();
    live
}

/// The stack of each pool thread (see `shared_pool`).
const POOL_STACK_BYTES: usize = 8 << 20;

/// The process-wide pool for `threads` threads (already capped): the live one when a plan
/// holds it, else a new one.
fn shared_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    let mut pools = pool_registry();
    if let Some(pool) = pools.get(&threads).and_then(Weak::upgrade) {
        return Ok(pool);
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("pointwise-{threads}-{i}"))
            // A main thread's stack rather than the 2 MiB default: in an unoptimized build
            // the kernels' register tiles live on the stack (a frame of more than 1 MiB),
            // and the pages are only reserved until they are touched.
            .stack_size(POOL_STACK_BYTES)
            .build()
            .map_err(|e| Error::ThreadPool(e.to_string()))?,
    );
    pools.retain(|_, p| p.strong_count() > 0);
    pools.insert(threads, Arc::downgrade(&pool));
    Ok(pool)
}

/// The order of the weight matrix given to a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum WeightOrder {
    /// `[K, C/G]` row-major: PyTorch's and ONNX's `[K, C/G, 1, 1]`.
    #[default]
    OutputMajor,
    /// `[C/G, K]` row-major: TensorFlow's HWIO kernel `[1, 1, C/G, K]`.
    InputMajor,
}

/// The most threads a dedicated pool gets (`Threads::Count` is capped here).
pub const MAX_THREADS: usize = 256;

/// Plan options, with `Default` = fastest kernel for this CPU, calling thread only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub struct PlanOptions {
    /// Kernel selection.
    pub kernel: KernelChoice,
    /// Threading.
    pub threads: Threads,
}

impl PlanOptions {
    /// Default options, except that the kernel comes from `POINTWISE_KERNEL` when it is set
    /// (see [`KernelChoice::from_env`]); tests and benchmarks use it to force a tier.
    ///
    /// # Errors
    /// [`Error::UnknownKernel`] when the variable names no kernel.
    pub fn from_env() -> Result<Self> {
        Ok(PlanOptions {
            kernel: KernelChoice::from_env()?,
            ..Default::default()
        })
    }

    /// These options with a kernel choice.
    #[must_use]
    pub fn with_kernel(mut self, kernel: KernelChoice) -> Self {
        self.kernel = kernel;
        self
    }

    /// These options with a thread choice.
    #[must_use]
    pub fn with_threads(mut self, threads: Threads) -> Self {
        self.threads = threads;
        self
    }
}

/// Reusable scratch for [`Plan::forward`]: packed pixel blocks, one set per thread. It grows
/// on the first calls and is reused afterwards, so steady-state calls do not allocate. One
/// workspace can serve several plans (not concurrently: `forward` takes it by `&mut`).
#[derive(Default)]
pub struct Workspace {
    tasks: Vec<TaskScratch>,
    /// Partial sums of a split reduction, shared by the call's tasks.
    split_sums: Vec<f32>,
    /// Dense operands and products of the backward passes, and bf16 operands widened to
    /// f32, reused between calls.
    scratch: Vec<Vec<f32>>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("task_scratches", &self.tasks.len())
            .finish()
    }
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scratch for `count` tasks, and `split_len` values of split partial sums.
    fn reserve(&mut self, count: usize, split_len: usize) -> (&mut [TaskScratch], &mut [f32]) {
        if self.tasks.len() < count {
            self.tasks.resize_with(count, TaskScratch::default);
        }
        if self.split_sums.len() < split_len {
            self.split_sums.resize(split_len, 0.0);
        }
        (&mut self.tasks[..count], &mut self.split_sums[..split_len])
    }

    /// A buffer of `len` values (contents unspecified) for a backward pass or a converted
    /// operand; give it back with [`Workspace::return_scratch`] so that the next call
    /// reuses it.
    pub(crate) fn take_scratch(&mut self, len: usize) -> Vec<f32> {
        let mut buffer = self.scratch.pop().unwrap_or_default();
        buffer.resize(len, 0.0);
        buffer
    }

    /// Keeps `buffer` for the next [`Workspace::take_scratch`].
    pub(crate) fn return_scratch(&mut self, buffer: Vec<f32>) {
        if buffer.capacity() > 0 {
            self.scratch.push(buffer);
        }
    }
}

/// A [`PlanBuilder`]'s contents with the weights' element type erased, so that building is
/// compiled once, here, whatever the element type (see [`Tensor`]).
struct PlanParts<'a> {
    conv: &'a Conv1x1,
    weights: Tensor<'a>,
    order: WeightOrder,
    bias: Option<&'a [f32]>,
    slope: Option<&'a [f32]>,
    options: PlanOptions,
}

/// The residual of a call, of either element type.
enum ResidualTensor<'a> {
    None,
    Separate(Tensor<'a>),
    InOutput,
}

/// A pointwise convolution ready to run: validated parameters, chosen kernel, packed weights.
///
/// # Shapes
/// See [`Conv1x1`]: weights `[K, C/G]`, bias `[K]`, input `[N, C, H, W]` or `[N, H, W, C]`,
/// output and residual `[N, K, Ho, Wo]` or `[N, Ho, Wo, K]`.
///
/// # Example
/// The seed example: a 3x3 image with 3 channels holding 1..=27 channel by channel, two
/// output channels.
/// ```
/// use pointwise::{Conv1x1, InputDims, Plan, PlanOptions, Workspace};
/// let x: Vec<f32> = (1..=27).map(|v| v as f32).collect();
/// let w = [1.0, 2.0, 3.0, /* kernel 2: */ 0.5, 0.0, -1.0];
/// let mut ws = Workspace::new();
///
/// let plan = Plan::new(&Conv1x1::new(3, 2), &w, None, PlanOptions::default()).unwrap();
/// let mut y = vec![0.0; 2 * 3 * 3];
/// plan.forward(&x, InputDims::new(1, 3, 3), None, &mut y, &mut ws).unwrap();
/// assert_eq!(y[0], 1.0 * 1.0 + 2.0 * 10.0 + 3.0 * 19.0); // w1*1 + w2*10 + w3*19
///
/// let strided = Plan::new(&Conv1x1::new(3, 2).with_stride(2, 2), &w, None, PlanOptions::default()).unwrap();
/// let mut y2 = vec![0.0; 2 * 2 * 2];
/// strided.forward(&x, InputDims::new(1, 3, 3), None, &mut y2, &mut ws).unwrap();
/// assert_eq!(y2[0], y[0]);            // output (0,0) reads input (0,0)
/// assert_eq!(y2[1], y[2]);            // output (0,1) reads input (0,2)
/// ```
pub struct Plan {
    conv: Conv1x1,
    kernel: KernelId,
    /// Whether the kernel was chosen by Auto (then small problems take the reference loop).
    auto: bool,
    /// The kernel's register tiles (empty for matrixmultiply and reference).
    tiles: &'static [TileKernel],
    /// `[K, C/G]` row-major, whatever order the caller gave.
    weights: Vec<f32>,
    /// Whether every weight is a bf16 value (given as bf16, or f32 with a zero low half):
    /// then calls with bf16 input may run the kernel's bf16-pair tiles.
    weights_bf16: bool,
    bias: Option<Vec<f32>>,
    /// PReLU slopes `[K]`, present exactly when the activation is PReLU.
    slope: Option<Vec<f32>>,
    /// Weight panels for each of the kernel's tiles (by index): the one the layout's typical
    /// shapes use is packed by `new`, the others on the first call that needs them.
    panels: Vec<OnceLock<WeightPanels>>,
    /// The kernel's group-lanes tile and the weights packed for it, when this convolution
    /// runs on it (NHWC, groups narrower than a register: [`uses_group_lanes`]).
    group_lanes: Option<(&'static GroupLanesKernel, GroupLanePanels)>,
    /// The same tile's flat-lanes loop and the weights, bias and slopes packed for it, when
    /// this convolution runs on it (NHWC, one group, stride 1, no padding, few input and
    /// output channels: [`uses_flat_lanes`]).
    flat_lanes: Option<(&'static GroupLanesKernel, FlatLanePanels)>,
    /// The same tier's pixel-lanes loop and the weights, bias and slopes packed for it, when
    /// this convolution runs on it where flat lanes do not (NHWC, one group, few output
    /// channels: [`uses_pixel_lanes`]).
    pixel_lanes: Option<(&'static GroupLanesKernel, PixelLanePanels)>,
    /// The same tier's few-inputs loops and the weights, bias and slopes packed for them, when
    /// this convolution runs on them (stride 1, no padding, at most four input channels per
    /// group; NHWC: one group: [`uses_few_inputs`]).
    few_inputs: Option<(&'static GroupLanesKernel, FewChannelPanels)>,
    /// The same tier's few-outputs loop and the weights, bias and slopes packed for it, when
    /// this convolution runs on it (NCHW, one group, stride 1, no padding, more than four
    /// input and at most four output channels: [`uses_few_outputs`]).
    few_outputs: Option<(&'static GroupLanesKernel, FewChannelPanels)>,
    threads: Threads,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Test hooks: choices fixed instead of the cost model's.
    forced: Forced,
    /// The schedule of the last call's input dims and thread count: a network calls each
    /// layer with the same dims every time, so the cost model runs once per dims.
    last_schedule: Mutex<Option<(InputDims, usize, bool, Schedule)>>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("conv", &self.conv)
            .field("kernel", &self.kernel)
            .field("threads", &self.threads)
            .field("has_bias", &self.bias.is_some())
            .finish()
    }
}

/// Builds a [`Plan`] from the weights and the optional per-channel parameters; made by
/// [`Plan::builder`].
///
/// ```
/// use pointwise::{Activation, Conv1x1, Plan, PlanOptions, Threads, WeightOrder};
/// let conv = Conv1x1::new(3, 2).with_activation(Activation::Prelu);
/// let w_hwio = [1.0, 0.5, 2.0, 0.0, 3.0, -1.0]; // [C, K], TensorFlow's order
/// let plan = Plan::builder(&conv, &w_hwio)
///     .weight_order(WeightOrder::InputMajor)
///     .bias(&[0.1, 0.2])
///     .prelu_slope(&[0.25, 0.1])
///     .options(PlanOptions::default().with_threads(Threads::Single))
///     .build()
///     .unwrap();
/// # let _ = plan;
/// ```
///
/// The weights may be f32 or [`bf16`](crate::bf16); bf16 weights are widened to f32 (exactly)
/// when the plan is built.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct PlanBuilder<'a, W: Element = f32> {
    conv: &'a Conv1x1,
    weights: &'a [W],
    order: WeightOrder,
    bias: Option<&'a [f32]>,
    slope: Option<&'a [f32]>,
    options: PlanOptions,
}

impl<'a, W: Element> PlanBuilder<'a, W> {
    /// The order of the weights (default [`WeightOrder::OutputMajor`], `[K, C/G]`).
    pub fn weight_order(mut self, order: WeightOrder) -> Self {
        self.order = order;
        self
    }

    /// The bias, `[K]`.
    pub fn bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }

    /// The per-channel slopes `[K]` of [`Activation::Prelu`](crate::Activation::Prelu).
    pub fn prelu_slope(mut self, slope: &'a [f32]) -> Self {
        self.slope = Some(slope);
        self
    }

    /// Kernel and thread options.
    pub fn options(mut self, options: PlanOptions) -> Self {
        self.options = options;
        self
    }

    /// Validates everything, resolves the kernel, packs the weights.
    ///
    /// # Errors
    /// Everything [`Conv1x1::validate`] reports; [`Error::LengthMismatch`] for the weights,
    /// the bias or the PReLU slopes (a PReLU plan without slopes: expected `K`, got 0);
    /// [`Error::InvalidActivation`] for a non-finite slope, or slopes given to another
    /// activation; [`Error::KernelUnavailable`] for a forced kernel this CPU lacks;
    /// [`Error::SizeOverflow`]; [`Error::ThreadPool`] when a pool cannot be built.
    pub fn build(self) -> Result<Plan> {
        Plan::build(PlanParts {
            conv: self.conv,
            weights: W::tensor(self.weights),
            order: self.order,
            bias: self.bias,
            slope: self.slope,
            options: self.options,
        })
    }
}

impl Plan {
    /// Validates `conv`, checks the weight and bias lengths, resolves the kernel and packs the
    /// weights. The shorthand of [`Plan::builder`] for `[K, C/G]` weights without PReLU.
    /// The weights may be f32 or [`bf16`](crate::bf16) (widened to f32 exactly).
    ///
    /// # Shapes
    /// `weights`: `[K, C/G]` row-major; `bias`: `[K]`.
    ///
    /// # Errors
    /// As [`PlanBuilder::build`].
    pub fn new<W: Element>(conv: &Conv1x1, weights: &[W], bias: Option<&[f32]>, options: PlanOptions) -> Result<Plan> {
        let builder = Plan::builder(conv, weights).options(options);
        match bias {
            Some(b) => builder.bias(b).build(),
            None => builder.build(),
        }
    }

    /// A builder for a plan with optional bias, PReLU slopes and weight order.
    ///
    /// # Shapes
    /// `weights`: `[K, C/G]` ([`WeightOrder::OutputMajor`], the default) or `[C/G, K]`
    /// ([`WeightOrder::InputMajor`]), row-major.
    pub fn builder<'a, W: Element>(conv: &'a Conv1x1, weights: &'a [W]) -> PlanBuilder<'a, W> {
        PlanBuilder {
            conv,
            weights,
            order: WeightOrder::OutputMajor,
            bias: None,
            slope: None,
            options: PlanOptions::default(),
        }
    }

    fn build(b: PlanParts) -> Result<Plan> {
        let conv = b.conv;
        conv.validate()?;
        let expected = conv.weights_len()?;
        if b.weights.len() != expected {
            return Err(Error::LengthMismatch {
                what: "weights",
                expected,
                got: b.weights.len(),
            });
        }
        let per_channel = |what: &'static str, v: Option<&[f32]>| match v {
            Some(v) if v.len() != conv.out_channels => Err(Error::LengthMismatch {
                what,
                expected: conv.out_channels,
                got: v.len(),
            }),
            _ => Ok(()),
        };
        per_channel("bias", b.bias)?;
        per_channel("prelu slope", b.slope)?;
        match (conv.activation.needs_slope(), b.slope) {
            (true, None) => {
                return Err(Error::LengthMismatch {
                    what: "prelu slope",
                    expected: conv.out_channels,
                    got: 0,
                })
            }
            (true, Some(s)) if s.iter().any(|v| !v.is_finite()) => {
                return Err(Error::InvalidActivation("PReLU slope is not finite"))
            }
            (false, Some(_)) => return Err(Error::InvalidActivation("PReLU slopes given to another activation")),
            _ => {}
        }
        let kernel = b.options.kernel.resolve()?;
        let tiles = kernels::tiles(kernel);
        let pool = match b.options.threads {
            Threads::Count(n) if n > 1 => Some(shared_pool(n.min(MAX_THREADS))?),
            _ => None,
        };
        let given: Vec<f32> = match b.weights {
            Tensor::F32(w) => w.to_vec(),
            Tensor::Bf16(w) => w.iter().map(|&v| widen(v)).collect(),
        };
        let weights_bf16 = given.iter().all(|w| w.to_bits() & 0xFFFF == 0);
        let weights = match b.order {
            WeightOrder::OutputMajor => given,
            WeightOrder::InputMajor => {
                // [C/G, K] -> [K, C/G]: element (c, k) moves to (k, c).
                let (k, cg) = (conv.out_channels, conv.in_channels / conv.groups);
                let mut w = vec![0.0f32; expected];
                for (c, row) in given.chunks_exact(k).enumerate() {
                    for (kk, &v) in row.iter().enumerate() {
                        w[kk * cg + c] = v;
                    }
                }
                w
            }
        };
        let mut plan = Plan {
            conv: *conv,
            kernel,
            auto: b.options.kernel == KernelChoice::Auto,
            tiles,
            weights,
            weights_bf16,
            bias: b.bias.map(<[f32]>::to_vec),
            slope: b.slope.map(<[f32]>::to_vec),
            panels: tiles.iter().map(|_| OnceLock::new()).collect(),
            group_lanes: None,
            flat_lanes: None,
            pixel_lanes: None,
            few_inputs: None,
            few_outputs: None,
            threads: b.options.threads,
            pool,
            forced: Forced::default(),
            last_schedule: Mutex::new(None),
        };
        let (g, cg) = (conv.groups, conv.in_channels / conv.groups);
        let kg = conv.out_channels / g;
        plan.group_lanes = kernels::group_lanes(kernel)
            .filter(|gl| uses_group_lanes(conv.layout, g, kg, cg, gl.lanes))
            .and_then(|gl| Some((gl, GroupLanePanels::pack(&plan.weights, g, kg, cg, gl.lanes)?)));
        let dense = conv.stride == (1, 1) && conv.padding.borders() == (0, 0, 0, 0);
        plan.flat_lanes = kernels::group_lanes(kernel)
            .filter(|fl| uses_flat_lanes(conv.layout, g, cg, kg, dense, fl.lanes))
            .and_then(|fl| {
                let (bias, slope) = (plan.bias.as_deref(), plan.slope.as_deref());
                Some((fl, FlatLanePanels::pack(&plan.weights, bias, slope, cg, kg, fl.lanes)?))
            });
        plan.pixel_lanes = kernels::group_lanes(kernel)
            .filter(|pl| uses_pixel_lanes(conv.layout, g, kg, pl.lanes, pl.pixel_max_k))
            .and_then(|pl| {
                let (bias, slope) = (plan.bias.as_deref(), plan.slope.as_deref());
                Some((pl, PixelLanePanels::pack(&plan.weights, bias, slope, cg, kg, pl.lanes)?))
            });
        plan.few_inputs = kernels::group_lanes(kernel)
            .filter(|fi| uses_few_inputs(conv.layout, g, cg, conv.out_channels, dense, fi.lanes))
            .and_then(|fi| {
                let (bias, slope) = (plan.bias.as_deref(), plan.slope.as_deref());
                Some((
                    fi,
                    FewChannelPanels::pack(conv.layout, &plan.weights, bias, slope, cg, conv.out_channels, fi.lanes)?,
                ))
            });
        plan.few_outputs = kernels::group_lanes(kernel)
            .filter(|_| uses_few_outputs(conv.layout, g, cg, conv.out_channels, dense))
            .and_then(|fo| {
                let (bias, slope) = (plan.bias.as_deref(), plan.slope.as_deref());
                let panels = FewChannelPanels::pack(conv.layout, &plan.weights, bias, slope, cg, conv.out_channels, 1)?;
                Some((fo, panels))
            });
        // Pack for the first tile of the layout's natural orientation now, unless the plan
        // runs on group lanes, flat lanes, pixel lanes, few inputs or few outputs (then tile panels are
        // packed only if a call needs them, as when a test hook forces a tile).
        let natural = match conv.layout {
            Layout::Nchw => Orientation::WeightRows,
            Layout::Nhwc => Orientation::PixelRows,
        };
        let natural_tile = tiles.iter().position(|t| t.tile.orient == natural);
        if let Some(index) = natural_tile.filter(|_| {
            plan.group_lanes.is_none()
                && plan.flat_lanes.is_none()
                && plan.pixel_lanes.is_none()
                && plan.few_inputs.is_none()
                && plan.few_outputs.is_none()
        }) {
            plan.weight_panels(index)?;
        }
        Ok(plan)
    }

    /// Test hook (`testing` feature): makes every later `forward` use the register tile named
    /// `tile` (as `pointwise::testing::tiles(kernel)` lists them, e.g.
    /// `avx512_f32_8x32_wrows`) and fold the batch into the pixel axis or not, instead of the
    /// cost model's choice, so that tests reach every tile on every shape.
    ///
    /// # Errors
    /// [`Error::InvalidTile`] when the plan's kernel has no tile of that name.
    #[cfg(feature = "testing")]
    pub fn force_tile(&mut self, tile: &str, fold_batch: bool) -> Result<()> {
        match self.tiles.iter().position(|t| t.name == tile) {
            Some(index) => {
                self.forced.tiling = Some((index, fold_batch || self.conv.layout == Layout::Nhwc));
                self.forget_schedule();
                Ok(())
            }
            None => Err(Error::InvalidTile(format!("{} has no tile {tile}", self.kernel))),
        }
    }

    /// Test hook (`testing` feature): makes every later `forward` on a register-tiled kernel
    /// run the reduction in blocks of `kc` steps (clamped to `1..=C/G`), as the schedule does
    /// by itself only for reductions too long for the cache. The result is the same bits.
    #[cfg(feature = "testing")]
    pub fn force_reduction_block(&mut self, kc: usize) {
        self.forced.kc = Some(kc);
        self.forget_schedule();
    }

    /// Test hook (`testing` feature): makes every later `forward` on a register-tiled kernel
    /// split the reduction into `parts` parts (clamped to `1..=C/G`) that are reduced as
    /// separate units and added in part order, as the schedule does by itself only when a
    /// call has few output tiles and a long reduction. The result is the same bits for every
    /// thread count.
    #[cfg(feature = "testing")]
    pub fn force_reduction_split(&mut self, parts: usize) {
        self.forced.parts = Some(parts);
        self.forget_schedule();
    }

    /// The name of the register tile a forward call with `dims` runs, if the call runs one
    /// (test hook, `testing` feature; `compare` prints it).
    ///
    /// # Errors
    /// As [`Plan::output_dims`].
    #[cfg(feature = "testing")]
    pub fn tile_for(&self, dims: InputDims) -> Result<Option<&'static str>> {
        self.tile_for_call(dims, false)
    }

    /// The name of the register tile a forward call with `dims` and a bf16 input runs, if
    /// the call runs one (test hook, `testing` feature): on a kernel with bf16-pair tiles
    /// and a plan of bf16 weights, one of those where the core runs them fast enough (or a
    /// forced pair tile).
    ///
    /// # Errors
    /// As [`Plan::output_dims`].
    #[cfg(feature = "testing")]
    pub fn tile_for_bf16(&self, dims: InputDims) -> Result<Option<&'static str>> {
        self.tile_for_call(dims, self.multiplies_pairs(&Tensor::Bf16(&[])))
    }

    /// The tile a call with `dims` runs, following `Plan::run`'s choices: the kernel for
    /// the call's size, the group-lanes and flat-lanes loops, then the schedule's tile among
    /// those of the call's kind (`pairs`).
    #[cfg(feature = "testing")]
    fn tile_for_call(&self, dims: InputDims, pairs: bool) -> Result<Option<&'static str>> {
        let len = self.conv.input_len(dims)?;
        let out = self.conv.output_dims(dims)?.len()?;
        let Some(geom) = Geometry::new(&self.conv, dims, len, None, out)? else {
            return Ok(None);
        };
        if self.kernel_for_macs(geom.p * geom.k * geom.cg) != self.kernel || self.tiles.is_empty() {
            return Ok(None);
        }
        Ok(Some(match self.path_for(&geom, self.kernel) {
            CallPath::GroupLanes(gl, _) => gl.name,
            CallPath::FlatLanes(fl, _) => fl.flat_name,
            CallPath::PixelLanes(pl, _) => pl.pixel_name,
            CallPath::FewInputs(fi, _) => fi.few_inputs_name,
            CallPath::FewOutputs(fo, _) => fo.few_outputs_name,
            CallPath::Reference | CallPath::Tiles => {
                self.tiles[schedule(&geom, self.tiles, pairs, &machine(), 1, self.forced).tile].name
            }
        }))
    }

    /// The kernel this plan was made for: the forced one, or Auto's pick for this CPU. With
    /// Auto, small problems run the reference loop instead ([`Plan::kernel_for`]).
    pub fn kernel(&self) -> KernelId {
        self.kernel
    }

    /// The kernel a forward call with input dims `dims` runs: [`Plan::kernel`], or
    /// [`KernelId::Reference`] when the plan's kernel is Auto's pick and the problem per image
    /// has at most [`SMALL_PROBLEM_MACS`] multiply-adds, or it is channel-wise (one input
    /// channel per group, `G > 1`, in NCHW or with `K = G` in NHWC: each output is one
    /// product, which the reference module streams at memory speed).
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when the output extent overflows.
    pub fn kernel_for(&self, dims: InputDims) -> Result<KernelId> {
        let out = self.conv.output_dims(dims)?;
        let (cg, kg) = (
            self.conv.in_channels / self.conv.groups,
            self.conv.out_channels / self.conv.groups,
        );
        let macs = [out.h, out.w, kg * self.conv.groups, cg]
            .iter()
            .try_fold(1usize, |acc, &f| acc.checked_mul(f));
        Ok(self.kernel_for_macs(macs.unwrap_or(usize::MAX)))
    }

    fn kernel_for_macs(&self, macs_per_image: usize) -> KernelId {
        let conv = &self.conv;
        let channelwise = conv.groups > 1
            && conv.in_channels == conv.groups
            && (conv.layout == Layout::Nchw || conv.out_channels == conv.groups);
        if self.auto && self.forced == Forced::default() && (macs_per_image <= SMALL_PROBLEM_MACS || channelwise) {
            KernelId::Reference
        } else {
            self.kernel
        }
    }

    /// The convolution this plan computes.
    pub fn conv(&self) -> &Conv1x1 {
        &self.conv
    }

    /// The output shape for an input shape.
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when the padded extent overflows.
    pub fn output_dims(&self, input: InputDims) -> Result<OutputDims> {
        self.conv.output_dims(input)
    }

    /// Number of output (and residual) elements for an input shape.
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when it overflows.
    pub fn output_len(&self, input: InputDims) -> Result<usize> {
        self.conv.output_dims(input)?.len()
    }

    /// Number of input elements for an input shape.
    ///
    /// # Errors
    /// [`Error::SizeOverflow`] when it overflows.
    pub fn input_len(&self, input: InputDims) -> Result<usize> {
        self.conv.input_len(input)
    }

    fn weight_panels(&self, tile: usize) -> Result<&WeightPanels> {
        let (Some(t), Some(slot)) = (self.tiles.get(tile), self.panels.get(tile)) else {
            return Err(Error::KernelUnavailable(self.kernel));
        };
        let format = t.weights;
        let (g, c, k) = (self.conv.groups, self.conv.in_channels, self.conv.out_channels);
        let (cg, kg) = (c / g, k / g);
        // Fused groups (see `schedule`): one gemm of all K rows, each of its own group's C/G
        // weights.
        let fused = fuses_groups(g, kg, &t.tile);
        let (g, kg) = if fused { (1, k) } else { (g, kg) };
        if let Some(same) = self
            .panels
            .iter()
            .filter_map(OnceLock::get)
            .find(|p| p.format == format && p.groups == g)
        {
            return Ok(same);
        }
        // Size check before packing: groups * ceil(kg / lanes) * lanes * cg values (rounded up
        // to whole reduction groups).
        let lanes = format.lanes;
        checked_product(
            &[
                g,
                kg.div_ceil(lanes),
                lanes,
                cg.div_ceil(format.k_group) * format.k_group,
            ],
            "packed weights",
        )?;
        Ok(slot.get_or_init(|| pack_weight_panels(&self.weights, g, kg, cg, format, 0.0)))
    }

    /// Computes `output = act(W * input + bias + residual)`.
    ///
    /// # Shapes
    /// `input`: `[N, C, H, W]` (NCHW) or `[N, H, W, C]` (NHWC) for `dims = (N, H, W)`;
    /// `residual` (optional) and `output`: the shape of [`Plan::output_dims`].
    /// An empty input (`N`, `H` or `W` zero) writes nothing and returns `Ok(())`.
    ///
    /// Results follow IEEE arithmetic on every kernel (denormals included); the caller's
    /// floating-point environment is not touched.
    ///
    /// # Element types
    /// `input` and `output` may each be f32 or [`bf16`](crate::bf16); the residual has the
    /// output's type. Sums are formed in f32 whatever the types: the result is bit for bit
    /// the f32 call's on the bf16 values widened to f32 (exact), rounded once to bf16 (to
    /// nearest, ties to even) where the output is bf16. The kernels compute in f32: a bf16
    /// input is widened as its pixels are packed (or in one pass first, where the call reads
    /// its input in place), and a bf16 output is rounded in the register tiles' stores (the
    /// other loops write an f32 buffer in the workspace, rounded after the call).
    ///
    /// ```
    /// use pointwise::{bf16, Conv1x1, InputDims, Plan, PlanOptions, Workspace};
    /// let w: Vec<bf16> = [1.0f32, 2.0, 3.0].iter().map(|&v| bf16::from_f32(v)).collect();
    /// let plan = Plan::new(&Conv1x1::new(3, 1), &w, Some(&[0.5]), PlanOptions::default()).unwrap();
    /// let x: Vec<bf16> = [1.0f32, 10.0, 100.0].iter().map(|&v| bf16::from_f32(v)).collect();
    /// let mut y32 = [0.0f32];
    /// plan.forward(&x, InputDims::new(1, 1, 1), None, &mut y32, &mut Workspace::new()).unwrap();
    /// assert_eq!(y32[0], 321.5);
    /// let mut y16 = [bf16::ZERO];
    /// plan.forward(&x, InputDims::new(1, 1, 1), None, &mut y16, &mut Workspace::new()).unwrap();
    /// assert_eq!(y16[0], bf16::from_f32(321.5)); // 322: bf16 keeps 8 significant bits
    /// ```
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for `input`, `residual` or `output`; [`Error::SizeOverflow`]
    /// when a size product overflows. On error `output` is untouched.
    pub fn forward<I: Element, O: Element>(
        &self,
        input: &[I],
        dims: InputDims,
        residual: Option<&[O]>,
        output: &mut [O],
        workspace: &mut Workspace,
    ) -> Result<()> {
        let residual = residual.map_or(ResidualTensor::None, |r| ResidualTensor::Separate(O::tensor(r)));
        self.forward_tensors(I::tensor(input), dims, residual, O::tensor_mut(output), workspace)
    }

    /// Computes `output = act(W * input + bias + output)`: the output buffer holds the
    /// residual on entry (ResNet's shortcut added into the block's output without a second
    /// buffer). Each output element is read once, before it is overwritten.
    ///
    /// # Shapes
    /// As [`Plan::forward`]; `output` is both residual and result.
    ///
    /// # Element types
    /// As [`Plan::forward`].
    ///
    /// # Errors
    /// As [`Plan::forward`]; on error `output` is untouched.
    pub fn forward_residual_in_place<I: Element, O: Element>(
        &self,
        input: &[I],
        dims: InputDims,
        output: &mut [O],
        workspace: &mut Workspace,
    ) -> Result<()> {
        let output = O::tensor_mut(output);
        self.forward_tensors(I::tensor(input), dims, ResidualTensor::InOutput, output, workspace)
    }

    /// [`Plan::forward`] with the element types erased. Every length is checked first (the
    /// output stays untouched on error); then the engine runs on the input as it is
    /// ([`Plan::run`] says where bf16 is widened) and into the output as it is
    /// ([`Plan::run_bf16_output`] says where bf16 is rounded). An all-f32 call converts
    /// nothing.
    fn forward_tensors(
        &self,
        input: Tensor,
        dims: InputDims,
        residual: ResidualTensor,
        output: TensorMut,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let residual_len = match &residual {
            ResidualTensor::Separate(r) => Some(r.len()),
            ResidualTensor::None | ResidualTensor::InOutput => None,
        };
        if Geometry::new(&self.conv, dims, input.len(), residual_len, output.len())?.is_none() {
            return Ok(());
        }
        let act = self.conv.activation;
        let pairs = self.multiplies_pairs(&input);
        let x = match input {
            Tensor::F32(x) => PixelInput::F32(x),
            Tensor::Bf16(x) => PixelInput::Bf16(x),
        };
        let mut wide_residual = Vec::new();
        let out = match (output, residual) {
            (TensorMut::F32(y), residual) => {
                let residual = match residual {
                    ResidualTensor::None => Residual::None,
                    ResidualTensor::InOutput => Residual::InOutput,
                    ResidualTensor::Separate(Tensor::F32(r)) => Residual::Separate(r),
                    ResidualTensor::Separate(Tensor::Bf16(r)) => {
                        // Not reachable through the public calls (the residual has the
                        // output's type), but total: widened into a buffer of its own.
                        wide_residual = workspace.take_scratch(r.len());
                        self.convert_chunks(r, &mut wide_residual, widen_into);
                        Residual::Separate(&wide_residual)
                    }
                };
                CallOutput::F32(y, residual)
            }
            (TensorMut::Bf16(y), residual) => {
                let residual = match residual {
                    ResidualTensor::None => Bf16Residual::None,
                    ResidualTensor::InOutput => Bf16Residual::InOutput,
                    ResidualTensor::Separate(Tensor::Bf16(r)) => Bf16Residual::Separate(r),
                    ResidualTensor::Separate(Tensor::F32(r)) => {
                        // Not reachable through the public calls either: the f32 residual is
                        // added in an f32 buffer, rounded afterwards.
                        let mut wide_output = workspace.take_scratch(y.len());
                        wide_output.copy_from_slice(r);
                        let out = CallOutput::F32(&mut wide_output, Residual::InOutput);
                        let result = self.run(x, dims, out, workspace, act, pairs);
                        if result.is_ok() {
                            self.convert_chunks(&wide_output, y, narrow_into);
                        }
                        workspace.return_scratch(wide_output);
                        return result;
                    }
                };
                CallOutput::Bf16(y, residual)
            }
        };
        let result = self.run(x, dims, out, workspace, act, pairs);
        workspace.return_scratch(wide_residual);
        result
    }

    /// The forward pass of training: writes the pre-activation `z = W * input + bias
    /// [+ residual]` and the output `y = act(z)`, the two tensors the backward passes read
    /// ([`Saved`](crate::Saved)). `y` has the bits [`Plan::forward`] gives.
    ///
    /// # Shapes
    /// As [`Plan::forward`]; `pre_activation` and `output` both have the output's shape.
    ///
    /// # Errors
    /// As [`Plan::forward`], and [`Error::LengthMismatch`] (`pre_activation`); on error both
    /// outputs are untouched.
    pub fn forward_training(
        &self,
        input: &[f32],
        dims: InputDims,
        residual: Option<&[f32]>,
        pre_activation: &mut [f32],
        output: &mut [f32],
        workspace: &mut Workspace,
    ) -> Result<()> {
        let out = self.conv.output_dims(dims)?;
        let expected = out.len()?;
        if output.len() != expected {
            return Err(Error::LengthMismatch {
                what: "output",
                expected,
                got: output.len(),
            });
        }
        let residual = residual.map_or(Residual::None, Residual::Separate);
        self.run(
            PixelInput::F32(input),
            dims,
            CallOutput::F32(pre_activation, residual),
            workspace,
            Activation::Identity,
            false,
        )
        .map_err(|e| match e {
            Error::LengthMismatch {
                what: "output",
                expected,
                got,
            } => Error::LengthMismatch {
                what: "pre_activation",
                expected,
                got,
            },
            e => e,
        })?;
        let act = self.conv.activation;
        match self.slope.as_deref() {
            Some(slopes) => out.for_each_channel_run(self.conv.layout, |run, k| {
                for (y, &z) in output[run.clone()].iter_mut().zip(&pre_activation[run]) {
                    *y = act.apply(z, slopes[k]);
                }
            }),
            None => act.apply_slice(pre_activation, output),
        }
        Ok(())
    }

    /// The f32 engine's call. A bf16 input is widened as the pixel packers read it where
    /// the call packs its pixels (the register tiles and the matrixmultiply kernel), and
    /// into a workspace buffer first for the other paths (the reference loop, the
    /// group-lanes and flat-lanes tiles, which read the input in place). With `pairs` the
    /// input is bf16 (a bf16 call, [`Plan::multiplies_pairs`]), and the register tiles are
    /// the kernel's bf16-pair tiles.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        input: PixelInput,
        dims: InputDims,
        output: CallOutput,
        workspace: &mut Workspace,
        act: Activation,
        pairs: bool,
    ) -> Result<()> {
        let input_len = match input {
            PixelInput::F32(x) => x.len(),
            PixelInput::Bf16(x) => x.len(),
        };
        let (output_len, residual_len) = match &output {
            CallOutput::F32(y, Residual::Separate(r)) => (y.len(), Some(r.len())),
            CallOutput::F32(y, Residual::None | Residual::InOutput) => (y.len(), None),
            CallOutput::Bf16(y, Bf16Residual::Separate(r)) => (y.len(), Some(r.len())),
            CallOutput::Bf16(y, Bf16Residual::None | Bf16Residual::InOutput) => (y.len(), None),
        };
        let Some(geom) = Geometry::new(&self.conv, dims, input_len, residual_len, output_len)? else {
            return Ok(());
        };
        // Decided per image, so that a batch computes each image exactly as a call on that
        // image alone.
        let kernel = self.kernel_for_macs(geom.p * geom.k * geom.cg);
        let path = self.path_for(&geom, kernel);
        // NHWC pixel-row tiles read an f32 input in place; when they read every input pixel
        // (stride 1, no padding), one widening pass costs less than packing each panel
        // through the 8 x 8 transpositions (measured: NHWC ResNet-50 layers at stride 1 ran
        // 0.7-0.9x, strided ones 1.1-1.4x, Xeon model 207).
        let reads_every_pixel_in_place = || {
            let sched = self.schedule_for(&geom, dims, self.thread_count(), pairs);
            let pixel_rows = self
                .tiles
                .get(sched.tile)
                .is_some_and(|t| t.tile.orient == Orientation::PixelRows && !t.tile.pairs);
            geom.layout == Layout::Nhwc && geom.is_dense() && pixel_rows && sched.pixels_in_place
        };
        let call = Call {
            geom,
            kernel,
            path,
            dims,
            act,
            pairs,
        };
        match input {
            PixelInput::Bf16(x) if !matches!(path, CallPath::Tiles) || reads_every_pixel_in_place() => {
                let mut wide = workspace.take_scratch(x.len());
                self.convert_chunks(x, &mut wide, widen_into);
                let result = self.run_input(PixelInput::F32(&wide), call, output, workspace);
                workspace.return_scratch(wide);
                result
            }
            input => self.run_input(input, call, output, workspace),
        }
    }

    /// [`Plan::run`] once the input is one the call's path reads (f32 everywhere, bf16 only
    /// where the pixels are packed), with the call's geometry, kernel and path as `run`
    /// found them.
    fn run_input(&self, input: PixelInput, call: Call, output: CallOutput, workspace: &mut Workspace) -> Result<()> {
        let (output, residual) = match output {
            CallOutput::F32(y, residual) => (y, residual),
            CallOutput::Bf16(y, residual) => return self.run_bf16_output(input, call, y, residual, workspace),
        };
        let Call {
            geom,
            kernel,
            path,
            act,
            ..
        } = call;
        let x_f32 = input.f32();
        kernel.record_invocation();
        let scalar = ScalarEpilogue {
            bias: self.bias.as_deref(),
            slope: self.slope.as_deref(),
            act,
        };
        // The paths that read the input in place take it in f32 (`run` widens a bf16 input
        // for them); a bf16 input goes on to the packed path.
        if let (CallPath::Reference, Some(input)) = (path, x_f32) {
            kernels::reference::forward(&geom, input, &self.weights, scalar, residual, output);
            return Ok(());
        }
        let threads = self.thread_count();
        let y = output.as_mut_ptr();
        let residual = InPtr(match residual {
            Residual::None => std::ptr::null(),
            Residual::Separate(r) => r.as_ptr(),
            Residual::InOutput => y.cast_const(),
        });
        // The lane loops run disjoint ranges of their units (pixels, or flat-lanes blocks),
        // each writing its own outputs.
        let flops = 2 * geom.n * geom.p * geom.k * geom.cg;
        match (path, x_f32) {
            (CallPath::GroupLanes(gl, panels), Some(input)) => {
                let job = GroupLanesJob {
                    geom,
                    x: input,
                    y: OutPtr(y),
                    residual,
                    bias: self.bias.as_deref(),
                    slope: self.slope.as_deref(),
                    act,
                    panels,
                };
                // SAFETY: the plan holds a group-lanes tile only of a kernel dispatch reported
                // available, packed for this convolution with its lanes (build checked
                // uses_group_lanes: NHWC); the job's slices were length-checked by
                // Geometry::new.
                self.run_pixel_ranges(geom.n * geom.p, flops, threads, workspace, |range, offsets| unsafe {
                    (gl.run)(&job, range, offsets)
                });
                return Ok(());
            }
            (CallPath::FlatLanes(fl, panels), Some(input)) => {
                let job = LanesJob::new(geom, input, OutPtr(y), residual, act, panels);
                // SAFETY: the plan holds a flat-lanes tile only of a kernel dispatch reported
                // available, packed for this convolution with its lanes (build checked
                // uses_flat_lanes: NHWC, one group; path_for: a dense geometry); the job's
                // slices were length-checked by Geometry::new.
                self.run_pixel_ranges(job.blocks(), flops, threads, workspace, |range, offsets| unsafe {
                    (fl.run_flat)(&job, range, offsets)
                });
                return Ok(());
            }
            (CallPath::PixelLanes(pl, panels), Some(input)) => {
                let job = LanesJob::new(geom, input, OutPtr(y), residual, act, panels);
                // SAFETY: the plan holds a pixel-lanes loop only of a kernel dispatch reported
                // available, packed for this convolution with its lanes (build checked
                // uses_pixel_lanes: NHWC, one group, K within the tier's and the loop's
                // bound); the job's slices were length-checked by Geometry::new.
                self.run_pixel_ranges(geom.n * geom.p, flops, threads, workspace, |range, offsets| unsafe {
                    (pl.run_pixel)(&job, range, offsets)
                });
                return Ok(());
            }
            (CallPath::FewOutputs(fo, panels), Some(input)) => {
                let job = LanesJob::new(geom, input, OutPtr(y), residual, act, panels);
                // SAFETY: the plan holds the few-outputs loop only of a kernel dispatch reported
                // available, packed for this convolution (build checked uses_few_outputs:
                // NCHW, one group, 1 to 4 output channels; path_for: a dense geometry); the
                // job's slices were length-checked by Geometry::new, and the ranges lie
                // within N * H * W.
                self.run_pixel_ranges(geom.n * geom.p, flops, threads, workspace, |range, offsets| unsafe {
                    (fo.run_few_outputs)(&job, range, offsets)
                });
                return Ok(());
            }
            (CallPath::FewInputs(fi, panels), Some(input)) => {
                let job = LanesJob::new(geom, input, OutPtr(y), residual, act, panels);
                // SAFETY: the plan holds the few-inputs loops only of a kernel dispatch reported
                // available, packed for this convolution with its lanes (build checked
                // uses_few_inputs: 1 to 4 input channels per group, one group in NHWC; path_for: a dense
                // geometry); the job's slices were length-checked by Geometry::new, and the
                // ranges lie within N * H * W.
                self.run_pixel_ranges(geom.n * geom.p, flops, threads, workspace, |range, offsets| unsafe {
                    (fi.run_few_inputs)(&job, range, offsets)
                });
                return Ok(());
            }
            _ => {}
        }
        self.run_tiles(input, call, OutPtr(y), residual, None, workspace)
    }

    /// [`Plan::run_input`] with a bf16 output: the register tiles round their results to
    /// bf16 in their stores, so no f32 copy of the output is written; the other paths run
    /// into an f32 buffer from the workspace (holding the residual widened, when there is
    /// one), rounded afterwards.
    fn run_bf16_output(
        &self,
        input: PixelInput,
        call: Call,
        y: &mut [bf16],
        residual: Bf16Residual,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let register_tiles = matches!(call.path, CallPath::Tiles) && {
            let sched = self.schedule_for(&call.geom, call.dims, self.thread_count(), call.pairs);
            self.tiles.get(sched.tile).is_some()
        };
        if register_tiles {
            call.kernel.record_invocation();
            // `bf16` is a transparent wrapper of its u16 bits.
            let out = y.as_mut_ptr().cast::<u16>();
            let target = Bf16Out {
                y: out,
                residual: match residual {
                    Bf16Residual::None => std::ptr::null(),
                    Bf16Residual::Separate(r) => r.as_ptr().cast::<u16>(),
                    Bf16Residual::InOutput => out.cast_const(),
                },
            };
            let (y, residual) = (OutPtr(std::ptr::null_mut()), InPtr(std::ptr::null()));
            return self.run_tiles(input, call, y, residual, Some(target), workspace);
        }
        let mut wide = workspace.take_scratch(y.len());
        let residual = match residual {
            Bf16Residual::None => Residual::None,
            Bf16Residual::Separate(r) => {
                self.convert_chunks(r, &mut wide, widen_into);
                Residual::InOutput
            }
            Bf16Residual::InOutput => {
                self.convert_chunks(y, &mut wide, widen_into);
                Residual::InOutput
            }
        };
        let result = self.run_input(input, call, CallOutput::F32(&mut wide, residual), workspace);
        if result.is_ok() {
            self.convert_chunks(&wide, y, narrow_into);
        }
        workspace.return_scratch(wide);
        result
    }

    /// The register tiles' (or the matrixmultiply kernel's) loop nest over the call's units:
    /// results into `y` with the residual at `residual` (each null when `bf16_out` is given,
    /// whose pointers then serve instead).
    fn run_tiles(
        &self,
        input: PixelInput,
        call: Call,
        y: OutPtr,
        residual: InPtr,
        bf16_out: Option<Bf16Out>,
        workspace: &mut Workspace,
    ) -> Result<()> {
        let Call {
            geom, dims, act, pairs, ..
        } = call;
        let threads = self.thread_count();
        let sched = self.schedule_for(&geom, dims, threads, pairs);
        let tile = self.tiles.get(sched.tile);
        // Only a test hook's forced tile can disagree with the call's element types (the
        // cost model picks among the tiles of the call's kind).
        #[cfg(feature = "testing")]
        if let Some(t) = tile.filter(|t| t.tile.pairs != pairs) {
            return Err(Error::InvalidTile(format!(
                "{} multiplies {}; this call's operands need {}",
                t.name,
                if t.tile.pairs { "bf16 pairs" } else { "f32" },
                if pairs { "a bf16-pair tile" } else { "an f32 tile" }
            )));
        }
        let panels = match tile {
            Some(_) => Some(self.weight_panels(sched.tile)?),
            None => None,
        };
        let (weight_lanes, pixel_lanes) = tile.map_or((1, 1), |t| (t.tile.weight_lanes(), t.tile.pixel_lanes()));
        let (scratch, split_sums) =
            workspace.reserve(sched.tasks, Job::split_sums_len(&sched, weight_lanes, pixel_lanes));
        let mut job = Job {
            geom,
            sched,
            orient: tile.map_or(Orientation::WeightRows, |t| t.tile.orient),
            x: input,
            y,
            residual,
            bf16_out,
            bias: self.bias.as_deref(),
            slope: self.slope.as_deref(),
            panels,
            weights: &self.weights,
            act,
            phase: Phase::Reduce,
            split_sums: OutPtr(split_sums.as_mut_ptr()),
        };
        self.run_phase(&job, sched.units, scratch);
        if sched.parts > 1 {
            // Every part is reduced (the phase above has returned): add them, in part order.
            job.phase = Phase::Combine;
            self.run_phase(&job, sched.output_units(), scratch);
        }
        Ok(())
    }

    /// The threads a call may use.
    fn thread_count(&self) -> usize {
        match self.threads {
            Threads::Single => 1,
            Threads::Count(n) => n.clamp(1, MAX_THREADS),
            Threads::Rayon => rayon::current_num_threads().max(1),
        }
    }

    /// `convert(src chunk, dst chunk)` over equal-length `src` and `dst`, on the plan's
    /// threads when the tensors are large enough to share (each thread a contiguous run).
    fn convert_chunks<S: Sync, D: Send>(&self, src: &[S], dst: &mut [D], convert: impl Fn(&[S], &mut [D]) + Sync) {
        use rayon::prelude::*;
        // Below this many values per thread, starting the threads costs more than they save.
        const MIN_CHUNK: usize = 1 << 15;
        let threads = self.thread_count();
        if threads == 1 || src.len() < 2 * MIN_CHUNK {
            convert(src, dst);
            return;
        }
        let chunk = src.len().div_ceil(threads).max(MIN_CHUNK);
        let mut run = || {
            src.par_chunks(chunk)
                .zip(dst.par_chunks_mut(chunk))
                .for_each(|(s, d)| convert(s, d))
        };
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }

    /// The schedule for a call of `dims` (whose geometry is `geom`) on `threads` threads: the
    /// last call's when it had the same dims and threads, else computed and kept. A call
    /// that finds another thread holding the cache computes its own.
    fn schedule_for(&self, geom: &Geometry, dims: InputDims, threads: usize, pairs: bool) -> Schedule {
        let compute = || schedule(geom, self.tiles, pairs, &machine(), threads, self.forced);
        let Ok(mut last) = self.last_schedule.try_lock() else {
            return compute();
        };
        if let Some((d, t, p, s)) = *last {
            if d == dims && t == threads && p == pairs {
                return s;
            }
        }
        let s = compute();
        *last = Some((dims, threads, pairs, s));
        s
    }

    /// Whether a call with this input runs the kernel's bf16-pair tiles: bf16 input, bf16
    /// weights, a kernel that has them, and a core on which they are faster than the f32
    /// tiles ([`PAIRS_MAX_STEP_COST`]; a test hook's forced pair tile runs whatever the core).
    fn multiplies_pairs(&self, input: &Tensor) -> bool {
        let bf16_operands = matches!(input, Tensor::Bf16(_)) && self.weights_bf16;
        if !bf16_operands || !self.tiles.iter().any(|t| t.tile.pairs) {
            return false;
        }
        match self.forced.tiling {
            Some((tile, _)) => self.tiles[tile].tile.pairs,
            None => bf16_pair_step_cost().is_some_and(|cost| cost <= PAIRS_MAX_STEP_COST),
        }
    }

    /// Drops the kept schedule (a test hook changed what the schedule depends on).
    #[cfg(feature = "testing")]
    fn forget_schedule(&mut self) {
        *self.last_schedule.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The loop that runs a call of geometry `geom` on `kernel` (the call's, by
    /// [`Plan::kernel_for_macs`]): the reference loop for the reference kernel; else, when
    /// this plan has them and no test hook forces a register tile or a reduction mode, the
    /// group-lanes tile, the flat-lanes tile (dense geometry), the pixel-lanes loop, the
    /// few-inputs loops (dense) or the few-outputs loop (dense); else the register tiles.
    fn path_for(&self, geom: &Geometry, kernel: KernelId) -> CallPath<'_> {
        let unforced = self.forced == Forced::default();
        match (&self.group_lanes, &self.flat_lanes, &self.pixel_lanes) {
            _ if kernel == KernelId::Reference => CallPath::Reference,
            (Some((gl, panels)), _, _) if unforced => CallPath::GroupLanes(gl, panels),
            (_, Some((fl, panels)), _) if unforced && geom.is_dense() => CallPath::FlatLanes(fl, panels),
            (_, _, Some((pl, panels))) if unforced => CallPath::PixelLanes(pl, panels),
            _ => match (&self.few_inputs, &self.few_outputs) {
                (Some((fi, panels)), _) if unforced && geom.is_dense() => CallPath::FewInputs(fi, panels),
                (_, Some((fo, panels))) if unforced && geom.is_dense() => CallPath::FewOutputs(fo, panels),
                _ => CallPath::Tiles,
            },
        }
    }

    /// Runs `run` over folded output pixels `0..pixels` (with a pixel-offset scratch): on the
    /// calling thread for calls under [`PARALLEL_MIN_FLOPS`], else in equal ranges of whole
    /// [`PIXEL_RANGE_ALIGN`]-pixel tiles over up to `threads` tasks.
    fn run_pixel_ranges(
        &self,
        pixels: usize,
        flops: usize,
        threads: usize,
        workspace: &mut Workspace,
        run: impl Fn(std::ops::Range<usize>, &mut Vec<isize>) + Sync,
    ) {
        let tiles = pixels.div_ceil(PIXEL_RANGE_ALIGN);
        let tasks = if flops < PARALLEL_MIN_FLOPS {
            1
        } else {
            threads.min(tiles).max(1)
        };
        let (scratch, _) = workspace.reserve(tasks, 0);
        if tasks == 1 {
            run(0..pixels, scratch[0].offsets_mut());
            return;
        }
        let range = |t: usize| {
            (t * tiles / tasks * PIXEL_RANGE_ALIGN)..((t + 1) * tiles / tasks * PIXEL_RANGE_ALIGN).min(pixels)
        };
        self.fan_out(&mut scratch[..tasks], |t, slot| run(range(t), slot.offsets_mut()));
    }

    /// Runs `task(t, scratch[t])` for every task `t`: the calling thread runs task 0 while
    /// the plan's pool (or rayon's current pool for [`Threads::Rayon`]) runs the others, so
    /// a call wakes one thread fewer and its own thread does not sit idle. Each task's range
    /// of work depends only on `t`, never on the thread that runs it.
    fn fan_out(&self, scratch: &mut [TaskScratch], task: impl Fn(usize, &mut TaskScratch) + Sync) {
        let Some((first, others)) = scratch.split_first_mut() else {
            return;
        };
        fn spawn_others_run_first<'s, F: Fn(usize, &mut TaskScratch) + Sync>(
            s: &rayon::Scope<'s>,
            first: &'s mut TaskScratch,
            others: &'s mut [TaskScratch],
            task: &'s F,
        ) {
            for (t, slot) in others.iter_mut().enumerate() {
                s.spawn(move |_| task(t + 1, slot));
            }
            task(0, first);
        }
        let task = &task;
        match &self.pool {
            Some(pool) => pool.in_place_scope(|s| spawn_others_run_first(s, first, others, task)),
            None => rayon::in_place_scope(|s| spawn_others_run_first(s, first, others, task)),
        }
    }

    /// Runs units `0..units` of `job` (in its phase), spread over the schedule's tasks.
    fn run_phase(&self, job: &Job, units: usize, scratch: &mut [TaskScratch]) {
        let tile = self.tiles.get(job.sched.tile);
        let run_range = |range: std::ops::Range<usize>, scratch: &mut TaskScratch| match tile {
            // SAFETY: the plan holds tiles only of a kernel dispatch reported available, the
            // job's slices were length-checked by Geometry::new, the panels were packed in
            // the tile's weight format, and the split sums sized by Job::split_sums_len.
            Some(t) => unsafe { (t.run)(job, range, scratch) },
            None => kernels::matrixmultiply::run_units(job, range, scratch),
        };
        let tasks = job.sched.tasks.min(units).max(1);
        if tasks == 1 {
            run_range(0..units, &mut scratch[0]);
            return;
        }
        self.fan_out(&mut scratch[..tasks], |t, slot| {
            run_range((t * units / tasks)..((t + 1) * units / tasks), slot)
        });
    }
}

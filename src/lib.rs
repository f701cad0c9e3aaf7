//! # pointwise
//!
//! SIMD-optimized CPU kernels for the 1x1 (pointwise) convolution: PyTorch's
//! `Conv2d(kernel_size=1)` and ONNX's `Conv` with a 1x1 kernel, with stride, padding, groups,
//! bias, a residual add and a fused activation, in NCHW and NHWC.
//!
//! A 1x1 convolution is a matrix product per image and group: NCHW computes
//! `Y[K x P] = W[K x C] * X[C x P]`, NHWC `Y[P x K] = X[P x C] * W^T`, with `P = Ho * Wo`.
//! The crate is layered accordingly:
//!
//! - **plan** ([`Plan`]): validates a [`Conv1x1`] once, picks the kernel once, packs the weights;
//! - **schedule**: from the problem, the kernel's tiles, the machine's caches and the threads,
//!   the tile, the cache blocking and the units of work (a pure function);
//! - **driver**: the loop nest of one unit, generic over the SIMD tier;
//! - **packing**: gathers input pixels into panels, applying stride and padding;
//! - **microkernels**: a registry of named register tiles (`kernels/mod.rs`) over the tiers
//!   (`kernels/x86_64/avx512.rs`, `kernels/x86_64/avx2.rs`, `kernels/aarch64/neon.rs`,
//!   `kernels/portable.rs`), plus `kernels/matrixmultiply.rs` as the fallback and a plain
//!   reference kernel;
//! - **epilogue**: bias, residual and [`Activation`] applied in registers before the store.
//!
//! Every kernel gives IEEE results (denormals are computed, not flushed) and leaves the
//! caller's floating-point environment alone.
//!
//! ```
//! use pointwise::{Activation, Conv1x1, InputDims, Plan, PlanOptions, Workspace};
//! // ResNet bottleneck expansion: 64 -> 256 channels, bias, residual, ReLU.
//! let conv = Conv1x1::new(64, 256).with_activation(Activation::Relu);
//! let weights = vec![0.01f32; 256 * 64];
//! let bias = vec![0.1f32; 256];
//! let plan = Plan::new(&conv, &weights, Some(&bias), PlanOptions::default()).unwrap();
//! let dims = InputDims::new(1, 56, 56);
//! let x = vec![1.0f32; 64 * 56 * 56];
//! let residual = vec![0.5f32; 256 * 56 * 56];
//! let mut y = vec![0.0f32; plan.output_dims(dims).unwrap().len().unwrap()];
//! let mut ws = Workspace::new();
//! plan.forward(&x, dims, Some(&residual), &mut y, &mut ws).unwrap();
//! assert!((y[0] - (0.64 + 0.1 + 0.5)).abs() < 1e-5);
//! println!("ran on {}", plan.kernel());
//! ```
//!
//! # Errors
//! Every fallible call returns a typed [`Error`] and leaves the output untouched; nothing
//! panics on bad input. The catalogue (`tests/bad_inputs.rs` checks each entry, its exact
//! variant and the untouched output):
//!
//! | input | error |
//! |---|---|
//! | `in_channels`, `out_channels` or `groups` = 0 | [`Error::ZeroSize`] |
//! | `groups` not dividing `in_channels` or `out_channels` | [`Error::GroupsDoNotDivide`] |
//! | a stride component = 0 | [`Error::ZeroStride`] |
//! | weights, bias, input, residual or output slice too short or too long | [`Error::LengthMismatch`] (names the slice, expected and got) |
//! | a residual of another shape (its length differs) | [`Error::LengthMismatch`] |
//! | a size product that overflows `usize` or exceeds `isize::MAX` bytes (weights, input, output, padded extent, packed weights) | [`Error::SizeOverflow`] |
//! | `Clamp` with a NaN bound or `min > max`; `LeakyRelu` with a NaN or infinite slope; `HardSigmoid` with a non-finite `alpha` or `beta` | [`Error::InvalidActivation`] |
//! | `Prelu` without slopes, or with a slope count other than `K` ([`PlanBuilder::prelu_slope`]) | [`Error::LengthMismatch`] (`prelu slope`) |
//! | a non-finite PReLU slope, or slopes given to another activation | [`Error::InvalidActivation`] |
//! | the output of [`Plan::forward_residual_in_place`] (which is also the residual) of the wrong length | [`Error::LengthMismatch`] (`output`) |
//! | a forced kernel this CPU or build lacks | [`Error::KernelUnavailable`] |
//! | a kernel name no kernel has (`KernelId::from_name`, `POINTWISE_KERNEL`, including a value that is not UTF-8) | [`Error::UnknownKernel`] |
//! | `channel_shuffle` with groups = 0 or not dividing the channels | [`Error::InvalidShuffle`] |
//! | a dedicated thread pool the OS cannot start | [`Error::ThreadPool`] |
//! | an `ndarray` view of the wrong shape, with a negative stride or gaps, or in an axis order the plan's layout cannot read without a copy (feature `ndarray`) | [`Error::ArrayView`] |
//!
//! An empty input (N, H or W = 0) is not an error: `forward` checks the slice lengths and
//! returns `Ok(())`. NaN and infinity in the data are not errors either: they propagate to the
//! outputs that read them, and only to those (outputs over padded pixels never read the
//! weights).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod backward;
mod conv;
mod dispatch;
mod driver;
mod element;
mod epilogue;
mod error;
#[cfg(any(feature = "candle", feature = "ndarray"))]
pub mod interop;
mod kernels;
mod machine;
mod packing;
mod plan;
mod schedule;
mod shuffle;
#[cfg(feature = "testing")]
pub mod testing;

pub use backward::{Accumulate, BackwardPlan, Gradients, Saved};
pub use conv::{Conv1x1, InputDims, Layout, OutputDims, Padding};
pub use dispatch::{
    auto_kernel, available_kernels, compiled_target_features, cpu_features, portable_width_bits, CpuFeatures,
    KernelChoice, KernelId,
};
pub use element::{bf16, Element};
pub use epilogue::Activation;
pub use error::Error;
pub use plan::{Plan, PlanBuilder, PlanOptions, Threads, WeightOrder, Workspace, MAX_THREADS, SMALL_PROBLEM_MACS};
pub use shuffle::channel_shuffle;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

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
//! - **driver**: splits a call into independent blocks (threads), runs the cache-blocked loop;
//! - **packing**: gathers input pixels into panels, applying stride and padding;
//! - **microkernels**: register tiles per instruction set (`kernels/x86_64/avx512.rs`,
//!   `kernels/x86_64/avx2.rs`, `kernels/aarch64/neon.rs`, `kernels/portable.rs`), plus
//!   `matrixmultiply` as the fallback and a plain reference kernel;
//! - **epilogue**: bias, residual and [`Activation`] applied in registers before the store.
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
//! Every fallible call returns a typed [`Error`] and leaves the output untouched: zero
//! channels or groups, groups not dividing the channels, a zero stride, a slice of the wrong
//! length (input, weights, bias, residual, output), a size product that overflows, Clamp with
//! a NaN bound or `min > max`, LeakyReLU with a non-finite slope, a forced kernel this CPU
//! lacks, an unknown kernel name, a channel shuffle whose groups do not divide the channels.
//! NaN and infinity in the data are not errors: they propagate.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod conv;
mod dispatch;
mod driver;
mod epilogue;
mod error;
mod kernels;
mod packing;
mod plan;
mod shuffle;
#[doc(hidden)]
pub mod testing;

pub use conv::{Conv1x1, InputDims, Layout, OutputDims, Padding};
pub use dispatch::{
    auto_kernel, available_kernels, compiled_target_features, cpu_features, portable_width_bits, CpuFeatures,
    KernelChoice, KernelId,
};
pub use epilogue::Activation;
pub use error::{Error, Result};
pub use plan::{Plan, PlanOptions, Threads, Workspace, MAX_THREADS};
pub use shuffle::channel_shuffle;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

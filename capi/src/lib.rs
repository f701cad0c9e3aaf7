//! # pointwise-capi
//!
//! The C ABI of [`pointwise`]: make a plan for a 1x1 convolution from a C struct, run it on
//! caller-owned buffers, free it. The header `include/pointwise.h` is generated from this file
//! by cbindgen (`cbindgen.toml`; `tests/header.rs` checks that the checked-in copy is current).
//!
//! Conventions, for every function:
//! - The result is a [`PwStatus`]: `PW_STATUS_OK` (0) or an error code. On error,
//!   [`pw_last_error_message`] returns a message for it (per thread); on success the message is
//!   cleared.
//! - Every buffer comes with its length in elements; a length that does not fit the shapes is
//!   an error (`PW_STATUS_LENGTH_MISMATCH`), never a read or write out of bounds. A NULL
//!   pointer is accepted only with length 0 (an empty buffer) or where it is documented as
//!   "none"; otherwise it is `PW_STATUS_NULL_POINTER`.
//! - A call that fails leaves the output buffer untouched.
//! - No panic unwinds into C: each entry point catches it and returns `PW_STATUS_PANIC`.
//! - A plan is immutable after creation: several threads may run the same plan at once, each
//!   with its own workspace (or NULL). A workspace serves one call at a time.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use pointwise::{
    Activation, Conv1x1, Error, InputDims, KernelChoice, KernelId, Layout, Padding, Plan, PlanOptions, Threads,
    WeightOrder, Workspace,
};
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// The result of every `pw_` function that can fail. 0 is success; each error of pointwise has
/// its own code, followed by the codes of this C layer.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PwStatus {
    /// Success.
    Ok = 0,
    /// `in_channels`, `out_channels` or `groups` is 0.
    ZeroSize = 1,
    /// `groups` does not divide `in_channels` or `out_channels`.
    GroupsDoNotDivide = 2,
    /// `stride_h` or `stride_w` is 0.
    ZeroStride = 3,
    /// A buffer (weights, bias, PReLU slopes, input, residual, output) has the wrong length.
    LengthMismatch = 4,
    /// A size product overflows, or describes a buffer larger than memory can hold.
    SizeOverflow = 5,
    /// Invalid activation parameters (a NaN clamp bound, `clamp_min > clamp_max`, a
    /// non-finite slope, `alpha` or `beta`, PReLU slopes given to another activation).
    InvalidActivation = 6,
    /// The kernel named in `pw_conv_desc.kernel` exists but this CPU (or build) cannot run it.
    KernelUnavailable = 7,
    /// The kernel named in `pw_conv_desc.kernel` does not exist.
    UnknownKernel = 8,
    /// Channel-shuffle factors that do not divide the channel count (pointwise's
    /// `channel_shuffle`; no function of this API returns it yet).
    InvalidShuffle = 9,
    /// A thread pool could not be started.
    ThreadPool = 10,
    /// A required pointer argument is NULL (or NULL with a non-zero length).
    NullPointer = 11,
    /// An argument this layer rejects: an unknown enum value, a kernel name that is not UTF-8,
    /// a misaligned buffer, overlapping input and output buffers, a length beyond memory.
    InvalidArgument = 12,
    /// A bug: pointwise panicked. The panic was caught; the message says where.
    Panic = 13,
    /// An error of a newer pointwise that this C layer does not classify (see the message).
    Other = 14,
}

/// Memory layout of input, output and residual: the values of `pw_conv_desc.layout`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PwLayout {
    /// `[N, C, H, W]`: each channel is a contiguous image plane.
    Nchw = 0,
    /// `[N, H, W, C]`: each pixel's channels are contiguous.
    Nhwc = 1,
}

/// The order of the weight matrix: the values of `pw_conv_desc.weight_order`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PwWeightOrder {
    /// `[K, C/G]` row-major: PyTorch's and ONNX's `[K, C/G, 1, 1]`.
    OutputMajor = 0,
    /// `[C/G, K]` row-major: TensorFlow's HWIO `[1, 1, C/G, K]`.
    InputMajor = 1,
}

/// The activation fused into the store, `y = act(z)` with `z = W x + bias + residual`: the
/// values of `pw_conv_desc.activation`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PwActivation {
    /// `y = z`.
    Identity = 0,
    /// `y = max(z, 0)`.
    Relu = 1,
    /// `y = min(max(z, 0), 6)`.
    Relu6 = 2,
    /// `y = min(max(z, clamp_min), clamp_max)`.
    Clamp = 3,
    /// `y = z` for `z >= 0`, `leaky_relu_alpha * z` otherwise.
    LeakyRelu = 4,
    /// `y = z` for `z >= 0`, `prelu_slope[k] * z` otherwise (one slope per output channel).
    Prelu = 5,
    /// `y = z * min(max(z + 3, 0), 6) / 6`.
    HardSwish = 6,
    /// `y = min(max(hard_sigmoid_alpha * z + hard_sigmoid_beta, 0), 1)`.
    HardSigmoid = 7,
    /// `y = 1 / (1 + exp(-z))`.
    Sigmoid = 8,
    /// `y = tanh(z)`.
    Tanh = 9,
    /// `y = z * sigmoid(z)`.
    Silu = 10,
    /// GELU, exact (erf) form.
    Gelu = 11,
    /// GELU, tanh form.
    GeluTanh = 12,
}

/// Description of a pointwise (1x1) convolution, `Y = act(W * X + bias + R)`. Fill it with
/// `pw_conv_desc_init`, then change the fields that differ from the defaults.
///
/// Shapes: weights `[K, C/G]` (or `[C/G, K]` with `PW_WEIGHT_ORDER_INPUT_MAJOR`), bias `[K]`,
/// input `[N, C, H, W]` or `[N, H, W, C]`, output and residual `[N, K, Ho, Wo]` or
/// `[N, Ho, Wo, K]` with `Ho = (H + pad_top + pad_bottom - 1) / stride_h + 1` (and `Wo`
/// likewise).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PwConvDesc {
    /// Input channels `C`.
    pub in_channels: usize,
    /// Output channels `K`.
    pub out_channels: usize,
    /// Groups `G`, dividing both `C` and `K` (default 1).
    pub groups: usize,
    /// Vertical stride, at least 1 (default 1).
    pub stride_h: usize,
    /// Horizontal stride, at least 1 (default 1).
    pub stride_w: usize,
    /// Zero rows added above (default 0).
    pub pad_top: usize,
    /// Zero columns added on the left (default 0).
    pub pad_left: usize,
    /// Zero rows added below (default 0).
    pub pad_bottom: usize,
    /// Zero columns added on the right (default 0).
    pub pad_right: usize,
    /// A `pw_layout` value (default `PW_LAYOUT_NCHW`).
    pub layout: u32,
    /// A `pw_weight_order` value (default `PW_WEIGHT_ORDER_OUTPUT_MAJOR`).
    pub weight_order: u32,
    /// A `pw_activation` value (default `PW_ACTIVATION_IDENTITY`).
    pub activation: u32,
    /// `PW_ACTIVATION_CLAMP`'s lower bound (default `-INFINITY`); not NaN, at most `clamp_max`.
    pub clamp_min: f32,
    /// `PW_ACTIVATION_CLAMP`'s upper bound (default `INFINITY`); not NaN.
    pub clamp_max: f32,
    /// `PW_ACTIVATION_LEAKY_RELU`'s slope for negative inputs (default 0.01); finite.
    pub leaky_relu_alpha: f32,
    /// `PW_ACTIVATION_HARD_SIGMOID`'s slope (default 0.2, ONNX's); finite.
    pub hard_sigmoid_alpha: f32,
    /// `PW_ACTIVATION_HARD_SIGMOID`'s offset (default 0.5); finite.
    pub hard_sigmoid_beta: f32,
    /// `PW_ACTIVATION_PRELU`'s slopes, `prelu_slope_len` (= `K`) finite values; NULL (with
    /// length 0) for every other activation. Read by `pw_plan_create` only (copied).
    pub prelu_slope: *const f32,
    /// Number of values at `prelu_slope`.
    pub prelu_slope_len: usize,
    /// Threads for a forward call: 0 = one per core, 1 = the calling thread only (default),
    /// `n` = a pool of `n` threads (shared by all plans with the same count). Results are
    /// bit-identical for every choice.
    pub threads: usize,
    /// The kernel: NULL, `""` or `"auto"` (default NULL) for the fastest on this CPU, or a
    /// NUL-terminated UTF-8 name (`"avx512"`, `"avx2"`, `"neon"`, `"portable"`,
    /// `"matrixmultiply"`, `"reference"`; case-insensitive). Read by `pw_plan_create` only.
    pub kernel: *const c_char,
}

/// The shape of a forward call's output: `[n, k, h, w]` in NCHW, `[n, h, w, k]` in NHWC.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PwOutputDims {
    /// Batch size.
    pub n: usize,
    /// Output channels.
    pub k: usize,
    /// Output height `Ho`.
    pub h: usize,
    /// Output width `Wo`.
    pub w: usize,
}

/// A convolution ready to run (opaque): validated, kernel chosen, weights packed. Made by
/// `pw_plan_create`, freed by `pw_plan_free`.
pub struct PwPlan {
    plan: Plan,
}

/// Reusable scratch memory for `pw_forward` (opaque); it grows on the first calls and is then
/// reused, so steady-state calls do not allocate. Made by `pw_workspace_create`, freed by
/// `pw_workspace_free`.
pub struct PwWorkspace {
    workspace: Workspace,
}

// Plans are run from several C threads at once (documented above): that needs `Plan: Sync`.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<PwPlan>();
    shareable::<PwWorkspace>();
};

/// A failed call: its code and message.
struct Failure {
    status: PwStatus,
    message: String,
}

impl Failure {
    fn new(status: PwStatus, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::ZeroSize { .. } => PwStatus::ZeroSize,
            Error::GroupsDoNotDivide { .. } => PwStatus::GroupsDoNotDivide,
            Error::ZeroStride(..) => PwStatus::ZeroStride,
            Error::LengthMismatch { .. } => PwStatus::LengthMismatch,
            Error::SizeOverflow { .. } => PwStatus::SizeOverflow,
            Error::InvalidActivation(_) => PwStatus::InvalidActivation,
            Error::KernelUnavailable(_) => PwStatus::KernelUnavailable,
            Error::UnknownKernel(_) => PwStatus::UnknownKernel,
            Error::InvalidShuffle { .. } => PwStatus::InvalidShuffle,
            Error::ThreadPool(_) => PwStatus::ThreadPool,
            _ => PwStatus::Other,
        };
        Failure::new(status, e.to_string())
    }
}

type CallResult = Result<(), Failure>;

thread_local! {
    /// The message of this thread's last failed call ("" after a success).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` (or clears the record) for [`pw_last_error_message`].
fn set_last_error(message: Option<String>) {
    // During thread teardown the slot may be gone; the message is then dropped.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            match message {
                // A success after a success allocates nothing.
                None if slot.as_bytes().is_empty() => {}
                None => *slot = CString::default(),
                // Interior NULs would cut the C string short; none are expected, but keep the rest.
                Some(m) => *slot = CString::new(m.replace('\0', "\\0")).unwrap_or_default(),
            }
        }
    });
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}

/// Drops a panic payload without letting a panic in its destructor escape.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Runs one entry point's body: catches panics, records the message, returns the code.
fn entry(body: impl FnOnce() -> CallResult) -> PwStatus {
    let (status, message) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => (PwStatus::Ok, None),
        Ok(Err(f)) => (f.status, Some(f.message)),
        Err(payload) => {
            let text = panic_text(&*payload);
            drop_payload(payload);
            (PwStatus::Panic, Some(format!("pointwise panicked (a bug): {text}")))
        }
    };
    set_last_error(message);
    status
}

/// Checks what a slice needs besides valid memory: a non-NULL pointer for a non-empty buffer,
/// alignment, and a byte size within `isize::MAX`. `Ok(false)` for an empty buffer (NULL or
/// not), which is then never dereferenced.
fn check_buffer(ptr: *const f32, len: usize, what: &str) -> Result<bool, Failure> {
    if len == 0 {
        return Ok(false);
    }
    if ptr.is_null() {
        return Err(Failure::new(
            PwStatus::NullPointer,
            format!("{what} is NULL but its length is {len}"),
        ));
    }
    if !ptr.is_aligned() {
        return Err(Failure::new(
            PwStatus::InvalidArgument,
            format!("{what} is not aligned for float"),
        ));
    }
    if len > isize::MAX as usize / std::mem::size_of::<f32>() {
        return Err(Failure::new(
            PwStatus::InvalidArgument,
            format!("{what}: length {len} exceeds the address space"),
        ));
    }
    Ok(true)
}

/// `len` floats at `ptr` as a slice (empty for length 0, whatever `ptr` is).
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` must point to `len` initialized floats that
/// stay valid and are not written for `'a`.
unsafe fn input_slice<'a>(ptr: *const f32, len: usize, what: &str) -> Result<&'a [f32], Failure> {
    if !check_buffer(ptr, len, what)? {
        return Ok(&[]);
    }
    // SAFETY: check_buffer showed ptr non-NULL and aligned and len * 4 <= isize::MAX; the
    // caller guarantees len initialized floats there, unmodified for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An optional input buffer: NULL is "none" (its length must be 0).
///
/// # Safety
/// As [`input_slice`] when `ptr` is not NULL.
unsafe fn optional_slice<'a>(ptr: *const f32, len: usize, what: &str) -> Result<Option<&'a [f32]>, Failure> {
    if ptr.is_null() {
        if len != 0 {
            return Err(Failure::new(
                PwStatus::NullPointer,
                format!("{what} is NULL (none) but its length is {len}"),
            ));
        }
        return Ok(None);
    }
    // SAFETY: ptr is not NULL; the caller's guarantee is input_slice's.
    unsafe { input_slice(ptr, len, what) }.map(Some)
}

/// The byte range a buffer occupies, for overlap checks (empty for length 0).
fn byte_range(ptr: *const f32, len: usize) -> std::ops::Range<usize> {
    let start = ptr as usize;
    start..start.saturating_add(len.saturating_mul(std::mem::size_of::<f32>()))
}

fn overlaps(a: &std::ops::Range<usize>, b: &std::ops::Range<usize>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

/// Fails with `NullPointer` when `ptr` is NULL.
fn non_null<T>(ptr: *const T, what: &str) -> CallResult {
    if ptr.is_null() {
        Err(Failure::new(PwStatus::NullPointer, format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// The kernel choice a `pw_conv_desc.kernel` string names.
///
/// # Safety
/// `name` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn kernel_choice(name: *const c_char) -> Result<KernelChoice, Failure> {
    if name.is_null() {
        return Ok(KernelChoice::Auto);
    }
    // SAFETY: not NULL, and the caller guarantees a NUL-terminated string.
    let raw = unsafe { CStr::from_ptr(name) };
    let Ok(text) = raw.to_str() else {
        return Err(Failure::new(
            PwStatus::InvalidArgument,
            format!("kernel name {raw:?} is not UTF-8"),
        ));
    };
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("auto") {
        Ok(KernelChoice::Auto)
    } else {
        Ok(KernelChoice::Force(KernelId::from_name(text)?))
    }
}

/// The pointwise description and options a `pw_conv_desc` gives.
fn convolution(desc: &PwConvDesc) -> Result<(Conv1x1, WeightOrder, Threads), Failure> {
    let invalid = |field: &str, value: u32, type_name: &str| {
        Failure::new(
            PwStatus::InvalidArgument,
            format!("{field} = {value} is not a {type_name} value"),
        )
    };
    let layout = match desc.layout {
        0 => Layout::Nchw,
        1 => Layout::Nhwc,
        v => return Err(invalid("layout", v, "pw_layout")),
    };
    let order = match desc.weight_order {
        0 => WeightOrder::OutputMajor,
        1 => WeightOrder::InputMajor,
        v => return Err(invalid("weight_order", v, "pw_weight_order")),
    };
    let activation = match desc.activation {
        0 => Activation::Identity,
        1 => Activation::Relu,
        2 => Activation::Relu6,
        3 => Activation::Clamp {
            min: desc.clamp_min,
            max: desc.clamp_max,
        },
        4 => Activation::LeakyRelu {
            alpha: desc.leaky_relu_alpha,
        },
        5 => Activation::Prelu,
        6 => Activation::HardSwish,
        7 => Activation::HardSigmoid {
            alpha: desc.hard_sigmoid_alpha,
            beta: desc.hard_sigmoid_beta,
        },
        8 => Activation::Sigmoid,
        9 => Activation::Tanh,
        10 => Activation::Silu,
        11 => Activation::Gelu,
        12 => Activation::GeluTanh,
        v => return Err(invalid("activation", v, "pw_activation")),
    };
    let borders = [desc.pad_top, desc.pad_bottom, desc.pad_left, desc.pad_right];
    let padding = if borders == [0; 4] {
        Padding::Valid
    } else {
        Padding::Explicit {
            top: desc.pad_top,
            bottom: desc.pad_bottom,
            left: desc.pad_left,
            right: desc.pad_right,
        }
    };
    let threads = match desc.threads {
        0 => Threads::Count(std::thread::available_parallelism().map_or(1, |n| n.get())),
        1 => Threads::Single,
        n => Threads::Count(n),
    };
    let conv = Conv1x1::new(desc.in_channels, desc.out_channels)
        .with_groups(desc.groups)
        .with_stride(desc.stride_h, desc.stride_w)
        .with_padding(padding)
        .with_layout(layout)
        .with_activation(activation);
    Ok((conv, order, threads))
}

/// Every kernel's name as a C string, made once.
fn kernel_c_name(kernel: KernelId) -> &'static CStr {
    static NAMES: OnceLock<Vec<(KernelId, CString)>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            KernelId::ALL
                .iter()
                .map(|&k| (k, CString::new(k.name()).unwrap_or_default()))
                .collect()
        })
        .iter()
        .find(|(k, _)| *k == kernel)
        .map_or(c"unknown", |(_, name)| name.as_c_str())
}

/// Fills `*desc` with the defaults for a convolution from `in_channels` to `out_channels`:
/// one group, stride 1, no padding, NCHW, `[K, C/G]` weights, identity activation (with the
/// parameter defaults listed at each field), no PReLU slopes, the calling thread only, the
/// fastest kernel.
///
/// # Safety
/// `desc` must be NULL (then `PW_STATUS_NULL_POINTER`) or point to writable memory for one
/// `pw_conv_desc`.
#[no_mangle]
pub unsafe extern "C" fn pw_conv_desc_init(desc: *mut PwConvDesc, in_channels: usize, out_channels: usize) -> PwStatus {
    entry(|| {
        non_null(desc, "desc")?;
        let value = PwConvDesc {
            in_channels,
            out_channels,
            groups: 1,
            stride_h: 1,
            stride_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
            layout: PwLayout::Nchw as u32,
            weight_order: PwWeightOrder::OutputMajor as u32,
            activation: PwActivation::Identity as u32,
            clamp_min: f32::NEG_INFINITY,
            clamp_max: f32::INFINITY,
            leaky_relu_alpha: 0.01,
            hard_sigmoid_alpha: 0.2,
            hard_sigmoid_beta: 0.5,
            prelu_slope: std::ptr::null(),
            prelu_slope_len: 0,
            threads: 1,
            kernel: std::ptr::null(),
        };
        // SAFETY: desc is not NULL and the caller guarantees it is writable for one struct;
        // `write` does not read the (possibly uninitialized) old value.
        unsafe { desc.write(value) };
        Ok(())
    })
}

/// Makes a plan: validates `*desc`, checks the buffer lengths, chooses the kernel and copies
/// and packs the weights (the caller's buffers are not used after the call).
///
/// `weights`: `weights_len` floats, `[K, C/G]` (or `[C/G, K]`, see `weight_order`).
/// `bias`: `bias_len` floats `[K]`, or NULL (with `bias_len` 0) for no bias.
/// On success `*out_plan` is the plan, to free with `pw_plan_free`; on error it is NULL.
///
/// Errors: every pointwise error (`ZERO_SIZE`, `GROUPS_DO_NOT_DIVIDE`, `ZERO_STRIDE`,
/// `LENGTH_MISMATCH` for weights, bias or slopes, `SIZE_OVERFLOW`, `INVALID_ACTIVATION`,
/// `KERNEL_UNAVAILABLE`, `UNKNOWN_KERNEL`, `THREAD_POOL`); `NULL_POINTER`;
/// `INVALID_ARGUMENT` for an unknown enum value or a kernel name that is not UTF-8.
///
/// # Safety
/// `desc` and `out_plan` must be NULL or valid (`desc` readable, `out_plan` writable);
/// `desc->kernel` NULL or a NUL-terminated string; each non-NULL buffer (`weights`, `bias`,
/// `desc->prelu_slope`) must hold at least as many readable floats as its length says, and
/// must not be written by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn pw_plan_create(
    desc: *const PwConvDesc,
    weights: *const f32,
    weights_len: usize,
    bias: *const f32,
    bias_len: usize,
    out_plan: *mut *mut PwPlan,
) -> PwStatus {
    entry(|| {
        non_null(out_plan, "out_plan")?;
        // SAFETY: out_plan is not NULL and the caller guarantees it is writable.
        unsafe { out_plan.write(std::ptr::null_mut()) };
        non_null(desc, "desc")?;
        // SAFETY: desc is not NULL and the caller guarantees it is readable; the struct has
        // no invalid bit patterns (integers, floats and raw pointers).
        let desc = unsafe { desc.read() };
        let (conv, order, threads) = convolution(&desc)?;
        // SAFETY: the caller guarantees desc.kernel is NULL or a NUL-terminated string.
        let kernel = unsafe { kernel_choice(desc.kernel) }?;
        // SAFETY: the caller guarantees each non-NULL buffer (weights, bias, slopes) holds its
        // length in readable floats, unchanged during the call; the slices do not outlive it.
        let weights = unsafe { input_slice(weights, weights_len, "weights") }?;
        // SAFETY: as above.
        let bias = unsafe { optional_slice(bias, bias_len, "bias") }?;
        // SAFETY: as above.
        let slope = unsafe { optional_slice(desc.prelu_slope, desc.prelu_slope_len, "prelu_slope") }?;
        let options = PlanOptions::default().with_kernel(kernel).with_threads(threads);
        let mut builder = Plan::builder(&conv, weights).weight_order(order).options(options);
        if let Some(bias) = bias {
            builder = builder.bias(bias);
        }
        if let Some(slope) = slope {
            builder = builder.prelu_slope(slope);
        }
        let plan = Box::into_raw(Box::new(PwPlan { plan: builder.build()? }));
        // SAFETY: out_plan was checked above (not NULL, writable per the caller).
        unsafe { out_plan.write(plan) };
        Ok(())
    })
}

/// Frees a plan made by `pw_plan_create`. NULL is a no-op.
///
/// # Safety
/// `plan` must be NULL or a plan from `pw_plan_create` not freed before; no other call may be
/// using it, and it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pw_plan_free(plan: *mut PwPlan) -> PwStatus {
    entry(|| {
        if !plan.is_null() {
            // SAFETY: the caller guarantees plan came from Box::into_raw in pw_plan_create and
            // is freed once, with no other user.
            drop(unsafe { Box::from_raw(plan) });
        }
        Ok(())
    })
}

/// A plan's reference from a C pointer.
///
/// # Safety
/// `plan` is NULL or a live plan from `pw_plan_create`, not freed during `'a`.
unsafe fn plan_ref<'a>(plan: *const PwPlan) -> Result<&'a Plan, Failure> {
    non_null(plan, "plan")?;
    // SAFETY: not NULL; the caller guarantees a live plan. Plans are only read after creation.
    Ok(unsafe { &(*plan).plan })
}

/// Writes one value through an out-pointer checked non-NULL.
///
/// # Safety
/// `out` is NULL (an error) or writable for one `T`.
unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> CallResult {
    non_null(out, what)?;
    // SAFETY: not NULL, and the caller guarantees it is writable.
    unsafe { out.write(value) };
    Ok(())
}

/// The output shape of a forward call on an input of `n` images of `h x w`; written to
/// `*out_dims` (untouched on error).
///
/// Errors: `SIZE_OVERFLOW` when the padded extent overflows; `NULL_POINTER`.
///
/// # Safety
/// `plan` NULL or a live plan; `out_dims` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pw_plan_output_dims(
    plan: *const PwPlan,
    n: usize,
    h: usize,
    w: usize,
    out_dims: *mut PwOutputDims,
) -> PwStatus {
    entry(|| {
        // SAFETY: the caller guarantees plan is NULL or live.
        let plan = unsafe { plan_ref(plan) }?;
        let d = plan.output_dims(InputDims::new(n, h, w))?;
        let dims = PwOutputDims {
            n: d.n,
            k: d.k,
            h: d.h,
            w: d.w,
        };
        // SAFETY: the caller guarantees out_dims is NULL or writable.
        unsafe { write_out(out_dims, dims, "out_dims") }
    })
}

/// The number of output (and residual) floats a forward call on `n` images of `h x w` needs;
/// written to `*out_len` (untouched on error).
///
/// Errors: `SIZE_OVERFLOW`; `NULL_POINTER`.
///
/// # Safety
/// `plan` NULL or a live plan; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pw_plan_output_len(
    plan: *const PwPlan,
    n: usize,
    h: usize,
    w: usize,
    out_len: *mut usize,
) -> PwStatus {
    entry(|| {
        // SAFETY: the caller guarantees plan is NULL or live.
        let plan = unsafe { plan_ref(plan) }?;
        let len = plan.output_len(InputDims::new(n, h, w))?;
        // SAFETY: the caller guarantees out_len is NULL or writable.
        unsafe { write_out(out_len, len, "out_len") }
    })
}

/// The number of input floats for `n` images of `h x w` (`n * C * h * w`); written to
/// `*out_len` (untouched on error).
///
/// Errors: `SIZE_OVERFLOW`; `NULL_POINTER`.
///
/// # Safety
/// `plan` NULL or a live plan; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pw_plan_input_len(
    plan: *const PwPlan,
    n: usize,
    h: usize,
    w: usize,
    out_len: *mut usize,
) -> PwStatus {
    entry(|| {
        // SAFETY: the caller guarantees plan is NULL or live.
        let plan = unsafe { plan_ref(plan) }?;
        let len = plan.input_len(InputDims::new(n, h, w))?;
        // SAFETY: the caller guarantees out_len is NULL or writable.
        unsafe { write_out(out_len, len, "out_len") }
    })
}

/// The name of the kernel the plan was made for (the forced one, or the fastest on this CPU),
/// e.g. `"avx512"`; `*out_name` points to a static NUL-terminated string (never freed).
/// With the automatic choice, small problems run `"reference"` instead: see
/// `pw_plan_kernel_for`.
///
/// # Safety
/// `plan` NULL or a live plan; `out_name` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pw_plan_kernel_name(plan: *const PwPlan, out_name: *mut *const c_char) -> PwStatus {
    entry(|| {
        // SAFETY: the caller guarantees plan is NULL or live.
        let plan = unsafe { plan_ref(plan) }?;
        let name = kernel_c_name(plan.kernel()).as_ptr();
        // SAFETY: the caller guarantees out_name is NULL or writable.
        unsafe { write_out(out_name, name, "out_name") }
    })
}

/// The name of the kernel a forward call on `n` images of `h x w` runs (static,
/// NUL-terminated, written to `*out_name`).
///
/// Errors: `SIZE_OVERFLOW`; `NULL_POINTER`.
///
/// # Safety
/// `plan` NULL or a live plan; `out_name` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pw_plan_kernel_for(
    plan: *const PwPlan,
    n: usize,
    h: usize,
    w: usize,
    out_name: *mut *const c_char,
) -> PwStatus {
    entry(|| {
        // SAFETY: the caller guarantees plan is NULL or live.
        let plan = unsafe { plan_ref(plan) }?;
        let kernel = plan.kernel_for(InputDims::new(n, h, w))?;
        // SAFETY: the caller guarantees out_name is NULL or writable.
        unsafe { write_out(out_name, kernel_c_name(kernel).as_ptr(), "out_name") }
    })
}

/// Makes an empty workspace (`*out_workspace`; NULL on error), to free with
/// `pw_workspace_free`.
///
/// # Safety
/// `out_workspace` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pw_workspace_create(out_workspace: *mut *mut PwWorkspace) -> PwStatus {
    entry(|| {
        non_null(out_workspace, "out_workspace")?;
        let ws = Box::into_raw(Box::new(PwWorkspace {
            workspace: Workspace::new(),
        }));
        // SAFETY: out_workspace is not NULL and the caller guarantees it is writable.
        unsafe { out_workspace.write(ws) };
        Ok(())
    })
}

/// Frees a workspace made by `pw_workspace_create`. NULL is a no-op.
///
/// # Safety
/// `workspace` must be NULL or a workspace from `pw_workspace_create` not freed before, used
/// by no call now and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn pw_workspace_free(workspace: *mut PwWorkspace) -> PwStatus {
    entry(|| {
        if !workspace.is_null() {
            // SAFETY: the caller guarantees it came from Box::into_raw in pw_workspace_create
            // and is freed once, with no other user.
            drop(unsafe { Box::from_raw(workspace) });
        }
        Ok(())
    })
}

/// The residual of a forward call.
enum ResidualArg<'a> {
    None,
    Separate(&'a [f32]),
    InOutput,
}

/// The body shared by `pw_forward` and `pw_forward_residual_in_place`.
///
/// # Safety
/// As `pw_forward`; for `InOutput`, `residual` is NULL and ignored.
#[allow(clippy::too_many_arguments)]
unsafe fn forward(
    plan: *const PwPlan,
    x: *const f32,
    x_len: usize,
    dims: InputDims,
    residual: Option<(*const f32, usize)>,
    y: *mut f32,
    y_len: usize,
    workspace: *mut PwWorkspace,
) -> CallResult {
    // SAFETY: the caller guarantees plan is NULL or live.
    let plan = unsafe { plan_ref(plan) }?;
    let y_range = byte_range(y, y_len);
    if overlaps(&byte_range(x, x_len), &y_range) {
        return Err(Failure::new(PwStatus::InvalidArgument, "x and y overlap"));
    }
    // SAFETY: the caller guarantees x holds x_len readable floats not written during the
    // call; y does not overlap it (checked above), and nothing else writes it.
    let x = unsafe { input_slice(x, x_len, "x") }?;
    let residual = match residual {
        None => ResidualArg::InOutput,
        Some((r, r_len)) => {
            if overlaps(&byte_range(r, r_len), &y_range) {
                return Err(Failure::new(
                    PwStatus::InvalidArgument,
                    "residual and y overlap (for y += residual use pw_forward_residual_in_place)",
                ));
            }
            // SAFETY: as for x: readable, not written during the call, disjoint from y.
            match unsafe { optional_slice(r, r_len, "residual") }? {
                Some(r) => ResidualArg::Separate(r),
                None => ResidualArg::None,
            }
        }
    };
    let y: &mut [f32] = if check_buffer(y, y_len, "y")? {
        // SAFETY: check_buffer showed y non-NULL, aligned, within isize::MAX bytes; the
        // caller guarantees y_len writable floats, used by nothing else during the call; the
        // input slices do not overlap it (checked above).
        unsafe { std::slice::from_raw_parts_mut(y, y_len) }
    } else {
        &mut []
    };
    let mut temporary = Workspace::new();
    let ws = if workspace.is_null() {
        &mut temporary
    } else {
        // SAFETY: the caller guarantees a live workspace used by no other call meanwhile.
        unsafe { &mut (*workspace).workspace }
    };
    match residual {
        ResidualArg::None => plan.forward(x, dims, None, y, ws)?,
        ResidualArg::Separate(r) => plan.forward(x, dims, Some(r), y, ws)?,
        ResidualArg::InOutput => plan.forward_residual_in_place(x, dims, y, ws)?,
    }
    Ok(())
}

/// Runs the convolution: `y = act(W * x + bias + residual)` for an input of `n` images of
/// `h x w` (`x_len = n * C * h * w`, `y_len` = `pw_plan_output_len`). Each output element is
/// written once; on error `y` is untouched. An empty input (`n`, `h` or `w` 0) writes nothing.
///
/// `residual`: `residual_len` floats of the output's shape, or NULL (with length 0) for none.
/// `workspace`: a workspace from `pw_workspace_create` (reused, so steady-state calls do not
/// allocate), or NULL for a temporary one.
///
/// Errors: `LENGTH_MISMATCH` for `x`, `residual` or `y`; `SIZE_OVERFLOW`; `NULL_POINTER`
/// (`plan`, or a NULL buffer with a non-zero length); `INVALID_ARGUMENT` when `y` overlaps
/// `x` or `residual`, or a buffer is not aligned for float.
///
/// # Safety
/// `plan` NULL or a live plan. `x` and `residual` NULL or holding at least their length in
/// readable floats, not written during the call; `y` NULL or holding `y_len` writable floats
/// that nothing else reads or writes during the call. `workspace` NULL or a live workspace
/// used by no other call at the same time. The same plan may run on several threads at once.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn pw_forward(
    plan: *const PwPlan,
    x: *const f32,
    x_len: usize,
    n: usize,
    h: usize,
    w: usize,
    residual: *const f32,
    residual_len: usize,
    y: *mut f32,
    y_len: usize,
    workspace: *mut PwWorkspace,
) -> PwStatus {
    let dims = InputDims::new(n, h, w);
    // SAFETY: the caller's obligations are forward's.
    entry(|| unsafe {
        forward(
            plan,
            x,
            x_len,
            dims,
            Some((residual, residual_len)),
            y,
            y_len,
            workspace,
        )
    })
}

/// As `pw_forward` with the residual in `y`: `y = act(W * x + bias + y)` (a ResNet shortcut
/// added without a second buffer). Each element of `y` is read once before it is overwritten;
/// on error `y` is untouched.
///
/// # Safety
/// As `pw_forward`; `y` must also hold initialized floats (it is read).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn pw_forward_residual_in_place(
    plan: *const PwPlan,
    x: *const f32,
    x_len: usize,
    n: usize,
    h: usize,
    w: usize,
    y: *mut f32,
    y_len: usize,
    workspace: *mut PwWorkspace,
) -> PwStatus {
    let dims = InputDims::new(n, h, w);
    // SAFETY: the caller's obligations are forward's.
    entry(|| unsafe { forward(plan, x, x_len, dims, None, y, y_len, workspace) })
}

/// The message of the last call on this thread that failed, NUL-terminated; `""` when the
/// last status-returning call on this thread succeeded (or none was made). Never NULL.
///
/// The string belongs to the library: it stays valid until the next `pw_` call on this
/// thread that returns a `pw_status`; copy it to keep it.
#[no_mangle]
pub extern "C" fn pw_last_error_message() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|slot| slot.try_borrow().map(|s| s.as_ptr()).ok())
            .ok()
            .flatten()
    })
    .ok()
    .flatten()
    .unwrap_or(c"".as_ptr())
}

/// The name of a status code as the header spells it (`"PW_STATUS_LENGTH_MISMATCH"`), or
/// `"PW_STATUS_UNKNOWN"` for a value that is no code. Static, NUL-terminated, never NULL.
#[no_mangle]
pub extern "C" fn pw_status_name(status: i32) -> *const c_char {
    let name = match status {
        0 => c"PW_STATUS_OK",
        1 => c"PW_STATUS_ZERO_SIZE",
        2 => c"PW_STATUS_GROUPS_DO_NOT_DIVIDE",
        3 => c"PW_STATUS_ZERO_STRIDE",
        4 => c"PW_STATUS_LENGTH_MISMATCH",
        5 => c"PW_STATUS_SIZE_OVERFLOW",
        6 => c"PW_STATUS_INVALID_ACTIVATION",
        7 => c"PW_STATUS_KERNEL_UNAVAILABLE",
        8 => c"PW_STATUS_UNKNOWN_KERNEL",
        9 => c"PW_STATUS_INVALID_SHUFFLE",
        10 => c"PW_STATUS_THREAD_POOL",
        11 => c"PW_STATUS_NULL_POINTER",
        12 => c"PW_STATUS_INVALID_ARGUMENT",
        13 => c"PW_STATUS_PANIC",
        14 => c"PW_STATUS_OTHER",
        _ => c"PW_STATUS_UNKNOWN",
    };
    name.as_ptr()
}

/// This library's version, e.g. `"0.1.0"` (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn pw_version() -> *const c_char {
    const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code's name is the header's spelling of its enumerator.
    #[test]
    fn status_names_follow_the_codes() {
        let codes = [
            (PwStatus::Ok, "OK"),
            (PwStatus::ZeroSize, "ZERO_SIZE"),
            (PwStatus::GroupsDoNotDivide, "GROUPS_DO_NOT_DIVIDE"),
            (PwStatus::ZeroStride, "ZERO_STRIDE"),
            (PwStatus::LengthMismatch, "LENGTH_MISMATCH"),
            (PwStatus::SizeOverflow, "SIZE_OVERFLOW"),
            (PwStatus::InvalidActivation, "INVALID_ACTIVATION"),
            (PwStatus::KernelUnavailable, "KERNEL_UNAVAILABLE"),
            (PwStatus::UnknownKernel, "UNKNOWN_KERNEL"),
            (PwStatus::InvalidShuffle, "INVALID_SHUFFLE"),
            (PwStatus::ThreadPool, "THREAD_POOL"),
            (PwStatus::NullPointer, "NULL_POINTER"),
            (PwStatus::InvalidArgument, "INVALID_ARGUMENT"),
            (PwStatus::Panic, "PANIC"),
            (PwStatus::Other, "OTHER"),
        ];
        for (i, (code, name)) in codes.iter().enumerate() {
            assert_eq!(*code as i32, i as i32);
            // SAFETY: pw_status_name returns a static NUL-terminated string.
            let got = unsafe { CStr::from_ptr(pw_status_name(*code as i32)) };
            assert_eq!(got.to_str().unwrap(), format!("PW_STATUS_{name}"));
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(pw_status_name(-1)) };
        assert_eq!(unknown, c"PW_STATUS_UNKNOWN");
    }

    #[test]
    fn panics_become_a_code_and_a_message() {
        let status = entry(|| panic!("boom"));
        assert_eq!(status, PwStatus::Panic);
        // SAFETY: pw_last_error_message returns a NUL-terminated string valid until the next
        // call on this thread.
        let message = unsafe { CStr::from_ptr(pw_last_error_message()) }
            .to_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("boom"), "{message}");
        assert_eq!(entry(|| Ok(())), PwStatus::Ok);
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(pw_last_error_message()) }, c"");
    }

    #[test]
    fn every_kernel_has_a_c_name() {
        for k in KernelId::ALL {
            assert_eq!(kernel_c_name(k).to_str().unwrap(), k.name());
        }
    }
}

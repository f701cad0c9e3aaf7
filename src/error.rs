//! The typed errors every fallible call returns. No call panics on bad input, and a call that
//! returns an error leaves the caller's output buffer untouched.
use crate::dispatch::KernelId;

/// Everything that can be wrong with the arguments of a pointwise convolution.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size that must be at least 1 was 0 (`what` names it: `in_channels`, `out_channels`, `groups`).
    #[error("{what} must be at least 1, got 0")]
    ZeroSize {
        /// The parameter's name.
        what: &'static str,
    },
    /// `groups` does not divide the input or output channel count.
    #[error("groups ({groups}) must divide {what} ({channels})")]
    GroupsDoNotDivide {
        /// The group count.
        groups: usize,
        /// `in_channels` or `out_channels`.
        what: &'static str,
        /// The channel count it fails to divide.
        channels: usize,
    },
    /// A stride component was 0.
    #[error("stride must be at least 1 in both directions, got ({0}, {1})")]
    ZeroStride(usize, usize),
    /// A slice has the wrong number of elements.
    #[error("{what}: expected {expected} elements, got {got}")]
    LengthMismatch {
        /// `input`, `weights`, `bias`, `residual` or `output`.
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// A size product overflows `usize`, or describes a buffer larger than `isize::MAX` bytes,
    /// which no allocation can hold.
    #[error("size overflow: {what} does not fit in memory")]
    SizeOverflow {
        /// The quantity being computed.
        what: &'static str,
    },
    /// An activation's parameters are invalid (NaN bounds, `min > max`, non-finite slope).
    #[error("invalid activation parameters: {0}")]
    InvalidActivation(&'static str),
    /// A kernel was forced that this CPU (or this build) cannot run.
    #[error("kernel `{0}` is not available on this CPU")]
    KernelUnavailable(KernelId),
    /// A kernel name that no kernel has.
    #[error("unknown kernel name `{0}` (known: {known})", known = crate::dispatch::kernel_names())]
    UnknownKernel(String),
    /// `channel_shuffle` was given factors that do not multiply to the channel count.
    #[error("channel_shuffle: groups ({groups}) must divide channels ({channels}) and be at least 1")]
    InvalidShuffle {
        /// The group count.
        groups: usize,
        /// The channel count.
        channels: usize,
    },
    /// A test hook (`testing` feature: `pointwise::testing`, `Plan::force_tile`) was given a
    /// tile that the kernel does not have or a tile extent outside it.
    #[cfg(feature = "testing")]
    #[error("invalid tile: {0}")]
    InvalidTile(String),
    /// An array view (the `ndarray` adapter) whose shape does not fit the plan, or whose memory
    /// cannot be read as the plan's layout without a copy (`what` names the operand,
    /// `problem` says what is wrong: a channel count, a negative stride, a gap, an axis order).
    #[error("{what} array: {problem}")]
    ArrayView {
        /// `input`, `residual` or `output`.
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A dedicated thread pool could not be created.
    #[error("could not build a thread pool: {0}")]
    ThreadPool(String),
}

/// The crate's result type (crate-internal: the public signatures spell out
/// `std::result::Result<T, Error>` through it, and `use pointwise::*` brings no `Result`
/// that would shadow the standard one).
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Multiplies sizes with overflow checking; `what` names the product in the error.
/// A product with a zero factor is zero whatever the other factors are: an empty shape is
/// never "too large".
pub(crate) fn checked_product(factors: &[usize], what: &'static str) -> Result<usize> {
    if factors.contains(&0) {
        return Ok(0);
    }
    let mut acc: usize = 1;
    for &f in factors {
        acc = acc.checked_mul(f).ok_or(Error::SizeOverflow { what })?;
    }
    // A slice of f32 cannot exceed isize::MAX bytes.
    if acc > (isize::MAX as usize) / std::mem::size_of::<f32>() {
        return Err(Error::SizeOverflow { what });
    }
    Ok(acc)
}

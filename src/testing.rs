//! Hooks for the crate's own tests, benchmarks and tools (the `testing` cargo feature, which
//! normal builds do not have): the register tiles of each kernel by name, a checked entry
//! point for one microkernel call, and the shared thread pools. Not part of the stable API.
use crate::dispatch::KernelId;
use crate::driver::TileCall;
use crate::epilogue::{Activation, ChannelAxis};
use crate::error::{Error, Result};
use crate::kernels::{self, Orientation};

/// One register tile of a SIMD kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileInfo {
    /// `{isa}_{type}_{mr}x{nr}_{wrows|prows}`, as `Plan::force_tile` takes it.
    pub name: &'static str,
    /// Rows are output channels (NCHW's natural tile) rather than pixels.
    pub weight_rows: bool,
    /// Rows of the tile.
    pub mr: usize,
    /// Vector lanes (columns) of the tile.
    pub nr: usize,
}

/// The register tiles `kernel` runs for f32 products (empty for non-SIMD kernels): the tiles
/// of every call except bf16 calls on a kernel with [`bf16_pair_tiles`].
pub fn tiles(kernel: KernelId) -> Vec<TileInfo> {
    tile_infos(kernel, false)
}

/// The register tiles `kernel` runs for calls whose input and weights are bf16, multiplying
/// bf16 pairs (empty for kernels without them). In [`run_tile`]'s numbering they follow
/// [`tiles`]: pair tile `i` is tile `tiles(kernel).len() + i`.
pub fn bf16_pair_tiles(kernel: KernelId) -> Vec<TileInfo> {
    tile_infos(kernel, true)
}

fn tile_infos(kernel: KernelId, pairs: bool) -> Vec<TileInfo> {
    kernels::tiles(kernel)
        .iter()
        .filter(|t| t.tile.pairs == pairs)
        .map(|t| TileInfo {
            name: t.name,
            weight_rows: t.tile.orient == Orientation::WeightRows,
            mr: t.tile.mr,
            nr: t.tile.nr,
        })
        .collect()
}

/// Output channels per register of `kernel`'s group-lanes tile (`None` for kernels without
/// one): grouped NHWC convolutions with fewer output channels per group than this and no
/// more input channels per group, or exactly this many output channels and at most half as
/// many input channels per group, run on it (`Plan::tile_for` names it
/// `{isa}_f32_{rows}x{lanes}_group_lanes`).
pub fn group_lanes_width(kernel: KernelId) -> Option<usize> {
    kernels::group_lanes(kernel).map(|g| g.lanes)
}

/// The most output channels `kernel`'s pixel-lanes loop takes (`None` for kernels without
/// one): NHWC convolutions of one group with at most this many output channels, and fewer
/// than [`group_lanes_width`], run on it where the flat-lanes loop does not take them
/// (`Plan::tile_for` names it `{isa}_f32_pixel_lanes`).
pub fn pixel_lanes_max_k(kernel: KernelId) -> Option<usize> {
    kernels::group_lanes(kernel).map(|g| g.pixel_max_k)
}

/// The live thread pools shared by plans with `Threads::Count`, as `(threads, plans holding
/// it)`, sorted.
pub fn live_thread_pools() -> Vec<(usize, usize)> {
    crate::plan::live_pools()
}

/// Runs one microkernel call of `kernel`'s tile `tile` (an index into [`tiles`], then
/// [`bf16_pair_tiles`]):
/// `C[m x n] = act(A * B + bias + R)` where `a` is an MR-lane panel (`kc` rows of `mr`
/// values), `b` an NR-lane panel (`kc` rows of `nr`; for a pair tile both have `ceil(kc / 2)`
/// rows whose 32-bit values each hold two bf16 steps, the even one in the low half), `c` has row stride `ldc`, the bias runs
/// along rows (`bias_per_row`) or columns, and the residual has its own row stride. Only the
/// `m x n` part of `c` is written, and only that part of the residual (and of a column bias)
/// is read: a partial tile stores with masks (AVX-512) or lane by lane.
///
/// # Errors
/// [`Error::KernelUnavailable`], [`Error::InvalidTile`] for a tile index or an extent outside
/// the tile, [`Error::LengthMismatch`] for a slice too short for its extent.
#[allow(clippy::too_many_arguments)]
pub fn run_tile(
    kernel: KernelId,
    tile: usize,
    kc: usize,
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    bias: Option<&[f32]>,
    bias_per_row: bool,
    residual: Option<(&[f32], usize)>,
    act: Activation,
) -> Result<()> {
    act.validate()?;
    if !kernel.is_available() {
        return Err(Error::KernelUnavailable(kernel));
    }
    let Some(entry) = kernels::tiles(kernel).get(tile) else {
        return Err(match kernels::tiles(kernel).is_empty() {
            true => Error::KernelUnavailable(kernel),
            false => Error::InvalidTile("no such tile".into()),
        });
    };
    let shape = entry.tile;
    if m == 0 || n == 0 || m > shape.mr || n > shape.nr {
        return Err(Error::InvalidTile("m or n outside the tile".into()));
    }
    let need = |what: &'static str, len: usize, expected: Option<usize>| match expected {
        Some(e) if len >= e => Ok(()),
        Some(e) => Err(Error::LengthMismatch {
            what,
            expected: e,
            got: len,
        }),
        None => Err(Error::SizeOverflow { what }),
    };
    // Packed rows: one per reduction step, or per two for a tile of bf16 pairs.
    let rows = if shape.pairs { kc.div_ceil(2) } else { kc };
    need("a", a.len(), rows.checked_mul(shape.mr))?;
    need("b", b.len(), rows.checked_mul(shape.nr))?;
    let extent = |ld: usize| {
        if ld < n {
            None
        } else {
            (m - 1).checked_mul(ld).and_then(|v| v.checked_add(n))
        }
    };
    need("output", c.len(), extent(ldc))?;
    if let Some(b) = bias {
        need("bias", b.len(), Some(if bias_per_row { m } else { n }))?;
    }
    if let Some((r, ldr)) = residual {
        need("residual", r.len(), extent(ldr))?;
    }
    let call = TileCall {
        kc,
        a,
        b,
        m,
        n,
        c: c.as_mut_ptr(),
        ldc,
        bias,
        slope: None,
        axis: if bias_per_row {
            ChannelAxis::Rows
        } else {
            ChannelAxis::Cols
        },
        residual,
        act,
    };
    // SAFETY: the kernel is available on this CPU and every extent was checked above.
    unsafe { (entry.call)(&call) };
    kernel.record_invocation();
    Ok(())
}

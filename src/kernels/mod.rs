//! Kernels, one folder per instruction set: `x86_64/avx512.rs`, `x86_64/avx2.rs`,
//! `aarch64/neon.rs`, and `portable.rs` (the `wide` crate) for everything else. Each SIMD tier
//! supplies a vector type and its tile shapes; the tile body itself (`simd::gemm_tile`) and
//! the loop nest around it (`driver::run_units`) are written once and compiled into each
//! tier's `#[target_feature]` entry point. `reference.rs` is the plain-loop checker.
pub(crate) mod portable;
pub(crate) mod reference;
pub(crate) mod simd;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use crate::dispatch::KernelId;
use crate::driver::{Job, Orientation, TaskScratch};
use std::ops::Range;

/// Runs a range of a job's units; `unsafe` because it executes the tier's instructions.
pub(crate) type UnitRunner = unsafe fn(&Job, Range<usize>, &mut TaskScratch);

/// A register tile: `mr` rows by `nr` vector lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TileShape {
    pub mr: usize,
    pub nr: usize,
}

/// One SIMD tier as the plan sees it.
#[derive(Clone, Copy)]
pub(crate) struct Tier {
    pub id: KernelId,
    /// Tile when rows are output channels (NCHW).
    pub weight_rows: TileShape,
    /// Tile when rows are pixels (NHWC).
    pub pixel_rows: TileShape,
    pub run: UnitRunner,
}

impl Tier {
    pub fn shape(&self, orient: Orientation) -> TileShape {
        match orient {
            Orientation::WeightRows => self.weight_rows,
            Orientation::PixelRows => self.pixel_rows,
        }
    }

    /// Lanes of the weight panels for an orientation.
    pub fn weight_lanes(&self, orient: Orientation) -> usize {
        match orient {
            Orientation::WeightRows => self.weight_rows.mr,
            Orientation::PixelRows => self.pixel_rows.nr,
        }
    }
}

/// The SIMD tier for a kernel id, when this build has it (availability on the running CPU is
/// checked by `dispatch`).
pub(crate) fn tier(id: KernelId) -> Option<Tier> {
    match id {
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx512 => Some(x86_64::avx512::TIER),
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx2 => Some(x86_64::avx2::TIER),
        #[cfg(target_arch = "aarch64")]
        KernelId::Neon => Some(aarch64::neon::TIER),
        KernelId::Portable => Some(portable::TIER),
        _ => None,
    }
}

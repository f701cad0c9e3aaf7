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
use crate::driver::{Job, Orientation, TaskScratch, TileCall};
use std::ops::Range;

/// Runs a range of a job's units with the tile `job.tile`; `unsafe` because it executes the
/// tier's instructions.
pub(crate) type UnitRunner = unsafe fn(&Job, Range<usize>, &mut TaskScratch);

/// A register tile: `mr` rows by `nr` vector lanes, in one orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    pub orient: Orientation,
    pub mr: usize,
    pub nr: usize,
    /// Vector registers per row (`nr / lanes`).
    pub vectors: usize,
}

impl Tile {
    /// Lanes of the weight panels this tile reads.
    pub fn weight_lanes(&self) -> usize {
        match self.orient {
            Orientation::WeightRows => self.mr,
            Orientation::PixelRows => self.nr,
        }
    }

    /// Lanes of the pixel panels this tile reads.
    pub fn pixel_lanes(&self) -> usize {
        match self.orient {
            Orientation::WeightRows => self.nr,
            Orientation::PixelRows => self.mr,
        }
    }
}

/// One SIMD tier as the plan sees it.
#[derive(Clone, Copy)]
pub(crate) struct Tier {
    pub id: KernelId,
    /// The register tiles this tier is compiled for; the plan picks one per call shape.
    pub tiles: &'static [Tile],
    pub run: UnitRunner,
    /// Runs one microkernel call with tile `index` (microkernel tests).
    pub tile_call: TileRunner,
}

/// Runs one [`TileCall`] with the tile of the given index; `unsafe` as [`UnitRunner`].
pub(crate) type TileRunner = unsafe fn(usize, &TileCall);

/// Declares a tier's tiles once: the `TILES` table the plan chooses from and the `run_tile`
/// dispatcher that instantiates the loop nest for each (`$idx` is the table index).
macro_rules! tile_table {
    ($v:ty; $($idx:literal => ($orient:ident, $mr:literal x $nv:literal)),+ $(,)?) => {
        pub(crate) const TILES: &[$crate::kernels::Tile] = &[$(
            $crate::kernels::Tile {
                orient: $crate::driver::Orientation::$orient,
                mr: $mr,
                nr: $nv * <$v as $crate::kernels::simd::SimdF32>::LANES,
                vectors: $nv,
            }
        ),+];

        /// Runs `units` with the tile the job selected.
        ///
        /// # Safety
        /// As `driver::run_units`, on a CPU with this tier's features.
        #[inline(always)]
        unsafe fn run_tile(
            job: &$crate::driver::Job,
            units: std::ops::Range<usize>,
            scratch: &mut $crate::driver::TaskScratch,
        ) {
            // SAFETY: forwarded contract; job.tile indexes TILES, whose shapes match.
            unsafe {
                match job.tile {
                    $($idx => $crate::driver::run_units::<$v, $mr, $nv>(job, units, scratch),)+
                    _ => debug_assert!(false, "tile index out of range"),
                }
            }
        }

        /// Runs one microkernel call with tile `index`.
        ///
        /// # Safety
        /// As `driver::run_tile_call`, on a CPU with this tier's features.
        #[inline(always)]
        unsafe fn run_one_tile(index: usize, call: &$crate::driver::TileCall) {
            // SAFETY: forwarded contract; index selects the matching shape.
            unsafe {
                match index {
                    $($idx => $crate::driver::run_tile_call::<$v, $mr, $nv>(call),)+
                    _ => debug_assert!(false, "tile index out of range"),
                }
            }
        }
    };
}
pub(crate) use tile_table;

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

//! The kernel registry, and the kernels: one folder per instruction set (`x86_64/avx512.rs`,
//! `x86_64/avx512_bf16.rs`, `x86_64/avx2.rs`, `aarch64/neon.rs`, `aarch64/neon_bf16.rs`), `portable.rs` (the `wide` crate) for everything else,
//! `matrixmultiply.rs` (the fallback) and `reference.rs` (the plain-loop checker).
//!
//! A SIMD tier file supplies only its capability token and register type (`simd::Simd`,
//! `simd::SimdF32`) with one `#[target_feature]` entry point (`Simd::vectorize`). The tile
//! body (`simd::gemm_tile`) and the loop nest around it (`driver`) are generic code that never
//! names a tier. This file turns the two into data: each [`TileKernel`] names one register
//! tile of one tier (`avx512_f32_8x32_wrows`: ISA, element type, rows x lanes, orientation),
//! its packed formats, and the loop nest and single-tile entry points instantiated for it.
//! Adding a tile is one line here; adding an ISA is a tier file plus its tile list here (and
//! its row in `dispatch`'s kernel table).
pub(crate) mod few_inputs;
pub(crate) mod few_outputs;
pub(crate) mod matrixmultiply;
pub(crate) mod portable;
pub(crate) mod reference;
pub(crate) mod simd;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use crate::dispatch::KernelId;
use crate::driver::{
    FewInputsJob, FewOutputsJob, FlatLanesJob, GroupLanesJob, Job, PixelLanesJob, RunFewInputs, RunFewOutputs,
    RunFlatLanes, RunGroupLanes, RunPixelLanes, RunTileCall, RunUnits, TaskScratch, TileCall,
};
use crate::packing::PackedFormat;
use simd::{Simd, SimdF32};
use std::ops::Range;

/// Which operand supplies a tile's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Orientation {
    /// Rows are output channels, vector lanes are pixels (NCHW's natural tile).
    WeightRows,
    /// Rows are pixels, vector lanes are output channels (NHWC's natural tile).
    PixelRows,
}

impl Orientation {
    /// The suffix in tile names.
    #[cfg(test)]
    pub fn suffix(self) -> &'static str {
        match self {
            Orientation::WeightRows => "wrows",
            Orientation::PixelRows => "prows",
        }
    }
}

/// A register tile's shape: `mr` rows by `nr` vector lanes, in one orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    pub orient: Orientation,
    pub mr: usize,
    pub nr: usize,
    /// Vector registers per row (`nr / lanes`).
    pub vectors: usize,
    /// The tile multiplies bf16 pairs (`Simd::dot_bf16_pairs`): both operands are packed
    /// as [`PackedFormat::bf16_pairs`], and one packed row is two reduction steps.
    pub pairs: bool,
}

impl Tile {
    /// Lanes of the weight panels this tile reads.
    pub const fn weight_lanes(&self) -> usize {
        match self.orient {
            Orientation::WeightRows => self.mr,
            Orientation::PixelRows => self.nr,
        }
    }

    /// Lanes of the pixel panels this tile reads.
    pub const fn pixel_lanes(&self) -> usize {
        match self.orient {
            Orientation::WeightRows => self.nr,
            Orientation::PixelRows => self.mr,
        }
    }
}

/// Runs a range of a job's units with one tile.
///
/// # Safety
/// As `driver::run_units`: the job's slices were checked against its geometry, and its weight
/// panels are packed in this tile's weight format.
pub(crate) type UnitRunner = unsafe fn(&Job, Range<usize>, &mut TaskScratch);

/// Runs one microkernel call with one tile.
///
/// # Safety
/// As `driver::run_tile_call`.
pub(crate) type TileRunner = unsafe fn(&TileCall);

/// One register tile of one tier, as data.
#[derive(Clone, Copy)]
pub(crate) struct TileKernel {
    /// `{isa}_{type}_{mr}x{nr}_{wrows|prows}`.
    pub name: &'static str,
    /// The kernel (checked against the name by the registry's tests).
    #[allow(dead_code)]
    pub kernel: KernelId,
    pub tile: Tile,
    /// The packed formats of its weight and pixel operands.
    pub weights: PackedFormat,
    /// The pixel panels' format (the driver packs pixels per unit in it).
    #[allow(dead_code)]
    pub pixels: PackedFormat,
    pub run: UnitRunner,
    /// One microkernel call (the `testing` hook `run_tile`).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub call: TileRunner,
}

impl std::borrow::Borrow<Tile> for TileKernel {
    fn borrow(&self) -> &Tile {
        &self.tile
    }
}

impl std::fmt::Debug for TileKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The loop nest for tier `S` with an `MR x (NV * LANES)` tile.
///
/// # Safety
/// As [`UnitRunner`].
unsafe fn run_units_with<S: Simd, const MR: usize, const NV: usize, const WROWS: bool, const PAIRS: bool>(
    job: &Job,
    units: Range<usize>,
    scratch: &mut TaskScratch,
) {
    // The plan holds this runner only for a kernel dispatch reported available.
    let Some(s) = S::try_new() else {
        debug_assert!(false, "{} selected on a CPU without it", S::KERNEL);
        return;
    };
    // SAFETY: forwarded contract.
    s.vectorize(unsafe { RunUnits::<MR, NV, WROWS, PAIRS>::new(job, units, scratch) })
}

/// One microkernel call for tier `S` with an `MR x (NV * LANES)` tile.
///
/// # Safety
/// As [`TileRunner`].
unsafe fn run_tile_call_with<S: Simd, const MR: usize, const NV: usize, const PAIRS: bool>(call: &TileCall) {
    let Some(s) = S::try_new() else {
        debug_assert!(false, "{} selected on a CPU without it", S::KERNEL);
        return;
    };
    // SAFETY: forwarded contract.
    s.vectorize(unsafe { RunTileCall::<MR, NV, PAIRS>::new(call) })
}

/// A registry entry: `tile!(Tier, "name", Orientation, MR x NV)`, NV vector registers per
/// row, of f32 products; `tile!(Tier, "name", Orientation, MR x NV, bf16 pairs)` for a tile
/// that multiplies bf16 pairs.
macro_rules! tile {
    ($simd:ty, $name:literal, $orient:ident, $mr:literal x $nv:literal) => {
        tile!(@ $simd, $name, $orient, $mr, $nv, false, PackedFormat::f32)
    };
    ($simd:ty, $name:literal, $orient:ident, $mr:literal x $nv:literal, bf16 pairs) => {
        tile!(@ $simd, $name, $orient, $mr, $nv, true, PackedFormat::bf16_pairs)
    };
    (@ $simd:ty, $name:literal, $orient:ident, $mr:literal, $nv:literal, $pairs:literal, $format:path) => {{
        let tile = Tile {
            orient: Orientation::$orient,
            mr: $mr,
            nr: $nv * <<$simd as Simd>::F32 as SimdF32>::LANES,
            vectors: $nv,
            pairs: $pairs,
        };
        TileKernel {
            name: $name,
            kernel: <$simd as Simd>::KERNEL,
            tile,
            weights: $format(tile.weight_lanes()),
            pixels: $format(tile.pixel_lanes()),
            run: run_units_with::<$simd, $mr, $nv, { matches!(Orientation::$orient, Orientation::WeightRows) }, $pairs>,
            call: run_tile_call_with::<$simd, $mr, $nv, $pairs>,
        }
    }};
}

/// The AVX-512F tiles, in the order the cost model breaks ties (also the f32 tiles of the
/// AVX-512 BF16 kernel).
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_f32_tiles {
    () => {{
        use x86_64::avx512::Avx512;
        [
            tile!(Avx512, "avx512_f32_8x32_wrows", WeightRows, 8 x 2),
            tile!(Avx512, "avx512_f32_8x32_prows", PixelRows, 8 x 2),
            tile!(Avx512, "avx512_f32_7x32_prows", PixelRows, 7 x 2),
            tile!(Avx512, "avx512_f32_8x48_prows", PixelRows, 8 x 3),
            tile!(Avx512, "avx512_f32_6x64_wrows", WeightRows, 6 x 4),
            tile!(Avx512, "avx512_f32_6x64_prows", PixelRows, 6 x 4),
            tile!(Avx512, "avx512_f32_8x16_prows", PixelRows, 8 x 1),
            tile!(Avx512, "avx512_f32_8x16_wrows", WeightRows, 8 x 1),
            tile!(Avx512, "avx512_f32_4x64_wrows", WeightRows, 4 x 4),
            tile!(Avx512, "avx512_f32_1x64_wrows", WeightRows, 1 x 4),
            tile!(Avx512, "avx512_f32_1x64_prows", PixelRows, 1 x 4),
        ]
    }};
}

#[cfg(target_arch = "x86_64")]
const AVX512: &[TileKernel] = &avx512_f32_tiles!();

/// A bf16 kernel's tile list: its base tier's f32 tiles (its f32 calls run them), then its
/// bf16-pair tiles (`N` = both lengths; pair tiles last, as `testing::run_tile` numbers them).
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
const fn f32_then_pair_tiles<const N: usize>(f32_tiles: &[TileKernel], pair_tiles: &[TileKernel]) -> [TileKernel; N] {
    assert!(f32_tiles.len() + pair_tiles.len() == N);
    let mut all = [f32_tiles[0]; N];
    let mut i = 0;
    while i < N {
        all[i] = if i < f32_tiles.len() {
            f32_tiles[i]
        } else {
            pair_tiles[i - f32_tiles.len()]
        };
        i += 1;
    }
    all
}

/// The AVX-512 BF16 kernel: the AVX-512F tiles for f32 products, then the bf16-pair tiles
/// (`x86_64/avx512_bf16.rs` says why these shapes).
#[cfg(target_arch = "x86_64")]
const AVX512_BF16: &[TileKernel] = {
    use x86_64::avx512_bf16::Avx512Bf16;
    &f32_then_pair_tiles::<15>(
        &avx512_f32_tiles!(),
        &[
            tile!(Avx512Bf16, "avx512bf16_bf16_8x32_wrows", WeightRows, 8 x 2, bf16 pairs),
            tile!(Avx512Bf16, "avx512bf16_bf16_8x32_prows", PixelRows, 8 x 2, bf16 pairs),
            tile!(Avx512Bf16, "avx512bf16_bf16_6x64_wrows", WeightRows, 6 x 4, bf16 pairs),
            tile!(Avx512Bf16, "avx512bf16_bf16_6x64_prows", PixelRows, 6 x 4, bf16 pairs),
        ],
    )
};

#[cfg(target_arch = "x86_64")]
const AVX2: &[TileKernel] = {
    use x86_64::avx2::Avx2;
    &[
        tile!(Avx2, "avx2_f32_6x16_wrows", WeightRows, 6 x 2),
        tile!(Avx2, "avx2_f32_6x16_prows", PixelRows, 6 x 2),
        tile!(Avx2, "avx2_f32_1x32_wrows", WeightRows, 1 x 4),
        tile!(Avx2, "avx2_f32_1x32_prows", PixelRows, 1 x 4),
    ]
};

/// The NEON tiles (also the f32 tiles of the NEON BF16 kernel).
#[cfg(target_arch = "aarch64")]
macro_rules! neon_f32_tiles {
    () => {{
        use aarch64::neon::Neon;
        [
            tile!(Neon, "neon_f32_8x12_wrows", WeightRows, 8 x 3),
            tile!(Neon, "neon_f32_8x12_prows", PixelRows, 8 x 3),
            tile!(Neon, "neon_f32_1x16_wrows", WeightRows, 1 x 4),
            tile!(Neon, "neon_f32_1x16_prows", PixelRows, 1 x 4),
        ]
    }};
}

#[cfg(target_arch = "aarch64")]
const NEON: &[TileKernel] = &neon_f32_tiles!();

/// The NEON BF16 kernel: the NEON tiles for f32 products, then the bf16-pair tiles
/// (`aarch64/neon_bf16.rs` says why this shape).
#[cfg(target_arch = "aarch64")]
const NEON_BF16: &[TileKernel] = {
    use aarch64::neon_bf16::NeonBf16;
    &f32_then_pair_tiles::<6>(
        &neon_f32_tiles!(),
        &[
            tile!(NeonBf16, "neonbf16_bf16_8x12_wrows", WeightRows, 8 x 3, bf16 pairs),
            tile!(NeonBf16, "neonbf16_bf16_8x12_prows", PixelRows, 8 x 3, bf16 pairs),
        ],
    )
};

const PORTABLE: &[TileKernel] = {
    use portable::Portable;
    &[
        tile!(Portable, "portable_f32_6x8_wrows", WeightRows, 6 x 1),
        tile!(Portable, "portable_f32_6x8_prows", PixelRows, 6 x 1),
    ]
};

/// The register tiles of a kernel in this build, in the order the plan's cost model breaks
/// ties (the layout's natural tile first); empty for kernels that are not register-tiled.
pub(crate) fn tiles(kernel: KernelId) -> &'static [TileKernel] {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx512Bf16 => AVX512_BF16,
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx512 => AVX512,
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx2 => AVX2,
        #[cfg(target_arch = "aarch64")]
        KernelId::NeonBf16 => NEON_BF16,
        #[cfg(target_arch = "aarch64")]
        KernelId::Neon => NEON,
        KernelId::Portable => PORTABLE,
        _ => &[],
    }
}

/// Runs folded output pixels `pixels` of a group-lanes job, with `offsets` as scratch.
///
/// # Safety
/// As `driver::run_group_lanes`.
pub(crate) type GroupLanesRunner = unsafe fn(&GroupLanesJob, Range<usize>, &mut Vec<isize>);

/// Runs folded output pixels `pixels` of a pixel-lanes job, with `offsets` as scratch.
///
/// # Safety
/// As `driver::run_pixel_lanes`.
pub(crate) type PixelLanesRunner = unsafe fn(&PixelLanesJob, Range<usize>, &mut Vec<isize>);

/// Runs folded output pixels `pixels` of a few-inputs job (the scratch is unused: the loop
/// reads dense layers only).
///
/// # Safety
/// As `driver::run_few_inputs`.
pub(crate) type FewInputsRunner = unsafe fn(&FewInputsJob, Range<usize>, &mut Vec<isize>);

/// Runs folded output pixels `pixels` of a few-outputs job (the scratch is unused).
///
/// # Safety
/// As `driver::run_few_outputs`.
pub(crate) type FewOutputsRunner = unsafe fn(&FewOutputsJob, Range<usize>, &mut Vec<isize>);

/// Runs blocks `blocks` of a flat-lanes job, with `offsets` as scratch.
///
/// # Safety
/// As `driver::run_flat_lanes`.
pub(crate) type FlatLanesRunner = unsafe fn(&FlatLanesJob, Range<usize>, &mut Vec<isize>);

/// A tier's lane-permuting tile (`simd::group_lanes_block`: each lane of a register of outputs
/// takes its own input from one register of inputs by a permutation), in two loops:
/// - group lanes: grouped NHWC layers whose groups are narrower than a register, several
///   whole groups per register of output channels (`driver::run_group_lanes`);
/// - flat lanes: NHWC layers of one group with few input and output channels, a register of
///   consecutive output values spanning several pixels (`driver::run_flat_lanes`).
///
/// and the same tier's pixel-lanes loop (`driver::run_pixel_lanes`): NHWC layers of one
/// group with few output channels, the pixels as lanes, transposed in registers; and its
/// few-inputs loops (`driver::run_few_inputs`): dense layers of one group with at most four
/// input channels, weights in registers and the pixels streamed past them; and its
/// few-outputs loop (`driver::run_few_outputs`): dense NCHW layers of one group with at most
/// four output channels, each channel plane streamed past their accumulators.
#[derive(Clone, Copy)]
pub(crate) struct GroupLanesKernel {
    /// `{isa}_f32_{rows}x{lanes}_group_lanes`.
    pub name: &'static str,
    /// `{isa}_f32_{rows}x{lanes}_flat_lanes`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub flat_name: &'static str,
    /// Lanes per register (output channels per tile).
    pub lanes: usize,
    pub run: GroupLanesRunner,
    pub run_flat: FlatLanesRunner,
    /// `{isa}_f32_pixel_lanes`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub pixel_name: &'static str,
    /// The most output channels the pixel-lanes loop takes on this tier (its accumulators and
    /// a transposed block fit the registers).
    pub pixel_max_k: usize,
    pub run_pixel: PixelLanesRunner,
    /// `{isa}_f32_few_inputs`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub few_inputs_name: &'static str,
    pub run_few_inputs: FewInputsRunner,
    /// `{isa}_f32_few_outputs`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub few_outputs_name: &'static str,
    pub run_few_outputs: FewOutputsRunner,
}

impl std::fmt::Debug for GroupLanesKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The group-lanes loop nest for tier `S`.
///
/// # Safety
/// As [`GroupLanesRunner`].
unsafe fn run_group_lanes_with<S: Simd>(job: &GroupLanesJob, pixels: Range<usize>, offsets: &mut Vec<isize>) {
    let Some(s) = S::try_new() else {
        debug_assert!(false, "{} selected on a CPU without it", S::KERNEL);
        return;
    };
    // SAFETY: forwarded contract.
    s.vectorize(unsafe { RunGroupLanes::new(job, pixels, offsets) })
}

/// The flat-lanes loop nest for tier `S`.
///
/// # Safety
/// As [`FlatLanesRunner`].
unsafe fn run_flat_lanes_with<S: Simd>(job: &FlatLanesJob, blocks: Range<usize>, offsets: &mut Vec<isize>) {
    let Some(s) = S::try_new() else {
        debug_assert!(false, "{} selected on a CPU without it", S::KERNEL);
        return;
    };
    // SAFETY: forwarded contract.
    s.vectorize(unsafe { RunFlatLanes::new(job, blocks, offsets) })
}

/// The pixel-lanes loop nest for tier `S`.
///
/// # Safety
/// As [`PixelLanesRunner`].
unsafe fn run_pixel_lanes_with<S: Simd>(job: &PixelLanesJob, pixels: Range<usize>, offsets: &mut Vec<isize>) {
    let Some(s) = S::try_new() else {
        debug_assert!(false, "{} selected on a CPU without it", S::KERNEL);
        return;
    };
    // SAFETY: forwarded contract.
    s.vectorize(unsafe { RunPixelLanes::new(job, pixels, offsets) })
}

/// The few-inputs loops for tier `S`.
///
/// # Safety
/// As [`FewInputsRunner`].
unsafe fn run_few_inputs_with<S: Simd>(job: &FewInputsJob, pixels: Range<usize>, _: &mut Vec<isize>) {
    let Some(s) = S::try_new() else {
        debug_assert!(false, "{} selected on a CPU without it", S::KERNEL);
        return;
    };
    // SAFETY: forwarded contract.
    s.vectorize(unsafe { RunFewInputs::new(job, pixels) })
}

/// The few-outputs loop for tier `S`.
///
/// # Safety
/// As [`FewOutputsRunner`].
unsafe fn run_few_outputs_with<S: Simd>(job: &FewOutputsJob, pixels: Range<usize>, _: &mut Vec<isize>) {
    let Some(s) = S::try_new() else {
        debug_assert!(false, "{} selected on a CPU without it", S::KERNEL);
        return;
    };
    // SAFETY: forwarded contract.
    s.vectorize(unsafe { RunFewOutputs::new(job, pixels) })
}

/// A registry entry: `group_lanes!(Tier, "isa", "isa_f32_4xLANES", max K of pixel lanes)`.
macro_rules! group_lanes {
    ($simd:ty, $isa:literal, $prefix:literal, $pixel_max_k:literal) => {
        GroupLanesKernel {
            name: concat!($prefix, "_group_lanes"),
            flat_name: concat!($prefix, "_flat_lanes"),
            lanes: <<$simd as Simd>::F32 as SimdF32>::LANES,
            run: run_group_lanes_with::<$simd>,
            run_flat: run_flat_lanes_with::<$simd>,
            pixel_name: concat!($isa, "_f32_pixel_lanes"),
            pixel_max_k: $pixel_max_k,
            run_pixel: run_pixel_lanes_with::<$simd>,
            few_inputs_name: concat!($isa, "_f32_few_inputs"),
            run_few_inputs: run_few_inputs_with::<$simd>,
            few_outputs_name: concat!($isa, "_f32_few_outputs"),
            run_few_outputs: run_few_outputs_with::<$simd>,
        }
    };
}

/// The group-lanes tile of a kernel in this build (`None` for kernels without register
/// tiles).
pub(crate) fn group_lanes(kernel: KernelId) -> Option<&'static GroupLanesKernel> {
    match kernel {
        // A bf16 kernel's f32 calls run its base tier's tiles, these included.
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx512 | KernelId::Avx512Bf16 => {
            Some(&group_lanes!(x86_64::avx512::Avx512, "avx512", "avx512_f32_4x16", 8))
        }
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx2 => Some(&group_lanes!(x86_64::avx2::Avx2, "avx2", "avx2_f32_4x8", 7)),
        #[cfg(target_arch = "aarch64")]
        KernelId::Neon | KernelId::NeonBf16 => Some(&group_lanes!(aarch64::neon::Neon, "neon", "neon_f32_4x4", 3)),
        KernelId::Portable => Some(&group_lanes!(portable::Portable, "portable", "portable_f32_4x8", 4)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_names_say_what_the_tile_is() {
        for kernel in KernelId::ALL {
            for t in tiles(kernel) {
                // A bf16 kernel's f32 tiles are its base tier's.
                let tier = if t.tile.pairs { kernel } else { kernel.f32_kernel() };
                let want = format!(
                    "{}_{}_{}x{}_{}",
                    tier.name(),
                    if t.tile.pairs { "bf16" } else { "f32" },
                    t.tile.mr,
                    t.tile.nr,
                    t.tile.orient.suffix()
                );
                assert_eq!(t.name, want);
                assert_eq!(t.kernel, tier);
                assert_eq!(t.weights.bf16, t.tile.pairs);
                assert_eq!(t.pixels.bf16, t.tile.pairs);
                assert_eq!(t.weights.lanes, t.tile.weight_lanes());
                assert_eq!(t.pixels.lanes, t.tile.pixel_lanes());
                assert!(t.tile.mr * t.tile.nr <= crate::driver::MAX_TILE, "{}", t.name);
            }
            // Pair tiles follow every f32 tile (`testing::run_tile` numbers them so).
            let first_pair = tiles(kernel).iter().position(|t| t.tile.pairs);
            if let Some(first) = first_pair {
                assert!(tiles(kernel)[first..].iter().all(|t| t.tile.pairs), "{kernel}");
            }
        }
    }
}

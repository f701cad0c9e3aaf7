//! Which kernels this CPU can run: feature detection (once, cached), the kernel list, names,
//! and Auto's choice. Every ISA check in the crate lives in this file.
use crate::error::{Error, Result};
use std::fmt;
#[cfg(feature = "testing")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A kernel family, from fastest to slowest on the CPUs that have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KernelId {
    /// x86_64 AVX-512F with the BF16 extension: a call whose input and weights are bf16
    /// multiplies bf16 pairs with `vdpbf16ps` (two products per f32 lane and instruction,
    /// summed in f32; the instruction reads denormal inputs as zero and flushes denormal
    /// results to zero, whatever MXCSR says); every other call runs the `Avx512` tiles.
    Avx512Bf16,
    /// x86_64 AVX-512F, `std::arch` intrinsics.
    Avx512,
    /// x86_64 AVX2 + FMA, `std::arch` intrinsics.
    Avx2,
    /// aarch64 NEON with the BF16 extension (Armv8.6 FEAT_BF16): a call whose input and
    /// weights are bf16 multiplies bf16 pairs with `BFDOT` (two products per f32 lane and
    /// instruction, summed in f32 with round-to-odd, denormals flushed, unless the caller set
    /// FPCR.EBF); every other call runs the `Neon` tiles.
    NeonBf16,
    /// aarch64 NEON (Advanced SIMD), `std::arch::aarch64` intrinsics.
    Neon,
    /// The `wide` crate, whose width is fixed at compile time; runs on every target.
    Portable,
    /// Packed gather plus `matrixmultiply::sgemm`, then a scalar epilogue.
    MatrixMultiply,
    /// Plain loops straight from the definition; the slowest, for checking.
    Reference,
}

/// One row of the kernel table: the kernel, its name, whether it is register-tiled, the
/// kernel whose tiles run its f32 products, and its availability test on the detected
/// features.
struct KernelRow {
    id: KernelId,
    name: &'static str,
    microkernel: bool,
    /// The kernel whose register tiles run this kernel's f32 products: itself, except for
    /// the bf16 kernels, whose f32 calls run their base tier's tiles (the same functions).
    f32_tiles: KernelId,
    available: fn(&CpuFeatures) -> bool,
}

/// The kernel table, in Auto's order of preference and in `KernelId`'s declaration order:
/// the kernel list, the names (and so the `UnknownKernel` message) and availability all come
/// from it.
const KERNELS: [KernelRow; 8] = [
    KernelRow {
        id: KernelId::Avx512Bf16,
        name: "avx512bf16",
        microkernel: true,
        f32_tiles: KernelId::Avx512,
        available: |f| f.avx512 && f.avx512bf16,
    },
    KernelRow {
        id: KernelId::Avx512,
        name: "avx512",
        microkernel: true,
        f32_tiles: KernelId::Avx512,
        available: |f| f.avx512,
    },
    KernelRow {
        id: KernelId::Avx2,
        name: "avx2",
        microkernel: true,
        f32_tiles: KernelId::Avx2,
        available: |f| f.avx2_fma,
    },
    KernelRow {
        id: KernelId::NeonBf16,
        name: "neonbf16",
        microkernel: true,
        f32_tiles: KernelId::Neon,
        available: |f| f.neon && f.neon_bf16,
    },
    KernelRow {
        id: KernelId::Neon,
        name: "neon",
        microkernel: true,
        f32_tiles: KernelId::Neon,
        available: |f| f.neon,
    },
    KernelRow {
        id: KernelId::Portable,
        name: "portable",
        microkernel: true,
        f32_tiles: KernelId::Portable,
        available: |_| true,
    },
    KernelRow {
        id: KernelId::MatrixMultiply,
        name: "matrixmultiply",
        microkernel: false,
        f32_tiles: KernelId::MatrixMultiply,
        available: |_| true,
    },
    KernelRow {
        id: KernelId::Reference,
        name: "reference",
        microkernel: false,
        f32_tiles: KernelId::Reference,
        available: |_| true,
    },
];

impl KernelId {
    /// Every kernel this crate has, in Auto's order of preference.
    pub const ALL: [KernelId; 8] = {
        let mut all = [KernelId::Reference; 8];
        let mut i = 0;
        while i < KERNELS.len() {
            all[i] = KERNELS[i].id;
            i += 1;
        }
        all
    };

    fn row(self) -> &'static KernelRow {
        &KERNELS[self as usize]
    }

    /// The kernel's name, as `POINTWISE_KERNEL` and [`KernelId::from_name`] spell it.
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Parses a kernel name (case-insensitive).
    ///
    /// # Errors
    /// [`Error::UnknownKernel`] for a name no kernel has.
    pub fn from_name(name: &str) -> Result<KernelId> {
        let lower = name.trim().to_ascii_lowercase();
        KernelId::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or(Error::UnknownKernel(name.to_string()))
    }

    /// Whether this CPU (and this build's target) can run the kernel.
    pub fn is_available(self) -> bool {
        (self.row().available)(&cpu_features())
    }

    /// Whether the kernel is one of the register-tiled SIMD microkernels.
    pub fn is_microkernel(self) -> bool {
        self.row().microkernel
    }

    /// The kernel whose register tiles run this kernel's f32 products (and so give its f32
    /// calls their bits): itself, except `Avx512Bf16` (`Avx512`) and `NeonBf16` (`Neon`).
    pub fn f32_kernel(self) -> KernelId {
        self.row().f32_tiles
    }

    /// How many forward calls this kernel has executed in this process (all plans, all
    /// threads). Tests use it to prove that a forced kernel is the one that ran (`testing`
    /// feature: normal builds keep no counter).
    #[cfg(feature = "testing")]
    pub fn invocations(self) -> u64 {
        INVOCATIONS[self as usize].load(Ordering::Relaxed)
    }

    /// Counts one call of this kernel (`testing` feature; nothing otherwise).
    #[inline(always)]
    pub(crate) fn record_invocation(self) {
        #[cfg(feature = "testing")]
        INVOCATIONS[self as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_declaration_order() {
        for (i, row) in KERNELS.iter().enumerate() {
            assert_eq!(row.id as usize, i, "{}", row.name);
            assert_eq!(KernelId::from_name(row.name), Ok(row.id));
        }
    }
}

/// Every kernel name, comma-separated (for error messages).
pub(crate) fn kernel_names() -> String {
    KernelId::ALL.map(KernelId::name).join(", ")
}

#[cfg(feature = "testing")]
static INVOCATIONS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

impl fmt::Display for KernelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SIMD features of the running CPU that matter to pointwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CpuFeatures {
    /// AVX-512F (x86_64).
    pub avx512: bool,
    /// AVX-512 BF16 (x86_64: `vdpbf16ps`).
    pub avx512bf16: bool,
    /// AVX2 and FMA together (x86_64).
    pub avx2_fma: bool,
    /// Advanced SIMD (aarch64).
    pub neon: bool,
    /// The BF16 extension of Advanced SIMD (aarch64 FEAT_BF16: `BFDOT`).
    pub neon_bf16: bool,
}

/// The running CPU's features, detected on the first call and cached.
pub fn cpu_features() -> CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    *FEATURES.get_or_init(detect)
}

/// Under miri no `std::arch` SIMD tier is reported: miri cannot run their intrinsics, so only the portable, matrixmultiply and reference
/// kernels are available there and Auto picks the portable one.
#[cfg(miri)]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
fn detect() -> CpuFeatures {
    let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    CpuFeatures {
        // The AVX-512 kernel also uses AVX2/FMA-era instructions for its 256-bit helpers.
        avx512: avx2_fma && is_x86_feature_detected!("avx512f"),
        avx512bf16: is_x86_feature_detected!("avx512bf16"),
        avx2_fma,
        neon: false,
        neon_bf16: false,
    }
}

#[cfg(all(target_arch = "aarch64", not(miri)))]
fn detect() -> CpuFeatures {
    CpuFeatures {
        avx512: false,
        avx512bf16: false,
        avx2_fma: false,
        neon: std::arch::is_aarch64_feature_detected!("neon"),
        neon_bf16: std::arch::is_aarch64_feature_detected!("bf16"),
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", miri)))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

/// The kernels this CPU can run, fastest first (the reference kernel is last).
pub fn available_kernels() -> Vec<KernelId> {
    KernelId::ALL.into_iter().filter(|k| k.is_available()).collect()
}

/// The kernel [`KernelChoice::Auto`] picks on this CPU: the first available SIMD tier.
pub fn auto_kernel() -> KernelId {
    KernelId::ALL
        .into_iter()
        .find(|k| k.is_microkernel() && k.is_available())
        .unwrap_or(KernelId::Portable)
}

/// The target features this crate was compiled with (from `build.rs`), comma-separated.
pub fn compiled_target_features() -> &'static str {
    env!("POINTWISE_COMPILED_FEATURES")
}

/// The SIMD width in bits of the portable (`wide`) tier in this build: 256 when compiled with
/// AVX, 128 with SSE2 or NEON, 32 when `wide` falls back to scalar lanes.
pub fn portable_width_bits() -> usize {
    // The build script writes a decimal constant; an unparsable value cannot occur.
    env!("POINTWISE_PORTABLE_WIDTH_BITS").parse().unwrap_or(32)
}

/// How a plan picks its kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum KernelChoice {
    /// The fastest kernel available on this CPU ([`auto_kernel`]).
    #[default]
    Auto,
    /// This kernel, or [`Error::KernelUnavailable`] when the CPU lacks it.
    Force(KernelId),
}

impl KernelChoice {
    /// The environment variable tests and benchmarks use to force a kernel.
    pub const ENV_VAR: &'static str = "POINTWISE_KERNEL";

    /// `Force(k)` when `POINTWISE_KERNEL` names kernel `k`, `Auto` when it is unset, empty
    /// or `auto`. Only this function (and [`PlanOptions::from_env`](crate::PlanOptions::from_env),
    /// which calls it) reads the variable.
    ///
    /// # Errors
    /// [`Error::UnknownKernel`] for a name no kernel has, including a value that is not
    /// UTF-8 (its lossy form is in the error).
    pub fn from_env() -> Result<KernelChoice> {
        let Some(raw) = std::env::var_os(Self::ENV_VAR) else {
            return Ok(KernelChoice::Auto);
        };
        let Some(v) = raw.to_str() else {
            return Err(Error::UnknownKernel(raw.to_string_lossy().into_owned()));
        };
        if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("auto") {
            Ok(KernelChoice::Auto)
        } else {
            Ok(KernelChoice::Force(KernelId::from_name(v)?))
        }
    }

    /// The kernel this choice resolves to on this CPU.
    ///
    /// # Errors
    /// [`Error::KernelUnavailable`] for a forced kernel the CPU lacks.
    pub fn resolve(self) -> Result<KernelId> {
        match self {
            KernelChoice::Auto => Ok(auto_kernel()),
            KernelChoice::Force(k) if k.is_available() => Ok(k),
            KernelChoice::Force(k) => Err(Error::KernelUnavailable(k)),
        }
    }
}

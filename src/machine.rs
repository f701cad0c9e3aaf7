//! The machine's parameters that blocking follows: data cache sizes per level, read once and
//! cached. x86_64 asks CPUID (deterministic cache parameters: leaf 4 on Intel, leaf
//! 0x8000001D on AMD and Hygon); where that is unavailable or empty (other vendors, some
//! hypervisors), and on aarch64, Linux's `/sys/devices/system/cpu/cpu0/cache`; failing both,
//! conservative defaults. Nothing here is fitted to one CPU.
use std::sync::OnceLock;

/// Data cache sizes in bytes as one core sees them (L3: the whole shared cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MachineParams {
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
    /// Where the figures came from (`cpuid`, `sysfs`, `default`), for reports.
    pub source: &'static str,
}

impl MachineParams {
    /// Used when nothing can be read: the smallest sizes of current x86_64 and aarch64 server
    /// and desktop cores (32 KiB L1D, 512 KiB L2, 8 MiB L3).
    pub const DEFAULT: MachineParams = MachineParams {
        l1d: 32 << 10,
        l2: 512 << 10,
        l3: 8 << 20,
        source: "default",
    };

    /// Fills levels a source did not report from the defaults.
    fn completed(mut self) -> MachineParams {
        let d = MachineParams::DEFAULT;
        for (v, dv) in [(&mut self.l1d, d.l1d), (&mut self.l2, d.l2), (&mut self.l3, d.l3)] {
            if *v == 0 {
                *v = dv;
            }
        }
        self
    }
}

/// The time of a step of bf16 pairs (two multiply-adds per lane, `Simd::dot_bf16_pairs`)
/// over the time of an f32 FMA of the same width on this core, measured once (a fraction of
/// a millisecond, on the first bf16 call that could use pairs); `None` where no kernel in
/// this build has bf16-pair tiles or the CPU lacks their instructions.
pub(crate) fn bf16_pair_step_cost() -> Option<f64> {
    static COST: OnceLock<Option<f64>> = OnceLock::new();
    *COST.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            crate::kernels::x86_64::avx512_bf16::pair_step_cost_vs_fma()
        }
        #[cfg(all(target_arch = "aarch64", not(miri)))]
        {
            crate::kernels::aarch64::neon_bf16::pair_step_cost_vs_fma()
        }
        #[cfg(not(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri))))]
        {
            None
        }
    })
}

/// The running machine's parameters, detected on the first call.
pub(crate) fn machine() -> MachineParams {
    static PARAMS: OnceLock<MachineParams> = OnceLock::new();
    *PARAMS.get_or_init(detect)
}

fn detect() -> MachineParams {
    if cfg!(miri) {
        return MachineParams::DEFAULT;
    }
    cpuid_caches()
        .or_else(sysfs_caches)
        .map_or(MachineParams::DEFAULT, MachineParams::completed)
}

/// Data and unified caches from CPUID's deterministic cache parameter leaf.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn cpuid_caches() -> Option<MachineParams> {
    use std::arch::x86_64::__cpuid_count;
    // CPUID exists on every x86_64 CPU; the leaves asked for are within the maximum the CPU
    // reports.
    let vendor = __cpuid_count(0, 0);
    let max_basic = vendor.eax;
    // "AuthenticAMD" / "HygonGenuine": ebx holds the first four bytes.
    let amd_like = matches!(&vendor.ebx.to_le_bytes(), b"Auth" | b"Hygo");
    let leaf = if amd_like {
        let max_ext = __cpuid_count(0x8000_0000, 0).eax;
        if max_ext < 0x8000_001D {
            return None;
        }
        0x8000_001D
    } else {
        if max_basic < 4 {
            return None;
        }
        4
    };
    let mut p = MachineParams {
        l1d: 0,
        l2: 0,
        l3: 0,
        source: "cpuid",
    };
    for sub in 0..16 {
        let r = __cpuid_count(leaf, sub);
        let kind = r.eax & 0x1f; // 0: no more caches, 1: data, 2: instruction, 3: unified
        if kind == 0 {
            break;
        }
        if kind == 2 {
            continue;
        }
        let level = (r.eax >> 5) & 0x7;
        let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
        let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
        let line = (r.ebx & 0xfff) as usize + 1;
        let sets = r.ecx as usize + 1;
        let size = ways * partitions * line * sets;
        match level {
            1 => p.l1d = size,
            2 => p.l2 = size,
            3 => p.l3 = size,
            _ => {}
        }
    }
    (p.l1d != 0 || p.l2 != 0).then_some(p)
}

#[cfg(not(all(target_arch = "x86_64", not(miri))))]
fn cpuid_caches() -> Option<MachineParams> {
    None
}

/// Data and unified caches of cpu0 from Linux's sysfs.
fn sysfs_caches() -> Option<MachineParams> {
    let root = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let mut p = MachineParams {
        l1d: 0,
        l2: 0,
        l3: 0,
        source: "sysfs",
    };
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let Some(size) = parse_size(size.trim()) else { continue };
        match level.trim() {
            "1" => p.l1d = size,
            "2" => p.l2 = size,
            "3" => p.l3 = size,
            _ => {}
        }
    }
    (p.l1d != 0 || p.l2 != 0).then_some(p)
}

/// `"32K"`, `"1024K"`, `"36M"` or plain bytes.
fn parse_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("36608K"), Some(36608 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn detected_sizes_are_plausible_and_ordered() {
        let m = machine();
        assert!((4 << 10..=4 << 20).contains(&m.l1d), "{m:?}");
        assert!((64 << 10..=64 << 20).contains(&m.l2), "{m:?}");
        assert!(m.l1d <= m.l2, "{m:?}");
        // (CPUID and sysfs need not agree: under an emulator CPUID describes the emulated CPU
        // and sysfs the host.)
    }

    #[test]
    fn the_pair_step_cost_is_measured_where_the_cpu_has_pair_tiles() {
        let cost = bf16_pair_step_cost();
        use crate::dispatch::KernelId;
        let pair_kernel = KernelId::Avx512Bf16.is_available() || KernelId::NeonBf16.is_available();
        assert_eq!(cost.is_some(), pair_kernel && !cfg!(miri));
        if let Some(cost) = cost {
            // One instruction of two multiply-adds per lane: between a quarter and eight
            // FMAs on any core that has it (about 4 measured on Xeon model 207); an emulator
            // (qemu-aarch64 computes BFDOT in software) may take many times longer.
            assert!(cost.is_finite() && cost > 0.0, "{cost}");
            // `POINTWISE_TEST_SCALE=reduced` is how `scripts/test.sh` marks emulated runs.
            let emulated = std::env::var("POINTWISE_TEST_SCALE").is_ok_and(|v| v == "reduced");
            if !emulated {
                assert!((0.25..=8.0).contains(&cost), "{cost}");
            }
            eprintln!("bf16 pair step cost: {cost:.2} FMAs");
        }
    }

    #[test]
    fn missing_levels_take_the_defaults() {
        let partial = MachineParams {
            l1d: 48 << 10,
            l2: 0,
            l3: 0,
            source: "sysfs",
        }
        .completed();
        assert_eq!(partial.l1d, 48 << 10);
        assert_eq!(partial.l2, MachineParams::DEFAULT.l2);
        assert_eq!(partial.l3, MachineParams::DEFAULT.l3);
    }
}

//! What the machine can do, measured in the same run: the single-core FMA peak of each SIMD
//! tier present (a loop of independent FMAs) and the read bandwidth from memory.
use pointwise::KernelId;
use std::time::Instant;

/// The CPU's model name, from the OS.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("CPU part"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Detected features relevant to pointwise, as names.
pub fn detected_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("sse2", is_x86_feature_detected!("sse2")),
            ("avx", is_x86_feature_detected!("avx")),
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vl", is_x86_feature_detected!("avx512vl")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
            ("avx512bf16", is_x86_feature_detected!("avx512bf16")),
        ] {
            if on {
                out.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            out.push("neon");
        }
        if std::arch::is_aarch64_feature_detected!("sve") {
            out.push("sve");
        }
    }
    out
}

/// Single-core FMA peak in GFLOP/s of a SIMD tier (None when the CPU lacks it).
pub fn fma_peak(kernel: KernelId, seconds: f64) -> Option<f64> {
    if !kernel.is_available() {
        return None;
    }
    let mut best = 0.0f64;
    let mut iters: u64 = 1 << 16;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        let flops = run_fma_loop(kernel, iters)?;
        let dt = t.elapsed().as_secs_f64();
        if dt < 0.01 {
            iters *= 4;
            continue;
        }
        best = best.max(flops / dt / 1e9);
    }
    Some(best)
}

/// Single-core peak in GFLOP/s of AVX-512 BF16's `vdpbf16ps` (two multiply-adds per f32 lane
/// and instruction: 64 flops per zmm instruction), the yardstick of the bf16-pair tiles
/// (None when the CPU lacks it).
pub fn bf16_dot_peak(seconds: f64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !KernelId::Avx512Bf16.is_available() {
            return None;
        }
        let mut best = 0.0f64;
        let mut iters: u64 = 1 << 14;
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            // SAFETY: the CPU has AVX-512F and AVX-512 BF16 (checked above).
            unsafe { x86::dot_bf16_zmm(iters) };
            let dt = t.elapsed().as_secs_f64();
            if dt < 0.01 {
                iters *= 4;
                continue;
            }
            best = best.max(iters as f64 * 20.0 * 64.0 / dt / 1e9);
        }
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = seconds;
        None
    }
}

/// Runs `iters` iterations of independent FMAs on `kernel`'s registers; returns the flops.
fn run_fma_loop(kernel: KernelId, iters: u64) -> Option<f64> {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx512 => {
            // SAFETY: only called when dispatch reports AVX-512F.
            unsafe { x86::fma_zmm(iters) };
            Some(iters as f64 * 20.0 * 32.0)
        }
        #[cfg(target_arch = "x86_64")]
        KernelId::Avx2 => {
            // SAFETY: only called when dispatch reports AVX2 and FMA.
            unsafe { x86::fma_ymm(iters) };
            Some(iters as f64 * 12.0 * 16.0)
        }
        #[cfg(target_arch = "aarch64")]
        KernelId::Neon => {
            // SAFETY: only called when dispatch reports NEON.
            unsafe { arm::fma_q(iters) };
            Some(iters as f64 * 24.0 * 8.0)
        }
        KernelId::Portable => Some(portable_fma(iters)),
        _ => None,
    }
}

/// Twelve independent `mul_add` chains of a `wide` vector type; returns the flops.
macro_rules! wide_fma_chains {
    ($t:ty, $lanes:expr, $iters:expr) => {{
        let x = <$t>::splat(std::hint::black_box(0.999_999));
        let y = <$t>::splat(std::hint::black_box(1e-7));
        let mut acc = [x; 12];
        for _ in 0..$iters {
            // A fixed-size array indexed by constants stays in registers.
            acc[0] = acc[0].mul_add(x, y);
            acc[1] = acc[1].mul_add(x, y);
            acc[2] = acc[2].mul_add(x, y);
            acc[3] = acc[3].mul_add(x, y);
            acc[4] = acc[4].mul_add(x, y);
            acc[5] = acc[5].mul_add(x, y);
            acc[6] = acc[6].mul_add(x, y);
            acc[7] = acc[7].mul_add(x, y);
            acc[8] = acc[8].mul_add(x, y);
            acc[9] = acc[9].mul_add(x, y);
            acc[10] = acc[10].mul_add(x, y);
            acc[11] = acc[11].mul_add(x, y);
        }
        std::hint::black_box(acc);
        $iters as f64 * 12.0 * 2.0 * $lanes as f64
    }};
}

/// The portable tier's peak at the width `wide` was compiled to: independent chains of
/// `mul_add`, which is one fused instruction with FMA and a multiply plus an add without it.
fn portable_fma(iters: u64) -> f64 {
    if pointwise::portable_width_bits() >= 256 {
        wide_fma_chains!(wide::f32x8, 8, iters)
    } else {
        wide_fma_chains!(wide::f32x4, 4, iters)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;

    /// 20 independent zmm FMA chains per iteration.
    pub unsafe fn fma_zmm(iters: u64) {
        // SAFETY: register-only AVX-512 instructions; the caller checked the feature.
        unsafe {
            asm!(
                "vxorps xmm0, xmm0, xmm0",
                "vxorps xmm1, xmm1, xmm1",
                "2:",
                "vfmadd231ps zmm2, zmm0, zmm1", "vfmadd231ps zmm3, zmm0, zmm1",
                "vfmadd231ps zmm4, zmm0, zmm1", "vfmadd231ps zmm5, zmm0, zmm1",
                "vfmadd231ps zmm6, zmm0, zmm1", "vfmadd231ps zmm7, zmm0, zmm1",
                "vfmadd231ps zmm8, zmm0, zmm1", "vfmadd231ps zmm9, zmm0, zmm1",
                "vfmadd231ps zmm10, zmm0, zmm1", "vfmadd231ps zmm11, zmm0, zmm1",
                "vfmadd231ps zmm12, zmm0, zmm1", "vfmadd231ps zmm13, zmm0, zmm1",
                "vfmadd231ps zmm14, zmm0, zmm1", "vfmadd231ps zmm15, zmm0, zmm1",
                "vfmadd231ps zmm16, zmm0, zmm1", "vfmadd231ps zmm17, zmm0, zmm1",
                "vfmadd231ps zmm18, zmm0, zmm1", "vfmadd231ps zmm19, zmm0, zmm1",
                "vfmadd231ps zmm20, zmm0, zmm1", "vfmadd231ps zmm21, zmm0, zmm1",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _,
                out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _,
                out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _,
                options(nostack, nomem),
            );
        }
    }

    /// 20 independent zmm `vdpbf16ps` chains per iteration.
    pub unsafe fn dot_bf16_zmm(iters: u64) {
        // SAFETY: register-only AVX-512 BF16 instructions; the caller checked the feature.
        unsafe {
            asm!(
                "vxorps xmm0, xmm0, xmm0",
                "vxorps xmm1, xmm1, xmm1",
                "2:",
                "vdpbf16ps zmm2, zmm0, zmm1", "vdpbf16ps zmm3, zmm0, zmm1",
                "vdpbf16ps zmm4, zmm0, zmm1", "vdpbf16ps zmm5, zmm0, zmm1",
                "vdpbf16ps zmm6, zmm0, zmm1", "vdpbf16ps zmm7, zmm0, zmm1",
                "vdpbf16ps zmm8, zmm0, zmm1", "vdpbf16ps zmm9, zmm0, zmm1",
                "vdpbf16ps zmm10, zmm0, zmm1", "vdpbf16ps zmm11, zmm0, zmm1",
                "vdpbf16ps zmm12, zmm0, zmm1", "vdpbf16ps zmm13, zmm0, zmm1",
                "vdpbf16ps zmm14, zmm0, zmm1", "vdpbf16ps zmm15, zmm0, zmm1",
                "vdpbf16ps zmm16, zmm0, zmm1", "vdpbf16ps zmm17, zmm0, zmm1",
                "vdpbf16ps zmm18, zmm0, zmm1", "vdpbf16ps zmm19, zmm0, zmm1",
                "vdpbf16ps zmm20, zmm0, zmm1", "vdpbf16ps zmm21, zmm0, zmm1",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _,
                out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _,
                out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _,
                options(nostack, nomem),
            );
        }
    }

    /// 12 independent ymm FMA chains per iteration.
    pub unsafe fn fma_ymm(iters: u64) {
        // SAFETY: register-only AVX2/FMA instructions; the caller checked the features.
        unsafe {
            asm!(
                "vxorps xmm0, xmm0, xmm0",
                "vxorps xmm1, xmm1, xmm1",
                "2:",
                "vfmadd231ps ymm2, ymm0, ymm1", "vfmadd231ps ymm3, ymm0, ymm1",
                "vfmadd231ps ymm4, ymm0, ymm1", "vfmadd231ps ymm5, ymm0, ymm1",
                "vfmadd231ps ymm6, ymm0, ymm1", "vfmadd231ps ymm7, ymm0, ymm1",
                "vfmadd231ps ymm8, ymm0, ymm1", "vfmadd231ps ymm9, ymm0, ymm1",
                "vfmadd231ps ymm10, ymm0, ymm1", "vfmadd231ps ymm11, ymm0, ymm1",
                "vfmadd231ps ymm12, ymm0, ymm1", "vfmadd231ps ymm13, ymm0, ymm1",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _,
                out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                out("ymm12") _, out("ymm13") _,
                options(nostack, nomem),
            );
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::asm;

    /// 24 independent q-register FMA chains per iteration.
    pub unsafe fn fma_q(iters: u64) {
        // SAFETY: register-only NEON instructions; the caller checked the feature.
        unsafe {
            asm!(
                "movi v0.4s, #0",
                "movi v1.4s, #0",
                "2:",
                "fmla v2.4s, v0.4s, v1.4s", "fmla v3.4s, v0.4s, v1.4s", "fmla v4.4s, v0.4s, v1.4s",
                "fmla v5.4s, v0.4s, v1.4s", "fmla v6.4s, v0.4s, v1.4s", "fmla v7.4s, v0.4s, v1.4s",
                "fmla v16.4s, v0.4s, v1.4s", "fmla v17.4s, v0.4s, v1.4s", "fmla v18.4s, v0.4s, v1.4s",
                "fmla v19.4s, v0.4s, v1.4s", "fmla v20.4s, v0.4s, v1.4s", "fmla v21.4s, v0.4s, v1.4s",
                "fmla v22.4s, v0.4s, v1.4s", "fmla v23.4s, v0.4s, v1.4s", "fmla v24.4s, v0.4s, v1.4s",
                "fmla v25.4s, v0.4s, v1.4s", "fmla v26.4s, v0.4s, v1.4s", "fmla v27.4s, v0.4s, v1.4s",
                "fmla v28.4s, v0.4s, v1.4s", "fmla v29.4s, v0.4s, v1.4s", "fmla v30.4s, v0.4s, v1.4s",
                "fmla v31.4s, v0.4s, v1.4s", "fmla v8.4s, v0.4s, v1.4s", "fmla v9.4s, v0.4s, v1.4s",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) iters => _,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _,
                out("v7") _, out("v8") _, out("v9") _, out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _, out("v24") _, out("v25") _,
                out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
                options(nostack, nomem),
            );
        }
    }
}

/// Read bandwidth from memory in GB/s: the best of several sweeps over a buffer much larger
/// than the last-level cache.
pub fn read_bandwidth(bytes: usize, sweeps: usize) -> f64 {
    let n = bytes / 4;
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut best = 0.0f64;
    for _ in 0..sweeps {
        let t = Instant::now();
        let mut acc = [0.0f32; 16];
        for chunk in buf.chunks_exact(16) {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a += v;
            }
        }
        std::hint::black_box(acc);
        let dt = t.elapsed().as_secs_f64();
        best = best.max(bytes as f64 / dt / 1e9);
    }
    best
}

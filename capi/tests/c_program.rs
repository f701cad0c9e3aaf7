//! Compiles `tests/c/forward.c` with the system C compiler (`$CC`, else `cc`) against the
//! static library cargo built for this test run, runs it, and checks what it printed against
//! the same convolutions computed through pointwise's Rust API: the seed example value by
//! value and the ResNet-50 layer by hash and samples, all as f32 bits; and the error paths'
//! codes and messages.
use pointwise::{Activation, Conv1x1, InputDims, KernelId, Plan, PlanOptions, Threads, Workspace};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The static library: cargo builds it beside this test's binary (`target/<profile>/deps`),
/// and copies it to `target/<profile>` when the library itself was asked for.
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let candidates = [
        deps.to_path_buf(),
        deps.parent().expect("target/<profile>").to_path_buf(),
    ];
    candidates
        .iter()
        .map(|dir| dir.join("libpointwise_capi.a"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libpointwise_capi.a is in none of {candidates:?}"))
}

/// Builds the C program and returns its path.
fn build_c_program() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pointwise_forward_c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let output = Command::new(&cc)
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(root.join("include"))
        .arg(root.join("tests/c/forward.c"))
        .arg(static_library())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("could not run the C compiler `{cc}` (scripts/setup.sh installs gcc): {e}"));
    assert!(
        output.status.success(),
        "{cc} failed on tests/c/forward.c:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Runs the C program; its lines as `key -> rest of the line`.
fn run_c_program() -> HashMap<String, String> {
    let output = Command::new(build_c_program()).output().expect("run the C program");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(
        output.status.success(),
        "the C program failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().last(), Some("done"), "{stdout}");
    stdout
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((key, rest)) => (key.to_string(), rest.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect()
}

// The C program's data formulas (integer-valued, so every sum is exact).
fn data_x(i: usize) -> f32 {
    ((i * 7 + 3) % 17) as f32 - 8.0
}
fn data_w(i: usize) -> f32 {
    ((i * 5 + 1) % 11) as f32 - 5.0
}
fn data_bias(i: usize) -> f32 {
    (i % 7) as f32 - 3.0
}
fn data_residual(i: usize) -> f32 {
    ((i * 3 + 1) % 13) as f32 - 6.0
}

/// The C program's hash: FNV-1a over each value's bits, little-endian.
fn hash_floats(v: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in v {
        for byte in x.to_bits().to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn hex_bits(v: f32) -> String {
    format!("{:08x}", v.to_bits())
}

#[test]
fn c_program_matches_the_rust_api() {
    let out = run_c_program();
    let get = |key: &str| -> &str { out.get(key).unwrap_or_else(|| panic!("no `{key}` line in {out:?}")) };
    assert_eq!(get("version"), env!("CARGO_PKG_VERSION"));
    let mut ws = Workspace::new();

    // The seed example.
    let x: Vec<f32> = (1..=27).map(|v| v as f32).collect();
    let w = [0.5f32, -1.0, 2.0, 1.0, 1.0, 1.0];
    let plan = Plan::new(&Conv1x1::new(3, 2), &w, Some(&[0.25, -1.0]), PlanOptions::default()).unwrap();
    let mut y = vec![0.0f32; 18];
    plan.forward(&x, InputDims::new(1, 3, 3), None, &mut y, &mut ws)
        .unwrap();
    let expected: Vec<String> = y.iter().map(|&v| hex_bits(v)).collect();
    assert_eq!(get("seed.y"), expected.join(" "), "seed outputs (f32 bits) differ");
    assert_eq!(
        get("seed.kernel_for"),
        plan.kernel_for(InputDims::new(1, 3, 3)).unwrap().name()
    );

    // ResNet-50's 64 -> 256 expansion at 56x56 with bias, residual and ReLU, on all cores.
    let (c, k, h, wd) = (64, 256, 56, 56);
    let x: Vec<f32> = (0..c * h * wd).map(data_x).collect();
    let w: Vec<f32> = (0..k * c).map(data_w).collect();
    let bias: Vec<f32> = (0..k).map(data_bias).collect();
    let residual: Vec<f32> = (0..k * h * wd).map(data_residual).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = PlanOptions::default().with_threads(Threads::Count(cores));
    let conv = Conv1x1::new(c, k).with_activation(Activation::Relu);
    let plan = Plan::new(&conv, &w, Some(&bias), options).unwrap();
    let dims = InputDims::new(1, h, wd);
    let mut y = vec![0.0f32; plan.output_len(dims).unwrap()];
    plan.forward(&x, dims, Some(&residual), &mut y, &mut ws).unwrap();
    assert_eq!(get("resnet.kernel"), plan.kernel().name());
    assert_eq!(get("resnet.kernel_for"), plan.kernel_for(dims).unwrap().name());
    assert_eq!(get("resnet.len"), y.len().to_string());
    for sample in get("resnet.samples").split(' ') {
        let (index, bits) = sample.split_once(':').unwrap();
        let index: usize = index.parse().unwrap();
        assert_eq!(bits, hex_bits(y[index]), "resnet output {index} (f32 bits) differs");
    }
    assert_eq!(
        get("resnet.hash"),
        format!("{:016x}", hash_floats(&y)),
        "resnet outputs differ (hash of the f32 bits)"
    );
    // The data are integers and every partial sum is exact, so the formula gives the same.
    let p = h * wd;
    for (i, &v) in y.iter().enumerate().step_by(997) {
        let (kk, pix) = (i / p, i % p);
        let z: f32 = (0..c).map(|cc| w[kk * c + cc] * x[cc * p + pix]).sum::<f32>() + bias[kk] + residual[i];
        assert_eq!(v.to_bits(), z.max(0.0).to_bits(), "output {i}");
    }

    // The short output buffer: the same error the Rust API gives.
    let mut short = vec![0.0f32; y.len() - 1];
    let err = plan
        .forward(&x, dims, Some(&residual), &mut short, &mut ws)
        .unwrap_err();
    assert_eq!(get("error.short_output"), "PW_STATUS_LENGTH_MISMATCH 4");
    assert_eq!(get("error.short_output.message"), err.to_string());
    assert_eq!(get("error.short_output.untouched"), "1");

    // The unknown kernel name.
    let err = KernelId::from_name("avx9000").unwrap_err();
    assert_eq!(get("error.unknown_kernel"), "PW_STATUS_UNKNOWN_KERNEL");
    assert_eq!(get("error.unknown_kernel.message"), err.to_string());
    assert_eq!(get("error.bad_layout"), "PW_STATUS_INVALID_ARGUMENT");
    assert_eq!(get("error.short_weights"), "PW_STATUS_LENGTH_MISMATCH");
    assert_eq!(get("error.null_plan"), "PW_STATUS_NULL_POINTER");
}

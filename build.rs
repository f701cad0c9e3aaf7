//! Records the target features this crate is compiled with, so that the portable tier
//! can report its SIMD width and the compare tool can print what the build assumed.
use std::env;

fn main() {
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut list: Vec<&str> = features.split(',').filter(|f| !f.is_empty()).collect();
    list.sort_unstable();
    // The `wide` crate picks its lane implementation from these features at compile time.
    let portable_width_bits = if arch == "x86_64" || arch == "x86" {
        if list.contains(&"avx") {
            256
        } else if list.contains(&"sse2") {
            128
        } else {
            32
        }
    } else if (arch == "aarch64" && list.contains(&"neon")) || (arch == "wasm32" && list.contains(&"simd128")) {
        128
    } else {
        32
    };
    println!("cargo:rustc-env=POINTWISE_COMPILED_FEATURES={}", list.join(","));
    println!("cargo:rustc-env=POINTWISE_PORTABLE_WIDTH_BITS={portable_width_bits}");
    println!("cargo:rerun-if-changed=build.rs");
}

//! The checked-in C header is what cbindgen makes from `src/lib.rs` with `cbindgen.toml`.
//! When they differ the test fails and says how to refresh it:
//! `POINTWISE_BLESS=1 cargo test --release -p pointwise-capi --test header` rewrites
//! `include/pointwise.h`.
use std::path::{Path, PathBuf};

const REFRESH: &str = "POINTWISE_BLESS=1 cargo test --release -p pointwise-capi --test header";

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("read capi/cbindgen.toml");
    // The API is this one file (it exposes no pointwise type), so cbindgen parses it alone,
    // without running `cargo metadata`.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn header_is_current() {
    let header: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/pointwise.h");
    let generated = generate();
    if std::env::var_os("POINTWISE_BLESS").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::write(&header, &generated).expect("write include/pointwise.h");
        eprintln!("rewrote {}", header.display());
        return;
    }
    let checked_in = std::fs::read_to_string(&header).unwrap_or_default();
    if checked_in == generated {
        return;
    }
    let fresh = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pointwise.h");
    std::fs::write(&fresh, &generated).expect("write the generated header");
    let (old, new): (Vec<&str>, Vec<&str>) = (checked_in.lines().collect(), generated.lines().collect());
    let first = (0..old.len().max(new.len()))
        .find(|&i| old.get(i) != new.get(i))
        .unwrap_or(0);
    panic!(
        "{} is out of date with src/lib.rs.\n\
         first difference at line {}:\n  checked in: {:?}\n  generated:  {:?}\n\
         see all of it: diff -u {} {}\n\
         refresh it: {REFRESH}",
        header.display(),
        first + 1,
        old.get(first).copied().unwrap_or("<end of file>"),
        new.get(first).copied().unwrap_or("<end of file>"),
        header.display(),
        fresh.display(),
    );
}

#!/usr/bin/env bash
# Runs under miri the tests miri can execute, at tiny shapes (`common::tiny()` is on under
# `cfg(miri)`): the library's unit tests, the bad-input catalogue (validation and shape
# arithmetic), the property tests (a few tiny cases each; the thread-count property is
# `cfg_attr(miri, ignore)`) and the tiny grid (packing with stride and padding, the driver with
# forced tiles, the portable, matrixmultiply and reference kernels).
#
# Under miri, `dispatch` reports no AVX-512, AVX2 or NEON (`#[cfg(miri)]`): miri cannot run
# their intrinsics nor the MXCSR `asm!`, so only the portable, matrixmultiply and reference
# kernels are available (matrixmultiply runs under miri as it is, no extra flags needed).
#
# Not run: tests/sweep.rs, tests/semantics.rs and tests/microkernels.rs (thousands of shapes or
# 100k-element problems: hours under miri); the doctests.
#
# MIRIFLAGS: -Zmiri-deterministic-floats, because miri otherwise adds random error to
# `exp` (SiLU, GELU) on every call, which breaks the bit-identity properties (batch vs image,
# grouped vs separate, NHWC vs NCHW) that hold with any deterministic libm.
#
# About 2 to 3 minutes on 2 cores once the miri sysroot and dependencies are built.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri' ||
  rustup component add --toolchain nightly miri rust-src
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-deterministic-floats}"
exec cargo +nightly miri test --lib --test bad_inputs --test properties --test tiny_grid "$@"

#!/usr/bin/env bash
# Runs the whole test suite on every dispatch tier this machine can reach, and checks in
# each run which kernel Auto chose:
#   1. natively (AVX-512, with BF16 where the CPU has it, on an AVX-512 machine),
#   2. under qemu-x86_64 -cpu Haswell (AVX2+FMA, no AVX-512): Auto must pick avx2,
#   3. under qemu-x86_64 -cpu Nehalem (no AVX): Auto must pick portable,
#   4. cross-built for aarch64 and run under qemu-aarch64 -cpu max: Auto must pick neonbf16
#      (FEAT_BF16), and under -cpu cortex-a72 (no BF16) the dispatch and bf16 tests: neon;
# and, natively only, the candle and ndarray adapters (tests/interop.rs) and the C ABI crate (capi/): its checked-in header, its Rust tests and a C
# program compiled with the system cc against libpointwise_capi.a.
# Emulated runs use a reduced sweep (POINTWISE_TEST_SCALE=reduced).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
native=portable
if grep -qw avx512f <<<"$flags" && grep -qw avx512_bf16 <<<"$flags"; then native=avx512bf16
elif grep -qw avx512f <<<"$flags"; then native=avx512
elif grep -qw avx2 <<<"$flags" && grep -qw fma <<<"$flags"; then native=avx2; fi

# Every x86_64 run builds with the same features (the adapters on), so the library and the
# test binaries are compiled once and the emulated runs reuse them.
features=(--features pointwise/candle,pointwise/ndarray)

t0=$SECONDS
echo "== native ($native), with the candle and ndarray adapters and the C API (header, Rust tests, a C program built with cc) =="
POINTWISE_EXPECT_AUTO=$native cargo test --release --workspace "${features[@]}"
echo "-- native: $((SECONDS - t0)) s"

# The adapters' tests run natively only (`--skip interop`): they test the glue, not a tier.
t0=$SECONDS
echo "== qemu Haswell (avx2) =="
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64 -cpu Haswell" \
  POINTWISE_EXPECT_AUTO=avx2 POINTWISE_TEST_SCALE=reduced \
  cargo test --release --tests "${features[@]}" -- --skip interop 2>&1 \
  | grep -v "TCG doesn't support requested feature"
echo "-- qemu Haswell: $((SECONDS - t0)) s"

t0=$SECONDS
echo "== qemu Nehalem (portable) =="
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="qemu-x86_64 -cpu Nehalem" \
  POINTWISE_EXPECT_AUTO=portable POINTWISE_TEST_SCALE=reduced \
  cargo test --release --tests "${features[@]}" -- --skip interop
echo "-- qemu Nehalem: $((SECONDS - t0)) s"

t0=$SECONDS
echo "== qemu aarch64 -cpu max (neonbf16: NEON with BFDOT; the neon tiles too) =="
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu" \
  POINTWISE_EXPECT_AUTO=neonbf16 POINTWISE_TEST_SCALE=reduced \
  cargo test --release --tests --target aarch64-unknown-linux-gnu

echo "== qemu aarch64 -cpu cortex-a72 (no BF16: Auto must pick neon; bf16 calls widen) =="
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu" \
  POINTWISE_EXPECT_AUTO=neon POINTWISE_TEST_SCALE=reduced \
  cargo test --release --target aarch64-unknown-linux-gnu --test semantics --test bf16
echo "-- qemu aarch64: $((SECONDS - t0)) s"
echo "all tiers passed"

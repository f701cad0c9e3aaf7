#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian/Ubuntu machine: qemu-user (to run the
# AVX2 and no-AVX x86_64 tiers and the aarch64 NEON tier), the aarch64 cross toolchain, the
# rustup target, rustfmt and clippy, and a C compiler (`cc`, for the C API's C program test).
# Idempotent: re-running it skips what is present.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
need=()
command -v qemu-x86_64 >/dev/null 2>&1 || need+=(qemu-user)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-dev-arm64-cross)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' || rustup target add aarch64-unknown-linux-gnu

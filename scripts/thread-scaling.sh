#!/usr/bin/env bash
# Thread scaling of the ResNet-50 1x1 layers: Auto's kernel and matrixmultiply at 1, 2, 4, 8
# and 16 threads (capped at the core count), both layouts, as CSV rows prefixed with layout
# and thread count; then the default compare table at one thread. Uses a prebuilt
# target/release/examples/compare when present (so it runs on a machine without cargo).
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/examples/compare
[ -x "$B" ] || cargo build --release --example compare
cores=$(nproc)
echo "cores: $cores; $(grep -m1 'model name' /proc/cpuinfo || true)"
for layout in nchw nhwc; do
  for t in 1 2 4 8 16; do
    [ "$t" -le "$cores" ] || continue
    "$B" --layers resnet --kernels auto,matrixmultiply --threads "$t" --layout "$layout" --format csv 2>/dev/null \
      | grep -v '^layer' | sed "s/^/$layout,$t,/"
  done
done
"$B" 2>/dev/null

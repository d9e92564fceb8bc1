#!/usr/bin/env bash
# Issue 13's device checks in one run, on a lent GPU (scripts/gpu_check.py says what it checks):
# byte identity of the cupy backend against the Numba kernels, then kernel throughput as a fraction
# of a device-to-device copy. Uses the device image's python3 (numpy, numba, cupy) and nvcc; installs
# nothing. Prints Markdown and writes it to $OUT/gpu-check.md (or /tmp). Exit: 0 all bytes equal,
# 1 some differ, 2 cannot run (no GPU or no CuPy: one line). Sized to end within 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
PYTHONUNBUFFERED=1 timeout 480 python3 scripts/gpu_check.py "$@" 2>&1 | tee "$out/gpu-check.md"
exit "${PIPESTATUS[0]}"

#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and driver: builds the CUDA
# backend, runs its tests with skipping forbidden (every kernel and both
# trainers against the CPU reference; relative error bound 1e-4 per value,
# accuracy within 2 points, repeat training bit-identical), then times GEMM
# and both trainers on CPU and GPU. One command:  bash host-gpu/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
export WEIR_REQUIRE_GPU=1
cargo test --release -p weir-host-gpu --test cuda -- --nocapture
cargo run --release -p weir-host-gpu --example gpu_check

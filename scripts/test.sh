#!/usr/bin/env bash
# The test suite, on a machine with or without a GPU. Installs what the tests need first:
# libnvrtc 13.0 from PyPI into .cache/nvrtc (the kernels are compiled by NVRTC even without a GPU)
# and the default checkpoint into weights/ (the Hugging Face parity tests run on it). Without a GPU
# the GPU suite (tests/cuda_parity*.rs) runs on the PTX emulator (ptxemu/, whose own tests run
# too: --workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e .cache/nvrtc/nvidia/cu13/lib/libnvrtc.so.13 ]; then
  echo "test.sh: installing libnvrtc (nvidia-cuda-nvrtc 13.0) into .cache/nvrtc"
  python3 -m pip install --quiet --disable-pip-version-check --target .cache/nvrtc "nvidia-cuda-nvrtc==13.0.88"
fi
# OpenBLAS from PyPI into .cache/blas: the CPU path's GEMM (src/cpu_gemm.rs; the gemm crate without it).
scripts/install-blas.sh
weights/fetch.sh
cargo test --release --workspace "$@"

#!/usr/bin/env bash
# Installs the CPU path's BLAS: OpenBLAS from the PyPI wheel scipy-openblas32 (BSD-3-Clause, an
# 8 MB download, 26 MB installed; runtime kernels for every x86-64 CPU, AVX-512 among them) into
# .cache/blas, where src/cpu_gemm.rs finds it at run time. Without it the CPU GEMM is the `gemm`
# crate's. Intel MKL is faster still and also found (pip install mkl into the active venv, or
# ENGINE_BLAS=/path/to/libmkl_rt.so.3), but its wheel is 221 MB (656 MB installed), too big to
# install on every CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e .cache/blas/scipy_openblas32/lib/libscipy_openblas.so ]; then
  echo "install-blas.sh: installing OpenBLAS (scipy-openblas32 0.3.34.481.3) into .cache/blas"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target .cache/blas "scipy-openblas32==0.3.34.481.3"
fi

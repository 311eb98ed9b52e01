// Concatenation along the last dimension, one input per launch. CPU twin: src/ops/concat.rs.
#include "common.cuh"

// src (rows, w) → columns col..col+w of dst (rows, total). One thread per source element.
extern "C" __global__ void concat_forward(const float* src, float* dst, u64 rows, u64 w, u64 total, u64 col) {
    GRID_STRIDE(i, rows * w) {
        const u64 r = i / w, j = i - r * w;
        dst[r * total + col + j] = src[i];
    }
}

// dx (rows, w) += columns col..col+w of dy (rows, total). One thread per element of dx.
extern "C" __global__ void concat_backward(const float* dy, float* dx, u64 rows, u64 w, u64 total, u64 col) {
    GRID_STRIDE(i, rows * w) {
        const u64 r = i / w, j = i - r * w;
        dx[i] += dy[r * total + col + j];
    }
}

// Concatenation along the last dimension, one input per launch, and its inverse, a band of
// columns. CPU twin: src/ops/concat.rs.
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

// The column slice, concat's inverse: x (rows, total) → out (rows, w) = columns col..col+w.
// Written, not added: out is fresh. One thread per element of out.
extern "C" __global__ void columns_forward(const float* x, float* out, u64 rows, u64 w, u64 total, u64 col) {
    GRID_STRIDE(i, rows * w) {
        const u64 r = i / w, j = i - r * w;
        out[i] = x[r * total + col + j];
    }
}

// Columns col..col+w of dx (rows, total) += dy (rows, w): several slices of one tensor each add
// their band, launch after launch. One thread per element of dy.
extern "C" __global__ void columns_backward(const float* dy, float* dx, u64 rows, u64 w, u64 total, u64 col) {
    GRID_STRIDE(i, rows * w) {
        const u64 r = i / w, j = i - r * w;
        dx[r * total + col + j] += dy[i];
    }
}

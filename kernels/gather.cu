// Chosen rows of a matrix (the masked-LM head reads the masked positions only) and the scatter of
// their gradient back. The rows are distinct (the launcher's caller checks it), so each element
// of dx has one writer and the backward needs no atomics. CPU twin: src/ops/gather.rs.
#include "common.cuh"

// x (R, C), rows (M) in 0..R → out (M, C) = x[rows[m]]. One thread per element of out.
extern "C" __global__ void gather_rows_forward(const float* x, const int* rows, float* out, u64 M, u64 C) {
    GRID_STRIDE(i, M * C) {
        const u64 m = i / C, j = i - m * C;
        out[i] = x[(u64)rows[m] * C + j];
    }
}

// dx[rows[m]] (of (R, C)) += dy[m] (M, C). One thread per element of dy.
extern "C" __global__ void gather_rows_backward(const float* dy, const int* rows, float* dx, u64 M, u64 C) {
    GRID_STRIDE(i, M * C) {
        const u64 m = i / C, j = i - m * C;
        dx[(u64)rows[m] * C + j] += dy[i];
    }
}

// Sentence representations from token states: the masked mean over tokens (count clamped at 1e-9,
// so an all-padding row gives zeros) and the first ([CLS]) token. CPU twin: src/ops/pooling.rs.
#include "common.cuh"

// x (B, T, C), mask (B, T) of 0/1 → out (B, C). One thread per (b, channel), tokens in order.
extern "C" __global__ void mean_pool_forward(const float* x, const int* mask, float* out, u64 B, u64 T, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        const int* m = mask + b * T;
        const float* xb = x + b * T * C + j;
        float sum = 0.0f;
        u64 count = 0;
        for (u64 t = 0; t < T; ++t) {
            if (m[t] != 0) {
                sum += xb[t * C];
                ++count;
            }
        }
        out[i] = sum / fmaxf((float)count, 1e-9f);
    }
}

// dx (B, T, C) += dy (B, C) / n at the unmasked tokens. One thread per (b, channel): it alone
// writes its column of dx.
extern "C" __global__ void mean_pool_backward(const float* dy, const int* mask, float* dx, u64 B, u64 T, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        const int* m = mask + b * T;
        u64 count = 0;
        for (u64 t = 0; t < T; ++t) count += m[t] != 0;
        const float n = fmaxf((float)count, 1e-9f), g = dy[i];
        float* db = dx + b * T * C + j;
        for (u64 t = 0; t < T; ++t)
            if (m[t] != 0) db[t * C] += g / n;
    }
}

// x (B, T, C) → out (B, C) = x[:, 0, :].
extern "C" __global__ void first_token_forward(const float* x, float* out, u64 B, u64 T, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        out[i] = x[b * T * C + j];
    }
}

// dx[:, 0, :] (of (B, T, C)) += dy (B, C).
extern "C" __global__ void first_token_backward(const float* dy, float* dx, u64 B, u64 T, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        dx[b * T * C + j] += dy[i];
    }
}

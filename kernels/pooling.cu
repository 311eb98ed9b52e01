// Sentence representations from token states: the masked mean over tokens (count clamped at 1e-9,
// so an all-padding row gives zeros) and the first ([CLS]) token, of padded and of packed batches.
// CPU twin: src/ops/pooling.rs.
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

// Packed batches (issue 16): x (N, C) holds B sequences back to back, sequence b = rows
// cu[b] .. cu[b+1] (cu: B + 1 nondecreasing offsets). One thread per (b, channel); sequences do
// not overlap, so each thread alone writes its column of its rows of dx.

// x (N, C) → out (B, C) = row cu[b]; zeros for an empty sequence.
extern "C" __global__ void first_tokens_forward(const float* x, const int* cu, float* out, u64 B, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        const int begin = cu[b];
        out[i] = cu[b + 1] > begin ? x[(u64)begin * C + j] : 0.0f;
    }
}

// dx[cu[b]] (of (N, C)) += dy[b] (B, C) for each non-empty sequence.
extern "C" __global__ void first_tokens_backward(const float* dy, const int* cu, float* dx, u64 B, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        const int begin = cu[b];
        if (cu[b + 1] > begin) dx[(u64)begin * C + j] += dy[i];
    }
}

// x (N, C) → out (B, C) = Σ rows cu[b] .. cu[b+1] / max(T_b, 1e-9): tokens in order, then one
// division, as mean_pool_forward (so a padded and a packed batch agree).
extern "C" __global__ void mean_pool_packed_forward(const float* x, const int* cu, float* out, u64 B, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        const u64 begin = (u64)cu[b], end = (u64)cu[b + 1];
        float sum = 0.0f;
        for (u64 r = begin; r < end; ++r) sum += x[r * C + j];
        out[i] = sum / fmaxf((float)(end - begin), 1e-9f);
    }
}

// dx rows cu[b] .. cu[b+1] (of (N, C)) += dy[b] (B, C) / max(T_b, 1e-9).
extern "C" __global__ void mean_pool_packed_backward(const float* dy, const int* cu, float* dx, u64 B, u64 C) {
    GRID_STRIDE(i, B * C) {
        const u64 b = i / C, j = i - b * C;
        const u64 begin = (u64)cu[b], end = (u64)cu[b + 1];
        const float g = dy[i] / fmaxf((float)(end - begin), 1e-9f);
        for (u64 r = begin; r < end; ++r) dx[r * C + j] += g;
    }
}

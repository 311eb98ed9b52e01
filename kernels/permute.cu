// Attention heads between the token-major (B, T, NH, HS) = (B, T, C) and the head-major
// (B, NH, T, HS) layouts. One thread per destination element, so `accumulate` (+=, for backward)
// has one writer per element. CPU twin: src/ops/permute.rs.
#include "common.cuh"

// src (B, T, NH, HS) → dst (B, NH, T, HS).
extern "C" __global__ void split_heads(const float* src, float* dst, u64 B, u64 T, u64 NH, u64 HS, int accumulate) {
    GRID_STRIDE(i, B * NH * T * HS) {
        const u64 d = i % HS, bht = i / HS;
        const u64 t = bht % T, bh = bht / T;
        const u64 h = bh % NH, b = bh / NH;
        const float v = src[((b * T + t) * NH + h) * HS + d];
        if (accumulate) dst[i] += v;
        else dst[i] = v;
    }
}

// src (B, NH, T, HS) → dst (B, T, NH, HS).
extern "C" __global__ void merge_heads(const float* src, float* dst, u64 B, u64 T, u64 NH, u64 HS, int accumulate) {
    GRID_STRIDE(i, B * T * NH * HS) {
        const u64 d = i % HS, bth = i / HS;
        const u64 h = bth % NH, bt = bth / NH;
        const u64 t = bt % T, b = bt / T;
        const float v = src[((b * NH + h) * T + t) * HS + d];
        if (accumulate) dst[i] += v;
        else dst[i] = v;
    }
}

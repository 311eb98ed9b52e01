// Attention heads between the token-major (B, T, NH, HS) = (B, T, C) and the head-major
// (B, NH, T, HS) layouts. One thread per destination element, so `accumulate` (+=, for backward)
// has one writer per element. CPU twin: src/ops/permute.rs.
#include "common.cuh"

// The token-major side: rows of W floats, the heads' columns from col0 on (W = NH·HS, col0 = 0
// for a plain (B, T, C) tensor; q, k, v read out of one fused (B, T, 3C) projection otherwise).

// src (B, T, W) columns col0.. → dst (B, NH, T, HS).
extern "C" __global__ void split_heads(const float* src, float* dst, u64 B, u64 T, u64 NH, u64 HS, u64 W, u64 col0,
                                       int accumulate) {
    GRID_STRIDE(i, B * NH * T * HS) {
        const u64 d = i % HS, bht = i / HS;
        const u64 t = bht % T, bh = bht / T;
        const u64 h = bh % NH, b = bh / NH;
        const float v = src[(b * T + t) * W + col0 + h * HS + d];
        if (accumulate) dst[i] += v;
        else dst[i] = v;
    }
}

// src (B, NH, T, HS) → dst (B, T, W) columns col0.. (one thread per element of src).
extern "C" __global__ void merge_heads(const float* src, float* dst, u64 B, u64 T, u64 NH, u64 HS, u64 W, u64 col0,
                                       int accumulate) {
    GRID_STRIDE(i, B * NH * T * HS) {
        const u64 d = i % HS, bht = i / HS;
        const u64 t = bht % T, bh = bht / T;
        const u64 h = bh % NH, b = bh / NH;
        const u64 o = (b * T + t) * W + col0 + h * HS + d;
        const float v = src[i];
        if (accumulate) dst[o] += v;
        else dst[o] = v;
    }
}

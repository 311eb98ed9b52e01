// The symmetric KL divergence of two sets of class logits (SMART's smoothness loss), the mean
// over rows of Σ_j (p_j − q_j)(log p_j − log q_j), p = softmax(a), q = softmax(b). One logit per
// row (K = 1) is a two-class sigmoid with class logits (x, 0). CPU twin: src/ops/divergence.rs.
#include "common.cuh"

// Logit j of a row of K logits; with K = 1 the two classes (x, 0).
__device__ __forceinline__ float class_logit(const float* row, u64 K, u64 j) { return (K == 1 && j == 1) ? 0.0f : row[j]; }

__device__ __forceinline__ float row_log_sum_exp(const float* row, u64 K) {
    const u64 classes = K < 2 ? 2 : K;
    float mx = class_logit(row, K, 0);
    for (u64 j = 1; j < classes; ++j) mx = fmaxf(mx, class_logit(row, K, j));
    float sum = 0.0f;
    for (u64 j = 0; j < classes; ++j) sum += expf(class_logit(row, K, j) - mx);
    return mx + logf(sum);
}

// a, b (B, K) → out (1) = mean_b Σ_j (p_j − q_j)(log p_j − log q_j). Launch: one block; each
// thread takes rows ≡ threadIdx.x (mod blockDim.x) in order, then a block sum.
extern "C" __global__ void symmetric_kl_forward(const float* a, const float* b, float* out, u64 B, u64 K) {
    __shared__ float scratch[32];
    const u64 classes = K < 2 ? 2 : K;
    float total = 0.0f;
    for (u64 r = threadIdx.x; r < B; r += blockDim.x) {
        const float *ar = a + r * K, *br = b + r * K;
        const float la = row_log_sum_exp(ar, K), lb = row_log_sum_exp(br, K);
        for (u64 j = 0; j < classes; ++j) {
            const float lp = class_logit(ar, K, j) - la, lq = class_logit(br, K, j) - lb;
            total += (expf(lp) - expf(lq)) * (lp - lq);
        }
    }
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) out[0] = total / (float)B;
}

// dx (B, K) += dl/B · [p_j (d_j − Σ_i p_i d_i) + p_j − q_j], p = softmax(x), q = softmax(y),
// d = log p − log q. One thread per row (grid-stride).
extern "C" __global__ void symmetric_kl_backward(const float* x, const float* y, const float* dl, float* dx, u64 B,
                                                 u64 K) {
    const u64 classes = K < 2 ? 2 : K;
    const float g = dl[0] / (float)B;
    GRID_STRIDE(r, B) {
        const float *xr = x + r * K, *yr = y + r * K;
        const float lx = row_log_sum_exp(xr, K), ly = row_log_sum_exp(yr, K);
        float pd = 0.0f;
        for (u64 j = 0; j < classes; ++j) {
            const float lp = class_logit(xr, K, j) - lx, lq = class_logit(yr, K, j) - ly;
            pd += expf(lp) * (lp - lq);
        }
        for (u64 j = 0; j < K; ++j) {
            const float lp = xr[j] - lx, lq = class_logit(yr, K, j) - ly;
            const float p = expf(lp), q = expf(lq);
            dx[r * K + j] += g * (p * (lp - lq - pd) + p - q);
        }
    }
}

// The optimizer over the flat parameter arena, and the reductions over task gradients that the
// multi-task methods (src/train/methods/) and gradient clipping need. PCGrad's surgery: pcgrad.cu.
// CPU twins: src/optim.rs.
#include "common.cuh"

// One optimizer step over params, grads and both moments, in one pass; `rule` picks the update
// (src/optim.rs `Rule`; every rule decays weights first, decoupled: p ← p·(1 − lr·λ)):
// 0 AdamW, PyTorch's torch.optim.AdamW arithmetic (bias correction, eps outside the square root);
// 1 Adamax: u ← max(β2·u, |g| + eps) in v's place, p ← p − step_size · m/u;
// 2 QHAdam: p ← p − lr · ((1 − ν1)·g + ν1·m/bc1) / (√((1 − ν2)·g² + ν2·v/bc2) + eps).
// step_size = lr / (1 − β1^t), bc2_sqrt = √(1 − β2^t), bc1 = 1 − β1^t, bc2 = 1 − β2^t come from the
// host (computed in double); grad_scale multiplies every gradient first (gradient clipping; 1
// otherwise). The CPU twin (src/optim.rs cpu::step) rounds each operation alike.
__device__ __forceinline__ void optimizer_pass(float* p, const float* g, float* m, float* v, u64 n, u32 rule,
                                               float lr, float beta1, float beta2, float eps, float weight_decay,
                                               float step_size, float bc2_sqrt, float bc1, float bc2, float nu1,
                                               float nu2, float grad_scale) {
    GRID_STRIDE(i, n) {
        float gi = g[i] * grad_scale;
        float pi = p[i] * (1.0f - lr * weight_decay);
        float mi = m[i];
        mi = mi + (1.0f - beta1) * (gi - mi);  // lerp, as PyTorch's exp_avg.lerp_
        float vi;
        if (rule == 1) {
            vi = fmaxf(v[i] * beta2, fabsf(gi) + eps);
            p[i] = pi - step_size * (mi / vi);
        } else if (rule == 2) {
            vi = v[i] * beta2 + (1.0f - beta2) * gi * gi;
            float num = (1.0f - nu1) * gi + nu1 * (mi / bc1);
            float den = sqrtf((1.0f - nu2) * gi * gi + nu2 * (vi / bc2)) + eps;
            p[i] = pi - lr * (num / den);
        } else {
            vi = v[i] * beta2 + (1.0f - beta2) * gi * gi;
            float denom = sqrtf(vi) / bc2_sqrt + eps;
            p[i] = pi - step_size * (mi / denom);
        }
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" __global__ void optimizer_step(float* p, const float* g, float* m, float* v, u64 n, u32 rule, float lr,
                                          float beta1, float beta2, float eps, float weight_decay, float step_size,
                                          float bc2_sqrt, float bc1, float bc2, float nu1, float nu2,
                                          float grad_scale) {
    optimizer_pass(p, g, m, v, n, rule, lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt, bc1, bc2, nu1, nu2,
                   grad_scale);
}

// optimizer_step with gradient clipping decided on the device: sumsq (one double, from
// pairwise_dots) is ‖g‖²; with norm = √sumsq, grad_scale = clip / (norm + 1e-6) where norm > clip,
// else 1, in double as the host would compute it. So a clipped step never waits for the norm on
// the host.
extern "C" __global__ void optimizer_step_clip(float* p, const float* g, float* m, float* v, u64 n, u32 rule,
                                               float lr, float beta1, float beta2, float eps, float weight_decay,
                                               float step_size, float bc2_sqrt, float bc1, float bc2, float nu1,
                                               float nu2, const double* sumsq, double clip) {
    const double norm = __dsqrt_rn(*sumsq);
    const float grad_scale = norm > clip ? (float)__ddiv_rn(clip, __dadd_rn(norm, 1e-6)) : 1.0f;
    optimizer_pass(p, g, m, v, n, rule, lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt, bc1, bc2, nu1, nu2,
                   grad_scale);
}

// PCGrad's combination: dst = w[0]·dst + Σ_{j<k} w[j+1]·g[j] over n floats (unused pointers may
// be null). Each element reads only itself, so dst may be one of the task gradients.
__device__ __forceinline__ void weighted_pass(float* dst, const float* const g[7], const float w[8], u32 k, u64 n) {
    GRID_STRIDE(i, n) {
        float acc = w[0] * dst[i];
        for (u32 j = 0; j < 7; j++)
            if (j < k) acc += w[j + 1] * g[j][i];
        dst[i] = acc;
    }
}

extern "C" __global__ void weighted_sum(float* dst, const float* g0, const float* g1, const float* g2, const float* g3,
                                        const float* g4, const float* g5, const float* g6, float w0, float w1,
                                        float w2, float w3, float w4, float w5, float w6, float w7, u32 k, u64 n) {
    const float* const g[7] = {g0, g1, g2, g3, g4, g5, g6};
    const float w[8] = {w0, w1, w2, w3, w4, w5, w6, w7};
    weighted_pass(dst, g, w, k, n);
}

#define MAX_PAIRS (MAX_TASKS * (MAX_TASKS + 1) / 2)

// All pairwise dot products g_i·g_j (i ≤ j) of k ≤ 8 flat gradients of length n (unused pointers
// may be null), in one launch:
// each block writes float partial sums of every pair to partials[block][pair]; the last block to
// finish sums the partials in block order (double) into out[pair], so the result is
// deterministic. `done` is a zeroed counter that the last block resets.
extern "C" __global__ void pairwise_dots(const float* g0, const float* g1, const float* g2, const float* g3,
                                         const float* g4, const float* g5, const float* g6, const float* g7, u32 k,
                                         u64 n, float* partials, double* out, u32* done) {
    const float* g[MAX_TASKS] = {g0, g1, g2, g3, g4, g5, g6, g7};
    __shared__ float scratch[32];
    __shared__ bool last;
    const u32 pairs = k * (k + 1) / 2;
    float acc[MAX_PAIRS];
    for (u32 q = 0; q < MAX_PAIRS; q++) acc[q] = 0.0f;
    GRID_STRIDE(e, n) {
        float x[MAX_TASKS];
        for (u32 t = 0; t < MAX_TASKS; t++) x[t] = t < k ? g[t][e] : 0.0f;
        u32 q = 0;
        for (u32 i = 0; i < MAX_TASKS; i++)
            for (u32 j = i; j < MAX_TASKS; j++, q++) acc[q] += x[i] * x[j];
    }
    // Pair (i, j) of the k-task triangle sits at a different index than in the 8-task one.
    u32 q8 = 0, q = 0;
    for (u32 i = 0; i < MAX_TASKS; i++) {
        for (u32 j = i; j < MAX_TASKS; j++, q8++) {
            float s = block_sum(acc[q8], scratch);
            if (i < k && j < k) {
                if (threadIdx.x == 0) partials[(u64)blockIdx.x * pairs + q] = s;
                q++;
            }
        }
    }
    __threadfence();
    if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (u32 p = threadIdx.x; p < pairs; p += blockDim.x) {
        double s = 0.0;
        for (u32 b = 0; b < gridDim.x; b++) s += (double)((volatile float*)partials)[(u64)b * pairs + p];
        out[p] = s;
    }
    if (threadIdx.x == 0) *done = 0;
}

// weighted_sum with the weights in device memory (double, as pcgrad_surgery writes them):
// dst = w[0]·dst + Σ_{j<k} w[j+1]·g_j, each weight rounded to float as the host-weight kernel's
// caller rounds it. The PCGrad step thus never waits for its weights on the host.
extern "C" __global__ void weighted_sum_dw(float* dst, const float* g0, const float* g1, const float* g2, const float* g3,
                                           const float* g4, const float* g5, const float* g6, const double* weights,
                                           u32 k, u64 n) {
    const float* const g[7] = {g0, g1, g2, g3, g4, g5, g6};
    float w[8];
    for (u32 j = 0; j < 8; j++) w[j] = j <= k ? (float)weights[j] : 0.0f;
    weighted_pass(dst, g, w, k, n);
}

// SMART's ascent step on the perturbation of the embeddings' output (Jiang et al. 2020), per row
// (token): projecting, δ ← clamp(δ + η · g / ‖g‖∞, −ε, ε); normalizing (the reference
// implementations), δ ← (δ + η · g) / (‖δ + η · g‖∞ + ε). CPU twin: src/train/smart.rs.
#include "common.cuh"

// delta, grad (rows, C). One block per row (grid-stride over rows): the row's max by a block max,
// then each element. Projecting, a row whose gradient is zero (a padded position) is only clamped.
extern "C" __global__ void smart_ascent(float* delta, const float* grad, u64 rows, u64 C, u32 normalize, float eta,
                                        float eps) {
    __shared__ float scratch[32];
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* g = grad + r * C;
        float* d = delta + r * C;
        float m = 0.0f;
        if (normalize) {
            for (u64 j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, fabsf(d[j] + eta * g[j]));
            m = block_max(m, scratch);
            __syncthreads();  // every thread has read the row before any writes it
            for (u64 j = threadIdx.x; j < C; j += blockDim.x) d[j] = (d[j] + eta * g[j]) / (m + eps);
            continue;
        }
        for (u64 j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, fabsf(g[j]));
        m = block_max(m, scratch);
        for (u64 j = threadIdx.x; j < C; j += blockDim.x) {
            const float step = m > 0.0f ? eta * (g[j] / m) : 0.0f;
            d[j] = fminf(fmaxf(d[j] + step, -eps), eps);
        }
    }
}

// Cosine similarity of row pairs, as PyTorch's cosine_similarity: each norm clamped at eps = 1e-8.
// One block per row (grid-stride over rows); the three dot products are block sums, so results do
// not depend on timing. CPU twin: src/ops/cosine.rs.
#include "common.cuh"

#define COSINE_EPS 1e-8f

// Block-wide x·y, x·x, y·y of one row of C values; every thread gets all three.
__device__ __forceinline__ void row_dots(const float* x, const float* y, u64 C, float* scratch, float& xy, float& xx,
                                         float& yy) {
    float s_xy = 0.0f, s_xx = 0.0f, s_yy = 0.0f;
    for (u64 j = threadIdx.x; j < C; j += blockDim.x) {
        const float a = x[j], b = y[j];
        s_xy += a * b;
        s_xx += a * a;
        s_yy += b * b;
    }
    xy = block_sum(s_xy, scratch);
    xx = block_sum(s_xx, scratch);
    yy = block_sum(s_yy, scratch);
}

// a, b (B, C) → out (B) = a·b / (max(‖a‖, eps) · max(‖b‖, eps)).
extern "C" __global__ void cosine_forward(const float* a, const float* b, float* out, u64 B, u64 C) {
    __shared__ float scratch[32];
    for (u64 r = blockIdx.x; r < B; r += gridDim.x) {
        float ab, aa, bb;
        row_dots(a + r * C, b + r * C, C, scratch, ab, aa, bb);
        if (threadIdx.x == 0) out[r] = ab / (fmaxf(sqrtf(aa), COSINE_EPS) * fmaxf(sqrtf(bb), COSINE_EPS));
    }
}

// dx (B, C) += dy (B) · (y/(‖x‖'‖y‖') − cos · x/‖x‖²), the second term only where ‖x‖ > eps
// (below it the clamped norm is a constant). ‖·‖' is the clamped norm.
extern "C" __global__ void cosine_backward(const float* x, const float* y, const float* dy, float* dx, u64 B, u64 C) {
    __shared__ float scratch[32];
    for (u64 r = blockIdx.x; r < B; r += gridDim.x) {
        const float* xr = x + r * C;
        const float* yr = y + r * C;
        float xy, xx, yy;
        row_dots(xr, yr, C, scratch, xy, xx, yy);
        const float nx = sqrtf(xx), ny = sqrtf(yy);
        const float denom = fmaxf(nx, COSINE_EPS) * fmaxf(ny, COSINE_EPS);
        const float cosv = xy / denom;
        const float self_term = nx > COSINE_EPS ? cosv / (nx * nx) : 0.0f;
        const float g = dy[r];
        float* dr = dx + r * C;
        for (u64 j = threadIdx.x; j < C; j += blockDim.x) dr[j] += g * (yr[j] / denom - self_term * xr[j]);
    }
}

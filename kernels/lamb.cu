// LAMB (You et al. 2020, Algorithm 2) over the flat parameter arena, in three launches: the
// update direction of every element, the norms of each parameter tensor (a segment of the arena),
// and the step scaled by each tensor's trust ratio ‖p‖/‖u‖. CPU twin: src/optim/lamb.rs, which
// sums the norms in this kernel's order, so both paths agree bit for bit.
#include "common.cuh"

#define LAMB_BLOCK 256

// 1. Adam's moments and the direction u = m̂/(√v̂ + eps) + λ·p over one group's run (p is not
// changed yet). bc1 = 1 − β1^t, bc2 = 1 − β2^t from the host. The gradients are scaled by
// grad_scale, or, when sumsq is not null, by the clipping factor of the norm² it holds (as
// optimizer_step_clip decides it).
extern "C" __global__ void lamb_direction(const float* p, const float* g, float* m, float* v, float* u, u64 n,
                                          float beta1, float beta2, float eps, float weight_decay, float bc1,
                                          float bc2, float grad_scale, const double* sumsq, double clip) {
    float s = grad_scale;
    if (sumsq != 0) {
        const double norm = __dsqrt_rn(*sumsq);
        s = norm > clip ? (float)__ddiv_rn(clip, __dadd_rn(norm, 1e-6)) : 1.0f;
    }
    GRID_STRIDE(i, n) {
        float gi = g[i] * s;
        float mi = m[i] + (1.0f - beta1) * (gi - m[i]);
        float vi = v[i] * beta2 + (1.0f - beta2) * gi * gi;
        u[i] = (mi / bc1) / (sqrtf(vi / bc2) + eps) + weight_decay * p[i];
        m[i] = mi;
        v[i] = vi;
    }
}

// 2. For segment s = [starts[s], starts[s + 1]): sums[2s] = ‖p‖², sums[2s + 1] = ‖u‖², in double.
// One block of LAMB_BLOCK threads per segment: thread t sums elements t, t + LAMB_BLOCK, … in
// order, then the block halves its partial sums pairwise (a fixed tree), so the result does not
// depend on scheduling.
extern "C" __global__ void lamb_norms(const float* p, const float* u, const u64* starts, u32 segments, double* sums) {
    __shared__ double sp[LAMB_BLOCK], su[LAMB_BLOCK];
    const u32 s = blockIdx.x, t = threadIdx.x;
    double x = 0.0, y = 0.0;
    if (s < segments) {
        for (u64 i = starts[s] + t; i < starts[s + 1]; i += LAMB_BLOCK) {
            const double pi = p[i], ui = u[i];
            x = __dadd_rn(x, __dmul_rn(pi, pi));
            y = __dadd_rn(y, __dmul_rn(ui, ui));
        }
    }
    sp[t] = x;
    su[t] = y;
    __syncthreads();
    for (u32 w = LAMB_BLOCK / 2; w > 0; w >>= 1) {
        if (t < w) {
            sp[t] = __dadd_rn(sp[t], sp[t + w]);
            su[t] = __dadd_rn(su[t], su[t + w]);
        }
        __syncthreads();
    }
    if (t == 0 && s < segments) {
        sums[2 * s] = sp[0];
        sums[2 * s + 1] = su[0];
    }
}

// 3. p ← p − (lr·factor_s)·r_s·u with r_s = ‖p‖/‖u‖ of the element's segment (1 where either norm
// is 0: a tensor at zero, or one whose direction is zero), factor_s its group's rate factor.
extern "C" __global__ void lamb_apply(float* p, const float* u, u64 n, const u64* starts, u32 segments,
                                      const double* sums, const float* factors, float lr) {
    GRID_STRIDE(i, n) {
        u32 lo = 0, hi = segments;  // the last segment s with starts[s] ≤ i
        while (hi - lo > 1) {
            const u32 mid = (lo + hi) / 2;
            if (starts[mid] <= i) lo = mid;
            else hi = mid;
        }
        const double pn = sums[2 * lo], un = sums[2 * lo + 1];
        const float r = pn > 0.0 && un > 0.0 ? (float)__ddiv_rn(__dsqrt_rn(pn), __dsqrt_rn(un)) : 1.0f;
        p[i] = p[i] - ((lr * factors[lo]) * r) * u[i];
    }
}

// SMART's perturbation of the embeddings' output (Jiang et al. 2020): its starting noise, and its
// ascent step per row (token): projecting, δ ← clamp(δ + η · g / ‖g‖∞, −ε, ε); normalizing (the
// reference implementations), δ ← (δ + η · g) / (‖δ + η · g‖∞ + ε). CPU twins: src/train/smart.rs.
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

// ln s for s in (0, 1), normal: src/rng.rs's ln_unit, bit for bit (IEEE +, −, ×, ÷ only: NVRTC
// runs with --fmad=false, so nothing is fused). s = m·2^e, m in [√½, √2), ln m = 2·atanh t.
__device__ double ln_unit(double s) {
    const double LN2_HI = 0.6931471803691238, LN2_LO = 1.9082149292705877e-10;  // as src/rng.rs
    const u64 bits = (u64)__double_as_longlong(s);
    long long e = (long long)((bits >> 52) & 0x7ff) - 1023;
    double m = __longlong_as_double((long long)((bits & ((1ull << 52) - 1)) | (1023ull << 52)));
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    // 1/(2k + 1), k = 1..=11: the literals of src/rng.rs's ATANH_COEFFICIENTS.
    const double c[11] = {0.3333333333333333,   0.2,  0.14285714285714285,  0.1111111111111111,
                          0.09090909090909091,  0.07692307692307693,    0.06666666666666667,
                          0.058823529411764705, 0.05263157894736842,    0.047619047619047616,
                          0.043478260869565216};
    const double t = (m - 1.0) / (m + 1.0), t2 = t * t;
    double series = 0.0;
    for (int k = 10; k >= 0; --k) series = c[k] + t2 * series;
    const double ln_m = 2.0 * t + 2.0 * t * t2 * series;
    const double ef = (double)e;
    return ef * LN2_HI + (ef * LN2_LO + ln_m);
}

// src/rng.rs's hash_normal_pair, bit for bit: Marsaglia's polar method on counter-based draws,
// attempt a of pair p at indices p·128 + 2a and + 2a + 1.
__device__ void hash_normal_pair(u64 key, u64 pair, double* z0, double* z1) {
    const double scale = 1.0 / 4503599627370496.0;  // 2^-52
    for (u64 a = 0; a < 64; ++a) {
        const u64 at = pair * 128 + 2 * a;
        const double v1 = (double)hash_bits(key, at) * scale - 1.0;
        const double v2 = (double)hash_bits(key, at + 1) * scale - 1.0;
        const double s = v1 * v1 + v2 * v2;
        if (s > 0.0 && s < 1.0) {
            const double f = sqrt(-2.0 * ln_unit(s) / s);
            *z0 = v1 * f;
            *z1 = v2 * f;
            return;
        }
    }
    *z0 = 0.0;
    *z1 = 0.0;
}

// delta (n) ← σ·z: elements 2p and 2p + 1 are normal pair p under `key`. One thread per pair.
extern "C" __global__ void smart_noise(float* delta, u64 n, u64 key, double sigma) {
    GRID_STRIDE(p, (n + 1) / 2) {
        double z0, z1;
        hash_normal_pair(key, p, &z0, &z1);
        delta[2 * p] = (float)(z0 * sigma);
        if (2 * p + 1 < n) delta[2 * p + 1] = (float)(z1 * sigma);
    }
}

// Inverted dropout with the counter-based mask of src/rng.rs. CPU twin: src/ops/dropout.rs.
#include "common.cuh"

// mask (n) = keep if hash_uniform(seed, stream, i) ≥ p else 0; out (n) = x (n) · mask (n).
// p arrives as the bits of the host's f64 (compared in double, as the CPU does); keep is the
// host's (float)(1 / (1 − p)).
extern "C" __global__ void __launch_bounds__(256)
    dropout_forward(const float* x, float* mask, float* out, u64 p_bits, float keep, u64 seed, u64 stream, u64 n) {
    const double p = __longlong_as_double((long long)p_bits);
    GRID_STRIDE(i, n) {
        const float m = hash_uniform(seed, stream, i) >= p ? keep : 0.0f;
        mask[i] = m;
        out[i] = __fmul_rn(x[i], m);
    }
}

// dx (n) += dy (n) · mask (n).
extern "C" __global__ void __launch_bounds__(256) dropout_backward(const float* mask, const float* dy, float* dx, u64 n) {
    GRID_STRIDE(i, n) { dx[i] = dx[i] + __fmul_rn(dy[i], mask[i]); }
}

// Inverted dropout with the counter-based mask of src/rng.rs. The mask is never stored: the
// backward pass draws it again from (seed, stream, index). CPU twin: src/ops/dropout.rs.
#include "common.cuh"

// keep if hash_uniform(seed, stream, i) ≥ p else 0. p arrives as the bits of the host's f64
// (compared in double, as the CPU does); keep is the host's (float)(1 / (1 − p)).
__device__ __forceinline__ float dropout_scale(u64 seed, u64 stream, u64 i, double p, float keep) {
    return hash_uniform(seed, stream, i) >= p ? keep : 0.0f;
}

// out (n) = x (n) · scale(i).
extern "C" __global__ void __launch_bounds__(256)
    dropout_forward(const float* x, float* out, u64 p_bits, float keep, u64 seed, u64 stream, u64 n) {
    const double p = __longlong_as_double((long long)p_bits);
    GRID_STRIDE(i, n) { out[i] = __fmul_rn(x[i], dropout_scale(seed, stream, i, p, keep)); }
}

// dx (n) += dy (n) · scale(i), the forward's mask drawn again.
extern "C" __global__ void __launch_bounds__(256)
    dropout_backward(const float* dy, float* dx, u64 p_bits, float keep, u64 seed, u64 stream, u64 n) {
    const double p = __longlong_as_double((long long)p_bits);
    GRID_STRIDE(i, n) { dx[i] = dx[i] + __fmul_rn(dy[i], dropout_scale(seed, stream, i, p, keep)); }
}

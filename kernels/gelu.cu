// GELU, exact erf form: out = 0.5·x·(1 + erf(x/√2)). CPU twin: src/ops/gelu.rs.
#include "common.cuh"

extern "C" __global__ void gelu_forward(const float* x, float* out, u64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

// dx += dy · (Φ(x) + x·φ(x))
extern "C" __global__ void gelu_backward(const float* x, const float* dy, float* dx, u64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
        dx[i] += dy[i] * (cdf + v * pdf);
    }
}

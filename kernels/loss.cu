// The task losses, each the mean over the batch: cross-entropy, binary cross-entropy with logits,
// mean squared error. Forward: one block; each thread takes rows b ≡ threadIdx.x (mod blockDim.x)
// in order and the block sums them (block_sum), so the loss does not depend on timing. Backward
// reads the scalar upstream gradient dl from device memory and accumulates. CPU twin: src/ops/loss.rs.
#include "common.cuh"

// x (B, K) logits, labels (B) in 0..K → probs (B, K) = softmax rows, out (1) = mean_b [lse(x_b) − x_b,label].
// Launch: one block.
extern "C" __global__ void cross_entropy_forward(const float* x, const int* labels, float* probs, float* out, u64 B,
                                                 u64 K) {
    __shared__ float scratch[32];
    float total = 0.0f;
    for (u64 b = threadIdx.x; b < B; b += blockDim.x) {
        const float* xr = x + b * K;
        float* pr = probs + b * K;
        float mx = xr[0];
        for (u64 j = 1; j < K; ++j) mx = fmaxf(mx, xr[j]);
        float sum = 0.0f;
        for (u64 j = 0; j < K; ++j) sum += expf(xr[j] - mx);
        for (u64 j = 0; j < K; ++j) pr[j] = expf(xr[j] - mx) / sum;
        total += logf(sum) + mx - xr[labels[b]];
    }
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) out[0] = total / (float)B;
}

// dx (B, K) += dl · (probs − onehot(labels)) / B.
extern "C" __global__ void cross_entropy_backward(const float* probs, const int* labels, const float* dl, float* dx,
                                                  u64 B, u64 K) {
    const float g = dl[0] / (float)B;
    GRID_STRIDE(i, B * K) {
        const u64 b = i / K, j = i - b * K;
        const float onehot = (u64)labels[b] == j ? 1.0f : 0.0f;
        dx[i] += g * (probs[i] - onehot);
    }
}

// x, y (n) → out (1) = mean [max(x, 0) − x·y + ln(1 + e^−|x|)]. Launch: one block.
extern "C" __global__ void bce_forward(const float* x, const float* y, float* out, u64 n) {
    __shared__ float scratch[32];
    float total = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = x[i];
        total += fmaxf(v, 0.0f) - v * y[i] + log1pf(expf(-fabsf(v)));
    }
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) out[0] = total / (float)n;
}

// dx (n) += dl · (σ(x) − y) / n.
extern "C" __global__ void bce_backward(const float* x, const float* y, const float* dl, float* dx, u64 n) {
    const float g = dl[0] / (float)n;
    GRID_STRIDE(i, n) { dx[i] += g * (1.0f / (1.0f + expf(-x[i])) - y[i]); }
}

// p, y (n) → out (1) = mean (p − y)². Launch: one block.
extern "C" __global__ void mse_forward(const float* p, const float* y, float* out, u64 n) {
    __shared__ float scratch[32];
    float total = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const float d = p[i] - y[i];
        total += d * d;
    }
    total = block_sum(total, scratch);
    if (threadIdx.x == 0) out[0] = total / (float)n;
}

// dp (n) += dl · 2 (p − y) / n.
extern "C" __global__ void mse_backward(const float* p, const float* y, const float* dl, float* dp, u64 n) {
    const float g = 2.0f * dl[0] / (float)n;
    GRID_STRIDE(i, n) { dp[i] += g * (p[i] - y[i]); }
}

// sums[t] += out[0] in double, one thread: the trainer adds each task's loss where it lies and
// reads the running sums only when it logs (src/train/loss_meter.rs).
extern "C" __global__ void accumulate_loss(const float* loss, double* sums, u32 t) {
    if (blockIdx.x == 0 && threadIdx.x == 0) sums[t] += (double)loss[0];
}

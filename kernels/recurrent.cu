// A recurrence over token rows: PyTorch's nn.LSTM (gates i, f, g, o; G = 4) and nn.RNN with tanh
// (G = 1), one layer, h0 = c0 = 0, over B spans of rows: spans (B, 2) i32 [start, len], sequence b
// is rows start_b .. start_b + len_b − 1 (len_b may be 0). CPU twin: src/ops/recurrent.rs.
// One block per sequence (grid-stride over sequences), threads over hidden units (looping when H
// exceeds the block); the state of step t − 1 lives in shared memory and a __syncthreads separates
// the steps. Every sum has a fixed order (a warp_sum tree per gate row in the forward, a serial loop
// per unit in the backward), so results never depend on timing. Rows outside every span are never
// touched. Blocks are whole warps.
#include "common.cuh"

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// gx (R, G·H) input projections, w (G·H, H), bias (G·H) → at the rows of each span: gates (R, G·H)
// activated (i, f, g, o; the RNN's is h_t itself), c (R, H) cell states (LSTM), h_prev (R, H) =
// h_{t−1} (0 at the span's first row); y (B, H) the last h (0 for an empty span).
// Dynamic shared memory: h_{t−1} (H), c_{t−1} (H, LSTM), the pre-activations a (G·H).
template <int G>
__device__ __forceinline__ void recurrent_forward(const float* gx, const float* w, const float* bias, const int* spans,
                                                  float* gates, float* cs, float* h_prev, float* y, u64 B, u64 H) {
    extern __shared__ float smem[];
    const u64 GH = G * H;
    float* h = smem;
    float* c = h + H;
    float* a = c + (G == 4 ? H : 0);
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (u64 b = blockIdx.x; b < B; b += gridDim.x) {
        const u64 start = (u64)spans[2 * b], len = (u64)spans[2 * b + 1];
        for (u64 u = threadIdx.x; u < H; u += blockDim.x) {
            h[u] = 0.0f;
            if (G == 4) c[u] = 0.0f;
        }
        __syncthreads();
        for (u64 t = 0; t < len; ++t) {
            const u64 r = start + t;
            // a = gx_t + b_hh + W_hh·h_{t−1}: a warp per gate row (coalesced reads of W_hh), lanes over k.
            for (u64 j = warp; j < GH; j += warps) {
                const float* wj = w + j * H;
                float s = 0.0f;
                for (u64 k = lane; k < H; k += 32) s += wj[k] * h[k];
                s = warp_sum(s);
                if (lane == 0) a[j] = gx[r * GH + j] + bias[j] + s;
            }
            __syncthreads();
            // Each thread its units: reads a and its own h[u], c[u]; writes them for step t + 1.
            for (u64 u = threadIdx.x; u < H; u += blockDim.x) {
                h_prev[r * H + u] = h[u];
                float* gr = gates + r * GH;
                if (G == 4) {
                    const float i = sigmoid(a[u]), f = sigmoid(a[H + u]);
                    const float g = tanhf(a[2 * H + u]), o = sigmoid(a[3 * H + u]);
                    const float cn = f * c[u] + i * g;
                    gr[u] = i;
                    gr[H + u] = f;
                    gr[2 * H + u] = g;
                    gr[3 * H + u] = o;
                    cs[r * H + u] = cn;
                    c[u] = cn;
                    h[u] = o * tanhf(cn);
                } else {
                    gr[u] = h[u] = tanhf(a[u]);
                }
            }
            __syncthreads();
        }
        for (u64 u = threadIdx.x; u < H; u += blockDim.x) y[b * H + u] = h[u];
    }
}

// Backpropagation through time of the forward, each sequence from its last row to its first:
// dh_t = (t last ? dy_b : 0) + W_hhᵀ·da_{t+1} (for the LSTM with dc carried from step t + 1) →
// da (R, G·H), the gradient of the pre-activations, at the rows of each span. w (G·H, H), the saved
// gates (R, G·H) and c (R, H, LSTM), dy (B, H).
// Dynamic shared memory: da of steps t and t + 1 (2 · G·H, alternating), dc (H, LSTM).
template <int G>
__device__ __forceinline__ void recurrent_backward(const float* w, const int* spans, const float* gates,
                                                   const float* cs, const float* dy, float* da, u64 B, u64 H) {
    extern __shared__ float smem[];
    const u64 GH = G * H;
    float* dc = smem + 2 * GH;
    for (u64 b = blockIdx.x; b < B; b += gridDim.x) {
        const u64 start = (u64)spans[2 * b], len = (u64)spans[2 * b + 1];
        if (G == 4)
            for (u64 u = threadIdx.x; u < H; u += blockDim.x) dc[u] = 0.0f;
        for (u64 t = len; t-- > 0;) {
            const u64 r = start + t;
            // Step t writes one buffer while reading the other, which step t + 1 wrote.
            float* cur = smem + (t & 1) * GH;
            const float* next = smem + ((t + 1) & 1) * GH;
            const float* gr = gates + r * GH;
            float* dar = da + r * GH;
            for (u64 u = threadIdx.x; u < H; u += blockDim.x) {
                float dh = t + 1 == len ? dy[b * H + u] : 0.0f;
                if (t + 1 < len) {
                    float s = 0.0f;
                    for (u64 j = 0; j < GH; ++j) s += w[j * H + u] * next[j];  // coalesced over u
                    dh += s;
                }
                if (G == 4) {
                    const float i = gr[u], f = gr[H + u], g = gr[2 * H + u], o = gr[3 * H + u];
                    const float tc = tanhf(cs[r * H + u]);
                    const float cp = t > 0 ? cs[(r - 1) * H + u] : 0.0f;
                    const float d = dc[u] + dh * o * (1.0f - tc * tc);  // dL/dc_t
                    const float da_i = d * g * i * (1.0f - i), da_f = d * cp * f * (1.0f - f);
                    const float da_g = d * i * (1.0f - g * g), da_o = dh * tc * o * (1.0f - o);
                    dc[u] = d * f;
                    cur[u] = dar[u] = da_i;
                    cur[H + u] = dar[H + u] = da_f;
                    cur[2 * H + u] = dar[2 * H + u] = da_g;
                    cur[3 * H + u] = dar[3 * H + u] = da_o;
                } else {
                    const float hh = gr[u];
                    cur[u] = dar[u] = dh * (1.0f - hh * hh);
                }
            }
            __syncthreads();
        }
    }
}

extern "C" __global__ void lstm_forward(const float* gx, const float* w, const float* bias, const int* spans,
                                        float* gates, float* c, float* h_prev, float* y, u64 B, u64 H) {
    recurrent_forward<4>(gx, w, bias, spans, gates, c, h_prev, y, B, H);
}

// c is unused (0).
extern "C" __global__ void rnn_forward(const float* gx, const float* w, const float* bias, const int* spans,
                                       float* gates, float* c, float* h_prev, float* y, u64 B, u64 H) {
    recurrent_forward<1>(gx, w, bias, spans, gates, c, h_prev, y, B, H);
}

extern "C" __global__ void lstm_backward(const float* w, const int* spans, const float* gates, const float* c,
                                         const float* dy, float* da, u64 B, u64 H) {
    recurrent_backward<4>(w, spans, gates, c, dy, da, B, H);
}

// c is unused (0).
extern "C" __global__ void rnn_backward(const float* w, const int* spans, const float* gates, const float* c,
                                        const float* dy, float* da, u64 B, u64 H) {
    recurrent_backward<1>(w, spans, gates, c, dy, da, B, H);
}

// dx (R, W) += da (R, W) at the rows of each span (a contiguous run of len·W floats); rows outside
// every span are left alone. One block per span; spans do not overlap.
extern "C" __global__ void recurrent_add_rows(const int* spans, const float* da, float* dx, u64 B, u64 W) {
    for (u64 b = blockIdx.x; b < B; b += gridDim.x) {
        const u64 off = (u64)spans[2 * b] * W, n = (u64)spans[2 * b + 1] * W;
        for (u64 i = threadIdx.x; i < n; i += blockDim.x) dx[off + i] += da[off + i];
    }
}

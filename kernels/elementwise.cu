// Pointwise ops (add, sub, mul, |x|, tanh, bias add, scale) and the reductions of their backward
// (bias column sums, the full sum). CPU twin: src/ops/elementwise.rs.
// Products that the CPU rounds before an add are written __fmul_rn so that NVRTC does not fuse
// them into an FMA: these kernels then round exactly as the CPU loops do.
// Every reduction has a fixed order (no atomics): results are bit-for-bit reproducible.
#include "common.cuh"

// kind: 0 add, 1 sub, 2 mul (BinaryKind). a and b may be the same buffer.
extern "C" __global__ void __launch_bounds__(256) binary_forward(int kind, const float* a, const float* b, float* out, u64 n) {
    GRID_STRIDE(i, n) {
        const float x = a[i], y = b[i];
        out[i] = kind == 0 ? x + y : kind == 1 ? x - y : __fmul_rn(x, y);
    }
}

// dst += c · src (the gradient of an add, of a difference (c = ±1), of a scaling, of a bias add's x).
extern "C" __global__ void __launch_bounds__(256) accumulate(float c, const float* src, float* dst, u64 n) {
    GRID_STRIDE(i, n) { dst[i] = dst[i] + __fmul_rn(c, src[i]); }
}

// dx += dy · other (the gradient of one operand of a product).
extern "C" __global__ void __launch_bounds__(256) mul_backward(const float* other, const float* dy, float* dx, u64 n) {
    GRID_STRIDE(i, n) { dx[i] = dx[i] + __fmul_rn(dy[i], other[i]); }
}

// atanh clamps its input here (UnaryKind::Atanh, ATANH_BOUND): a cosine's logit stays finite at ±1.
#define ATANH_BOUND (1.0f - 1e-6f)

// kind: 0 abs, 1 tanh, 2 atanh of x clamped to ±ATANH_BOUND (UnaryKind).
extern "C" __global__ void __launch_bounds__(256) unary_forward(int kind, const float* x, float* out, u64 n) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        if (kind == 0) {
            out[i] = fabsf(v);
        } else if (kind == 1) {
            out[i] = tanhf(v);
        } else {
            const float c = fminf(fmaxf(v, -ATANH_BOUND), ATANH_BOUND);
            out[i] = 0.5f * (log1pf(c) - log1pf(-c));
        }
    }
}

// dx += dy · f'(x): sgn(x) (0 at 0) for |x|, 1 − y² for tanh (y = tanh x, saved), 1/((1 − x)(1 + x))
// for atanh inside its bound (0 outside).
extern "C" __global__ void __launch_bounds__(256) unary_backward(int kind, const float* x, const float* y, const float* dy, float* dx, u64 n) {
    GRID_STRIDE(i, n) {
        float d;
        if (kind == 0) {
            const float v = x[i];
            d = v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
        } else if (kind == 1) {
            const float t = y[i];
            d = 1.0f - __fmul_rn(t, t);
        } else {
            const float v = x[i];
            d = fabsf(v) < ATANH_BOUND ? 1.0f / __fmul_rn(1.0f - v, 1.0f + v) : 0.0f;
        }
        dx[i] = dx[i] + __fmul_rn(dy[i], d);
    }
}

// out (rows, cols) = x (rows, cols) + bias (cols).
// Grid (gx, gy), block 256: blocks stride rows by gridDim.y and columns by gridDim.x·256.
extern "C" __global__ void __launch_bounds__(256) bias_add_forward(const float* x, const float* bias, float* out, u64 rows, u64 cols) {
    for (u64 r = blockIdx.y; r < rows; r += gridDim.y) {
        const float* xr = x + r * cols;
        float* orow = out + r * cols;
        for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += (u64)gridDim.x * blockDim.x) {
            orow[j] = xr[j] + bias[j];
        }
    }
}

// Column sums (layernorm.cu's dgamma/dbeta work the same way): a block of 32 × COL_ROW_LANES threads
// owns 32 columns; thread (tx, ty) sums rows ty, ty + COL_ROW_LANES, … of column 32·blockIdx.x + tx
// (a warp reads 32 consecutive floats of one row), then thread ty = 0 adds the lanes' partial sums
// in order. Grid: ceil(cols / 32) blocks.
#define COL_ROW_LANES 16

// db (cols) += Σ_rows dy (rows, cols).
extern "C" __global__ void __launch_bounds__(32 * COL_ROW_LANES) bias_backward(const float* dy, float* db, u64 rows, u64 cols) {
    __shared__ float part[COL_ROW_LANES][33];
    const u64 j = (u64)blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (j < cols) {
        const float* p = dy + (u64)threadIdx.y * cols + j;
        const u64 step = (u64)COL_ROW_LANES * cols;
#pragma unroll 4
        for (u64 r = threadIdx.y; r < rows; r += COL_ROW_LANES, p += step) acc += *p;
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < COL_ROW_LANES; k++) s += part[k][threadIdx.x];
        db[j] += s;
    }
}

// out (n) = c · x (n).
extern "C" __global__ void __launch_bounds__(256) scale_forward(float c, const float* x, float* out, u64 n) {
    GRID_STRIDE(i, n) { out[i] = __fmul_rn(c, x[i]); }
}

// out () = Σ x (n). One block of SUM_THREADS threads (no scratch buffer for a second pass):
// thread t sums elements t, t + SUM_THREADS, … into 8 interleaved accumulators (8 loads in
// flight), then the block reduces the partial sums in a fixed tree. Writes out even when n = 0.
#define SUM_THREADS 1024
extern "C" __global__ void __launch_bounds__(SUM_THREADS) sum_forward(const float* x, float* out, u64 n) {
    __shared__ float scratch[32];
    const u64 s = SUM_THREADS;
    float a[8];
#pragma unroll
    for (int k = 0; k < 8; k++) a[k] = 0.0f;
    u64 i = threadIdx.x;
    for (; i + 7 * s < n; i += 8 * s) {
#pragma unroll
        for (int k = 0; k < 8; k++) a[k] += x[i + k * s];
    }
    for (; i < n; i += s) a[0] += x[i];  // at most 7 left
    const float acc = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    const float total = block_sum(acc, scratch);
    if (threadIdx.x == 0) out[0] = total;
}

// dx (n) += dy () — the gradient of a sum.
extern "C" __global__ void __launch_bounds__(256) sum_backward(const float* dy, float* dx, u64 n) {
    const float g = dy[0];
    GRID_STRIDE(i, n) { dx[i] += g; }
}

// Layer normalisation over the last dimension (C), saving each row's mean and rstd = 1/σ.
// CPU twin: src/ops/layernorm.rs.
// Row kernels: one warp per row, 8 warps (256 threads) a block, warps striding over rows; any C.
// Parameter gradients: column sums over rows in a fixed order (no atomics), see below.
#include "common.cuh"

#define ROW_WARPS 8

// out (rows, C) = (x − mean) · rstd · gamma (C) + beta (C); mean (rows), rstd (rows).
// Two passes over the row (mean, then the variance about it), as the CPU does.
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    layernorm_forward(const float* x, const float* gamma, const float* beta, float* out, float* mean, float* rstd,
                      float eps, u64 rows, u64 C) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = (u64)gridDim.x * ROW_WARPS;
    const float n = (float)C;
    for (u64 row = (u64)blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); row < rows; row += warps) {
        const float* xr = x + row * C;
        float s = 0.0f;
        for (u64 j = lane; j < C; j += 32) s += xr[j];
        const float m = warp_sum(s) / n;
        float v = 0.0f;
        for (u64 j = lane; j < C; j += 32) {
            const float d = xr[j] - m;
            v += d * d;
        }
        const float r = 1.0f / sqrtf(warp_sum(v) / n + eps);
        float* orow = out + row * C;
        for (u64 j = lane; j < C; j += 32) orow[j] = __fmul_rn(__fmul_rn(xr[j] - m, r), gamma[j]) + beta[j];
        if (lane == 0) {
            mean[row] = m;
            rstd[row] = r;
        }
    }
}

// dx (rows, C) += rstd · (dn − mean(dn) − n̂ · mean(dn · n̂)), dn = dy · gamma, n̂ = (x − mean) · rstd.
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    layernorm_backward_x(const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy,
                         float* dx, u64 rows, u64 C) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = (u64)gridDim.x * ROW_WARPS;
    const float n = (float)C;
    for (u64 row = (u64)blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); row < rows; row += warps) {
        const float* xr = x + row * C;
        const float* dyr = dy + row * C;
        const float m = mean[row], r = rstd[row];
        float sdn = 0.0f, sdnn = 0.0f;
        for (u64 j = lane; j < C; j += 32) {
            const float dn = __fmul_rn(dyr[j], gamma[j]);
            sdn += dn;
            sdnn += __fmul_rn(dn, xr[j] - m) * r;
        }
        const float mdn = warp_sum(sdn) / n, mdnn = warp_sum(sdnn) / n;
        float* dxr = dx + row * C;
        for (u64 j = lane; j < C; j += 32) {
            const float norm = __fmul_rn(xr[j] - m, r);
            dxr[j] = dxr[j] + __fmul_rn(r, __fmul_rn(dyr[j], gamma[j]) - mdn - __fmul_rn(norm, mdnn));
        }
    }
}

// dgamma (C) += Σ_rows dy · (x − mean) · rstd and dbeta (C) += Σ_rows dy, over x, dy (rows, C).
// Either output may be null (that parameter is frozen). A block of 32 × COL_ROW_LANES threads owns
// 32 columns: thread (tx, ty) sums rows ty, ty + COL_ROW_LANES, … of column 32·blockIdx.x + tx (a
// warp reads 32 consecutive floats of a row; mean and rstd are broadcasts), then thread ty = 0 adds
// the lanes' partial sums in order. Grid: ceil(C / 32) blocks.
#define COL_ROW_LANES 16
extern "C" __global__ void __launch_bounds__(32 * COL_ROW_LANES)
    layernorm_backward_params(const float* x, const float* mean, const float* rstd, const float* dy, float* dgamma,
                              float* dbeta, u64 rows, u64 C) {
    __shared__ float pg[COL_ROW_LANES][33];
    __shared__ float pb[COL_ROW_LANES][33];
    const u64 j = (u64)blockIdx.x * 32 + threadIdx.x;
    float ag = 0.0f, ab = 0.0f;
    if (j < C) {
        u64 i = (u64)threadIdx.y * C + j;
        const u64 step = (u64)COL_ROW_LANES * C;
#pragma unroll 4
        for (u64 r = threadIdx.y; r < rows; r += COL_ROW_LANES, i += step) {
            const float d = dy[i];
            ag += __fmul_rn(d, x[i] - mean[r]) * rstd[r];
            ab += d;
        }
    }
    pg[threadIdx.y][threadIdx.x] = ag;
    pb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && j < C) {
        float sg = 0.0f, sb = 0.0f;
#pragma unroll
        for (int k = 0; k < COL_ROW_LANES; k++) {
            sg += pg[k][threadIdx.x];
            sb += pb[k][threadIdx.x];
        }
        if (dgamma) dgamma[j] += sg;
        if (dbeta) dbeta[j] += sb;
    }
}

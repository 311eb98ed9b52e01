// The attention softmax over rows of T keys with a padding mask over keys. CPU twin: src/ops/softmax.rs.
// One warp per row, 8 warps (256 threads) a block, warps striding over rows; any T.
#include "common.cuh"

#define ROW_WARPS 8

// p (rows, T) = softmax_j(scale · s (rows, T)) over the keys j that mask (B, T) keeps (≠ 0); masked
// keys get exactly 0, and a row whose keys are all masked is all zeros. Row `row` uses mask row
// row / rows_per_batch (rows_per_batch = NH · T).
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    softmax_forward(const float* s, const int* mask, float* p, float scale, u64 rows, u64 rows_per_batch, u64 T) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = (u64)gridDim.x * ROW_WARPS;
    for (u64 row = (u64)blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); row < rows; row += warps) {
        const float* sr = s + row * T;
        const int* mr = mask + (row / rows_per_batch) * T;
        float* pr = p + row * T;
        float mx = __int_as_float(0xff800000);  // -inf
        int any = 0;
        for (u64 j = lane; j < T; j += 32) {
            if (mr[j] != 0) {
                mx = fmaxf(mx, __fmul_rn(scale, sr[j]));
                any = 1;
            }
        }
        if (!__any_sync(0xffffffffu, any)) {  // every key padded: nothing to attend to
            for (u64 j = lane; j < T; j += 32) pr[j] = 0.0f;
            continue;
        }
        mx = warp_max(mx);
        float sum = 0.0f;
        for (u64 j = lane; j < T; j += 32) {
            if (mr[j] != 0) sum += expf(__fmul_rn(scale, sr[j]) - mx);
        }
        sum = warp_sum(sum);
        for (u64 j = lane; j < T; j += 32) pr[j] = mr[j] != 0 ? expf(__fmul_rn(scale, sr[j]) - mx) / sum : 0.0f;
    }
}

// ds (rows, T) += scale · p ⊙ (dp − Σ_j dp · p), p and dp (rows, T).
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    softmax_backward(const float* p, const float* dp, float* ds, float scale, u64 rows, u64 T) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = (u64)gridDim.x * ROW_WARPS;
    for (u64 row = (u64)blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); row < rows; row += warps) {
        const float* pr = p + row * T;
        const float* dpr = dp + row * T;
        float dot = 0.0f;
        for (u64 j = lane; j < T; j += 32) dot += __fmul_rn(pr[j], dpr[j]);
        dot = warp_sum(dot);
        float* dsr = ds + row * T;
        for (u64 j = lane; j < T; j += 32) dsr[j] = dsr[j] + __fmul_rn(__fmul_rn(scale, pr[j]), dpr[j] - dot);
    }
}

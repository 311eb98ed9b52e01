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

// Keyed masks (issue 16): an element's draw index comes from the token it belongs to, not its
// position, so a padded (B, T, C) batch and its packed (N, C) twin draw the same masks. Both
// kinds work on rows, one warp per row (8 a block, warps striding over rows): the row's base
// index is computed once and element col of it draws at base + col, one hash per element.
#define ROW_WARPS 8

// dst (rows, w) = src · scale(base + col), or += when ACC (the backward pass).
template <bool ACC>
__device__ __forceinline__ void dropout_row(const float* src, float* dst, u64 base, u64 w, double p, float keep,
                                            u64 seed, u64 stream) {
    for (u64 col = threadIdx.x & 31; col < w; col += 32) {
        const float v = __fmul_rn(src[col], dropout_scale(seed, stream, base + col, p, keep));
        dst[col] = ACC ? dst[col] + v : v;
    }
}

// Rows of w elements with one i32 token key each: element (r, col) draws at
// row_index(keys[r], w, col) (the key sign-extended to u64, as the CPU twin does).
template <bool ACC>
__device__ __forceinline__ void dropout_rows(const float* src, const int* keys, float* dst, u64 p_bits, float keep,
                                             u64 seed, u64 stream, u64 rows, u64 w) {
    const double p = __longlong_as_double((long long)p_bits);
    const u64 warps = (u64)gridDim.x * ROW_WARPS;
    for (u64 r = (u64)blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); r < rows; r += warps) {
        const u64 base = row_index((u64)(long long)keys[r], w, 0);
        dropout_row<ACC>(src + r * w, dst + r * w, base, w, p, keep, seed, stream);
    }
}

// out (rows, w) = x · scale(row_index(keys[r], w, col)), keys (rows).
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    dropout_rows_forward(const float* x, const int* keys, float* out, u64 p_bits, float keep, u64 seed, u64 stream,
                         u64 rows, u64 w) {
    dropout_rows<false>(x, keys, out, p_bits, keep, seed, stream, rows, w);
}

// dx (rows, w) += dy · the forward's mask, drawn again.
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    dropout_rows_backward(const float* dy, const int* keys, float* dx, u64 p_bits, float keep, u64 seed, u64 stream,
                          u64 rows, u64 w) {
    dropout_rows<true>(dy, keys, dx, p_bits, keep, seed, stream, rows, w);
}

// Attention probabilities (B, NH, T, T) as rows = B·NH·T rows of T: row (b·NH + h)·T + i's
// element j draws at attention_index(b, h, i, j, NH), whose low 16 bits are j (T ≤ 2¹⁶, checked
// by the host), so base + j with base = attention_index(b, h, i, 0, NH).
template <bool ACC>
__device__ __forceinline__ void dropout_attention(const float* src, float* dst, u64 p_bits, float keep, u64 seed,
                                                  u64 stream, u64 rows, u64 nh, u64 T) {
    const double p = __longlong_as_double((long long)p_bits);
    const u64 warps = (u64)gridDim.x * ROW_WARPS;
    for (u64 r = (u64)blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); r < rows; r += warps) {
        const u64 bh = r / T, i = r - bh * T;
        const u64 base = attention_index(bh / nh, bh % nh, i, 0, nh);
        dropout_row<ACC>(src + r * T, dst + r * T, base, T, p, keep, seed, stream);
    }
}

// out (B·NH·T, T) = probs · scale(attention_index(b, h, i, j, nh)).
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    dropout_attention_forward(const float* x, float* out, u64 p_bits, float keep, u64 seed, u64 stream, u64 rows,
                              u64 nh, u64 T) {
    dropout_attention<false>(x, out, p_bits, keep, seed, stream, rows, nh, T);
}

// dx (B·NH·T, T) += dy · the forward's mask, drawn again.
extern "C" __global__ void __launch_bounds__(32 * ROW_WARPS)
    dropout_attention_backward(const float* dy, float* dx, u64 p_bits, float keep, u64 seed, u64 stream, u64 rows,
                               u64 nh, u64 T) {
    dropout_attention<true>(dy, dx, p_bits, keep, seed, stream, rows, nh, T);
}

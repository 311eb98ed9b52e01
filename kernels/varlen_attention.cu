// Variable-length attention over token-packed rows (issue 16, packed batches). CPU twin and the
// layout: src/ops/varlen_attention.rs. q, k, v, out (N, C) with C = NH · HS, heads as column bands;
// cu (B + 1) i32 sequence offsets (sequence b is rows cu[b]..cu[b+1], length T_b); probs and dS
// NH · Σ_b T_b² floats, sequence b's block at NH · Σ_{b'<b} T_b'², head h at + h · T_b², row i
// at + i · T_b.
// One block of THREADS threads per (row i, head h, sequence b) = (blockIdx.x, .y, .z); blocks with
// i ≥ T_b return at once (the grid's x is the longest T_b). Straightforward first: threads stride
// over keys for the scores and over HS for the products; no atomics (deterministic).
// Attention dropout: every kernel takes the mask as (key, threshold, keep), the host's
// hash_key(seed, stream), keep_threshold(p) and f32 1/(1 − p); threshold 0 (p = 0) means no mask
// and no hashing. M is drawn again wherever it is needed, never stored.
#include "common.cuh"

#define THREADS 128

// M of probability (i, j) of head h in sequence b: src/rng.rs's hash_bits(key, attention_index(..))
// ≥ threshold, an integer compare, bit for bit the CPU's (varlen_attention.rs, Mask::at).
__device__ __forceinline__ float attention_keep(u64 key, u64 threshold, float keep, u64 b, u64 h, u64 i, u64 j,
                                                u64 nh) {
    const u64 bits = hash_bits(key, attention_index(b, h, i, j, nh));
    return bits >= threshold ? keep : 0.0f;
}

// NH · Σ_{b'<b} T_b'²: where sequence b's probabilities start.
__device__ __forceinline__ u64 probs_offset(const int* cu, u32 b, u32 nh) {
    u64 off = 0;
    for (u32 s = 0; s < b; ++s) {
        const u64 t = (u64)(cu[s + 1] - cu[s]);
        off += t * t;
    }
    return off * nh;
}

// probs[b, h, i, :] = softmax_j(scale · q_i · k_j) over the T_b keys of sequence b, head h (saved
// undropped); out[i, h] (HS) = Σ_j (probs[b, h, i, j] · M_ij) · v_j. Dynamic shared memory: 32
// floats for the block reductions, q_i (HS), the row of T_b scores.
extern "C" __global__ void __launch_bounds__(THREADS)
    varlen_attention_forward(const float* q, const float* k, const float* v, const int* cu, float* probs,
                             float* out, float scale, u32 nh, u32 hs, u64 key, u64 threshold, float keep) {
    extern __shared__ float smem[];
    float* red = smem;
    float* qi = smem + 32;
    float* row = qi + hs;
    const u32 b = blockIdx.z, h = blockIdx.y;
    const u64 r0 = (u64)cu[b], t = (u64)(cu[b + 1] - cu[b]), i = blockIdx.x;
    if (i >= t) return;  // the whole block: past its sequence's end
    const u64 c = (u64)nh * hs, col = (u64)h * hs;
    for (u32 d = threadIdx.x; d < hs; d += THREADS) qi[d] = q[(r0 + i) * c + col + d];
    __syncthreads();
    float mx = __int_as_float(0xff800000);  // -inf
    for (u64 j = threadIdx.x; j < t; j += THREADS) {
        const float* kj = k + (r0 + j) * c + col;
        float s = 0.0f;
        for (u32 d = 0; d < hs; ++d) s += qi[d] * kj[d];
        s = __fmul_rn(scale, s);
        row[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (u64 j = threadIdx.x; j < t; j += THREADS) {
        const float e = expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    float* pr = probs + probs_offset(cu, b, nh) + ((u64)h * t + i) * t;
    for (u64 j = threadIdx.x; j < t; j += THREADS) {
        const float p = row[j] / sum;
        pr[j] = p;
        row[j] = threshold == 0 ? p : __fmul_rn(p, attention_keep(key, threshold, keep, b, h, i, j, nh));
    }
    __syncthreads();
    for (u32 d = threadIdx.x; d < hs; d += THREADS) {
        float acc = 0.0f;
        for (u64 j = 0; j < t; ++j) acc += row[j] * v[(r0 + j) * c + col + d];
        out[(r0 + i) * c + col + d] = acc;
    }
}

// Per query row i: dP_ij = (dout_i · v_j) · M_ij, dS_ij = scale · P_ij · (dP_ij − Σ_j' P_ij' · dP_ij')
// written to ds (probs' layout), then dq_i += Σ_j dS_ij · k_j (skipped when dq is null).
// Dynamic shared memory: 32 reduction floats, dout_i (HS), the row of T_b values of dS.
extern "C" __global__ void __launch_bounds__(THREADS)
    varlen_attention_backward_rows(const float* k, const float* v, const float* dout, const float* probs,
                                   const int* cu, float* ds, float* dq, float scale, u32 nh, u32 hs, u64 key,
                                   u64 threshold, float keep) {
    extern __shared__ float smem[];
    float* red = smem;
    float* gi = smem + 32;
    float* row = gi + hs;
    const u32 b = blockIdx.z, h = blockIdx.y;
    const u64 r0 = (u64)cu[b], t = (u64)(cu[b + 1] - cu[b]), i = blockIdx.x;
    if (i >= t) return;
    const u64 c = (u64)nh * hs, col = (u64)h * hs;
    for (u32 d = threadIdx.x; d < hs; d += THREADS) gi[d] = dout[(r0 + i) * c + col + d];
    __syncthreads();
    const u64 at = probs_offset(cu, b, nh) + ((u64)h * t + i) * t;
    const float* pr = probs + at;
    float dot = 0.0f;
    for (u64 j = threadIdx.x; j < t; j += THREADS) {
        const float* vj = v + (r0 + j) * c + col;
        float dp = 0.0f;
        for (u32 d = 0; d < hs; ++d) dp += gi[d] * vj[d];
        if (threshold != 0) dp = __fmul_rn(dp, attention_keep(key, threshold, keep, b, h, i, j, nh));
        row[j] = dp;
        dot += pr[j] * dp;
    }
    dot = block_sum(dot, red);
    float* dsr = ds + at;
    for (u64 j = threadIdx.x; j < t; j += THREADS) {
        const float s = __fmul_rn(__fmul_rn(scale, pr[j]), row[j] - dot);
        row[j] = s;
        dsr[j] = s;
    }
    if (dq == 0) return;  // the whole block
    __syncthreads();
    for (u32 d = threadIdx.x; d < hs; d += THREADS) {
        float acc = 0.0f;
        for (u64 j = 0; j < t; ++j) acc += row[j] * k[(r0 + j) * c + col + d];
        float* y = dq + (r0 + i) * c + col + d;
        *y = *y + acc;
    }
}

// Per key row j: dk_j += Σ_i dS_ij · q_i (when dk is not null; ds then holds dS from
// varlen_attention_backward_rows) and dv_j += Σ_i (P_ij · M_ij) · dout_i (when dv is not null).
// Dynamic shared memory: column j of P ⊙ M (T_b floats), each M drawn once per block.
extern "C" __global__ void __launch_bounds__(THREADS)
    varlen_attention_backward_keys(const float* q, const float* dout, const float* probs, const float* ds,
                                   const int* cu, float* dk, float* dv, u32 nh, u32 hs, u64 key, u64 threshold,
                                   float keep) {
    extern __shared__ float pcol[];
    const u32 b = blockIdx.z, h = blockIdx.y;
    const u64 r0 = (u64)cu[b], t = (u64)(cu[b + 1] - cu[b]), j = blockIdx.x;
    if (j >= t) return;
    const u64 c = (u64)nh * hs, col = (u64)h * hs;
    const u64 base = probs_offset(cu, b, nh) + (u64)h * t * t + j;  // (i, j) at base + i · t
    if (dv != 0) {
        for (u64 i = threadIdx.x; i < t; i += THREADS) {
            const float p = probs[base + i * t];
            pcol[i] = threshold == 0 ? p : __fmul_rn(p, attention_keep(key, threshold, keep, b, h, i, j, nh));
        }
        __syncthreads();
    }
    for (u32 d = threadIdx.x; d < hs; d += THREADS) {
        if (dk != 0) {
            float acc = 0.0f;
            for (u64 i = 0; i < t; ++i) acc += ds[base + i * t] * q[(r0 + i) * c + col + d];
            float* y = dk + (r0 + j) * c + col + d;
            *y = *y + acc;
        }
        if (dv != 0) {
            float acc = 0.0f;
            for (u64 i = 0; i < t; ++i) acc += pcol[i] * dout[(r0 + i) * c + col + d];
            float* y = dv + (r0 + j) * c + col + d;
            *y = *y + acc;
        }
    }
}

// BERT's embedding sum (word + position + token type) and its scatter-add backward, without
// atomics: every gradient row is written by one thread per channel, adding in token order as the
// CPU does, so results are deterministic (and equal to the CPU's). CPU twin: src/ops/embedding.rs.
#include "common.cuh"

// ids, type_ids (N) with N = B·T tokens; word (V, C), pos (P ≥ T, C), types (TV, C) → out (N, C).
// One thread per output element.
extern "C" __global__ void embedding_forward(const int* ids, const int* type_ids, const float* word, const float* pos,
                                             const float* types, float* out, u64 tokens, u64 T, u64 C) {
    GRID_STRIDE(i, tokens * C) {
        const u64 tok = i / C, j = i - tok * C;
        const float v = word[(u64)ids[tok] * C + j] + pos[(tok % T) * C + j];
        out[i] = v + types[(u64)type_ids[tok] * C + j];
    }
}

// ids, type_ids, positions (N); word (V, C), pos (P, C), types (TV, C) → out (N, C), token i at
// position row positions[i] (a packed batch). One thread per output element, summed as above.
extern "C" __global__ void embedding_forward_at(const int* ids, const int* type_ids, const int* positions,
                                                const float* word, const float* pos, const float* types, float* out,
                                                u64 tokens, u64 C) {
    GRID_STRIDE(i, tokens * C) {
        const u64 tok = i / C, j = i - tok * C;
        const float v = word[(u64)ids[tok] * C + j] + pos[(u64)positions[tok] * C + j];
        out[i] = v + types[(u64)type_ids[tok] * C + j];
    }
}

// dword (V, C) += Σ dy (N, C) over the tokens of each id. Also the position table of
// embedding_forward_at, with the positions as ids.
// order (N): token indices sorted by id, stably; starts (G + 1): group g = order[starts[g] .. starts[g+1]),
// the (non-empty) tokens of one id. A block takes whole groups (grid-stride), its threads take
// channels and add the group's tokens in token order: one writer per row element.
extern "C" __global__ void embedding_backward_word(const int* ids, const int* order, const int* starts,
                                                   const float* dy, float* dword, u64 groups, u64 C) {
    for (u64 g = blockIdx.x; g < groups; g += gridDim.x) {
        const int begin = starts[g], end = starts[g + 1];
        const u64 row = (u64)ids[order[begin]];
        for (u64 j = threadIdx.x; j < C; j += blockDim.x) {
            float acc = dword[row * C + j];
            for (int k = begin; k < end; ++k) acc += dy[(u64)order[k] * C + j];
            dword[row * C + j] = acc;
        }
    }
}

// dpos[p] (rows 0..T of (P, C)) += Σ_b dy[b·T + p]; one thread per (p, channel), b in order.
extern "C" __global__ void embedding_backward_pos(const float* dy, float* dpos, u64 B, u64 T, u64 C) {
    GRID_STRIDE(i, T * C) {
        const u64 p = i / C, j = i - p * C;
        float acc = dpos[i];
        for (u64 b = 0; b < B; ++b) acc += dy[(b * T + p) * C + j];
        dpos[i] = acc;
    }
}

// dtypes (TV, C) += Σ dy over the tokens of each type id; one thread per (row, channel), tokens in order.
// TV is tiny (2 for BERT), so each thread scans all N token types.
extern "C" __global__ void embedding_backward_type(const int* type_ids, const float* dy, float* dtypes, u64 tokens,
                                                   u64 rows, u64 C) {
    GRID_STRIDE(i, rows * C) {
        const u64 r = i / C, j = i - r * C;
        float acc = dtypes[i];
        for (u64 tok = 0; tok < tokens; ++tok)
            if ((u64)type_ids[tok] == r) acc += dy[tok * C + j];
        dtypes[i] = acc;
    }
}

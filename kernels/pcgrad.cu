// PCGrad's surgery on the device (src/train/methods/pcgrad.rs is its twin and its launcher).
#include "common.cuh"

// Where pair (i, j), i ≤ j, sits in the upper triangle (row by row) of a k×k matrix.
__device__ __forceinline__ u32 triangle_index(u32 i, u32 j, u32 k) {
    if (i > j) { u32 t = i; i = j; j = t; }
    return i * k - i * (i - 1) / 2 + (j - i);
}

// The layout of one surgery record (doubles): the cosines of the pairs i < j row by row (at most
// 28), the count of projected ordered pairs, the norm ratios, the weights.
#define RECORD_COSINES 0
#define RECORD_PROJECTED 28
#define RECORD_RATIOS 29
#define RECORD_WEIGHTS 37
#define RECORD_LEN 45

// PCGrad's surgery on the Gram matrix, one thread (k ≤ 8): the twin of `surgery` in
// src/train/methods/pcgrad.rs operation for operation, in double with every product and sum rounded on
// its own (no fused multiply-adds), so the same triangle gives the CPU's numbers bit for bit.
// tri: the Gram matrix's upper triangle as pairwise_dots writes it; orders (k × (k − 1)): task
// i's visiting order at row i. Writes weights (k; /k when `mean`) and one record.
extern "C" __global__ void pcgrad_surgery(const double* tri, const u32* orders, u32 k, u32 mean, double* weights,
                                          double* record) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
#define G(i, j) tri[triangle_index((i), (j), k)]
    double w[MAX_TASKS];
    for (u32 l = 0; l < MAX_TASKS; l++) w[l] = 0.0;
    double projected = 0.0;
    for (u32 i = 0; i < k; i++) {
        double a[MAX_TASKS];
        for (u32 l = 0; l < MAX_TASKS; l++) a[l] = 0.0;
        a[i] = 1.0;
        for (u32 o = 0; o + 1 < k; o++) {
            const u32 j = orders[i * (k - 1) + o];
            double dot = -0.0;
            for (u32 l = 0; l < k; l++) dot = __dadd_rn(dot, __dmul_rn(a[l], G(l, j)));
            const double gjj = G(j, j);
            if (dot < 0.0 && gjj > 0.0) {
                a[j] = __dsub_rn(a[j], __ddiv_rn(dot, gjj));
                projected += 1.0;
            }
        }
        double norm2 = -0.0;
        for (u32 l = 0; l < k; l++)
            for (u32 m = 0; m < k; m++) norm2 = __dadd_rn(norm2, __dmul_rn(__dmul_rn(a[l], a[m]), G(l, m)));
        const double gii = G(i, i);
        record[RECORD_RATIOS + i] = gii > 0.0 ? __dsqrt_rn(__ddiv_rn(fmax(norm2, 0.0), gii)) : 1.0;
        for (u32 l = 0; l < k; l++) w[l] = __dadd_rn(w[l], a[l]);
    }
    for (u32 l = 0; l < k; l++) {
        if (mean) w[l] = __ddiv_rn(w[l], (double)k);
        weights[l] = w[l];
        record[RECORD_WEIGHTS + l] = w[l];
    }
    u32 q = 0;
    for (u32 i = 0; i < k; i++)
        for (u32 j = i + 1; j < k; j++, q++) {
            const double d = __dsqrt_rn(__dmul_rn(G(i, i), G(j, j)));
            record[RECORD_COSINES + q] = d > 0.0 ? __ddiv_rn(G(i, j), d) : 0.0;
        }
    record[RECORD_PROJECTED] = projected;
#undef G
}

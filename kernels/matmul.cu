// Strided batched GEMM: C[b] (M×N, row-major) = op(A[b]) · op(B[b])  (+ C[b] when accumulating).
// CPU twin: src/ops/matmul.rs (`cpu::gemm`); launchers and tile choice: `matmul::cuda` there.
//
// Operands of batch item b (strides in elements; a batch stride of 0 shares the operand):
//   op(A) (M×K): "n" A[b·sa + m·lda + k]  (K-contiguous)   "t" A[b·sa + k·lda + m]  (M-contiguous)
//   op(B) (K×N): "n" B[b·sb + k·ldb + n]  (N-contiguous)   "t" B[b·sb + n·ldb + k]  (K-contiguous)
//   C     (M×N):     C[b·sc + m·ldc + n]
// Grid: x = output tiles of one item (grouped by 8 tile rows for L2 reuse), y·z = batch items
// (item = y + z·gridDim.y; blocks past the batch return at once).
//
// Families (one launcher, `gemm_with`, picks the kernel; tile configurations as in matmul.rs):
//   sgemm_{128x128,64x64}_L      float32 FMA, 256 threads, 8×8 / 4×4 outputs a thread (k-tile 8 / 16),
//                                shared tiles stored k-major, register prefetch of the next k-tile.
//   tf32_gemm_{128x128,64x64}_L  tensor cores: mma.m16n8k8 tf32 (inputs rounded with cvt.rna),
//                                float32 accumulation; k-tile 32, 3-stage cp.async pipeline;
//                                8 warps of 64×32 / 4 warps of 32×32.
//   bf16_gemm_{128x256,128x128,64x64}_L
//                                tensor cores: mma.m16n8k16 bf16, float32 accumulation, float32 or
//                                bf16 output; k-tile 32, 4-stage cp.async pipeline; 8 warps of
//                                64×64 / 4 warps of 64×64 / 4 warps of 32×32.
// L ∈ {nn, nt, tn, tt} names the layouts of A and B as above. Tensor-core kernels keep each tile in
// its global orientation in shared memory, in 16-byte chunks with an XOR swizzle that makes both
// the cp.async stores and the fragment loads free of bank conflicts: ldmatrix for K-contiguous
// tiles (either type), ldmatrix.trans for M/N-contiguous bf16 tiles, 32-bit loads for M/N-contiguous
// tf32 tiles. A chunk is copied with one 16-byte cp.async (zero-filled past the matrix edge) when
// the launcher has checked that base, leading and batch strides allow it (GEMM_VEC_*); otherwise
// element by element (4-byte cp.async for float, plain loads for bf16).
#include "common.cuh"

constexpr int GEMM_VEC_A = 1;        // A's 16-byte chunks are aligned
constexpr int GEMM_VEC_B = 2;        // B's 16-byte chunks are aligned
constexpr int GEMM_VEC_C = 4;        // C's (even, odd) column pairs are aligned for one store
constexpr int GEMM_ACCUMULATE = 8;   // C += product (else C = product)
constexpr int GEMM_OUT_BF16 = 16;    // bf16 kernels: C holds bf16 (else float)

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

struct alignas(16) f32x4 { float x, y, z, w; };
struct alignas(8) f32x2 { float x, y; };

// ---- inline PTX: shared-memory addresses, cp.async, ldmatrix, mma -------------------------------

extern __shared__ __align__(128) unsigned char gemm_smem[];

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// Shared-memory address of the dynamic shared memory.
__device__ __forceinline__ u32 dyn_smem_base() { return smem_addr(gemm_smem); }

// 16 bytes global → shared; bytes past `src_bytes` (0..16) are zero-filled and not read.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

// 4 bytes global → shared; zero-filled when `src_bytes` is 0.
__device__ __forceinline__ void cp_async4(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ u32 lds32(u32 addr) {
    u32 v;
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr));
    return v;
}

__device__ __forceinline__ void sts128(u32 addr, u32 a, u32 b, u32 c, u32 d) {
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(a), "r"(b), "r"(c), "r"(d)
                 : "memory");
}

// float32 → tf32, round to nearest (ties away from zero), as bits of a float.
__device__ __forceinline__ u32 to_tf32(u32 x) {
    u32 r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
    return r;
}

// d (16×8) += a (16×8, row) · b (8×8, col), tf32 in, float32 accumulate.
__device__ __forceinline__ void mma_tf32(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d (16×8) += a (16×16, row) · b (16×8, col), bf16 in, float32 accumulate.
__device__ __forceinline__ void mma_bf16(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---- end of inline PTX --------------------------------------------------------------------------

// Batch item of this block: grid y, then z for batches past 65535.
__device__ __forceinline__ long long batch_item() { return blockIdx.y + (long long)blockIdx.z * gridDim.y; }

// Tile (tm, tn) of this block: consecutive blocks walk down groups of 8 tile rows, so the blocks
// running together share their A rows and B columns in L2.
__device__ __forceinline__ void tile_coords(int tiles_m, int tiles_n, int& tm, int& tn) {
    const int pid = blockIdx.x, group = 8 * tiles_n;
    const int first_m = (pid / group) * 8, rows = imin(tiles_m - first_m, 8);
    tm = first_m + (pid % group) % rows;
    tn = (pid % group) / rows;
}

// C[off], C[off + 1] (columns col, col + 1 of a row) = (v0, v1), or += when accumulating.
// `vec`: the pair is aligned for one 8-byte (float) or 4-byte (bf16) access.
__device__ __forceinline__ void store_pair(void* C, long long off, int col, int N, float v0, float v1,
                                           bool accumulate, bool vec, bool out_bf16) {
    if (col >= N) return;
    const bool both = col + 1 < N;
    if (out_bf16) {
        bf16* p = (bf16*)C + off;
        if (both && vec) {
            if (accumulate) {
                const u32 old = *(const u32*)p;
                v0 += bf16_to_f32((bf16)(old & 0xffffu));
                v1 += bf16_to_f32((bf16)(old >> 16));
            }
            *(u32*)p = (u32)f32_to_bf16(v0) | ((u32)f32_to_bf16(v1) << 16);
        } else {
            p[0] = f32_to_bf16(accumulate ? v0 + bf16_to_f32(p[0]) : v0);
            if (both) p[1] = f32_to_bf16(accumulate ? v1 + bf16_to_f32(p[1]) : v1);
        }
    } else {
        float* p = (float*)C + off;
        if (both && vec) {
            f32x2 v = {v0, v1};
            if (accumulate) {
                const f32x2 old = *(const f32x2*)p;
                v.x += old.x;
                v.y += old.y;
            }
            *(f32x2*)p = v;
        } else {
            p[0] = accumulate ? p[0] + v0 : v0;
            if (both) p[1] = accumulate ? p[1] + v1 : v1;
        }
    }
}

// ---- float32: register-tiled SGEMM --------------------------------------------------------------

// Block tile BM×BN, k-tile BK; each of the (BM/TM)·(BN/TN) = 256 threads computes TM×TN outputs as
// 4×4 sub-blocks spread over the tile, so that its shared loads are float4 and broadcast-friendly.
// Shared tiles are k-major (As[k][m], Bs[k][n]); global loads go through registers (the next k-tile
// is in flight while this one is computed). TA: A is M-contiguous; TB: B is K-contiguous.
template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
__device__ __forceinline__ void sgemm(const float* __restrict__ A, const float* __restrict__ B, float* C, int M,
                                      int N, int K, long long lda, long long ldb, long long ldc, long long sa,
                                      long long sb, long long sc, int batch, int flags) {
    constexpr int TX = BN / TN, TY = BM / TM, THREADS = TX * TY;
    constexpr int RM = TM / 4, RN = TN / 4;  // 4-wide sub-blocks a thread
    // A thread's share of a tile, in the operand's stored orientation (rows × contiguous columns):
    // rows r0, r0 + STEP, …, column c0, so that consecutive threads read consecutive addresses.
    constexpr int CA = TA ? BM : BK, CB = TB ? BK : BN;
    constexpr int STEP_A = THREADS / CA, STEP_B = THREADS / CB;
    constexpr int LA = (TA ? BK : BM) / STEP_A, LB = (TB ? BN : BK) / STEP_B;
    static_assert(THREADS % CA == 0 && THREADS % CB == 0 && LA * THREADS == BM * BK && LB * THREADS == BK * BN,
                  "tile loads must divide evenly");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "4-wide sub-blocks");
    __shared__ __align__(16) float As[2][BK][BM + 4];  // +4: rows stay 16-byte aligned, stores spread
    __shared__ __align__(16) float Bs[2][BK][BN + 4];

    const long long bi = batch_item();
    if (bi >= batch) return;
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
    const bool accumulate = flags & GEMM_ACCUMULATE;
    int tm, tn;
    tile_coords((M + BM - 1) / BM, (N + BN - 1) / BN, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN, ktiles = (K + BK - 1) / BK;
    const int ra0 = tid / CA, ca0 = tid % CA, rb0 = tid / CB, cb0 = tid % CB;
    // Offsets within a batch item of this thread's first element at k-tile 0 (the launcher checks
    // that they fit in 32 bits), the step between its elements, and the step between k-tiles.
    const u32 a_off = TA ? (u32)ra0 * (u32)lda + m0 + ca0 : (u32)(m0 + ra0) * (u32)lda + ca0;
    const u32 b_off = TB ? (u32)(n0 + rb0) * (u32)ldb + cb0 : (u32)rb0 * (u32)ldb + n0 + cb0;
    const u32 a_step = STEP_A * (u32)lda, b_step = STEP_B * (u32)ldb;
    const u32 a_kinc = TA ? BK * (u32)lda : BK, b_kinc = TB ? BK : BK * (u32)ldb;

    const float* Ab = A + bi * sa;
    const float* Bb = B + bi * sb;
    float* Cb = C + bi * sc;
    float ra[LA], rb[LB];
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

    auto load = [&](int kt) {
        const int k0 = kt * BK;
#pragma unroll
        for (int i = 0; i < LA; ++i) {
            const int r = ra0 + i * STEP_A;  // m (K-contiguous) or k (M-contiguous) within the tile
            const bool ok = TA ? (k0 + r < K && m0 + ca0 < M) : (m0 + r < M && k0 + ca0 < K);
            ra[i] = ok ? Ab[a_off + i * a_step + kt * a_kinc] : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < LB; ++i) {
            const int r = rb0 + i * STEP_B;  // n (K-contiguous) or k (N-contiguous) within the tile
            const bool ok = TB ? (n0 + r < N && k0 + cb0 < K) : (k0 + r < K && n0 + cb0 < N);
            rb[i] = ok ? Bb[b_off + i * b_step + kt * b_kinc] : 0.0f;
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int i = 0; i < LA; ++i) {
            const int r = ra0 + i * STEP_A;
            if (TA) As[buf][r][ca0] = ra[i]; else As[buf][ca0][r] = ra[i];
        }
#pragma unroll
        for (int i = 0; i < LB; ++i) {
            const int r = rb0 + i * STEP_B;
            if (TB) Bs[buf][cb0][r] = rb[i]; else Bs[buf][r][cb0] = rb[i];
        }
    };

    load(0);
    store(0);
    __syncthreads();
    for (int kt = 0; kt < ktiles; ++kt) {
        const int cur = kt & 1;
        if (kt + 1 < ktiles) load(kt + 1);  // in flight while we compute
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[TM], b[TN];
#pragma unroll
            for (int r = 0; r < RM; ++r) {
                const f32x4 v = *(const f32x4*)&As[cur][kk][r * (BM / RM) + ty * 4];
                a[r * 4 + 0] = v.x; a[r * 4 + 1] = v.y; a[r * 4 + 2] = v.z; a[r * 4 + 3] = v.w;
            }
#pragma unroll
            for (int r = 0; r < RN; ++r) {
                const f32x4 v = *(const f32x4*)&Bs[cur][kk][r * (BN / RN) + tx * 4];
                b[r * 4 + 0] = v.x; b[r * 4 + 1] = v.y; b[r * 4 + 2] = v.z; b[r * 4 + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        if (kt + 1 < ktiles) store(cur ^ 1);  // that buffer was last read before the previous barrier
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int row = m0 + (i / 4) * (BM / RM) + ty * 4 + i % 4;
        if (row >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int col = n0 + (j / 4) * (BN / RN) + tx * 4 + j % 4;
            if (col < N) {
                float* p = Cb + (long long)row * ldc + col;
                *p = accumulate ? *p + acc[i][j] : acc[i][j];
            }
        }
    }
}

#define SGEMM_KERNEL(NAME, BM, BN, BK, TM, TN, MIN_BLOCKS, TA, TB)                                               \
    extern "C" __global__ void __launch_bounds__(256, MIN_BLOCKS)                                                 \
        NAME(const float* A, const float* B, float* C, int M, int N, int K, long long lda, long long ldb,         \
             long long ldc, long long sa, long long sb, long long sc, int batch, int flags) {                    \
        sgemm<BM, BN, BK, TM, TN, TA, TB>(A, B, C, M, N, K, lda, ldb, ldc, sa, sb, sc, batch, flags);            \
    }

// The four layouts of one tile configuration: _nn _nt _tn _tt (A then B; see the top).
#define SGEMM_LAYOUTS(PREFIX, BM, BN, BK, TM, TN, MIN_BLOCKS)                                                    \
    SGEMM_KERNEL(PREFIX##_nn, BM, BN, BK, TM, TN, MIN_BLOCKS, false, false)                                      \
    SGEMM_KERNEL(PREFIX##_nt, BM, BN, BK, TM, TN, MIN_BLOCKS, false, true)                                       \
    SGEMM_KERNEL(PREFIX##_tn, BM, BN, BK, TM, TN, MIN_BLOCKS, true, false)                                       \
    SGEMM_KERNEL(PREFIX##_tt, BM, BN, BK, TM, TN, MIN_BLOCKS, true, true)

SGEMM_LAYOUTS(sgemm_128x128, 128, 128, 8, 8, 8, 2)
SGEMM_LAYOUTS(sgemm_64x64, 64, 64, 16, 4, 4, 3)

// ---- tensor cores: tf32 and bf16 ----------------------------------------------------------------

struct Tf32 {
    typedef float T;
    static constexpr int EB = 4;     // bytes an element
    static constexpr int KSTEP = 8;  // k of one mma
    __device__ static __forceinline__ u32 operand(u32 x) { return to_tf32(x); }
    __device__ static __forceinline__ void mma(float d[4], const u32 a[4], const u32 b[2]) { mma_tf32(d, a, b); }
};

struct Bf16 {
    typedef bf16 T;
    static constexpr int EB = 2;
    static constexpr int KSTEP = 16;
    __device__ static __forceinline__ u32 operand(u32 x) { return x; }
    __device__ static __forceinline__ void mma(float d[4], const u32 a[4], const u32 b[2]) { mma_bf16(d, a, b); }
};

// One stage of one operand's tile in shared memory, in 16-byte chunks: MN rows of BK elements when
// K-contiguous (KC), else BK rows of MN elements; RB bytes a row. Chunk c of a row lies at chunk
// c ^ swz(row), which only flips bits inside a 128-byte (CPR ≥ 8) or 64-byte (CPR = 4) span, so on
// addresses: swizzled = (row·RB + c·16) ^ (swz(row)·16) with tiles 128-byte aligned.
//   K-contiguous, 8 chunks a row (tf32): swz = row & 7 — ldmatrix reads 8 consecutive rows at one
//     chunk; 4 chunks a row (bf16): swz = (row >> 1) & 3 — two rows share 128 bytes.
//   wide rows, bf16: swz = row & 7 — ldmatrix.trans reads 8 consecutive k rows at one chunk;
//   wide rows, tf32: swz = (row & 3) << 1 — a warp's 32-bit fragment load reads 4 consecutive k rows
//     at 2 adjacent chunks.
// The cp.async stores of 8 consecutive chunks (one phase) are conflict-free with each of these.
template <class E, int MN, int BK, bool KC>
struct Tile {
    static constexpr int EPC = 16 / E::EB;  // elements a chunk
    static constexpr int ROWS = KC ? MN : BK;
    static constexpr int CPR = (KC ? BK : MN) / EPC;  // chunks a row
    static constexpr int RB = CPR * 16;
    static constexpr int BYTES = ROWS * RB;
    static_assert(KC ? (CPR == 8 || CPR == 4) : (CPR % 8 == 0), "unsupported tile shape for the swizzle");
    __device__ static __forceinline__ u32 swz(int row) {
        return KC ? (CPR == 8 ? (row & 7) : ((row >> 1) & 3)) : (E::EB == 4 ? ((row & 3) << 1) : (row & 7));
    }
};

// Element-wise copy of one chunk's first `valid` elements (the rest zero-filled), for operands
// whose chunks are not 16-byte aligned.
__device__ __forceinline__ void copy_chunk(u32 dst, const float* src, const float* base, int valid) {
#pragma unroll
    for (int e = 0; e < 4; ++e) cp_async4(dst + 4 * e, e < valid ? src + e : base, e < valid ? 4 : 0);
}

__device__ __forceinline__ void copy_chunk(u32 dst, const bf16* src, const bf16* base, int valid) {
    u32 w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const u32 lo = 2 * e < valid ? src[2 * e] : 0, hi = 2 * e + 1 < valid ? src[2 * e + 1] : 0;
        w[e] = lo | (hi << 16);
    }
    sts128(dst, w[0], w[1], w[2], w[3]);
}

// Copies one operand's k-tiles into shared memory: this thread's chunks are rows row0, row0 + STEP,
// … at chunk c of the tile (stored orientation), so consecutive threads copy consecutive 16 bytes.
// Element (mn, k) of the batch item at g[mn·ld + k] (KC) or g[k·ld + mn].
template <class E, int MN, int BK, bool KC, int THREADS>
struct TileLoader {
    typedef Tile<E, MN, BK, KC> L;
    static constexpr int STEP = THREADS / L::CPR, ITERS = L::ROWS / STEP;
    static_assert(THREADS % L::CPR == 0 && ITERS * STEP == L::ROWS && STEP % 8 == 0,
                  "chunks must divide evenly, with one swizzle for all of a thread's rows");
    u32 off, step, kinc;  // element offsets: first chunk at k-tile 0; between chunks; between k-tiles
    u32 dst, mask;        // byte offset in the stage (unswizzled) and the XOR swizzle
    int outer, inner;     // what is left of the strided and the contiguous dimension

    __device__ __forceinline__ TileLoader(int tid, int mn0, int MN_total, int K, u32 ld, u32 tile_offset) {
        const int row0 = tid / L::CPR, c = tid % L::CPR;
        if (KC) {
            off = (u32)(mn0 + row0) * ld + c * L::EPC;
            kinc = BK;
            outer = MN_total - mn0 - row0;
            inner = K - c * L::EPC;
        } else {
            off = (u32)row0 * ld + mn0 + c * L::EPC;
            kinc = BK * ld;
            outer = K - row0;
            inner = MN_total - mn0 - c * L::EPC;
        }
        step = STEP * ld;
        dst = tile_offset + row0 * L::RB + c * 16;
        mask = L::swz(row0) * 16;
    }

    // Issues the copies of k-tile kt into the stage at shared address s (128-byte aligned).
    __device__ __forceinline__ void load(const typename E::T* g, u32 s, int kt, bool vec) const {
        const int k0 = kt * BK;
#pragma unroll
        for (int it = 0; it < ITERS; ++it) {
            const int valid = KC ? (it * STEP < outer ? imax(imin(inner - k0, L::EPC), 0) : 0)
                                 : (k0 + it * STEP < outer ? imax(imin(inner, L::EPC), 0) : 0);
            const typename E::T* src = g + (off + it * step + (u32)kt * kinc);
            const u32 d = (s + dst + it * STEP * L::RB) ^ mask;
            if (vec) cp_async16(d, valid > 0 ? (const void*)src : (const void*)g, valid * E::EB);
            else copy_chunk(d, src, g, valid);
        }
    }
};

// Block tile BM×BN, k-tile BK, WM×WN warps each computing (BM/WM)×(BN/WN) as MI×NI mma tiles,
// STAGES-deep cp.async pipeline in dynamic shared memory (STAGES · (A tile + B tile) bytes).
// AK: A is K-contiguous ("n"); BKC: B is K-contiguous ("t").
template <class E, int BM, int BN, int BK, int WM, int WN, int STAGES, bool AK, bool BKC>
__device__ __forceinline__ void tc_gemm(const typename E::T* __restrict__ A, const typename E::T* __restrict__ B,
                                        void* C, int M, int N, int K, long long lda, long long ldb, long long ldc,
                                        long long sa, long long sb, long long sc, int batch, int flags) {
    typedef typename E::T T;
    typedef Tile<E, BM, BK, AK> LA;
    typedef Tile<E, BN, BK, BKC> LB;
    constexpr int THREADS = WM * WN * 32, WTM = BM / WM, WTN = BN / WN, MI = WTM / 16, NI = WTN / 8;
    constexpr int STAGE = LA::BYTES + LB::BYTES, KSTEPS = BK / E::KSTEP, KS_UNROLL = E::EB == 2 ? KSTEPS : 1;
    static_assert(MI * 16 == WTM && NI * 8 == WTN && NI % 2 == 0, "warp tile must be whole mma tiles");
    static_assert(BK % E::KSTEP == 0 && STAGES >= 2 && STAGE % 128 == 0 && LA::BYTES % 128 == 0, "pipeline");

    const long long bi = batch_item();
    if (bi >= batch) return;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp / WN) * WTM, wn = (warp % WN) * WTN;
    const int g = lane >> 2, t = lane & 3;
    const u32 s0 = dyn_smem_base();
    int tm, tn;
    tile_coords((M + BM - 1) / BM, (N + BN - 1) / BN, tm, tn);
    const int m0 = tm * BM, n0 = tn * BN, ktiles = (K + BK - 1) / BK;
    const bool va = flags & GEMM_VEC_A, vb = flags & GEMM_VEC_B, vc = flags & GEMM_VEC_C;
    const bool accumulate = flags & GEMM_ACCUMULATE, out_bf16 = flags & GEMM_OUT_BF16;

    const TileLoader<E, BM, BK, AK, THREADS> load_a(tid, m0, M, K, (u32)lda, 0);
    const TileLoader<E, BN, BK, BKC, THREADS> load_b(tid, n0, N, K, (u32)ldb, LA::BYTES);

    // Fragment addresses: (stage + off + compile-time offset of (tile, k-step)) ^ mask.
    u32 a_off, a_mask, b_off, b_mask;
    if (AK) {  // ldmatrix.x4: rows 0-7 | 8-15 × chunks 2s | 2s + 1 → a0, a1, a2, a3
        a_off = (wm + (lane & 15)) * LA::RB + (lane >> 4) * 16;
        a_mask = LA::swz(lane & 15) * 16;
    } else if (E::EB == 2) {  // stored [k][m], ldmatrix.x4.trans: (k 0-7 | 8-15) × (m 0-7 | 8-15)
        const int i8 = lane >> 3;
        a_off = ((lane & 7) + ((i8 >> 1) << 3)) * LA::RB + ((wm >> 3) + (i8 & 1)) * 16;
        a_mask = (lane & 7) * 16;
    } else {  // tf32 stored [k][m]: a0 (m g, k t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
        a_off = t * LA::RB + ((wm >> 2) + (g >> 2)) * 16 + (g & 3) * 4;
        a_mask = t * 32;
    }
    if (BKC) {  // stored [n][k], ldmatrix.x4: (n 0-7, chunk 2s), (n 0-7, 2s + 1), (n 8-15, 2s), (n 8-15, 2s + 1)
        b_off = (wn + (lane & 7) + ((lane >> 4) << 3)) * LB::RB + ((lane >> 3) & 1) * 16;
        b_mask = LB::swz(lane & 7) * 16;
    } else if (E::EB == 2) {  // stored [k][n], ldmatrix.x4.trans: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), …
        b_off = ((lane & 7) + (((lane >> 3) & 1) << 3)) * LB::RB + ((wn >> 3) + (lane >> 4)) * 16;
        b_mask = (lane & 7) * 16;
    } else {  // tf32 stored [k][n]: b0 (k t, n g), b1 (k t + 4, n g)
        b_off = t * LB::RB + ((wn >> 2) + (g >> 2)) * 16 + (g & 3) * 4;
        b_mask = t * 32;
    }
    b_off += LA::BYTES;

    const T* Ab = A + bi * sa;
    const T* Bb = B + bi * sb;
    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

    // Prologue: k-tiles 0 .. STAGES-2 in flight, one commit group each (empty past the end,
    // so that the group count stays uniform).
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < ktiles) {
            load_a.load(Ab, s0 + st * STAGE, st, va);
            load_b.load(Bb, s0 + st * STAGE, st, vb);
        }
        cp_async_commit();
    }
    int read = 0, write = STAGES - 1;
    for (int kt = 0; kt < ktiles; ++kt) {
        cp_async_wait<STAGES - 2>();  // k-tile kt has landed (this thread's copies) …
        __syncthreads();              // … everyone's; and everyone is done with k-tile kt - 1
        if (kt + STAGES - 1 < ktiles) {  // into the stage k-tile kt - 1 used
            load_a.load(Ab, s0 + write * STAGE, kt + STAGES - 1, va);
            load_b.load(Bb, s0 + write * STAGE, kt + STAGES - 1, vb);
        }
        cp_async_commit();
        const u32 sa_ = s0 + read * STAGE + a_off, sb_ = s0 + read * STAGE + b_off;
        // Fully unrolled, the k-steps' fragment loads overlap the mma of the previous step,
        // at a register cost that tf32's 2 blocks an SM cannot pay.
#pragma unroll KS_UNROLL
        for (int ks = 0; ks < KSTEPS; ++ks) {
            u32 af[MI][4], bf[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i) {
                if (AK) {
                    ldsm_x4(af[i], (sa_ + i * 16 * LA::RB + ks * 32) ^ a_mask);
                } else if (E::EB == 2) {
                    ldsm_x4_t(af[i], (sa_ + ks * 16 * LA::RB + i * 32) ^ a_mask);
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q)
                        af[i][q] = lds32((sa_ + (ks * 8 + (q >> 1) * 4) * LA::RB + (4 * i + 2 * (q & 1)) * 16) ^ a_mask);
                }
#pragma unroll
                for (int q = 0; q < 4; ++q) af[i][q] = E::operand(af[i][q]);
            }
#pragma unroll
            for (int j = 0; j < NI; j += 2) {
                if (BKC || E::EB == 2) {
                    u32 r[4];
                    if (BKC) ldsm_x4(r, (sb_ + j * 8 * LB::RB + ks * 32) ^ b_mask);
                    else ldsm_x4_t(r, (sb_ + ks * 16 * LB::RB + j * 16) ^ b_mask);
                    bf[j][0] = r[0];
                    bf[j][1] = r[1];
                    bf[j + 1][0] = r[2];
                    bf[j + 1][1] = r[3];
                } else {
#pragma unroll
                    for (int jj = 0; jj < 2; ++jj)
#pragma unroll
                        for (int q = 0; q < 2; ++q)
                            bf[j + jj][q] = lds32((sb_ + (ks * 8 + q * 4) * LB::RB + 2 * (j + jj) * 16) ^ b_mask);
                }
#pragma unroll
                for (int jj = 0; jj < 2; ++jj) {
                    bf[j + jj][0] = E::operand(bf[j + jj][0]);
                    bf[j + jj][1] = E::operand(bf[j + jj][1]);
                }
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) E::mma(acc[i][j], af[i], bf[j]);
        }
        read = read + 1 == STAGES ? 0 : read + 1;
        write = write + 1 == STAGES ? 0 : write + 1;
    }
    cp_async_wait<0>();  // only empty groups are left; nothing in flight at exit

    // Accumulator (i, j): c0, c1 at (row g, columns 2t, 2t + 1), c2, c3 at row g + 8.
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int row = m0 + wm + i * 16 + g + h * 8;
            if (row >= M) continue;
            const long long base = bi * sc + (long long)row * ldc;
#pragma unroll
            for (int j = 0; j < NI; ++j) {
                const int col = n0 + wn + j * 8 + 2 * t;
                store_pair(C, base + col, col, N, acc[i][j][2 * h], acc[i][j][2 * h + 1], accumulate, vc, out_bf16);
            }
        }
}

#define TC_KERNEL(NAME, E, BM, BN, WM, WN, STAGES, MIN_BLOCKS, AK, BKC)                                         \
    extern "C" __global__ void __launch_bounds__(WM * WN * 32, MIN_BLOCKS)                                        \
        NAME(const E::T* A, const E::T* B, void* C, int M, int N, int K, long long lda, long long ldb,           \
             long long ldc, long long sa, long long sb, long long sc, int batch, int flags) {                    \
        tc_gemm<E, BM, BN, 32, WM, WN, STAGES, AK, BKC>(A, B, C, M, N, K, lda, ldb, ldc, sa, sb, sc, batch,    \
                                                        flags);                                                   \
    }

#define TC_LAYOUTS(PREFIX, E, BM, BN, WM, WN, STAGES, MIN_BLOCKS)                                               \
    TC_KERNEL(PREFIX##_nn, E, BM, BN, WM, WN, STAGES, MIN_BLOCKS, true, false)                                   \
    TC_KERNEL(PREFIX##_nt, E, BM, BN, WM, WN, STAGES, MIN_BLOCKS, true, true)                                    \
    TC_KERNEL(PREFIX##_tn, E, BM, BN, WM, WN, STAGES, MIN_BLOCKS, false, false)                                  \
    TC_KERNEL(PREFIX##_tt, E, BM, BN, WM, WN, STAGES, MIN_BLOCKS, false, true)

// Shared memory a block: tf32 128×128 3 × 32 KiB; 64×64 3 × 16 KiB.
TC_LAYOUTS(tf32_gemm_128x128, Tf32, 128, 128, 2, 4, 3, 2)
TC_LAYOUTS(tf32_gemm_64x64, Tf32, 64, 64, 2, 2, 3, 4)
// bf16 128×256 4 × 24 KiB; 128×128 4 × 16 KiB; 64×64 4 × 8 KiB.
TC_LAYOUTS(bf16_gemm_128x256, Bf16, 128, 256, 2, 4, 4, 1)
TC_LAYOUTS(bf16_gemm_128x128, Bf16, 128, 128, 2, 2, 4, 2)
TC_LAYOUTS(bf16_gemm_64x64, Bf16, 64, 64, 2, 2, 4, 4)

// The bf16-operand path of float32 matmuls (`Precision::Bf16`): item b, row r, column c of a
// float32 matrix read through strides (rs, cs, bs) → out[(b·rows + r)·cols + c] in bf16, rounded
// to nearest even. n = items · rows · cols.
extern "C" __global__ void to_bf16_compact(const float* x, u64 rs, u64 cs, u64 bs, u64 rows, u64 cols, u64 n,
                                           bf16* out) {
    GRID_STRIDE(i, n) {
        const u64 c = i % cols, r = (i / cols) % rows, b = i / (cols * rows);
        out[i] = f32_to_bf16(x[b * bs + r * rs + c * cs]);
    }
}

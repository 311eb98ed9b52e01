// Conformance micro-kernels: single PTX instructions over arrays of raw bit patterns, writing raw
// result bits. tests/cuda_parity_conformance.rs runs them on the PTX emulator and, where one is
// present, on a GPU, and checks both against the PTX ISA's definition of each instruction. Each
// instruction is written as inline PTX so that exactly that instruction (and rounding modifier)
// is executed; `op` picks the instruction, so one launch covers one variant over all cases.
#include "common.cuh"

#define GRID_LOOP(i, n) for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

// One f32 instruction under each of the four IEEE rounding modifiers: `mode` 0..3 = rn, rz, rm, rp.
#define ROUNDED2(OPC, d, x, y)                                                           \
    switch (mode) {                                                                      \
        case 0: asm(OPC ".rn.f32 %0, %1, %2;" : "=f"(d) : "f"(x), "f"(y)); break;        \
        case 1: asm(OPC ".rz.f32 %0, %1, %2;" : "=f"(d) : "f"(x), "f"(y)); break;        \
        case 2: asm(OPC ".rm.f32 %0, %1, %2;" : "=f"(d) : "f"(x), "f"(y)); break;        \
        default: asm(OPC ".rp.f32 %0, %1, %2;" : "=f"(d) : "f"(x), "f"(y)); break;       \
    }
#define ROUNDED1(OPC, d, x)                                                              \
    switch (mode) {                                                                      \
        case 0: asm(OPC ".rn.f32 %0, %1;" : "=f"(d) : "f"(x)); break;                    \
        case 1: asm(OPC ".rz.f32 %0, %1;" : "=f"(d) : "f"(x)); break;                    \
        case 2: asm(OPC ".rm.f32 %0, %1;" : "=f"(d) : "f"(x)); break;                    \
        default: asm(OPC ".rp.f32 %0, %1;" : "=f"(d) : "f"(x)); break;                   \
    }

// IEEE f32 arithmetic with an explicit rounding modifier. op = 4·kind + mode; kind: 0 add, 1 sub,
// 2 mul, 3 fma (a·b + c), 4 div, 5 sqrt (of a), 6 rcp (of a).
extern "C" __global__ void conf_f32_rounded(const u32* a, const u32* b, const u32* c, u32* out, u32 n, u32 op) {
    const u32 kind = op >> 2, mode = op & 3;
    GRID_LOOP(i, n) {
        const float x = __uint_as_float(a[i]), y = __uint_as_float(b[i]), z = __uint_as_float(c[i]);
        float d = 0.0f;
        switch (kind) {
            case 0: ROUNDED2("add", d, x, y); break;
            case 1: ROUNDED2("sub", d, x, y); break;
            case 2: ROUNDED2("mul", d, x, y); break;
            case 3:
                switch (mode) {
                    case 0: asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(d) : "f"(x), "f"(y), "f"(z)); break;
                    case 1: asm("fma.rz.f32 %0, %1, %2, %3;" : "=f"(d) : "f"(x), "f"(y), "f"(z)); break;
                    case 2: asm("fma.rm.f32 %0, %1, %2, %3;" : "=f"(d) : "f"(x), "f"(y), "f"(z)); break;
                    default: asm("fma.rp.f32 %0, %1, %2, %3;" : "=f"(d) : "f"(x), "f"(y), "f"(z)); break;
                }
                break;
            case 4: ROUNDED2("div", d, x, y); break;
            case 5: ROUNDED1("sqrt", d, x); break;
            default: ROUNDED1("rcp", d, x); break;
        }
        out[i] = __float_as_uint(d);
    }
}

// Approximate f32 instructions: op 0 ex2.approx.ftz.f32, 1 rcp.approx.ftz.f32.
extern "C" __global__ void conf_f32_approx(const u32* a, u32* out, u32 n, u32 op) {
    GRID_LOOP(i, n) {
        const float x = __uint_as_float(a[i]);
        float d;
        if (op == 0) asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(d) : "f"(x));
        else asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(d) : "f"(x));
        out[i] = __float_as_uint(d);
    }
}

// Conversions from f32, result bits zero-extended to 32: op 0 cvt.rn.bf16.f32, 1 cvt.rna.tf32.f32,
// 2..5 cvt.{rni,rzi,rmi,rpi}.s32.f32, 6..9 cvt.{rni,rzi,rmi,rpi}.u32.f32, 10 cvt.sat.f32.f32.
extern "C" __global__ void conf_cvt_f32(const u32* a, u32* out, u32 n, u32 op) {
    GRID_LOOP(i, n) {
        const float x = __uint_as_float(a[i]);
        u32 d;
        unsigned short h;
        float f;
        switch (op) {
            case 0: asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x)); d = h; break;
            case 1: asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 2: asm("cvt.rni.s32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 3: asm("cvt.rzi.s32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 4: asm("cvt.rmi.s32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 5: asm("cvt.rpi.s32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 6: asm("cvt.rni.u32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 7: asm("cvt.rzi.u32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 8: asm("cvt.rmi.u32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            case 9: asm("cvt.rpi.u32.f32 %0, %1;" : "=r"(d) : "f"(x)); break;
            default: asm("cvt.sat.f32.f32 %0, %1;" : "=f"(f) : "f"(x)); d = __float_as_uint(f); break;
        }
        out[i] = d;
    }
}

// Conversions between f64 and f32 over 64-bit patterns: op 0..3 cvt.{rn,rz,rm,rp}.f32.f64 (the
// f32 bits zero-extended), 4 cvt.f64.f32 (of the low 32 bits of the input).
extern "C" __global__ void conf_cvt_f64(const u64* a, u64* out, u32 n, u32 op) {
    GRID_LOOP(i, n) {
        const double x = __longlong_as_double((long long)a[i]);
        float f;
        double g;
        u64 d;
        switch (op) {
            case 0: asm("cvt.rn.f32.f64 %0, %1;" : "=f"(f) : "d"(x)); d = __float_as_uint(f); break;
            case 1: asm("cvt.rz.f32.f64 %0, %1;" : "=f"(f) : "d"(x)); d = __float_as_uint(f); break;
            case 2: asm("cvt.rm.f32.f64 %0, %1;" : "=f"(f) : "d"(x)); d = __float_as_uint(f); break;
            case 3: asm("cvt.rp.f32.f64 %0, %1;" : "=f"(f) : "d"(x)); d = __float_as_uint(f); break;
            default:
                asm("cvt.f64.f32 %0, %1;" : "=d"(g) : "f"(__uint_as_float((u32)a[i])));
                d = (u64)__double_as_longlong(g);
                break;
        }
        out[i] = d;
    }
}

// Comparisons: op 0 min.f32, 1 max.f32, 2 copysign.f32 (d = b with a's sign), 3 setp.{cmp}.f32 for
// every comparison, bit k of the result set when comparison k holds; k: eq ne lt le gt ge equ neu
// ltu leu gtu geu num nan.
#define SETP_BIT(CMP, k)                                                                             \
    {                                                                                                \
        u32 t;                                                                                       \
        asm("{ .reg .pred p; setp." CMP ".f32 p, %1, %2; selp.u32 %0, 1, 0, p; }" : "=r"(t) : "f"(x), "f"(y)); \
        d |= t << k;                                                                                 \
    }
extern "C" __global__ void conf_compare(const u32* a, const u32* b, u32* out, u32 n, u32 op) {
    GRID_LOOP(i, n) {
        const float x = __uint_as_float(a[i]), y = __uint_as_float(b[i]);
        float f;
        u32 d = 0;
        switch (op) {
            case 0: asm("min.f32 %0, %1, %2;" : "=f"(f) : "f"(x), "f"(y)); d = __float_as_uint(f); break;
            case 1: asm("max.f32 %0, %1, %2;" : "=f"(f) : "f"(x), "f"(y)); d = __float_as_uint(f); break;
            case 2: asm("copysign.f32 %0, %1, %2;" : "=f"(f) : "f"(x), "f"(y)); d = __float_as_uint(f); break;
            default:
                SETP_BIT("eq", 0) SETP_BIT("ne", 1) SETP_BIT("lt", 2) SETP_BIT("le", 3) SETP_BIT("gt", 4)
                SETP_BIT("ge", 5) SETP_BIT("equ", 6) SETP_BIT("neu", 7) SETP_BIT("ltu", 8) SETP_BIT("leu", 9)
                SETP_BIT("gtu", 10) SETP_BIT("geu", 11) SETP_BIT("num", 12) SETP_BIT("nan", 13)
                break;
        }
        out[i] = d;
    }
}

// Integer and bit instructions: op 0 prmt.b32 d, a, b, c; 1 bfi.b32 d, a, b, c (pos), e (len);
// 2 div.u32, 3 rem.u32, 4 div.s32, 5 rem.s32 (a by b).
extern "C" __global__ void conf_int(const u32* a, const u32* b, const u32* c, const u32* e, u32* out, u32 n, u32 op) {
    GRID_LOOP(i, n) {
        const u32 x = a[i], y = b[i], z = c[i], w = e[i];
        u32 d;
        switch (op) {
            case 0: asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(x), "r"(y), "r"(z)); break;
            case 1: asm("bfi.b32 %0, %1, %2, %3, %4;" : "=r"(d) : "r"(x), "r"(y), "r"(z), "r"(w)); break;
            case 2: asm("div.u32 %0, %1, %2;" : "=r"(d) : "r"(x), "r"(y)); break;
            case 3: asm("rem.u32 %0, %1, %2;" : "=r"(d) : "r"(x), "r"(y)); break;
            case 4: asm("div.s32 %0, %1, %2;" : "=r"(d) : "r"(x), "r"(y)); break;
            default: asm("rem.s32 %0, %1, %2;" : "=r"(d) : "r"(x), "r"(y)); break;
        }
        out[i] = d;
    }
}

// One warp (launch with 32 threads). Lane l shuffles src[l] with b = lane_b[l] and the launch's c:
// op 0 shfl.sync.bfly, 1 .up, 2 .down, 3 .idx, all lanes in the member mask. Writes the value to
// out[l] and the predicate to out[32 + l].
extern "C" __global__ void conf_shfl(const u32* src, const u32* lane_b, u32 c, u32* out, u32 op) {
    const u32 l = threadIdx.x, x = src[l], bb = lane_b[l];
    u32 d, p;
#define SHFL(MODE)                                                                                                  \
    asm volatile("{ .reg .pred q; shfl.sync." MODE ".b32 %0|q, %2, %3, %4, 0xffffffff; selp.u32 %1, 1, 0, q; }" \
                 : "=r"(d), "=r"(p)                                                                                 \
                 : "r"(x), "r"(bb), "r"(c))
    switch (op) {
        case 0: SHFL("bfly"); break;
        case 1: SHFL("up"); break;
        case 2: SHFL("down"); break;
        default: SHFL("idx"); break;
    }
#undef SHFL
    out[l] = d;
    out[32 + l] = p;
}

// One warp: vote.sync.any.pred over pred[l] != 0, all lanes in the member mask; lane l writes 0/1.
extern "C" __global__ void conf_vote_any(const u32* pred, u32* out) {
    const u32 l = threadIdx.x;
    u32 d;
    asm volatile("{ .reg .pred p, q; setp.ne.u32 p, %1, 0; vote.sync.any.pred q, p, 0xffffffff; selp.u32 %0, 1, 0, q; }"
                 : "=r"(d)
                 : "r"(pred[l]));
    out[l] = d;
}

// One warp: shared memory holds 64 rows of 8 b16 (16 bytes each) copied from `tile`; lane l gives
// the address of row rows[l] to ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 (trans != 0:
// .trans), and writes its four result registers to out[4l .. 4l+3].
extern "C" __global__ void conf_ldmatrix(const u32* tile, const u32* rows, u32* out, u32 trans) {
    __shared__ __align__(16) u32 sm[64 * 4];
    const u32 l = threadIdx.x;
    for (u32 i = l; i < 64 * 4; i += 32) sm[i] = tile[i];
    __syncthreads();
    u32 addr;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(addr) : "l"(sm + rows[l] * 4));
    u32 r0, r1, r2, r3;
    if (trans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                     : "r"(addr));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                     : "r"(addr));
    out[4 * l] = r0;
    out[4 * l + 1] = r1;
    out[4 * l + 2] = r2;
    out[4 * l + 3] = r3;
}

// One warp: lane l loads its fragment registers a[4l..], b[2l..], c[4l..] and writes d[4l..] of
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (op 0) or m16n8k8.row.col.f32.tf32.tf32.f32
// (op 1). Both take four A, two B and four C/D registers per lane.
extern "C" __global__ void conf_mma(const u32* a, const u32* b, const u32* c, u32* d, u32 op) {
    const u32 l = threadIdx.x;
    const u32 a0 = a[4 * l], a1 = a[4 * l + 1], a2 = a[4 * l + 2], a3 = a[4 * l + 3];
    const u32 b0 = b[2 * l], b1 = b[2 * l + 1];
    const float c0 = __uint_as_float(c[4 * l]), c1 = __uint_as_float(c[4 * l + 1]);
    const float c2 = __uint_as_float(c[4 * l + 2]), c3 = __uint_as_float(c[4 * l + 3]);
    float d0, d1, d2, d3;
    if (op == 0)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%10, %11, %12, %13};"
            : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(c2), "f"(c3));
    else
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%10, %11, %12, %13};"
            : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c0), "f"(c1), "f"(c2), "f"(c3));
    d[4 * l] = __float_as_uint(d0);
    d[4 * l + 1] = __float_as_uint(d1);
    d[4 * l + 2] = __float_as_uint(d2);
    d[4 * l + 3] = __float_as_uint(d3);
}

// One warp: shared memory (96 chunks of 16 bytes) is first filled with 0xdeadbeef; lane l then
// issues three cp.async.cg.shared.global of 16 bytes from src chunk 3l + k into shared chunk 3l + k
// with src-size sizes[k] (the rest of the chunk zero-filled), commits, waits for all groups, and
// after bar.sync the warp copies shared memory to out.
extern "C" __global__ void conf_cp_async(const u32* src, const u32* sizes, u32* out) {
    __shared__ __align__(16) u32 sm[96 * 4];
    const u32 l = threadIdx.x;
    for (u32 i = l; i < 96 * 4; i += 32) sm[i] = 0xdeadbeefu;
    __syncthreads();
    for (u32 k = 0; k < 3; k++) {
        const u32 chunk = 3 * l + k;
        u32 dst;
        asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(dst) : "l"(sm + 4 * chunk));
        // The source operand is a .global address: convert the generic pointer explicitly.
        asm volatile("{ .reg .u64 g; cvta.to.global.u64 g, %1; cp.async.cg.shared.global [%0], [g], 16, %2; }" ::"r"(dst),
                     "l"(src + 4 * chunk), "r"(sizes[k])
                     : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    __syncthreads();
    for (u32 i = l; i < 96 * 4; i += 32) out[i] = sm[i];
}

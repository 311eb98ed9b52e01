// Shared device helpers. No CUDA headers: NVRTC ships none, and its built-ins (expf, erff,
// __shfl_xor_sync, atomicAdd, …) need none.
#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;
// bf16 as raw bits; conversions through inline PTX.
typedef unsigned short bf16;

// The most task gradients one multi-task reduction or surgery takes (src/train/task_grads.rs).
#define MAX_TASKS 8

__device__ __forceinline__ float bf16_to_f32(bf16 x) { return __uint_as_float(((u32)x) << 16); }

__device__ __forceinline__ bf16 f32_to_bf16(float x) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}

__host__ __device__ __forceinline__ u64 ceil_div(u64 a, u64 b) { return (a + b - 1) / b; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats of shared memory.
// Must be reached by every thread of the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : __int_as_float(0xff800000);  // -inf
    return warp_max(v);
}

// The counter-based dropout draw of src/rng.rs (`hash_uniform`), bit for bit.
__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// src/rng.rs's hash_bits: the 53 bits k of element `index`'s draw (k / 2^53) under stream key `key`.
__device__ __forceinline__ u64 hash_bits(u64 key, u64 index) { return mix64(key + index * 0x9e3779b97f4a7c15ull) >> 11; }

__device__ __forceinline__ double hash_uniform(u64 seed, u64 stream, u64 index) {
    u64 key = mix64(seed ^ mix64(stream + 0x9e3779b97f4a7c15ull));
    return (double)hash_bits(key, index) * (1.0 / 9007199254740992.0);
}

// The layout-free dropout indices of src/rng.rs (token_key, row_index, attention_index): a
// token's key is (sequence b, position t), the same in a padded (B, T, C) and a packed (N, C) batch.
__device__ __forceinline__ u64 token_key(u64 b, u64 t) { return (b << 16) | t; }
__device__ __forceinline__ u64 row_index(u64 key, u64 width, u64 col) { return key * width + col; }
__device__ __forceinline__ u64 attention_index(u64 b, u64 h, u64 i, u64 j, u64 nh) {
    return ((token_key(b, i) * nh + h) << 16) | j;
}

// A grid-stride loop over n elements.
#define GRID_STRIDE(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

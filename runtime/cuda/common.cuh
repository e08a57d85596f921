// ggufkit's common device header. No toolkit headers: NVRTC compiles it with no include paths,
// and g++ compiles it against runtime/cuda/emu/cuda_emu.h (GGUFKIT_EMU defined).
// runtime/cuda/module.py prepends this text to every .cu source, so kernels just use it.
#ifndef GGUFKIT_COMMON_CUH
#define GGUFKIT_COMMON_CUH

typedef unsigned short f16;   // IEEE binary16 bits (storage only; math is in f32)
typedef unsigned short bf16;  // bfloat16 bits
typedef signed char i8;
typedef unsigned char u8;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu
#define F32_INF __int_as_float(0x7f800000)
#define F32_NEG_INF __int_as_float(0xff800000)

// ---------------------------------------------------------------- fp16 / bf16

// f32_to_f16 rounds to nearest even, as numpy's astype(float16)
#ifdef GGUFKIT_EMU
static __device__ __forceinline__ float f16_to_f32(f16 h) { return ::emu::half_to_float(h); }
static __device__ __forceinline__ f16 f32_to_f16(float f) { return ::emu::float_to_half_rn(f); }
#else
static __device__ __forceinline__ float f16_to_f32(f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
static __device__ __forceinline__ f16 f32_to_f16(float f) {
    f16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

static __device__ __forceinline__ float bf16_to_f32(bf16 b) {
    return __uint_as_float((unsigned)b << 16);
}

// round to nearest even; NaN stays NaN (quiet bit set), as ggml's GGML_FP32_TO_BF16
static __device__ __forceinline__ bf16 f32_to_bf16(float f) {
#if !defined(GGUFKIT_EMU) && __CUDA_ARCH__ >= 800
    bf16 b;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
    return b;
#else
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 64u);
    return (bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}

// ---------------------------------------------------------------- warp / block reductions
// All lanes of the warp must call these (full mask). Results are returned to every lane.

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024; 1-D blocks).
// scratch: __shared__ float[32]. Every thread gets the total. Contains two __syncthreads.
static __device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// block_sum in double (scratch: __shared__ double[32]); two __syncthreads.
static __device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : F32_NEG_INF;
    return warp_max(v);
}

#endif  // GGUFKIT_COMMON_CUH

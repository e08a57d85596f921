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

// ---------------------------------------------------------------- int8 activation blocks
// The 36-byte blocks of 32 values the int8 matvec (quants.cu's mmvq_*) reads: ggml's
// block_q8_1 {d:2 (f16) s:2 (f16) qs:32}, or the CPU-exact {d:4 (f32) qs:32}. One warp
// quantizes one block (lane j owns value j); quants.cu's quantize kernels and the fused
// producers of elementwise.cu / attention.cu (norm, GLU, attention output) share these, so a
// fused kernel writes the same bytes as the separate quantize launch.
#define QK_ACT_BYTES 36
#define ACT_NONE 0      // activation formats (runtime.cuda.qmatmul.ACT_*)
#define ACT_Q8_1 1      // ggml-cuda's q8_1 per 32
#define ACT_Q8_0_CPU 2  // ggml-cpu's Q8_0 per 32 (AVX rounding), f32 d
#define ACT_Q8_K_CPU 3  // ggml-cpu's Q8_K per 256, f32 d in each of its 8 blocks

// As quantize_row_q8_1_ref: d = amax/127, q = roundf(x * (1/d)), s = d * sum(q) (fp16 both).
static __device__ __forceinline__ void act_q8_1_warp(float v, int lane, unsigned char* b) {
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(FULL_MASK, amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);
    int sum = q;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o);
    b[4 + lane] = (unsigned char)(signed char)q;
    if (lane == 0) {
        *(unsigned short*)b = f32_to_f16(d);
        *(unsigned short*)(b + 2) = f32_to_f16((float)sum * d);
    }
}

// ggml-cpu's Q8_0 on x86 (AVX): d = fp16(amax/127), q = rint(x * (127/amax)).
static __device__ __forceinline__ void act_q8_0_cpu_warp(float v, int lane, unsigned char* b) {
    float amax = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(FULL_MASK, amax, o));
    const float iscale = amax != 0.0f ? 127.0f / amax : 0.0f;
    b[4 + lane] = (unsigned char)(signed char)__float2int_rn(v * iscale);
    if (lane == 0) *(float*)b = f16_to_f32(f32_to_f16(amax / 127.0f));
}

// ggml-cpu's Q8_K: 256 values xs[32 j + lane] (j < 8) -> 8 blocks b + 36 j; m = the first value
// of largest |x|, iscale = -127/m, q = min(127, rint(iscale * x)), d = 1/iscale.
static __device__ __forceinline__ void act_q8_k_cpu_warp(const float* xs, int lane, unsigned char* b) {
    float amax = -1.0f;
    int imax = 0;
    for (int j = 0; j < 8; ++j) {                          // increasing index: the first max wins
        const float a = fabsf(xs[j]);
        if (a > amax) { amax = a; imax = 32 * j + lane; }
    }
    float mv = 0.0f;
    for (int j = 0; j < 8; ++j)
        if (imax == 32 * j + lane) mv = xs[j];
    for (int o = 16; o > 0; o >>= 1) {
        const float a = __shfl_xor_sync(FULL_MASK, amax, o);
        const int i = __shfl_xor_sync(FULL_MASK, imax, o);
        const float m2 = __shfl_xor_sync(FULL_MASK, mv, o);
        if (a > amax || (a == amax && i < imax)) { amax = a; imax = i; mv = m2; }
    }
    const float iscale = mv != 0.0f ? -127.0f / mv : 0.0f;
    const float d = mv != 0.0f ? 1.0f / iscale : 0.0f;
    for (int j = 0; j < 8; ++j) {
        unsigned char* bj = b + j * QK_ACT_BYTES;
        bj[4 + lane] = (unsigned char)(signed char)min(127, __float2int_rn(iscale * xs[j]));
        if (lane == 0) *(float*)bj = d;
    }
}

// One warp: values v[j] = x[32 j + lane] of one unit (mode Q8_1 / Q8_0_CPU: j = 0 only, one
// block; Q8_K_CPU: j < 8, eight blocks) -> the unit's blocks at b.
static __device__ __forceinline__ void act_quantize_warp(int mode, const float* v, int lane, unsigned char* b) {
    if (mode == ACT_Q8_1) act_q8_1_warp(v[0], lane, b);
    else if (mode == ACT_Q8_0_CPU) act_q8_0_cpu_warp(v[0], lane, b);
    else if (mode == ACT_Q8_K_CPU) act_q8_k_cpu_warp(v, lane, b);
}

// values per unit of an activation format (32, or 256 for Q8_K)
static __device__ __forceinline__ int act_unit(int mode) { return mode == ACT_Q8_K_CPU ? 256 : 32; }

#endif  // GGUFKIT_COMMON_CUH

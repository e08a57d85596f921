// Elementwise and per-row kernels: rms_norm, rope, swiglu, geglu, add, scale, softcap, KV write.
// Shapes in math order, rows contiguous. Numpy references: runtime/reference.py (same names).
// Where ggml's CPU code fixes the order of float operations (rope's theta recurrence, the fp16
// GELU table) the kernels follow it with __f*_rn intrinsics, so no FMA contraction changes it.

#define ELEM_THREADS 256
#define ROPE_MAX_PAIRS 256   // head_dim <= 512

// y[r, :] = x[r, :] * (1 / sqrt(mean(x[r, :]^2) + eps)) * w   (w may be null)
// x, y: f32 [n_rows, n]; w: f32 [n]. grid (n_rows), block (a multiple of 32, <= ELEM_THREADS)
// As ggml-cpu (and the CPU backend): float squares summed in double (ggml_float), the mean
// rounded once to float, 1/sqrtf and both products in float (no FMA). The double sum of float
// squares is exact or within an ulp of double in any order, so the result is the CPU's bit for
// bit (a float sum differs in the last bits, and the int8/f16 rounding of the next matmul's
// input turns such bits into different activations: docs/CUDA.md "Agreement with the CPU").
// The double work is n adds per row: negligible even at consumer cards' FP64 rate.
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
rms_norm_f32(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int n, float eps) {
    __shared__ double scratch[32];
    const long long row = (long long)blockIdx.x * n;
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = x[row + i];
        s += (double)__fmul_rn(v, v);
    }
    s = block_sum_f64(s, scratch);
    const float mean = (float)(s / (double)n);
    const float scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = __fmul_rn(x[row + i], scale);
        y[row + i] = w ? __fmul_rn(v, w[i]) : v;
    }
}

// cos and sin of each rotated pair's angle at position p into shared memory (ends with a barrier):
// theta_i = p * theta_scale^i as a running float product (ggml_rope_cache_init),
// t = freq_scale * (theta_i / ff_i), cos/sin in double rounded to float.
static __device__ __forceinline__ void rope_table(float* cs, float* sn, int p, int half, const float* freq_factors,
                                                 float theta_scale, float freq_scale) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = (float)p;
        for (int j = 0; j < i; j++) theta = __fmul_rn(theta, theta_scale);
        const float ff = freq_factors ? freq_factors[i] : 1.0f;
        const float t = __fmul_rn(freq_scale, __fdiv_rn(theta, ff));
        cs[i] = (float)cos((double)t);
        sn[i] = (float)sin((double)t);
    }
    __syncthreads();
}

// ggml RoPE (ext_factor 0), one block per token, all heads.
// x, y: f32 [n_tok, n_head, head_dim] (y may be x: neither is __restrict__, no ld.global.nc);
// pos: i32 [n_tok]; freq_factors: f32 [n_rot/2] or null.
// theta_i = pos * theta_scale^i as a running float product (ggml_rope_cache_init), theta_scale =
// base^(-2/n_rot) computed by the caller; t = freq_scale * (theta_i / ff_i); cos/sin in double.
// neox = 0: rotate (2i, 2i+1); neox = 1: rotate (i, i + n_rot/2). Dims >= n_rot are copied.
// grid (n_tok), block (ELEM_THREADS)
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
rope_f32(const float* x, float* y, const int* __restrict__ pos,
         const float* __restrict__ freq_factors, int n_head, int head_dim, int n_rot, float theta_scale,
         float freq_scale, int neox) {
    __shared__ float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
    const int half = n_rot / 2;
    const long long base = (long long)blockIdx.x * n_head * head_dim;
    rope_table(cs, sn, pos[blockIdx.x], half, freq_factors, theta_scale, freq_scale);
    const int n_pairs = n_head * half;
    for (int k = threadIdx.x; k < n_pairs; k += blockDim.x) {
        const int h = k / half, i = k - h * half;
        const long long i0 = base + (long long)h * head_dim + (neox ? i : 2 * i);
        const long long i1 = i0 + (neox ? half : 1);
        const float x0 = x[i0], x1 = x[i1], c = cs[i], s = sn[i];
        y[i0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        y[i1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
    if (y != x) {
        const int rest = head_dim - n_rot;
        for (int k = threadIdx.x; k < n_head * rest; k += blockDim.x) {
            const int h = k / rest;
            const long long i = base + (long long)h * head_dim + n_rot + (k - h * rest);
            y[i] = x[i];
        }
    }
}

// silu(v) = v / (1 + exp(-v)) in float (expf), or in double rounded once to float
static __device__ __forceinline__ float silu_f32(float v) { return v / (1.0f + expf(-v)); }
static __device__ __forceinline__ float silu_f64(float g) {
    const double v = g;
    return (float)(v / (1.0 + exp(-v)));
}

// y = silu(g) * u = g / (1 + exp(-g)) * u. g, u, y: f32 [n]. grid (ceil(n / ELEM_THREADS))
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
swiglu_f32(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = __fmul_rn(silu_f32(g[i]), u[i]);
}

// The same with silu in double, rounded once to float, then * u in float: runtime.reference.
// swiglu and the CPU backend's numbers (the CUDA backend's default numerics; the float
// version's expf differs from them in the last bit of about one value in ten).
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
swiglu_f64(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = __fmul_rn(silu_f64(g[i]), u[i]);
}

// ggml's GELU as ggml-cpu computes it (GGML_GELU_FP16): x <= -10: 0; x >= 10: x; otherwise
// fp16(gelu_tanh(fp32(fp16(x)))) with 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))), tanh in
// double rounded to float as the CPU backend's table (runtime.reference.gelu_f32): bit-equal to it.
static __device__ __forceinline__ float gelu_ggml(float x) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    const float xh = f16_to_f32(f32_to_f16(x));
    const float inner = __fmul_rn(__fmul_rn(0.79788456080286535587989211986876f, xh),
                                  __fadd_rn(1.0f, __fmul_rn(__fmul_rn(0.044715f, xh), xh)));
    const float v = __fmul_rn(__fmul_rn(0.5f, xh), __fadd_rn(1.0f, (float)tanh((double)inner)));
    return f16_to_f32(f32_to_f16(v));
}

// y = gelu(g) * u. grid (ceil(n / ELEM_THREADS))
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
geglu_f32(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = __fmul_rn(gelu_ggml(g[i]), u[i]);
}

// y = a + b (y may alias a or b). grid (ceil(n / ELEM_THREADS))
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
add_f32(const float* a, const float* b, float* y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a[i] + b[i];
}

// y = x * s (y may alias x). grid (ceil(n / ELEM_THREADS))
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
scale_f32(const float* x, float* y, float s, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __fmul_rn(x[i], s);
}

// y = cap * tanh(x * inv_cap) (y may alias x), as the CPU backend: x * inv_cap in float, tanh in
// double rounded to float, times cap in float (bit-equal to it). grid (ceil(n / ELEM_THREADS))
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
softcap_f32(const float* x, float* y, float cap, float inv_cap, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __fmul_rn((float)tanh((double)__fmul_rn(x[i], inv_cap)), cap);
}

// KV cache write: cache[pos[t], :] = fp16(src[t, :]) (round to nearest even).
// src: f32 [n_tok, row]; cache: f16 [n_ctx, row] (row = n_kv * head_dim); pos: i32 [n_tok].
// grid (ceil(row / threads), n_tok), block (threads <= ELEM_THREADS)
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
kv_write_f16(const float* __restrict__ src, f16* __restrict__ cache, const int* __restrict__ pos, int row) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= row) return;
    const int t = blockIdx.y;
    cache[(long long)pos[t] * row + j] = f32_to_f16(src[(long long)t * row + j]);
}

// ---------------------------------------------------------------- fused decode kernels
// Each does what a chain of the kernels above (and quants.cu's activation quantizers) does, in
// one launch, with the same float operations in the same order: bit-equal to the chain
// (tests/runtime/cuda/test_cuda_fused.py). ``qmode`` (common.cuh's ACT_*): also write the
// output as the int8 activation blocks the next matvec reads (ACT_NONE: don't).

// s = a + b (b may be null: s = a), y = rms_norm(s) * w (rms_norm_f32's numerics), yq = y as
// qmode blocks. a, b, s, y: f32 [n_rows, n]; s may be null (not written); w: f32 [n] or null;
// yq: u8 [n_rows, n / 32 * 36] (n a multiple of act_unit(qmode)). None of the arrays alias.
// grid (n_rows), block (a multiple of 32, <= ELEM_THREADS)
static __device__ __forceinline__ float arn_in(const float* a, const float* b, long long i) {
    return b ? a[i] + b[i] : a[i];
}

extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
add_rms_norm_q8(const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ w,
                float* __restrict__ s, float* __restrict__ y, unsigned char* __restrict__ yq, int n, float eps,
                int qmode) {
    __shared__ double scratch[32];
    const long long row = (long long)blockIdx.x * n;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = arn_in(a, b, row + i);
        if (s) s[row + i] = v;
        ss += (double)__fmul_rn(v, v);
    }
    ss = block_sum_f64(ss, scratch);
    const float mean = (float)(ss / (double)n);
    const float scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(mean, eps)));
    if (qmode == ACT_NONE) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float v = __fmul_rn(arn_in(a, b, row + i), scale);
            y[row + i] = w ? __fmul_rn(v, w[i]) : v;
        }
        return;
    }
    // a warp per unit of the activation format: lane l owns values l + 32 j (recomputed from
    // the inputs, so no thread reads what another wrote)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int unit = act_unit(qmode), n_units = n / unit;
    for (int u = warp; u < n_units; u += n_warps) {
        float v[8];
        for (int j = 0; j < unit / 32; ++j) {
            const int i = u * unit + 32 * j + lane;
            const float t = __fmul_rn(arn_in(a, b, row + i), scale);
            v[j] = w ? __fmul_rn(t, w[i]) : t;
            y[row + i] = v[j];
        }
        act_quantize_warp(qmode, v, lane, yq + (row / 32 + (long long)u * (unit / 32)) * QK_ACT_BYTES);
    }
}

// y = act(g) * u (kind 0: silu in float, as swiglu_f32; 1: silu in double, as swiglu_f64; 2:
// ggml's fp16-table gelu, as geglu_f32), yq = y as qmode blocks (ACT_NONE: only y).
// g, u, y: f32 [n_tok, n]; yq: u8 [n_tok, n / 32 * 36] (n a multiple of act_unit(qmode) unless
// qmode is ACT_NONE). grid (ceil(n / act_unit(qmode) / 4), n_tok), block (128): a warp per unit.
extern "C" __global__ void __launch_bounds__(128)
glu_q8(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ y, unsigned char* __restrict__ yq,
       int n, int kind, int qmode) {
    const int lane = threadIdx.x & 31;
    const int unit = qmode == ACT_NONE ? 32 : act_unit(qmode);
    const int iu = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (iu * unit >= n) return;                            // whole warps leave together
    const long long row = (long long)blockIdx.y * n;
    float v[8];
    for (int j = 0; j < unit / 32; ++j) {
        const int i = iu * unit + 32 * j + lane;
        if (i < n) {
            const float gv = g[row + i], uv = u[row + i];
            v[j] = kind == 2 ? __fmul_rn(gelu_ggml(gv), uv) : __fmul_rn(kind == 1 ? silu_f64(gv) : silu_f32(gv), uv);
            y[row + i] = v[j];
        }
    }
    if (qmode != ACT_NONE) act_quantize_warp(qmode, v, lane, yq + (row / 32 + (long long)iu * (unit / 32)) * QK_ACT_BYTES);
}

// RoPE on q and k, q scaled, k and v written to the f16 KV cache: rope_f32 (q), scale_f32
// (q_scale), rope_f32 (k), kv_write_f16 (k, v) in one launch, the same floats.
// q: f32 [n_tok, n_head, hd]; k, v: f32 [n_tok, n_kv, hd]; qo: f32 [n_tok, n_head, hd];
// k_cache, v_cache: f16 [n_ctx, n_kv, hd]; pos: i32 [n_tok] (each < n_ctx); freq_factors as rope_f32.
// grid (n_tok), block (ELEM_THREADS)
extern "C" __global__ void __launch_bounds__(ELEM_THREADS)
rope_kv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
            float* __restrict__ qo, f16* __restrict__ k_cache, f16* __restrict__ v_cache, const int* __restrict__ pos,
            const float* __restrict__ freq_factors, int n_head, int n_kv, int head_dim, int n_rot, float theta_scale,
            float freq_scale, int neox, float q_scale) {
    __shared__ float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
    const int t = blockIdx.x, half = n_rot / 2, p = pos[t];
    rope_table(cs, sn, p, half, freq_factors, theta_scale, freq_scale);
    // q: every dim of every head (rotated pairs, then the rest copied), times q_scale
    const long long qb = (long long)t * n_head * head_dim;
    for (int e = threadIdx.x; e < n_head * head_dim; e += blockDim.x) {
        const int h = e / head_dim, d = e - h * head_dim;
        const long long i = qb + (long long)h * head_dim;
        float r;
        if (d < n_rot) {
            const int pi = neox ? (d < half ? d : d - half) : d >> 1;           // the pair
            const bool first = neox ? d < half : (d & 1) == 0;
            const int d0 = neox ? pi : 2 * pi, d1 = d0 + (neox ? half : 1);
            const float x0 = q[i + d0], x1 = q[i + d1], c = cs[pi], sv = sn[pi];
            r = first ? __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sv)) : __fadd_rn(__fmul_rn(x0, sv), __fmul_rn(x1, c));
        } else {
            r = q[i + d];
        }
        qo[i + d] = __fmul_rn(r, q_scale);
    }
    // k rotated and v as they are, to the cache row of position p
    const long long kb = (long long)t * n_kv * head_dim, cb = (long long)p * n_kv * head_dim;
    for (int e = threadIdx.x; e < n_kv * head_dim; e += blockDim.x) {
        const int h = e / head_dim, d = e - h * head_dim;
        const long long i = kb + (long long)h * head_dim;
        float r;
        if (d < n_rot) {
            const int pi = neox ? (d < half ? d : d - half) : d >> 1;
            const bool first = neox ? d < half : (d & 1) == 0;
            const int d0 = neox ? pi : 2 * pi, d1 = d0 + (neox ? half : 1);
            const float x0 = k[i + d0], x1 = k[i + d1], c = cs[pi], sv = sn[pi];
            r = first ? __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sv)) : __fadd_rn(__fmul_rn(x0, sv), __fmul_rn(x1, c));
        } else {
            r = k[i + d];
        }
        k_cache[cb + e] = f32_to_f16(r);
        v_cache[cb + e] = f32_to_f16(v[kb + e]);
    }
}

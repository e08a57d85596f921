// Causal GQA attention over an f16 KV cache, with sliding window and softcap.
// Numpy reference: runtime/reference.py attention().
//
//   q:      f32 [n_tok, n_head, hd]          query t sits at position n_past + t
//   k, v:   f16 [n_ctx, n_kv, hd]            one layer's cache (n_kv heads of this layer)
//   out:    f32 [n_tok, n_head, hd]
// Query head h reads kv head h / (n_head / n_kv). Query at position qp sees key p when
// p <= qp and (window == 0 or qp - p < window). score = (q . k) * scale, then
// softcap * tanh(score / softcap) when softcap > 0; softmax over the keys it sees.
//
// Decode (few tokens, long cache): flash-decoding. attn_decode_partial splits each query's
// keys into chunks of split_keys, one block per (query row, chunk), and writes the chunk's max
// score m, sum of exp l and unnormalised output o; attn_decode_combine merges the chunks. The
// first query's position comes from device memory (pos[0] = n_past) and a grid may have more
// chunks than the keys need (their blocks exit at once), so one launch configuration, sized for
// the whole context, serves every step of a captured CUDA graph.
// Prefill: attn_prefill, one warp per query row, ATT_ROWS rows of one head per block, key/value
// tiles of ATT_TILE keys staged in shared memory, online softmax one tile at a time.
// Every kernel comes twice: float accumulators, and *_f64 with double ones (see att_exp below).

#define ATT_HD_MAX 256          // head_dim <= 256
#define ATT_DPL (ATT_HD_MAX / 32)  // head dims per lane
#define ATT_THREADS 128         // 4 warps
#define ATT_SPLIT_MAX 512       // keys per decode chunk (scores kept in shared memory)
#define ATT_ROWS 4              // prefill: query rows (warps) per block
#define ATT_TILE 32             // prefill: keys per shared-memory tile

struct AttnRow {
    int t, h, kvh, qpos, lo;    // token, head, kv head, query position, first visible key
};

static __device__ __forceinline__ AttnRow attn_row(int row, int n_head, int n_kv, int n_past, int window) {
    AttnRow r;
    r.t = row / n_head;
    r.h = row - r.t * n_head;
    r.kvh = r.h / (n_head / n_kv);
    r.qpos = n_past + r.t;
    r.lo = window > 0 ? max(0, r.qpos - window + 1) : 0;
    return r;
}

// Accumulator type T: float (the fast kernels, ggml-cuda's numerics) or double (the *_f64
// kernels: scores, softmax and p·V in double, one rounding to float at the end). In double the
// result is the exact attention rounded to float up to ~2^-45, whatever the summation order,
// so it equals the CPU backend's (which computes it in float64 too) bit for bit but for
// about one element in a million; the float kernels differ from it in most elements by a few
// ulps, and the next matmul's int8/f16 activation rounding turns those into different
// activations (docs/CUDA.md, "Agreement with the CPU backend").
static __device__ __forceinline__ float att_exp(float x) { return expf(x); }
static __device__ __forceinline__ double att_exp(double x) { return exp(x); }
static __device__ __forceinline__ float att_tanh(float x) { return tanhf(x); }
static __device__ __forceinline__ double att_tanh(double x) { return tanh(x); }
static __device__ __forceinline__ float att_max(float a, float b) { return fmaxf(a, b); }
static __device__ __forceinline__ double att_max(double a, double b) { return fmax(a, b); }

// sum (MAX false) or max (MAX true) over a warp, and over the block as common.cuh's block_sum /
// block_max (two __syncthreads each; scratch T[32])
template <bool MAX, class T> static __device__ __forceinline__ T att_warp_reduce(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const T w = __shfl_xor_sync(FULL_MASK, v, o);
        v = MAX ? att_max(v, w) : v + w;
    }
    return v;
}

template <bool MAX, class T> static __device__ __forceinline__ T att_block_reduce(T v, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = att_warp_reduce<MAX>(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : MAX ? (T)F32_NEG_INF : (T)0;
    return att_warp_reduce<MAX>(v);
}

template <class T> static __device__ __forceinline__ T att_warp_sum(T v) { return att_warp_reduce<false>(v); }
template <class T> static __device__ __forceinline__ T att_warp_max(T v) { return att_warp_reduce<true>(v); }
template <class T> static __device__ __forceinline__ T att_block_sum(T v, T* s) { return att_block_reduce<false>(v, s); }
template <class T> static __device__ __forceinline__ T att_block_max(T v, T* s) { return att_block_reduce<true>(v, s); }

template <class T> static __device__ __forceinline__ T attn_score(T dot, float scale, float softcap) {
    T s = dot * (T)scale;
    if (softcap > 0.0f) s = (T)softcap * att_tanh(s / (T)softcap);
    return s;
}

// grid (n_tok * n_head, n_split), block (ATT_THREADS).
// part_o: T [n_tok * n_head, n_split, hd]; part_ml: T [n_tok * n_head, n_split, 2] (m, l).
// Chunk s of a row covers keys lo + s * split_keys .. (and <= qpos); an empty chunk writes m = -inf, l = 0.
template <class T>
static __device__ __forceinline__ void
attn_decode_partial_impl(const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v,
                         T* __restrict__ part_o, T* __restrict__ part_ml, int n_head, int n_kv, int hd,
                         const int* __restrict__ pos, int window, int split_keys, float scale, float softcap) {
    __shared__ float qs[ATT_HD_MAX];
    __shared__ T p[ATT_SPLIT_MAX];
    __shared__ T scratch[32];
    const int row = blockIdx.x, split = blockIdx.y, n_split = gridDim.y;
    const AttnRow r = attn_row(row, n_head, n_kv, pos[0], window);
    const int k0 = r.lo + split * split_keys;
    const int k1 = min(k0 + split_keys, r.qpos + 1);
    if (k0 >= k1) {                 // a split past the row's keys (the grid is sized for the context)
        if (threadIdx.x == 0) {
            part_ml[((long long)row * n_split + split) * 2] = (T)F32_NEG_INF;
            part_ml[((long long)row * n_split + split) * 2 + 1] = (T)0;
        }
        return;                     // the whole block: k0, k1 are uniform
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const long long kv_stride = (long long)n_kv * hd;
    const long long po = ((long long)row * n_split + split) * hd;

    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[(long long)row * hd + d];
    __syncthreads();

    // scores: one warp per key
    for (int key = k0 + warp; key < k1; key += n_warps) {
        const f16* kr = k + key * kv_stride + (long long)r.kvh * hd;
        T dot = 0;
#pragma unroll
        for (int j = 0; j < ATT_DPL; j++) {
            const int d = lane + 32 * j;
            if (d < hd) dot += (T)qs[d] * (T)f16_to_f32(kr[d]);
        }
        dot = att_warp_sum(dot);
        if (lane == 0) p[key - k0] = attn_score(dot, scale, softcap);
    }
    __syncthreads();

    T m = (T)F32_NEG_INF;
    for (int i = threadIdx.x; i < k1 - k0; i += blockDim.x) m = att_max(m, p[i]);
    m = att_block_max(m, scratch);
    T l = 0;
    for (int i = threadIdx.x; i < k1 - k0; i += blockDim.x) {
        const T e = att_exp(p[i] - m);
        p[i] = e;
        l += e;
    }
    l = att_block_sum(l, scratch);   // its barriers also publish p[]

    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        T o = 0;
        const f16* vc = v + (long long)r.kvh * hd + d;
        for (int key = k0; key < k1; key++) o += p[key - k0] * (T)f16_to_f32(vc[key * kv_stride]);
        part_o[po + d] = o;
    }
    if (threadIdx.x == 0) {
        part_ml[((long long)row * n_split + split) * 2] = m;
        part_ml[((long long)row * n_split + split) * 2 + 1] = l;
    }
}

// grid (n_tok * n_head / rpb), block (ATT_THREADS): rpb consecutive rows per block (1, or
// 256 / hd for qmode ACT_Q8_K_CPU). out[row, d] = sum_s o_s[d] e^(m_s - M) / sum_s l_s e^(m_s - M).
// qmode (common.cuh's ACT_*): also write out as the int8 activation blocks of the next matvec,
// yq u8 [n_tok * n_head * hd / 32 * 36], the same bytes as quantizing out afterwards: per 32
// dims a warp each (hd a multiple of 32), or ggml-cpu's Q8_K per 256 (hd divides 256 and
// n_head * hd is a multiple of 256: a block's rows are one unit, staged in shared memory).
template <class T>
static __device__ __forceinline__ void
attn_decode_combine_impl(const T* __restrict__ part_o, const T* __restrict__ part_ml, float* __restrict__ out,
                         unsigned char* __restrict__ yq, int n_split, int hd, int qmode) {
    __shared__ float unit[256];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int rpb = qmode == ACT_Q8_K_CPU ? 256 / hd : 1;
    for (int r = 0; r < rpb; r++) {
        const int row = blockIdx.x * rpb + r;
        const T* ml = part_ml + (long long)row * n_split * 2;
        T M = (T)F32_NEG_INF;
        for (int s = 0; s < n_split; s++) M = att_max(M, ml[2 * s]);
        T L = 0;
        for (int s = 0; s < n_split; s++)
            if (ml[2 * s + 1] > (T)0) L += ml[2 * s + 1] * att_exp(ml[2 * s] - M);
        for (int d0 = 32 * warp; d0 < hd; d0 += 32 * n_warps) {     // warp-uniform
            const int d = d0 + lane;
            float y = 0.0f;
            if (d < hd) {
                T o = 0;
                for (int s = 0; s < n_split; s++)
                    if (ml[2 * s + 1] > (T)0)
                        o += part_o[((long long)row * n_split + s) * hd + d] * att_exp(ml[2 * s] - M);
                y = (float)(o / L);
                out[(long long)row * hd + d] = y;
                if (qmode == ACT_Q8_K_CPU) unit[r * hd + d] = y;
            }
            if (qmode == ACT_Q8_1 || qmode == ACT_Q8_0_CPU)
                act_quantize_warp(qmode, &y, lane, yq + ((long long)row * hd + d0) / 32 * QK_ACT_BYTES);
        }
    }
    if (qmode == ACT_Q8_K_CPU) {
        __syncthreads();
        if (warp == 0) {
            float v[8];
            for (int j = 0; j < 8; j++) v[j] = unit[32 * j + lane];
            act_q8_k_cpu_warp(v, lane, yq + (long long)blockIdx.x * 8 * QK_ACT_BYTES);
        }
    }
}

// grid (ceil(n_tok / ATT_ROWS), n_head), block (32 * ATT_ROWS).
// Per tile and warp (query row): lane kk scores key k0 + kk against the row's query (K rows in
// shared memory padded to hd + 2 halves, so the 32 lanes read 32 different banks), one warp max
// and one warp sum update the online softmax, and the lanes then accumulate p · V over their
// head dims. HD: the largest head_dim of the variant (shared memory is sized for it):
// attn_prefill_64 / _128 / _256 (T float) and attn_prefill_64_f64 / ... (T double) below.
template <int HD, class T>
static __device__ __forceinline__ void
attn_prefill_impl(const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v,
                  float* __restrict__ out, int n_tok, int n_head, int n_kv, int hd, int n_past, int window,
                  float scale, float softcap) {
    constexpr int DPL = HD / 32;
    __shared__ f16 ks[ATT_TILE * (HD + 2)];
    __shared__ f16 vs[ATT_TILE * HD];
    __shared__ float qs[ATT_ROWS][HD];
    __shared__ T pw[ATT_ROWS][ATT_TILE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.y, kvh = h / (n_head / n_kv);
    const int t_first = blockIdx.x * ATT_ROWS;
    const int t_last = min(t_first + ATT_ROWS, n_tok) - 1;
    const int t = t_first + warp;
    const bool active = t < n_tok;       // idle warps still take part in loading tiles
    const int qpos = n_past + t;
    const int lo = window > 0 ? max(0, qpos - window + 1) : 0;
    const int block_lo = window > 0 ? max(0, n_past + t_first - window + 1) : 0;
    const int block_hi = n_past + t_last;  // last key any row of the block sees
    const long long kv_stride = (long long)n_kv * hd;
    const int ks_stride = hd + 2;

    for (int d = lane; d < hd; d += 32) qs[warp][d] = active ? q[((long long)t * n_head + h) * hd + d] : 0.0f;
    T acc[DPL];
#pragma unroll
    for (int j = 0; j < DPL; j++) acc[j] = 0;
    T m = (T)F32_NEG_INF, l = 0;

    for (int k0 = block_lo; k0 <= block_hi; k0 += ATT_TILE) {
        const int nk = min(ATT_TILE, block_hi + 1 - k0);
        __syncthreads();   // the previous tile has been used by every warp (and qs is written)
        for (int e = threadIdx.x; e < nk * hd; e += blockDim.x) {
            const int kk = e / hd, d = e - kk * hd;
            const long long g = (k0 + kk) * kv_stride + (long long)kvh * hd + d;
            ks[kk * ks_stride + d] = k[g];
            vs[kk * hd + d] = v[g];
        }
        __syncthreads();
        if (!active) continue;
        const int key = k0 + lane;
        const bool valid = lane < nk && key <= qpos && key >= lo;
        T s = (T)F32_NEG_INF;
        if (valid) {
            T dot = 0;
            for (int d = 0; d < hd; d++) dot += (T)qs[warp][d] * (T)f16_to_f32(ks[lane * ks_stride + d]);
            s = attn_score(dot, scale, softcap);
        }
        const T m_new = att_max(m, att_warp_max(s));
        if (m_new == (T)F32_NEG_INF) continue;   // no key of this tile is visible to the row (warp-uniform)
        const T p = valid ? att_exp(s - m_new) : (T)0;
        const T corr = att_exp(m - m_new);
        l = l * corr + att_warp_sum(p);
        m = m_new;
        pw[warp][lane] = p;
        __syncwarp();
#pragma unroll
        for (int j = 0; j < DPL; j++) {
            const int d = lane + 32 * j;
            if (d < hd) {
                T a = acc[j] * corr;
                for (int kk = 0; kk < nk; kk++) a += pw[warp][kk] * (T)f16_to_f32(vs[kk * hd + d]);
                acc[j] = a;
            }
        }
        // pw is next written after the next tile's two __syncthreads
    }
    if (!active) return;
#pragma unroll
    for (int j = 0; j < DPL; j++) {
        const int d = lane + 32 * j;
        if (d < hd) out[((long long)t * n_head + h) * hd + d] = (float)(acc[j] / l);
    }
}

// The kernels: each template above instantiated for both accumulator types, named without a
// suffix (float) or with _f64 (double); prefill once per largest head_dim. ATT_ACCUMULATORS is
// an X-macro list (runtime/cuda/module.py expands its line to read the kernel signatures).
#define ATT_ACCUMULATORS(X) X(, float) X(_f64, double)

#define ATT_DECODE_KERNELS(suffix, T)                                                                                \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_decode_partial##suffix(                           \
        const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v, T* __restrict__ part_o,   \
        T* __restrict__ part_ml, int n_head, int n_kv, int hd, const int* __restrict__ pos, int window,              \
        int split_keys, float scale, float softcap) {                                                                \
        attn_decode_partial_impl<T>(q, k, v, part_o, part_ml, n_head, n_kv, hd, pos, window, split_keys, scale,      \
                                    softcap);                                                                        \
    }                                                                                                                \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_decode_combine##suffix(                           \
        const T* __restrict__ part_o, const T* __restrict__ part_ml, float* __restrict__ out,                        \
        unsigned char* __restrict__ yq, int n_split, int hd, int qmode) {                                            \
        attn_decode_combine_impl<T>(part_o, part_ml, out, yq, n_split, hd, qmode);                                   \
    }

#define ATT_PREFILL_KERNEL(HD, suffix, T)                                                                           \
    extern "C" __global__ void __launch_bounds__(32 * ATT_ROWS) attn_prefill_##HD##suffix(                          \
        const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v, float* __restrict__ out, \
        int n_tok, int n_head, int n_kv, int hd, int n_past, int window, float scale, float softcap) {              \
        attn_prefill_impl<HD, T>(q, k, v, out, n_tok, n_head, n_kv, hd, n_past, window, scale, softcap);            \
    }

#define ATT_KERNELS(suffix, T)    \
    ATT_DECODE_KERNELS(suffix, T) \
    ATT_PREFILL_KERNEL(64, suffix, T) ATT_PREFILL_KERNEL(128, suffix, T) ATT_PREFILL_KERNEL(256, suffix, T)
ATT_ACCUMULATORS(ATT_KERNELS)

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
// score m, sum of exp l and unnormalised output o; attn_decode_combine merges the chunks.
// Prefill: attn_prefill, one warp per query row, ATT_ROWS rows of one head per block, key/value
// tiles of ATT_TILE keys staged in shared memory, online softmax one tile at a time.

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

static __device__ __forceinline__ float attn_score(float dot, float scale, float softcap) {
    float s = dot * scale;
    if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
    return s;
}

// grid (n_tok * n_head, n_split), block (ATT_THREADS).
// part_o: f32 [n_tok * n_head, n_split, hd]; part_ml: f32 [n_tok * n_head, n_split, 2] (m, l).
// Chunk s of a row covers keys lo + s * split_keys .. (and <= qpos); an empty chunk writes m = -inf, l = 0.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_decode_partial(const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v,
                    float* __restrict__ part_o, float* __restrict__ part_ml, int n_head, int n_kv, int hd,
                    int n_past, int window, int split_keys, float scale, float softcap) {
    __shared__ float qs[ATT_HD_MAX];
    __shared__ float p[ATT_SPLIT_MAX];
    __shared__ float scratch[32];
    const int row = blockIdx.x, split = blockIdx.y, n_split = gridDim.y;
    const AttnRow r = attn_row(row, n_head, n_kv, n_past, window);
    const int k0 = r.lo + split * split_keys;
    const int k1 = min(k0 + split_keys, r.qpos + 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const long long kv_stride = (long long)n_kv * hd;
    const long long po = ((long long)row * n_split + split) * hd;

    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[(long long)row * hd + d];
    __syncthreads();

    // scores: one warp per key
    for (int key = k0 + warp; key < k1; key += n_warps) {
        const f16* kr = k + key * kv_stride + (long long)r.kvh * hd;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_DPL; j++) {
            const int d = lane + 32 * j;
            if (d < hd) dot += qs[d] * f16_to_f32(kr[d]);
        }
        dot = warp_sum(dot);
        if (lane == 0) p[key - k0] = attn_score(dot, scale, softcap);
    }
    __syncthreads();

    float m = F32_NEG_INF;
    for (int i = threadIdx.x; i < k1 - k0; i += blockDim.x) m = fmaxf(m, p[i]);
    m = block_max(m, scratch);
    float l = 0.0f;
    for (int i = threadIdx.x; i < k1 - k0; i += blockDim.x) {
        const float e = expf(p[i] - m);
        p[i] = e;
        l += e;
    }
    l = block_sum(l, scratch);   // its barriers also publish p[]

    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        const f16* vc = v + (long long)r.kvh * hd + d;
        for (int key = k0; key < k1; key++) o += p[key - k0] * f16_to_f32(vc[key * kv_stride]);
        part_o[po + d] = o;
    }
    if (threadIdx.x == 0) {
        part_ml[((long long)row * n_split + split) * 2] = m;
        part_ml[((long long)row * n_split + split) * 2 + 1] = l;
    }
}

// grid (n_tok * n_head), block (ATT_THREADS). out[row, d] = sum_s o_s[d] e^(m_s - M) / sum_s l_s e^(m_s - M)
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
attn_decode_combine(const float* __restrict__ part_o, const float* __restrict__ part_ml, float* __restrict__ out,
                    int n_split, int hd) {
    const int row = blockIdx.x;
    const float* ml = part_ml + (long long)row * n_split * 2;
    float M = F32_NEG_INF;
    for (int s = 0; s < n_split; s++) M = fmaxf(M, ml[2 * s]);
    float L = 0.0f;
    for (int s = 0; s < n_split; s++)
        if (ml[2 * s + 1] > 0.0f) L += ml[2 * s + 1] * expf(ml[2 * s] - M);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_split; s++)
            if (ml[2 * s + 1] > 0.0f) o += part_o[((long long)row * n_split + s) * hd + d] * expf(ml[2 * s] - M);
        out[(long long)row * hd + d] = o / L;
    }
}

// grid (ceil(n_tok / ATT_ROWS), n_head), block (32 * ATT_ROWS).
// Per tile and warp (query row): lane kk scores key k0 + kk against the row's query (K rows in
// shared memory padded to hd + 2 halves, so the 32 lanes read 32 different banks), one warp max
// and one warp sum update the online softmax, and the lanes then accumulate p · V over their
// head dims. HD: the largest head_dim of the variant (shared memory is sized for it):
// attn_prefill_64 / _128 / _256 below.
template <int HD>
static __device__ __forceinline__ void
attn_prefill_impl(const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v,
                  float* __restrict__ out, int n_tok, int n_head, int n_kv, int hd, int n_past, int window,
                  float scale, float softcap) {
    constexpr int DPL = HD / 32;
    __shared__ f16 ks[ATT_TILE * (HD + 2)];
    __shared__ f16 vs[ATT_TILE * HD];
    __shared__ float qs[ATT_ROWS][HD];
    __shared__ float pw[ATT_ROWS][ATT_TILE];
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
    float acc[DPL];
#pragma unroll
    for (int j = 0; j < DPL; j++) acc[j] = 0.0f;
    float m = F32_NEG_INF, l = 0.0f;

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
        float s = F32_NEG_INF;
        if (valid) {
            float dot = 0.0f;
            for (int d = 0; d < hd; d++) dot += qs[warp][d] * f16_to_f32(ks[lane * ks_stride + d]);
            s = attn_score(dot, scale, softcap);
        }
        const float m_new = fmaxf(m, warp_max(s));
        if (m_new == F32_NEG_INF) continue;   // no key of this tile is visible to the row (warp-uniform)
        const float p = valid ? expf(s - m_new) : 0.0f;
        const float corr = expf(m - m_new);
        l = l * corr + warp_sum(p);
        m = m_new;
        pw[warp][lane] = p;
        __syncwarp();
#pragma unroll
        for (int j = 0; j < DPL; j++) {
            const int d = lane + 32 * j;
            if (d < hd) {
                float a = acc[j] * corr;
                for (int kk = 0; kk < nk; kk++) a += pw[warp][kk] * f16_to_f32(vs[kk * hd + d]);
                acc[j] = a;
            }
        }
        // pw is next written after the next tile's two __syncthreads
    }
    if (!active) return;
#pragma unroll
    for (int j = 0; j < DPL; j++) {
        const int d = lane + 32 * j;
        if (d < hd) out[((long long)t * n_head + h) * hd + d] = acc[j] / l;
    }
}

// the variants (written out: the loader reads kernel signatures from the text)
extern "C" __global__ void __launch_bounds__(32 * ATT_ROWS)
attn_prefill_64(const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v,
                float* __restrict__ out, int n_tok, int n_head, int n_kv, int hd, int n_past, int window,
                float scale, float softcap) {
    attn_prefill_impl<64>(q, k, v, out, n_tok, n_head, n_kv, hd, n_past, window, scale, softcap);
}

extern "C" __global__ void __launch_bounds__(32 * ATT_ROWS)
attn_prefill_128(const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v,
                 float* __restrict__ out, int n_tok, int n_head, int n_kv, int hd, int n_past, int window,
                 float scale, float softcap) {
    attn_prefill_impl<128>(q, k, v, out, n_tok, n_head, n_kv, hd, n_past, window, scale, softcap);
}

extern "C" __global__ void __launch_bounds__(32 * ATT_ROWS)
attn_prefill_256(const float* __restrict__ q, const f16* __restrict__ k, const f16* __restrict__ v,
                 float* __restrict__ out, int n_tok, int n_head, int n_kv, int hd, int n_past, int window,
                 float scale, float softcap) {
    attn_prefill_impl<256>(q, k, v, out, n_tok, n_head, n_kv, hd, n_past, window, scale, softcap);
}

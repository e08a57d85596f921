// Sampling on the device, so only the token id crosses PCIe. Semantics of runtime/generate.py's
// sample(): repetition penalty, then greedy argmax, or top-k -> softmax -> top-p -> min-p ->
// softmax(x / temp) -> draw with a uniform u the host draws (rng.random(), which is what
// numpy's Generator.choice consumes). Order is value descending, ties by lower token id (a
// stable argsort of -x); NaN logits are never chosen.

#define SAMPLE_THREADS 256
#define ARGMAX_THREADS 1024   // one block reads all the logits
#define TOPK_MAX 256          // top_k the device supports
#define TOPK_CHUNK_MAX 8192   // logits per top-k block (shared memory)
#define TOPK_CAND_MAX 4096    // candidates the final block merges

// (v1, i1) ranks before (v2, i2)? NaN never does.
static __device__ __forceinline__ bool ranks_before(float v1, int i1, float v2, int i2) {
    if (v1 != v1) return false;
    if (v2 != v2) return true;
    return v1 > v2 || (v1 == v2 && i1 < i2);
}

// Best (value, index) over the block; every thread gets it. scratch_v/i: __shared__ [32].
static __device__ __forceinline__ void block_argmax(float& v, int& i, float* scratch_v, int* scratch_i) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(FULL_MASK, v, o);
        const int i2 = __shfl_xor_sync(FULL_MASK, i, o);
        if (ranks_before(v2, i2, v, i)) { v = v2; i = i2; }
    }
    __syncthreads();
    if (lane == 0) { scratch_v[warp] = v; scratch_i[warp] = i; }
    __syncthreads();
    v = lane < n_warps ? scratch_v[lane] : __int_as_float(0x7fffffff);
    i = lane < n_warps ? scratch_i[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(FULL_MASK, v, o);
        const int i2 = __shfl_xor_sync(FULL_MASK, i, o);
        if (ranks_before(v2, i2, v, i)) { v = v2; i = i2; }
    }
}

// logits[ids[j]] = v <= 0 ? v * penalty : v / penalty, once per distinct id (ids may repeat).
// One block; dynamic shared memory n_ids floats.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
repeat_penalty_f32(float* logits, const int* __restrict__ ids, int n_ids, float penalty) {
    extern __shared__ float orig[];
    for (int j = threadIdx.x; j < n_ids; j += blockDim.x) orig[j] = logits[ids[j]];
    __syncthreads();   // every read before any write: a repeated id is penalised once
    for (int j = threadIdx.x; j < n_ids; j += blockDim.x) {
        const int id = ids[j];
        int k = 0;
        while (k < j && ids[k] != id) k++;
        if (k < j) continue;   // only the first of repeated ids writes (two stores to one word race)
        const float v = orig[j];
        logits[id] = v <= 0.0f ? __fmul_rn(v, penalty) : __fdiv_rn(v, penalty);
    }
}

// out[0] = argmax(x) (first of equal maxima). One block of up to ARGMAX_THREADS.
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS)
argmax_f32(const float* __restrict__ x, int n, int* __restrict__ out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float v = __int_as_float(0x7fffffff);
    int i = 0x7fffffff;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        if (ranks_before(x[j], j, v, i)) { v = x[j]; i = j; }
    block_argmax(v, i, sv, si);
    if (threadIdx.x == 0) out[0] = v == v ? i : -1;
}

// Stage 1: block b takes logits [b * chunk, (b + 1) * chunk) and writes its best k, in rank
// order, to cand_v/cand_i [b * k, (b + 1) * k) (index -1 when the chunk has fewer).
// grid (ceil(n / chunk)); dynamic shared memory chunk floats.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
topk_chunks_f32(const float* __restrict__ x, int n, int chunk, int k, float* __restrict__ cand_v,
                int* __restrict__ cand_i) {
    extern __shared__ float vals[];
    __shared__ float sv[32];
    __shared__ int si[32];
    const int base = blockIdx.x * chunk, len = min(chunk, n - base);
    for (int j = threadIdx.x; j < len; j += blockDim.x) vals[j] = x[base + j];
    __syncthreads();
    for (int r = 0; r < k; r++) {
        float v = __int_as_float(0x7fffffff);
        int i = 0x7fffffff;
        for (int j = threadIdx.x; j < len; j += blockDim.x)
            if (ranks_before(vals[j], base + j, v, i)) { v = vals[j]; i = base + j; }
        block_argmax(v, i, sv, si);   // ends with every thread past its barriers
        if (threadIdx.x == 0) {
            cand_v[blockIdx.x * k + r] = v;
            cand_i[blockIdx.x * k + r] = v == v ? i : -1;
            if (v == v) vals[i - base] = __int_as_float(0x7fffffff);   // taken
        }
        __syncthreads();   // the mark is seen by the next pass
    }
}

// Stage 2: one block merges the candidates, keeps the best k, applies top-p, min-p and the
// temperature and draws with u[0] in [0, 1) (device memory: a captured CUDA graph replays the
// launch with each step's draw). out[0] = token id. dynamic shared memory n_cand * 8 bytes
// (values, then indices).
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
topk_sample_f32(const float* __restrict__ cand_v, const int* __restrict__ cand_i, int n_cand, int k,
                double top_p, double min_p, float temp, const double* __restrict__ u, int* __restrict__ out) {
    extern __shared__ float cv[];
    int* ci = (int*)(cv + n_cand);
    __shared__ float top_v[TOPK_MAX];
    __shared__ int top_i[TOPK_MAX];
    __shared__ double e1[TOPK_MAX], e2[TOPK_MAX];   // exp(x - max), exp(x / temp - max / temp)
    __shared__ float sv[32];
    __shared__ int si[32];
    for (int j = threadIdx.x; j < n_cand; j += blockDim.x) {
        const int id = cand_i[j];
        cv[j] = id >= 0 ? cand_v[j] : __int_as_float(0x7fffffff);
        ci[j] = id;
    }
    __syncthreads();
    int n = 0;   // the same in every thread: v below is the block's result
    for (int r = 0; r < k; r++) {
        float v = __int_as_float(0x7fffffff);
        int i = 0x7fffffff;
        for (int j = threadIdx.x; j < n_cand; j += blockDim.x)
            if (ranks_before(cv[j], ci[j], v, i)) { v = cv[j]; i = ci[j]; }
        block_argmax(v, i, sv, si);
        if (v != v) break;                    // no candidates left (uniform across the block)
        for (int j = threadIdx.x; j < n_cand; j += blockDim.x)
            if (ci[j] == i) cv[j] = __int_as_float(0x7fffffff);   // its owner marks it taken
        if (threadIdx.x == 0) {
            top_v[r] = v;
            top_i[r] = i;
        }
        n = r + 1;
        __syncthreads();   // the mark is seen by the next pass
    }
    if (n == 0) {
        if (threadIdx.x == 0) out[0] = -1;
        return;
    }
    // the exponentials in parallel; the sums below stay sequential (numpy's cumsum order)
    const double mx = top_v[0], mt = (double)__fdiv_rn(top_v[0], temp);
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        e1[j] = exp((double)top_v[j] - mx);
        e2[j] = exp((double)__fdiv_rn(top_v[j], temp) - mt);
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    // softmax of the top k (double math, float result, as runtime.reference.softmax)
    double sum = 0.0;
    for (int j = 0; j < n; j++) sum += e1[j];
    const double p0 = (double)(float)(e1[0] / sum);
    if (top_p < 1.0) {
        double cum = 0.0;
        int keep = n;
        for (int j = 0; j < n; j++) {
            cum += (double)(float)(e1[j] / sum);
            if (cum >= top_p) { keep = j + 1; break; }
        }
        n = keep;
    }
    if (min_p > 0.0) {
        int keep = 0;
        for (int j = 0; j < n; j++)
            if ((double)(float)(e1[j] / sum) >= min_p * p0) keep = j + 1;
        n = keep;
    }
    // draw from softmax(x / temp) over the kept tokens: first j with cdf[j] > u
    double st = 0.0;
    for (int j = 0; j < n; j++) st += e2[j];
    double tot = 0.0;
    for (int j = 0; j < n; j++) tot += (double)(float)(e2[j] / st);
    double last = 0.0;
    for (int j = 0; j < n; j++) last += (double)(float)(e2[j] / st) / tot;
    double cdf = 0.0;
    int pick = n - 1;
    for (int j = 0; j < n; j++) {
        cdf += (double)(float)(e2[j] / st) / tot;
        if (cdf / last > u[0]) { pick = j; break; }
    }
    out[0] = top_i[pick];
}

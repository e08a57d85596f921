// Kernels that exercise the CUDA emulator itself (tests/runtime/cuda/test_cuda_emu.py). Not package data.

// Threads >= n_live leave before the barrier: the emulator must report a partial barrier.
extern "C" __global__ void partial_barrier(int* out, int n_live) {
    if ((int)threadIdx.x >= n_live) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

// y[t] = x[(t + 1) % n] through shared memory; without the barrier the result depends on order.
extern "C" __global__ void rotate_shared(const float* x, float* y, int with_barrier) {
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = x[t];
    if (with_barrier) __syncthreads();
    y[t] = s[(t + 1) % blockDim.x];
}

// One block of 64 threads (2 warps). out: [8, 64]
extern "C" __global__ void shuffles(const int* x, int* out) {
    const int t = threadIdx.x, v = x[t];
    out[0 * 64 + t] = __shfl_xor_sync(FULL_MASK, v, 5);
    out[1 * 64 + t] = __shfl_up_sync(FULL_MASK, v, 3);
    out[2 * 64 + t] = __shfl_down_sync(FULL_MASK, v, 3);
    out[3 * 64 + t] = __shfl_sync(FULL_MASK, v, 7);
    out[4 * 64 + t] = __shfl_xor_sync(FULL_MASK, v, 6, 8);
    out[5 * 64 + t] = __shfl_down_sync(FULL_MASK, v, 2, 8);
    out[6 * 64 + t] = (int)__ballot_sync(FULL_MASK, v & 1);
    out[7 * 64 + t] = warp_sum_int(v);
}

// mode 0: lanes 0..15 shuffle among themselves (fine); 1: lane 3 exited before a full-mask
// shuffle; 2: full mask in a warp of 16 threads; 3: two halves disagree on the mask they name.
extern "C" __global__ void bad_masks(int* out, int mode) {
    const int t = threadIdx.x;
    int v = t;
    if (mode == 0) {
        if (t < 16) v = __shfl_xor_sync(0x0000ffffu, v, 1);
    } else if (mode == 1) {
        if (t == 3) return;
        v = __shfl_xor_sync(FULL_MASK, v, 1);
    } else if (mode == 2) {
        v = __shfl_xor_sync(FULL_MASK, v, 1);
    } else {
        v = __shfl_xor_sync(t < 16 ? FULL_MASK : 0xffff0000u, v, 1);
    }
    out[t] = v;
}

// Block reduction with the common helpers: y[b] = sum of x[b, :]
extern "C" __global__ void row_sums(const float* x, float* y, int n) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[(long long)blockIdx.x * n + i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) y[blockIdx.x] = s;
}

// Conversions: h = f16(x), b = bf16(x), back = f32(f16 codes), bback = f32(bf16 codes)
extern "C" __global__ void conversions(const float* x, f16* h, bf16* b, const f16* codes, float* back,
                                       const bf16* bcodes, float* bback, int n, int n_codes) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        h[i] = f32_to_f16(x[i]);
        b[i] = f32_to_bf16(x[i]);
    }
    if (i < n_codes) {
        back[i] = f16_to_f32(codes[i]);
        bback[i] = bf16_to_f32(bcodes[i]);
    }
}

extern "C" __global__ void dp4a_test(const int* a, const int* b, const int* c, int* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __dp4a(a[i], b[i], c[i]);
}

// Dynamic shared memory: y = reversed x (one block, n = blockDim.x)
extern "C" __global__ void dyn_reverse(const float* x, float* y) {
    extern __shared__ float buf[];
    const int t = threadIdx.x, n = blockDim.x;
    buf[t] = x[t];
    __syncthreads();
    y[t] = buf[n - 1 - t];
}

// Writes one element past the end of y when t == n.
extern "C" __global__ void write_past(float* y, int n) {
    const int t = threadIdx.x;
    if (t <= n) y[t] = 1.0f;
}

// Blocks and threads record the order they ran in. out: [n_blocks * n_threads]
extern "C" __global__ void run_order(int* counter, int* out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = atomicAdd(counter, 1);
}

// Reads shared memory no thread wrote (mode 0: s[t + 1] unwritten by thread t + 1 for the last
// thread), or counts a predicate at a barrier (mode 1).
extern "C" __global__ void shared_poison(float* y, int* count) {
    __shared__ float s[65];
    const int t = threadIdx.x;
    s[t] = (float)t;
    __syncthreads();
    y[t] = s[t + 1];
    const int c = __syncthreads_count(t % 3 == 0);
    const int any = __syncthreads_or(t == 5), all = __syncthreads_and(t < 64);
    if (t == 0) {
        count[0] = c;
        count[1] = any;
        count[2] = all;
    }
}

// Even and odd threads wait at two different barriers (undefined behaviour on a GPU).
extern "C" __global__ void split_barriers(int* out) {
    if (threadIdx.x % 2) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

// mode 0: thread 3 writes through a null pointer; mode 1: thread 0 overflows its stack.
static __device__ int deep(volatile int* p, int n) {
    volatile char pad[1024];
    pad[0] = (char)n;
    return n ? deep(p, n - 1) + pad[0] : *p;
}
extern "C" __global__ void crash(int* out, int mode) {
    if (mode == 0 && threadIdx.x == 3) *(volatile int*)0 = 1;
    if (mode == 1 && threadIdx.x == 0) out[0] = deep(out, 1000);
    out[threadIdx.x] = 1;
}

// Reads an int at byte offset `offset` of x (the GPU faults unless offset % 4 == 0).
extern "C" __global__ void misaligned(const unsigned char* x, int* out, int offset) {
    out[0] = *(const int*)(x + offset);
}

// ---- the race check (emu_options(race=True)). One block of n threads; y: [n + 1].
// mode 0: s[t] written, __syncthreads, s[t + 1] read (fine); 1: no barrier (a race on s);
// 2: a full-warp shuffle instead of the barrier (still a race: a shuffle orders no memory);
// 3: __syncwarp instead of the barrier, one warp (fine: __syncwarp orders its lanes);
// 4: every thread adds into y[0] (a global race); 5: thread t writes y[t] and reads y[t + 1]
// (a global race between neighbours); 6: each block writes y[0] (blocks race; thread 0 only).
extern "C" __global__ void race_modes(float* y, int mode) {
    __shared__ float s[1025];
    const int t = threadIdx.x, n = blockDim.x;
    if (mode <= 3) {
        s[t] = (float)t;
        if (mode == 0) __syncthreads();
        if (mode == 2) s[n] = __shfl_xor_sync(FULL_MASK, 1.0f, 1) * 0.0f + s[n];   // reads s[n] only
        if (mode == 3) __syncwarp();
        y[t] = t + 1 < n ? s[t + 1] : 0.0f;
    } else if (mode == 4) {
        y[0] += 1.0f;
    } else if (mode == 5) {
        y[t] = 1.0f;
        y[n] = y[t + 1];
    } else if (t == 0) {
        y[0] = (float)blockIdx.x;
    }
}

// ---- __activemask. out[lane]: the mask lane sees inside `if (lane < split)`, or in its else.
// mode 1 (broken): the branch's lanes shuffle from lane 31 with __activemask() as the mask, which
// is fine only if every lane of the warp were active.
extern "C" __global__ void activemask_test(unsigned* out, int split, int mode) {
    const int lane = threadIdx.x & 31;
    if (lane < split) {
        unsigned m = __activemask();
        out[threadIdx.x] = mode == 1 ? (unsigned)__shfl_sync(m, lane, 31) : m;
    } else {
        out[threadIdx.x] = __activemask();
    }
}

// ---- floating point as NVRTC compiles it. out[0] = a*b - p (p = a*b rounded: an FMA keeps the
// product's rounding error), out[1] = __fmul_rn(a, b) - p (never contracted), out[2] = x * y
// (a denormal result without flush-to-zero).
extern "C" __global__ void fp_model(const float* in, float* out) {
    const float a = in[0], b = in[1], p = in[2], x = in[3], y = in[4];
    out[0] = a * b - p;
    out[1] = __fmul_rn(a, b) - p;
    out[2] = x * y;
}

// ---- the fast-math intrinsics on x: [exp, fdividef(1, x), rsqrt, log, sin, cos, pow(x, 1.5)] per element
extern "C" __global__ void intrinsics(const float* x, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = x[i];
    out[0 * n + i] = __expf(v);
    out[1 * n + i] = __fdividef(1.0f, v);
    out[2 * n + i] = rsqrtf(v);
    out[3 * n + i] = __logf(v);
    out[4 * n + i] = __sinf(v);
    out[5 * n + i] = __cosf(v);
    out[6 * n + i] = __powf(v, 1.5f);
}

// Broken on purpose: block b reads what block b - 1 wrote (blocks are not ordered on a GPU).
extern "C" __global__ void chain_blocks(int* y) {
    if (threadIdx.x == 0) y[blockIdx.x + 1] = y[blockIdx.x] + 1;
}

// A template's static __shared__ (g++ drops section attributes there): block 0 writes s[0],
// every block reads it (thread 0 only; one thread per block). Block 1 must see the poison.
template <int N> static __device__ void tmpl_shared_impl(float* y) {
    __shared__ float s[N];
    if (blockIdx.x == 0) s[0] = 1.0f;
    y[blockIdx.x] = s[0];
}
extern "C" __global__ void tmpl_shared(float* y) { tmpl_shared_impl<16>(y); }

// 40 KiB of static shared memory plus the launch's dynamic shared memory
extern "C" __global__ void big_shared(float* y) {
    __shared__ float s[10240];
    extern __shared__ float d[];
    s[threadIdx.x] = 1.0f;
    d[threadIdx.x] = 2.0f;
    y[threadIdx.x] = s[threadIdx.x] + d[threadIdx.x];
}

// CUDA emulation header: the same .cu source compiles as C++ with g++ and runs on the CPU.
//
// Model of execution (runtime/cuda/module.py generates one launch wrapper per kernel):
//   * one fiber per CUDA thread, on small mmap'ed stacks with a guard page; switches are
//     _setjmp/_longjmp (no system call). Fibers are kept per thread slot: one that finished its
//     thread parks and runs the next block's thread on that slot, so a thread costs two jumps
//     (makecontext/setcontext only make a slot's fiber the first time, or after a failed launch);
//   * the blocks of a grid run one after another; `__shared__` is `static` (in section
//     emu_shared), so it is per block; `extern __shared__ T name[];` is rewritten by the loader
//     to point at the launch's dynamic shared memory; both are poisoned before every block
//     (0xFF bytes: NaN for f32/f16, -1 for ints), so reading what no thread wrote shows up;
//   * a thread runs until it reaches a synchronisation point: `__syncthreads` (block barrier),
//     `__syncwarp`, `__shfl_*_sync`, `__ballot_sync`/`__any_sync`/`__all_sync` (per-warp
//     exchanges over 32 lanes); the scheduler then runs the next thread;
//   * the order threads (and blocks) are run in is forward, reverse or a seeded random
//     permutation per scheduling pass, chosen per launch, so a missing barrier changes results;
//   * errors (a barrier reached by only part of a block, threads of a block waiting at different
//     __syncthreads (source lines), a warp op whose mask names an exited
//     or absent lane or disagrees between lanes, a deadlock, __trap) stop the launch; the
//     wrapper returns nonzero and emu_last_error() says what happened.
// Single OS thread per launch; state is thread_local so Python threads may launch concurrently.
#pragma once
#include <ucontext.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <signal.h>
#include <unistd.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdarg>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#define GGUFKIT_EMU 1
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 800
#endif
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// Static shared memory lives in its own section, so it can be poisoned before every block.
#define __shared__ static __attribute__((section("emu_shared")))
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))
#define warpSize 32

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(8))) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct __attribute__((aligned(4))) char4 { signed char x, y, z, w; };
struct __attribute__((aligned(4))) uchar4 { unsigned char x, y, z, w; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return {x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
static inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
static inline char4 make_char4(signed char x, signed char y, signed char z, signed char w) { return {x, y, z, w}; }

namespace emu {

enum State { READY = 0, AT_BARRIER = 1, AT_WARP = 2, DONE = 3 };
enum WarpOp { OP_SYNCWARP = 1, OP_SHFL = 2, OP_SHFL_UP = 3, OP_SHFL_DOWN = 4, OP_SHFL_XOR = 5,
              OP_BALLOT = 6, OP_ANY = 7, OP_ALL = 8 };
enum Order { FORWARD = 0, REVERSE = 1, RANDOM = 2 };

struct Thread {
    jmp_buf env;         // where the thread continues after a yield
    bool started = false;
    uint3 tid;
    int linear = 0;
    int state = READY;
    int op = 0;          // warp op kind while AT_WARP
    unsigned mask = 0;
    int arg = 0;         // src lane / delta / lane mask
    int width = 32;
    const char* bar_file = nullptr;  // where the thread waits at __syncthreads
    int bar_line = 0;
    uint64_t val = 0;    // value offered to the warp op
    uint64_t result = 0; // value handed back
};

// A thread slot's fiber: its stack, how to make it, where it parks between threads.
struct Slot {
    char* mem = nullptr;     // guard page + stack
    size_t size = 0;
    ucontext_t start;
    jmp_buf park;
    bool parked = false;
};

struct Launch {
    dim3 grid, block;
    uint3 bid;
    std::vector<Thread> threads;
    jmp_buf sched;
    std::function<void()> body;
    bool failed = false;
    std::string error;
    std::vector<unsigned char> dynsmem;
    size_t stack_size = 64 * 1024;
    int bar_count = 0;      // __syncthreads_count/_or/_and: predicates counted at this barrier
    int bar_result = 0;     // ... and the count of the barrier last released
};

static thread_local Launch* g = nullptr;
static thread_local Thread* cur = nullptr;
static thread_local std::string last_error;
static thread_local std::vector<Slot*> slots;
static const size_t GUARD = 64 * 1024;   // inaccessible bytes below each fiber stack
static thread_local unsigned long long clock_counter = 0;

static inline std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

static inline std::string where() {
    if (!g || !cur) return "";
    return fmt("block (%u,%u,%u) thread (%u,%u,%u)", g->bid.x, g->bid.y, g->bid.z, cur->tid.x, cur->tid.y,
               cur->tid.z);
}

// Stop the launch from inside a fiber: record the error and never come back.
[[noreturn]] static inline void fail(const std::string& msg) {
    if (!g->failed) {
        g->failed = true;
        g->error = msg;
    }
    for (;;) _longjmp(g->sched, 1);
}

// A switch is _setjmp/_longjmp (no signal-mask system call, unlike swapcontext).
static inline void yield_to_scheduler() {
    if (!_setjmp(cur->env)) _longjmp(g->sched, 1);
}

// A slot's fiber: runs the thread the scheduler put in `cur`, parks, runs the next one.
static void fiber_main() {
    for (;;) {
        g->body();
        cur->state = DONE;
        Slot* s = slots[cur->linear];
        s->parked = true;
        if (!_setjmp(s->park)) _longjmp(g->sched, 1);
    }
}

static Slot* get_slot(size_t i, size_t size) {
    while (slots.size() <= i) slots.push_back(new Slot());
    Slot* s = slots[i];
    if (s->mem && s->size != size) {
        munmap(s->mem, s->size + GUARD);
        s->mem = nullptr;
        s->parked = false;
    }
    if (!s->mem) {
        void* p = mmap(nullptr, size + GUARD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        mprotect(p, GUARD, PROT_NONE);  // guard below the stack: an overflow faults, never corrupts
        s->mem = (char*)p;
        s->size = size;
    }
    return s;
}

// Start thread `cur` on its slot (called with the scheduler's state saved in g->sched).
[[noreturn]] static void start_on_slot(Slot* s) {
    if (s->parked) {
        s->parked = false;
        _longjmp(s->park, 1);
    }
    getcontext(&s->start);
    s->start.uc_stack.ss_sp = s->mem + GUARD;
    s->start.uc_stack.ss_size = s->size;
    s->start.uc_link = nullptr;
    makecontext(&s->start, (void (*)())fiber_main, 0);
    setcontext(&s->start);
    abort();
}

static inline int lane_of(const Thread& t) { return t.linear & 31; }

// Try to complete the warp ops waiting in warp w. Returns true if some lanes were released.
static bool resolve_warp(int w, int n_threads) {
    int base = w * 32;
    int n_lanes = std::min(32, n_threads - base);
    bool released = false;
    for (int l = 0; l < n_lanes; l++) {
        Thread& t = g->threads[base + l];
        if (t.state != AT_WARP) continue;
        unsigned m = t.mask;
        if (!(m >> l & 1u)) {
            g->failed = true;
            g->error = fmt("block (%u,%u,%u) warp %d lane %d: warp op mask 0x%08x does not include the calling lane",
                           g->bid.x, g->bid.y, g->bid.z, w, l, m);
            return false;
        }
        bool complete = true;
        for (int j = 0; j < 32; j++) {
            if (!(m >> j & 1u)) continue;
            if (j >= n_lanes) {
                g->failed = true;
                g->error = fmt("block (%u,%u,%u) warp %d: warp op mask 0x%08x names lane %d, which does not exist "
                               "(block of %d threads)", g->bid.x, g->bid.y, g->bid.z, w, m, j, n_threads);
                return false;
            }
            Thread& o = g->threads[base + j];
            if (o.state == DONE) {
                g->failed = true;
                g->error = fmt("block (%u,%u,%u) warp %d: warp op mask 0x%08x names lane %d, which has exited",
                               g->bid.x, g->bid.y, g->bid.z, w, m, j);
                return false;
            }
            if (o.state != AT_WARP) { complete = false; continue; }
            if (o.mask != m || o.op != t.op) {
                g->failed = true;
                g->error = fmt("block (%u,%u,%u) warp %d: lanes %d and %d meet at different warp ops "
                               "(op %d mask 0x%08x vs op %d mask 0x%08x)", g->bid.x, g->bid.y, g->bid.z, w, l, j,
                               t.op, m, o.op, o.mask);
                return false;
            }
        }
        if (!complete) continue;
        // all lanes of m are here: compute every result first, then release them
        unsigned ballot = 0;
        for (int j = 0; j < 32; j++)
            if ((m >> j & 1u) && g->threads[base + j].val) ballot |= 1u << j;
        for (int j = 0; j < 32; j++) {
            if (!(m >> j & 1u)) continue;
            Thread& o = g->threads[base + j];
            int wd = o.width;
            int seg = j & ~(wd - 1);
            int src = j;
            switch (o.op) {
                case OP_SHFL: src = seg + (o.arg & (wd - 1)); break;
                case OP_SHFL_UP: src = j - o.arg; if (src < seg) src = j; break;
                case OP_SHFL_DOWN: src = j + o.arg; if (src >= seg + wd) src = j; break;
                case OP_SHFL_XOR: src = j ^ o.arg; if (src >= seg + wd) src = j; break;
                default: break;
            }
            if (o.op >= OP_SHFL && o.op <= OP_SHFL_XOR) {
                if (src < 0 || src > 31 || !(m >> src & 1u)) {
                    g->failed = true;
                    g->error = fmt("block (%u,%u,%u) warp %d lane %d: shuffle reads lane %d, outside mask 0x%08x",
                                   g->bid.x, g->bid.y, g->bid.z, w, j, src, m);
                    return false;
                }
                o.result = g->threads[base + src].val;
            } else if (o.op == OP_BALLOT) {
                o.result = ballot;
            } else if (o.op == OP_ANY) {
                o.result = ballot != 0;
            } else if (o.op == OP_ALL) {
                o.result = ballot == m;
            }
        }
        for (int j = 0; j < 32; j++)
            if (m >> j & 1u) g->threads[base + j].state = READY;
        released = true;
    }
    return released;
}

static inline std::vector<int> order_of(int n, int order, std::mt19937_64& rng) {
    std::vector<int> o(n);
    for (int i = 0; i < n; i++) o[i] = order == REVERSE ? n - 1 - i : i;
    if (order == RANDOM) std::shuffle(o.begin(), o.end(), rng);
    return o;
}

}  // namespace emu
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));
namespace emu {

static int run_block(int order, std::mt19937_64& rng) {
    Launch& L = *g;
    int n = (int)(L.block.x * L.block.y * L.block.z);
    L.threads.assign(n, Thread());
    if (!L.dynsmem.empty()) memset(L.dynsmem.data(), 0xFF, L.dynsmem.size());
    if (__start_emu_shared && __stop_emu_shared > __start_emu_shared)
        memset(__start_emu_shared, 0xFF, (size_t)(__stop_emu_shared - __start_emu_shared));
    for (int i = 0; i < n; i++) {
        Thread& t = L.threads[i];
        t.linear = i;
        t.tid = {i % L.block.x, (i / L.block.x) % L.block.y, i / (L.block.x * L.block.y)};
        if (!get_slot(i, L.stack_size)) { L.error = "emulation: out of memory for fiber stacks"; return 1; }
    }
    for (;;) {
        bool ran = false;
        for (int i : order_of(n, order, rng)) {
            Thread& t = L.threads[i];
            if (t.state != READY) continue;
            cur = &t;
            if (!_setjmp(L.sched)) {
                if (!t.started) {
                    t.started = true;
                    start_on_slot(slots[i]);
                }
                _longjmp(t.env, 1);
            }
            cur = nullptr;
            ran = true;
            if (L.failed) return 1;
        }
        (void)ran;
        int n_done = 0, n_bar = 0, n_warp = 0;
        for (auto& t : L.threads) {
            n_done += t.state == DONE;
            n_bar += t.state == AT_BARRIER;
            n_warp += t.state == AT_WARP;
        }
        if (n_done == n) return 0;
        if (n_warp) {
            bool released = false;
            for (int w = 0; w * 32 < n; w++) released |= resolve_warp(w, n);
            if (L.failed) return 1;
            if (released) continue;
        }
        if (n_bar && n_bar == n) {
            for (auto& t : L.threads) {
                const Thread& t0 = L.threads[0];
                if (t.bar_line != t0.bar_line || strcmp(t.bar_file, t0.bar_file)) {
                    L.error = fmt("block (%u,%u,%u): threads 0 and %d wait at different __syncthreads "
                                  "(%s:%d and %s:%d)", L.bid.x, L.bid.y, L.bid.z, t.linear, t0.bar_file,
                                  t0.bar_line, t.bar_file, t.bar_line);
                    return 1;
                }
            }
            for (auto& t : L.threads) t.state = READY;
            L.bar_result = L.bar_count;
            L.bar_count = 0;
            continue;
        }
        if (n_bar && n_done) {
            L.error = fmt("block (%u,%u,%u): __syncthreads reached by %d of %d threads (%d exited before it)",
                          L.bid.x, L.bid.y, L.bid.z, n_bar, n, n_done);
            return 1;
        }
        L.error = fmt("block (%u,%u,%u): deadlock: %d threads at __syncthreads, %d at warp ops, %d exited",
                      L.bid.x, L.bid.y, L.bid.z, n_bar, n_warp, n_done);
        return 1;
    }
}

// SIGSEGV/SIGBUS inside a kernel (a wild pointer, a fiber stack overflow) and SIGILL (a misaligned
// access trapped by -fsanitize=alignment) end the launch with an error instead of the process. Faults elsewhere go to the handler that was there before.
static struct sigaction old_segv, old_bus, old_ill;
static bool fault_handler_installed = false;
static thread_local bool altstack_ready = false;

static void on_fault(int sig, siginfo_t* si, void* uc) {
    if (g && cur && !g->failed) {
        char* a = (char*)si->si_addr;
        bool overflow = false;
        for (Slot* s : slots)
            if (s->mem && a >= s->mem && a < s->mem + GUARD) overflow = true;
        g->failed = true;
        if (sig == SIGILL)   // -fsanitize=alignment traps
            g->error = where() + ": misaligned memory access (a load or store not aligned to its type's size; "
                                 "the GPU faults on it)";
        else
            g->error = where() + (overflow ? ": fiber stack overflow (a larger emu_options(stack_kib=...) may help)"
                                           : fmt(": invalid memory access at address %p (%s)", (void*)a,
                                                 sig == SIGSEGV ? "SIGSEGV" : "SIGBUS"));
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, nullptr);
        _longjmp(g->sched, 1);
    }
    sigaction(sig, sig == SIGSEGV ? &old_segv : sig == SIGBUS ? &old_bus : &old_ill, nullptr);   // not ours
    (void)uc;
}

static void install_fault_handler() {
    if (!altstack_ready) {
        stack_t ss;
        ss.ss_sp = malloc(1 << 16);
        ss.ss_size = 1 << 16;
        ss.ss_flags = 0;
        if (ss.ss_sp && sigaltstack(&ss, nullptr) == 0) altstack_ready = true;
    }
    if (!fault_handler_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv);
        sigaction(SIGBUS, &sa, &old_bus);
        sigaction(SIGILL, &sa, &old_ill);
        fault_handler_installed = true;
    }
}

static int launch(dim3 grid, dim3 block, size_t smem, int order, unsigned long long seed, size_t stack_kib,
                  std::function<void()> body) {
    install_fault_handler();
    Launch L;
    L.grid = grid;
    L.block = block;
    L.body = std::move(body);
    L.dynsmem.assign(smem, 0xFF);
    if (stack_kib) L.stack_size = stack_kib * 1024;
    Launch* saved = g;
    g = &L;
    std::mt19937_64 rng(seed);
    long nb = (long)grid.x * grid.y * grid.z;
    std::vector<long> blocks(nb);
    for (long i = 0; i < nb; i++) blocks[i] = order == REVERSE ? nb - 1 - i : i;
    if (order == RANDOM) std::shuffle(blocks.begin(), blocks.end(), rng);
    int rc = 0;
    for (long b : blocks) {
        L.bid = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((long)grid.x * grid.y))};
        rc = run_block(order, rng);
        if (rc) {
            for (size_t i = 0; i < L.threads.size() && i < slots.size(); i++)
                if (L.threads[i].state != DONE) slots[i]->parked = false;
            break;
        }
    }
    if (rc) last_error = L.error;
    g = saved;
    return rc;
}

template <class T>
static inline T warp_op(int op, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8, "warp ops move at most 8 bytes");
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fail(where() + fmt(": shuffle width %d is not a power of two <= 32", width));
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    cur->op = op;
    cur->mask = mask;
    cur->arg = arg;
    cur->width = width;
    cur->val = bits;
    cur->state = AT_WARP;
    yield_to_scheduler();
    T r;
    memcpy(&r, &cur->result, sizeof(T));
    return r;
}

// ---- fp16 / bf16 bit conversions, exact round-to-nearest-even (the device uses PTX cvt)
static inline unsigned short float_to_half_rn(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN stays NaN
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 (or inf): inf
    if (ax < 0x38800000u) {  // below the smallest normal half: multiples of 2^-24
        float a;
        memcpy(&a, &ax, 4);
        return (unsigned short)(sign | (uint32_t)std::nearbyint(a * 16777216.0f));
    }
    uint32_t r = ax - 0x38000000u;  // rebias 127 -> 15
    uint32_t h = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (unsigned short)(sign | h);
}

static inline float half_to_float(unsigned short h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
        float f = (float)m * (1.0f / 16777216.0f);
        memcpy(&x, &f, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

}  // namespace emu

#define threadIdx (::emu::cur->tid)
#define blockIdx (::emu::g->bid)
#define blockDim (::emu::g->block)
#define gridDim (::emu::g->grid)

// ---- synchronisation
namespace emu {
// the barrier's source line is recorded: threads of a block must all wait at the same one
static inline void barrier(const char* file, int line) {
    cur->bar_file = file;
    cur->bar_line = line;
    cur->state = AT_BARRIER;
    yield_to_scheduler();
}
static inline int barrier_count(int p, const char* file, int line) {
    g->bar_count += p != 0;
    barrier(file, line);
    return g->bar_result;
}
}  // namespace emu
#define __syncthreads() ::emu::barrier(__FILE__, __LINE__)
#define __syncthreads_count(p) ::emu::barrier_count((p), __FILE__, __LINE__)
#define __syncthreads_or(p) (::emu::barrier_count((p), __FILE__, __LINE__) != 0)
#define __syncthreads_and(p) \
    (::emu::barrier_count((p), __FILE__, __LINE__) == (int)(blockDim.x * blockDim.y * blockDim.z))
static inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::warp_op<int>(::emu::OP_SYNCWARP, mask, 0, 0, 32); }
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return ::emu::warp_op<T>(::emu::OP_SHFL, mask, v, src, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::emu::warp_op<T>(::emu::OP_SHFL_UP, mask, v, (int)delta, width);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::emu::warp_op<T>(::emu::OP_SHFL_DOWN, mask, v, (int)delta, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return ::emu::warp_op<T>(::emu::OP_SHFL_XOR, mask, v, lane_mask, width);
}
static inline unsigned __ballot_sync(unsigned mask, int p) {
    return (unsigned)::emu::warp_op<uint64_t>(::emu::OP_BALLOT, mask, p != 0, 0, 32);
}
static inline int __any_sync(unsigned mask, int p) { return (int)::emu::warp_op<uint64_t>(::emu::OP_ANY, mask, p != 0, 0, 32); }
static inline int __all_sync(unsigned mask, int p) { return (int)::emu::warp_op<uint64_t>(::emu::OP_ALL, mask, p != 0, 0, 32); }
static inline unsigned __activemask() { return 0xffffffffu; }
static inline void __threadfence() {}
static inline void __threadfence_block() {}
[[noreturn]] static inline void __trap() { ::emu::fail(::emu::where() + ": __trap()"); }
static inline long long clock64() { return (long long)++::emu::clock_counter; }

// ---- atomics (fibers are cooperative: a read-modify-write is never interrupted)
template <class T> static inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <class T> static inline T atomicSub(T* p, T v) { T o = *p; *p = o - v; return o; }
template <class T> static inline T atomicMax(T* p, T v) { T o = *p; *p = o > v ? o : v; return o; }
template <class T> static inline T atomicMin(T* p, T v) { T o = *p; *p = o < v ? o : v; return o; }
template <class T> static inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <class T> static inline T atomicOr(T* p, T v) { T o = *p; *p = o | v; return o; }
template <class T> static inline T atomicAnd(T* p, T v) { T o = *p; *p = o & v; return o; }
template <class T> static inline T atomicCAS(T* p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

// ---- integer intrinsics
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(signed char)(a >> 8 * i) * (int)(signed char)(b >> 8 * i);
    return c;
}
static inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    for (int i = 0; i < 4; i++) c += ((a >> 8 * i) & 0xffu) * ((b >> 8 * i) & 0xffu);
    return c;
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
static inline int __mul24(int a, int b) { return (int)((long long)(a << 8 >> 8) * (b << 8 >> 8)); }
// per-byte SIMD (ggml's IQ kernels use these)
#define EMU_BYTES4(expr)                                               \
    unsigned r = 0;                                                    \
    for (int i = 0; i < 4; i++) {                                      \
        int a_ = (int)(signed char)((unsigned)a >> 8 * i);             \
        int b_ = (int)(signed char)((unsigned)b >> 8 * i);             \
        unsigned ua_ = ((unsigned)a >> 8 * i) & 0xffu;                 \
        unsigned ub_ = ((unsigned)b >> 8 * i) & 0xffu;                 \
        (void)a_; (void)b_; (void)ua_; (void)ub_;                      \
        r |= ((unsigned)(expr) & 0xffu) << 8 * i;                      \
    }                                                                  \
    return r;
static inline unsigned __vsub4(unsigned a, unsigned b) { EMU_BYTES4(ua_ - ub_) }
static inline unsigned __vadd4(unsigned a, unsigned b) { EMU_BYTES4(ua_ + ub_) }
static inline unsigned __vsubss4(unsigned a, unsigned b) { EMU_BYTES4(std::max(-128, std::min(127, a_ - b_))) }
static inline unsigned __vaddss4(unsigned a, unsigned b) { EMU_BYTES4(std::max(-128, std::min(127, a_ + b_))) }
static inline unsigned __vcmpeq4(unsigned a, unsigned b) { EMU_BYTES4(ua_ == ub_ ? 0xffu : 0u) }
static inline unsigned __vcmpne4(unsigned a, unsigned b) { EMU_BYTES4(ua_ != ub_ ? 0xffu : 0u) }
static inline unsigned __vcmpgeu4(unsigned a, unsigned b) { EMU_BYTES4(ua_ >= ub_ ? 0xffu : 0u) }
static inline unsigned __vcmpltu4(unsigned a, unsigned b) { EMU_BYTES4(ua_ < ub_ ? 0xffu : 0u) }
static inline unsigned __vabsdiffu4(unsigned a, unsigned b) { EMU_BYTES4(ua_ > ub_ ? ua_ - ub_ : ub_ - ua_) }
static inline int __vsub4(int a, int b) { return (int)__vsub4((unsigned)a, (unsigned)b); }
static inline int __vsubss4(int a, int b) { return (int)__vsubss4((unsigned)a, (unsigned)b); }
static inline int __vcmpeq4(int a, int b) { return (int)__vcmpeq4((unsigned)a, (unsigned)b); }
static inline int __vcmpne4(int a, int b) { return (int)__vcmpne4((unsigned)a, (unsigned)b); }
#undef EMU_BYTES4

// ---- min / max as CUDA's math headers overload them
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

// ---- float intrinsics (g++ is run with -ffp-contract=off: no hidden FMAs)
// (glibc declares __expf & co. itself: function-like macros keep clear of its declarations)
#define __expf(x) expf(x)
#define __exp10f(x) exp10f(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf(x, s, c)
#define __powf(a, b) powf(a, b)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
static inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline unsigned __float2uint_rn(float x) { return (unsigned)std::nearbyint(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }
static inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
static inline unsigned __float_as_uint(float x) { unsigned i; memcpy(&i, &x, 4); return i; }
static inline float __int_as_float(int i) { float x; memcpy(&x, &i, 4); return x; }
static inline float __uint_as_float(unsigned i) { float x; memcpy(&x, &i, 4); return x; }
static inline long long __double_as_longlong(double x) { long long i; memcpy(&i, &x, 8); return i; }
static inline double __longlong_as_double(long long i) { double x; memcpy(&x, &i, 8); return x; }
template <class T> static inline T __ldg(const T* p) { return *p; }

extern "C" const char* emu_last_error() { return ::emu::last_error.c_str(); }

// Launch wrapper used by the generated code: args is void** as for cuLaunchKernel.
namespace emu {
template <class... A, size_t... I>
static inline void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*(typename std::remove_reference<A>::type*)args[I]...);
}
template <class... A>
static inline int launch_kernel(void (*f)(A...), const unsigned* dims, size_t smem, int order,
                                unsigned long long seed, size_t stack_kib, void** args) {
    return launch(dim3(dims[0], dims[1], dims[2]), dim3(dims[3], dims[4], dims[5]), smem, order, seed, stack_kib,
                  [f, args] { call_with(f, args, std::index_sequence_for<A...>{}); });
}
static inline void* dyn_smem() { return g->dynsmem.empty() ? nullptr : (void*)g->dynsmem.data(); }
}  // namespace emu

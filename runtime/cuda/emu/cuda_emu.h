// CUDA emulation header: the same .cu source compiles as C++ with g++ and runs on the CPU.
//
// Model of execution (runtime/cuda/module.py generates one launch wrapper per kernel):
//   * one fiber per CUDA thread, on small mmap'ed stacks with a guard page; switches are
//     _setjmp/_longjmp (no system call). Fibers are kept per thread slot: one that finished its
//     thread parks and runs the next block's thread on that slot, so a thread costs two jumps
//     (makecontext/setcontext only make a slot's fiber the first time, or after a failed launch);
//   * the blocks of a grid run one after another; `extern __shared__ T name[];` is rewritten by
//     the loader to point at the launch's dynamic shared memory (a `__shared__` the loader does
//     not rewrite stays `static`, in section emu_shared, which g++ honours outside templates);
//     shared memory is poisoned before every block (0xFF bytes: NaN for f32/f16, -1 for ints),
//     so reading what no thread wrote shows up;
//   * a thread runs until it reaches a synchronisation point: `__syncthreads` (block barrier),
//     `__syncwarp`, `__shfl_*_sync`, `__ballot_sync`/`__any_sync`/`__all_sync` (per-warp
//     exchanges over 32 lanes), `__activemask`; the scheduler then runs the next thread;
//   * the order threads are run in is forward, reverse or a seeded random permutation per
//     scheduling pass, chosen per launch, so a missing barrier changes results; the block order
//     is chosen on its own (random by default);
//   * static __shared__ declarations are rewritten by the loader into an arena per launch
//     (static_shared); both kinds of shared memory are poisoned before every block;
//   * the race check (a -fsanitize=thread build, race_access below) records every load and store
//     to shared memory and writable arguments and reports two threads touching a byte in one
//     barrier interval, one writing, and two blocks touching global memory, one writing;
//   * __activemask is a scheduling point and returns the lanes waiting at the same call site;
//   * floating point as NVRTC compiles it: FMA contraction (a g++ build flag), f32 flush to zero
//     (MXCSR during the launch), the fast-math intrinsics as their PTX approximations;
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
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

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
              OP_BALLOT = 6, OP_ANY = 7, OP_ALL = 8, OP_ACTIVEMASK = 9 };
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
    unsigned wsync = 0;  // race check: generation of the last __syncwarp this thread passed
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
    unsigned long long seed = 0;
    unsigned flags = 0;     // FLAG_*: block order, flush-to-zero, race check
    unsigned wgen = 0;      // race check: __syncwarp generations in this block
    // static __shared__ variables (the loader rewrites their declarations to static_shared):
    // one arena per launch, a variable's place fixed at its first use, poisoned before every block
    struct SVar { const void* key; size_t off, size; const char* name; };
    std::vector<SVar> svars;
    std::vector<unsigned char> sarena;
    size_t sused = 0;
};
static const size_t SHARED_MAX = 48 * 1024;   // static + dynamic shared memory per block
enum Flags { FLAG_BLOCKS = 3, FLAG_FTZ = 4, FLAG_RACE = 8 };

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

// ---- race check (emu_options(race=True): a build with g++ -fsanitize=thread, whose __tsan_*
// calls before every load and store land in race_access below; no libtsan is linked).
// Shadow cells, one per byte of each tracked range (the launch's writable array arguments,
// static and dynamic shared memory): who wrote and who read it in the current barrier interval
// (`epoch`: a new one per block and per __syncthreads), and, for global memory, which block.
// Two threads of a block touching a byte in one interval, at least one writing, are a race unless
// a __syncwarp both passed orders them (same warp; generations `wsync`). Shuffles, ballots and
// __activemask order nothing. Two blocks touching a byte of global memory, at least one writing,
// are a race too (blocks are unordered). Atomics are not recorded.
struct RaceCell {
    uint32_t w_ep, r_ep;      // epoch of the last write / of the reads recorded
    uint32_t w_gen, r_gen;    // writer's wsync; the largest wsync among the readers
    int32_t w_blk, r_blk;     // global memory: block (linear + 1) that wrote / read, -1: several
    uint16_t w_tid, r_tid;    // writer; reader, 0xFFFF: several
    uint16_t r_first;         // the first reader
    int16_t r_warp;           // the readers' warp, -1: several
};
struct RaceRange {
    uintptr_t lo, hi;
    size_t item;              // element size for the message (0: report bytes)
    bool shared;              // shared memory: per block, no cross-block check
    RaceCell* cells;
    size_t map_bytes;
    char name[64];
};
static const int RACE_MAX_RANGES = 64;
static const uint16_t MANY = 0xFFFF;
struct Race {   // trivial (zero-initialised thread_local: no TLS init function to instrument)
    bool on, reporting;
    int n;
    RaceRange r[RACE_MAX_RANGES];
    uint32_t epoch;
    int32_t blk;
};
// Plain statics, not thread_local: the loader runs one launch of a build at a time (its module
// lock), and a thread_local in a shared object costs a __tls_get_addr call on every access.
static Race race;
static Race race_pending;          // set by emu_race_ranges before a launch
static Thread* race_thr = nullptr; // the block's threads (no std::vector calls in checks)
static Thread* race_cur = nullptr; // the running thread (cur, mirrored while the check is on)

__attribute__((no_sanitize_thread)) static inline bool race_ordered(int a, uint32_t a_gen) {
    // an earlier access by thread a (at a_gen) happens before the current thread's access only
    // through a __syncwarp that both passed since (full-mask __syncwarp; partial masks: approximated)
    return (a >> 5) == (race_cur->linear >> 5) && race_cur->wsync > a_gen && race_thr[a].wsync > a_gen;
}

static std::string race_where_block(int32_t blk) {
    long b = blk - 1;
    return fmt("block (%u,%u,%u)", (unsigned)(b % g->grid.x), (unsigned)((b / g->grid.x) % g->grid.y),
               (unsigned)(b / ((long)g->grid.x * g->grid.y)));
}

static std::string race_thread(int t) {
    const uint3& id = g->threads[t].tid;
    return fmt("thread (%u,%u,%u)", id.x, id.y, id.z);
}

[[noreturn]] static void race_report(const RaceRange& R, uintptr_t a, bool write, size_t n, const std::string& other,
                                     const char* kind) {
    race.reporting = true;
    size_t off = a - R.lo;
    std::string what;
    if (R.name[0] == '@') {   // the static __shared__ arena: name the variable
        what = fmt("static __shared__ byte %zu", off);
        for (auto& v : g->svars)
            if (off >= v.off && off < v.off + v.size) what = fmt("__shared__ %s (byte %zu)", v.name, off - v.off);
    } else if (R.name[0] == '#') {
        what = fmt("static __shared__ (not rewritten by the loader) byte %zu", off);
    } else if (R.item)
        what = fmt("%s[%zu] (byte %zu)", R.name, off / R.item, off);
    else
        what = fmt("%s byte %zu", R.name, off);
    fail(fmt("race on %s: %s %s (a %zu-byte %s) %s; %s", what.c_str(), where().c_str(), write ? "writes" : "reads",
             n, write ? "store" : "load", other.c_str(), kind));
}

__attribute__((no_sanitize_thread)) static void race_check(RaceRange& R, uintptr_t a, size_t n, bool write) {
    Thread* const cur = race_cur;
    const int me = cur->linear, warp = me >> 5;
    const uint32_t ep = race.epoch;
    const int32_t blk = race.blk;
    uintptr_t lo = a < R.lo ? R.lo : a, hi = a + n > R.hi ? R.hi : a + n;
    for (uintptr_t b = lo; b < hi; b++) {
        RaceCell& c = R.cells[b - R.lo];
        if (!R.shared) {
            if (c.w_blk && c.w_blk != blk)
                race_report(R, b, write, n, "what " + race_where_block(c.w_blk) + " wrote in the same launch",
                            "blocks of a grid are not ordered");
            if (write && c.r_blk && c.r_blk != blk)
                race_report(R, b, write, n,
                            "what " + (c.r_blk < 0 ? std::string("several other blocks") : race_where_block(c.r_blk)) +
                                " read in the same launch", "blocks of a grid are not ordered");
        }
        if (c.w_ep == ep && c.w_tid != me && !race_ordered(c.w_tid, c.w_gen))
            race_report(R, b, write, n, "what " + race_thread(c.w_tid) + " wrote",
                        "no __syncthreads (or __syncwarp) between them, and shuffles do not order memory");
        if (write && c.r_ep == ep) {
            if (c.r_tid == MANY) {
                if (!(c.r_warp == warp && cur->wsync > c.r_gen)) {
                    int o = c.r_first != me ? c.r_first : -1;
                    race_report(R, b, write, n,
                                "what several threads" + (o >= 0 ? " (" + race_thread(o) + " first)" : std::string()) +
                                    " read", "no __syncthreads (or __syncwarp) between them");
                }
            } else if (c.r_tid != me && !race_ordered(c.r_tid, c.r_gen)) {
                race_report(R, b, write, n, "what " + race_thread(c.r_tid) + " read",
                            "no __syncthreads (or __syncwarp) between them, and shuffles do not order memory");
            }
        }
        if (write) {
            c.w_ep = ep;
            c.w_tid = (uint16_t)me;
            c.w_gen = cur->wsync;
            c.w_blk = blk;
        } else {
            if (c.r_ep != ep) {
                c.r_ep = ep;
                c.r_tid = c.r_first = (uint16_t)me;
                c.r_gen = cur->wsync;
                c.r_warp = (int16_t)warp;
            } else if (c.r_tid != me) {
                c.r_tid = MANY;
                if (c.r_warp != warp) c.r_warp = -1;
                if (cur->wsync > c.r_gen) c.r_gen = cur->wsync;
            }
            if (!R.shared) c.r_blk = !c.r_blk || c.r_blk == blk ? blk : -1;
        }
    }
}

__attribute__((no_sanitize_thread)) static inline void race_access(void* p, size_t n, bool write) {
    if (!race.on || race.reporting || !race_cur) return;
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < race.n; i++) {
        RaceRange& R = race.r[i];
        if (a < R.hi && a + n > R.lo) {
            race_check(R, a, n, write);
            return;
        }
    }
}

static void race_add(const char* name, uintptr_t lo, uintptr_t hi, size_t item, bool shared) {
    if (race.n >= RACE_MAX_RANGES || hi <= lo) return;
    RaceRange& R = race.r[race.n];
    size_t bytes = (hi - lo) * sizeof(RaceCell);
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return;
    R.lo = lo;
    R.hi = hi;
    R.item = item;
    R.shared = shared;
    R.cells = (RaceCell*)m;
    R.map_bytes = bytes;
    snprintf(R.name, sizeof R.name, "%s", name);
    race.n++;
}

static void race_end() {
    for (int i = 0; i < race.n; i++) munmap(race.r[i].cells, race.r[i].map_bytes);
    race.n = 0;
    race.on = race.reporting = false;
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
        unsigned gen = t.op == OP_SYNCWARP ? ++g->wgen : 0;   // __syncwarp orders memory among its lanes
        for (int j = 0; j < 32; j++)
            if (m >> j & 1u) {
                g->threads[base + j].state = READY;
                if (gen) g->threads[base + j].wsync = gen;
            }
        released = true;
    }
    return released;
}

// __activemask: once every thread of the block waits somewhere, each lane waiting at an
// __activemask gets the lanes of its warp waiting at the same call site (file:line): lanes that
// took another branch, wait at a barrier or have exited are not active. (A GPU need not
// reconverge diverged lanes even at one site, so it may return fewer; not modelled.)
static void resolve_activemask(int n_threads) {
    for (int base = 0; base < n_threads; base += 32) {
        int n_lanes = std::min(32, n_threads - base);
        for (int l = 0; l < n_lanes; l++) {
            Thread& t = g->threads[base + l];
            if (t.state != AT_WARP || t.op != OP_ACTIVEMASK) continue;
            unsigned m = 0;
            for (int j = 0; j < n_lanes; j++) {
                Thread& o = g->threads[base + j];
                if (o.state == AT_WARP && o.op == OP_ACTIVEMASK && o.bar_line == t.bar_line && !strcmp(o.bar_file, t.bar_file))
                    m |= 1u << j;
            }
            for (int j = 0; j < n_lanes; j++)
                if (m >> j & 1u) {
                    g->threads[base + j].result = m;
                    g->threads[base + j].state = READY;
                    g->threads[base + j].op = 0;
                }
        }
    }
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
    L.wgen = 0;
    race_thr = L.threads.data();
    race.epoch++;
    if (!L.dynsmem.empty()) memset(L.dynsmem.data(), 0xFF, L.dynsmem.size());
    if (L.sused) memset(L.sarena.data(), 0xFF, L.sused);
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
            cur = race_cur = &t;
            if (!_setjmp(L.sched)) {
                if (!t.started) {
                    t.started = true;
                    start_on_slot(slots[i]);
                }
                _longjmp(t.env, 1);
            }
            cur = race_cur = nullptr;
            ran = true;
            if (L.failed) return 1;
        }
        (void)ran;
        int n_done = 0, n_bar = 0, n_warp = 0, n_am = 0;
        for (auto& t : L.threads) {
            n_done += t.state == DONE;
            n_bar += t.state == AT_BARRIER;
            n_warp += t.state == AT_WARP;
            n_am += t.state == AT_WARP && t.op == OP_ACTIVEMASK;
        }
        if (n_done == n) return 0;
        if (n_am) {
            resolve_activemask(n);
            continue;
        }
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
            race.epoch++;   // a new barrier interval
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

// flags: FLAG_BLOCKS = the block order (forward, reverse, random: seeded, independent of the
// thread order), FLAG_FTZ = f32 denormals flush to zero (MXCSR FTZ+DAZ during the launch, as
// NVRTC's -ftz=true; on x86 doubles flush too), FLAG_RACE = the race check (a -fsanitize=thread build).
static int launch(dim3 grid, dim3 block, size_t smem, int order, unsigned long long seed, size_t stack_kib,
                  unsigned flags, std::function<void()> body) {
    install_fault_handler();
    Launch L;
    L.grid = grid;
    L.block = block;
    L.body = std::move(body);
    L.dynsmem.assign(smem, 0xFF);
    L.sarena.assign(SHARED_MAX, 0xFF);
    L.seed = seed;
    L.flags = flags;
    if (stack_kib) L.stack_size = stack_kib * 1024;
    Launch* saved = g;
    g = &L;
    std::mt19937_64 rng(seed);
    std::mt19937_64 block_rng(seed ^ 0x9e3779b97f4a7c15ull);
    long nb = (long)grid.x * grid.y * grid.z;
    std::vector<long> blocks(nb);
    int border = (int)(flags & FLAG_BLOCKS);
    for (long i = 0; i < nb; i++) blocks[i] = border == REVERSE ? nb - 1 - i : i;
    if (border == RANDOM) std::shuffle(blocks.begin(), blocks.end(), block_rng);
    if (flags & FLAG_RACE) {
        race_end();
        for (int i = 0; i < race_pending.n; i++) {
            const RaceRange& P = race_pending.r[i];
            race_add(P.name, P.lo, P.hi, P.item, false);
        }
        if (!L.dynsmem.empty())
            race_add("extern __shared__ (dynamic)", (uintptr_t)L.dynsmem.data(),
                     (uintptr_t)L.dynsmem.data() + L.dynsmem.size(), 0, true);
        race_add("@", (uintptr_t)L.sarena.data(), (uintptr_t)L.sarena.data() + L.sarena.size(), 0, true);
        if (__start_emu_shared && __stop_emu_shared > __start_emu_shared)
            race_add("#", (uintptr_t)__start_emu_shared, (uintptr_t)__stop_emu_shared, 0, true);
        race.epoch = 0;
        race.on = true;
    }
    race_pending.n = 0;
#if defined(__x86_64__) || defined(__i386__)
    unsigned csr = _mm_getcsr();
    if (flags & FLAG_FTZ) _mm_setcsr(csr | 0x8040u);   // FTZ | DAZ
#endif
    int rc = 0;
    for (long b : blocks) {
        L.bid = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((long)grid.x * grid.y))};
        race.blk = (int32_t)b + 1;
        rc = run_block(order, rng);
        if (rc) {
            for (size_t i = 0; i < L.threads.size() && i < slots.size(); i++)
                if (L.threads[i].state != DONE) slots[i]->parked = false;
            break;
        }
    }
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(csr);
#endif
    race_end();
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
namespace emu {
static inline unsigned activemask(const char* file, int line) {
    cur->bar_file = file;
    cur->bar_line = line;
    cur->op = OP_ACTIVEMASK;
    cur->state = AT_WARP;
    yield_to_scheduler();
    return (unsigned)cur->result;
}
}  // namespace emu
#define __activemask() ::emu::activemask(__FILE__, __LINE__)
static inline void __threadfence() {}
static inline void __threadfence_block() {}
[[noreturn]] static inline void __trap() { ::emu::fail(::emu::where() + ": __trap()"); }
static inline long long clock64() { return (long long)++::emu::clock_counter; }

// ---- atomics (fibers are cooperative: a read-modify-write is never interrupted; the race check
// does not record them)
#define EMU_NO_RACE __attribute__((no_sanitize_thread))
template <class T> EMU_NO_RACE static inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <class T> EMU_NO_RACE static inline T atomicSub(T* p, T v) { T o = *p; *p = o - v; return o; }
template <class T> EMU_NO_RACE static inline T atomicMax(T* p, T v) { T o = *p; *p = o > v ? o : v; return o; }
template <class T> EMU_NO_RACE static inline T atomicMin(T* p, T v) { T o = *p; *p = o < v ? o : v; return o; }
template <class T> EMU_NO_RACE static inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <class T> EMU_NO_RACE static inline T atomicOr(T* p, T v) { T o = *p; *p = o | v; return o; }
template <class T> EMU_NO_RACE static inline T atomicAnd(T* p, T v) { T o = *p; *p = o & v; return o; }
template <class T> EMU_NO_RACE static inline T atomicCAS(T* p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

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

// ---- float intrinsics
// The emulated build contracts a*b+c into FMAs where g++ chooses (-ffp-contract=fast
// -fexpensive-optimizations -mfma, the counterpart of NVRTC's default -fmad=true; the loader
// falls back to no contraction on a CPU without FMA). The __f*_rn / __d*_rn intrinsics are never
// contracted on a GPU: their operands and results pass through an empty asm here, so g++
// cannot fuse them either.
#if defined(__x86_64__) || defined(__i386__)
#define EMU_OPAQUE(v) asm("" : "+x"(v))
#else
#define EMU_OPAQUE(v) asm("" : "+m"(v))
#endif
static inline float __fadd_rn(float a, float b) { EMU_OPAQUE(a); EMU_OPAQUE(b); float r = a + b; EMU_OPAQUE(r); return r; }
static inline float __fsub_rn(float a, float b) { EMU_OPAQUE(a); EMU_OPAQUE(b); float r = a - b; EMU_OPAQUE(r); return r; }
static inline float __fmul_rn(float a, float b) { EMU_OPAQUE(a); EMU_OPAQUE(b); float r = a * b; EMU_OPAQUE(r); return r; }
static inline float __fdiv_rn(float a, float b) { EMU_OPAQUE(a); EMU_OPAQUE(b); float r = a / b; EMU_OPAQUE(r); return r; }
static inline float __frcp_rn(float x) { return __fdiv_rn(1.0f, x); }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { EMU_OPAQUE(a); EMU_OPAQUE(b); double r = a + b; EMU_OPAQUE(r); return r; }
static inline double __dmul_rn(double a, double b) { EMU_OPAQUE(a); EMU_OPAQUE(b); double r = a * b; EMU_OPAQUE(r); return r; }

// The fast-math intrinsics as the PTX approximations they compile to (CUDA C Programming Guide,
// "Intrinsic Functions", maximum errors): the exact function computed in double, rounded to float,
// then moved by a deterministic pseudo-random error within the documented bound (a hash of the
// input, the function and the launch seed: the same input gives the same answer, as on a GPU),
// plus the approximations' structural behaviour: __expf(x) = ex2.approx(x * log2(e) rounded to
// float) (so its error grows with |x|), __fdividef(x, y) = 0 for 2^126 < |y| < 2^128 (NaN if x is
// infinite), results below 2^-126 flushed to zero (.ftz).
namespace emu {
static inline uint32_t approx_hash(uint32_t x, uint32_t salt) {
    uint64_t h = (uint64_t)x * 0x9E3779B97F4A7C15ull ^ ((uint64_t)salt << 32) ^ (g ? g->seed * 0xBF58476D1CE4E5B9ull : 0);
    h ^= h >> 31;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 29;
    return (uint32_t)h;
}
static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline float ftz(float r) { return std::fabs(r) < 1.17549435e-38f ? std::copysign(0.0f, r) : r; }
// r moved by up to max_ulp units in the last place (never across zero or to infinity)
static inline float ulp_err(float r, float in, uint32_t salt, int max_ulp) {
    if (!std::isfinite(r) || r == 0.0f || max_ulp <= 0) return r;
    int k = (int)(approx_hash(f2u(in), salt) % (uint32_t)(2 * max_ulp + 1)) - max_ulp;
    uint32_t u = f2u(r), mag = u & 0x7fffffffu;
    long m = (long)mag + k;
    if (m < 1) m = 1;
    if (m > 0x7f7fffffL) m = 0x7f7fffffL;
    return ftz(u2f((u & 0x80000000u) | (uint32_t)m));
}
// r moved by up to `abs` (absolute error)
static inline float abs_err(double r, float in, uint32_t salt, double abs) {
    double e = ((double)(approx_hash(f2u(in), salt) >> 8) / 8388608.0 - 1.0) * abs;   // [-abs, abs)
    return ftz((float)(r + e));
}
static inline float ex2_approx(float t) {   // ex2.approx.ftz.f32: max 2 ulp (one from the rounding here)
    if (std::isnan(t)) return t;
    if (t == INFINITY) return INFINITY;
    return ulp_err(ftz((float)std::exp2((double)t)), t, 1, 1);
}
static inline float lg2_approx(float x) {   // lg2.approx.ftz.f32: abs 2^-22 near 1, else 2 ulp
    x = ftz(x);
    if (x < 0.0f || std::isnan(x)) return NAN;
    if (x == 0.0f) return -INFINITY;
    if (x == INFINITY) return INFINITY;
    double r = std::log2((double)x);
    return x >= 0.5f && x <= 2.0f ? abs_err(r, x, 2, 0x1p-22) : ulp_err((float)r, x, 2, 1);
}
static inline float sin_cos_approx(float x, bool cosine) {   // abs 2^-21.41 in [-pi, pi], 2^-20.5 beyond
    if (!std::isfinite(x)) return NAN;
    double r = cosine ? std::cos((double)x) : std::sin((double)x);
    return abs_err(r, x, cosine ? 4 : 3, std::fabs(x) <= 3.14159265f ? 0x1.6p-22 : 0x1.6p-21);
}
static inline float rcp_approx(float y) {   // rcp.approx.ftz.f32: 1 ulp
    y = ftz(y);
    if (y == 0.0f) return std::copysign(INFINITY, y);
    if (std::isinf(y)) return std::copysign(0.0f, y);
    return ulp_err(ftz((float)(1.0 / (double)y)), y, 5, 1);
}
}  // namespace emu
// (glibc declares __expf & co. itself: function-like macros keep clear of its declarations)
#define __expf(x) ::emu::ex2_approx(::emu::ftz(__fmul_rn(::emu::ftz((float)(x)), 1.44269502f)))
#define __exp10f(x) ::emu::ex2_approx(::emu::ftz(__fmul_rn(::emu::ftz((float)(x)), 3.32192802f)))
#define __log2f(x) ::emu::lg2_approx((float)(x))
#define __logf(x) ::emu::ftz(__fmul_rn(::emu::lg2_approx((float)(x)), 0.693147182f))
#define __sinf(x) ::emu::sin_cos_approx((float)(x), false)
#define __cosf(x) ::emu::sin_cos_approx((float)(x), true)
#define __tanf(x) __fdividef(__sinf(x), __cosf(x))
#define __sincosf(x, s, c) (*(s) = __sinf(x), *(c) = __cosf(x))
#define __powf(a, b) ::emu::ex2_approx(::emu::ftz(__fmul_rn((float)(b), ::emu::lg2_approx((float)(a)))))
static inline float __fdividef(float a, float b) {
    float ab = std::fabs(b);
    if (ab > 0x1p126f && ab <= 0x1.fffffep127f) return std::isinf(a) ? NAN : std::copysign(0.0f, a) * std::copysign(1.0f, b);
    return ::emu::ftz(__fmul_rn(a, ::emu::rcp_approx(b)));
}
static inline float rsqrtf(float x) {   // rsqrt.approx.ftz.f32: 2 ulp (one from the rounding here)
    x = ::emu::ftz(x);
    if (x < 0.0f || std::isnan(x)) return NAN;
    if (x == 0.0f) return std::copysign(INFINITY, x);
    if (std::isinf(x)) return 0.0f;
    return ::emu::ulp_err((float)(1.0 / std::sqrt((double)x)), x, 6, 1);
}
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

// The race check's global ranges for the next launch: n triples (start, end, element size) and
// their names separated by '\n' (the loader passes the writable array arguments).
extern "C" void emu_race_ranges(int n, const unsigned long long* spans, const char* names) {
    ::emu::Race& P = ::emu::race_pending;
    P.n = 0;
    for (int i = 0; i < n && i < ::emu::RACE_MAX_RANGES; i++) {
        ::emu::RaceRange& R = P.r[P.n++];
        R.lo = spans[3 * i];
        R.hi = spans[3 * i + 1];
        R.item = spans[3 * i + 2];
        const char* e = strchr(names, '\n');
        size_t len = e ? (size_t)(e - names) : strlen(names);
        snprintf(R.name, sizeof R.name, "%.*s", (int)std::min(len, sizeof R.name - 1), names);
        names += e ? len + 1 : len;
    }
}

// Launch wrapper used by the generated code: args is void** as for cuLaunchKernel.
namespace emu {
template <class... A, size_t... I>
static inline void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*(typename std::remove_reference<A>::type*)args[I]...);
}
template <class... A>
static inline int launch_kernel(void (*f)(A...), const unsigned* dims, size_t smem, int order,
                                unsigned long long seed, size_t stack_kib, unsigned flags, void** args) {
    return launch(dim3(dims[0], dims[1], dims[2]), dim3(dims[3], dims[4], dims[5]), smem, order, seed, stack_kib,
                  flags, [f, args] { call_with(f, args, std::index_sequence_for<A...>{}); });
}
static inline void* dyn_smem() { return g->dynsmem.empty() ? nullptr : (void*)g->dynsmem.data(); }
// A static __shared__ variable (the loader's rewrite of `__shared__ T name[N];`): its place in the
// launch's arena, the same for every thread (key: a static unique to the declaration and template
// instantiation). g++ ignores section attributes on statics in templates, so `static` alone would
// neither be poisoned nor seen by the race check.
static inline void* static_shared(const void* key, size_t size, size_t align, const char* name) {
    Launch& L = *g;
    for (auto& v : L.svars)
        if (v.key == key) return L.sarena.data() + v.off;
    size_t off = (L.sused + align - 1) / align * align;
    if (off + size + L.dynsmem.size() > SHARED_MAX)
        fail(where() + fmt(": __shared__ %s: %zu bytes of static shared memory with %zu dynamic exceed 48 KiB",
                           name, off + size, L.dynsmem.size()));
    L.svars.push_back({key, off, size, name});
    L.sused = off + size;
    return L.sarena.data() + off;
}
}  // namespace emu

#ifdef GGUFKIT_EMU_RACE
// The race-check build (g++ -fsanitize=thread, no libtsan): every instrumented load and store.
#define EMU_TSAN(n)                                                                                      \
    extern "C" EMU_NO_RACE void __tsan_read##n(void* p) { ::emu::race_access(p, n, false); }            \
    extern "C" EMU_NO_RACE void __tsan_write##n(void* p) { ::emu::race_access(p, n, true); }            \
    extern "C" EMU_NO_RACE void __tsan_unaligned_read##n(void* p) { ::emu::race_access(p, n, false); }  \
    extern "C" EMU_NO_RACE void __tsan_unaligned_write##n(void* p) { ::emu::race_access(p, n, true); }  \
    extern "C" EMU_NO_RACE void __tsan_volatile_read##n(void* p) { ::emu::race_access(p, n, false); }   \
    extern "C" EMU_NO_RACE void __tsan_volatile_write##n(void* p) { ::emu::race_access(p, n, true); }
EMU_TSAN(1)
EMU_TSAN(2)
EMU_TSAN(4)
EMU_TSAN(8)
EMU_TSAN(16)
#undef EMU_TSAN
extern "C" EMU_NO_RACE void __tsan_read_range(void* p, long n) { ::emu::race_access(p, (size_t)n, false); }
extern "C" EMU_NO_RACE void __tsan_write_range(void* p, long n) { ::emu::race_access(p, (size_t)n, true); }
extern "C" EMU_NO_RACE void __tsan_func_entry(void*) {}
extern "C" EMU_NO_RACE void __tsan_func_exit() {}
extern "C" EMU_NO_RACE void __tsan_init() {}
#endif

"""Microbenchmark of the runtime matmul kernels, per weight type.

For each type: decode (n_tok = 1) matvec time, the packed-weight bandwidth it
reaches (GB/s = weight bytes / time), that as a share of the measured DRAM read
bandwidth (printed first: a Numba loop summing a 512 MiB array with the same
threads), and the tokens/s a model of --model-bytes packed weights would get if
every weight ran at that speed; and prefill (n_tok = --prefill) GFLOP/s of the
dequantize-tile + BLAS path. Use matrices bigger than the L3 cache for the DRAM
comparison (e.g. --rows 32768 --cols 4096).

    python -m tools.bench.bench_kernels [-t THREADS] [--rows 4096] [--cols 4096] [--types Q4_K,Q8_0]
                                  [--prefill 128] [--model-bytes 250e6] [--json]
    python -m tools.bench.bench_kernels --gemm        # OpenBLAS sgemm GFLOP/s on one thread, and its kernel
    python -m tools.bench.bench_kernels --tiles [--types ...]   # prefill tile dequantization, G weights/s
    python -m tools.bench.bench_kernels --compile-time [--types ...]   # Numba first-call (compile or cache load) time
    python -m tools.bench.bench_kernels --model FILE.gguf [-t 1] [--prefill 128] [--gen 16]
        # whole model through runtime.loader / runtime.generate: prefill and decode tokens/s
        # (compare: llama-bench -m FILE.gguf -t 1 -p 128 -n 16)
"""

import argparse
import json
import time

T_START = time.perf_counter()
from pathlib import Path

import numpy as np

from runtime import backend
from tests.helpers.qtensors import random_qtensor


CLOCK = time.perf_counter


def best_time(fn, reps: int) -> float:
    fn()                                  # compile / warm caches
    ts = []
    for _ in range(reps):
        t0 = CLOCK()
        fn()
        ts.append(CLOCK() - t0)
    return min(ts)


def dram_read_gbs(threads_note: str = "", reps: int = 5) -> float:
    """Best-of-reps read bandwidth of a plain parallel Numba sum over 512 MiB (GB/s)."""
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def _sum(a):
        s = 0
        for i in prange(a.size):
            s += a[i]
        return s

    a = np.ones(64 << 20, np.uint64)
    return a.nbytes / best_time(lambda: _sum(a), reps) / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--types", default="F32,F16,BF16,Q8_0,Q6_K,Q5_K,Q4_K,Q5_0,Q5_1,Q4_0,Q4_1,Q3_K,Q2_K,"
                    "IQ4_NL,IQ4_XS,IQ3_S,IQ3_XXS,IQ2_XXS,IQ2_XS,IQ2_S,TQ2_0,MXFP4")
    ap.add_argument("--prefill", type=int, default=128, help="tokens for the prefill measurement (0: skip)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--model-bytes", type=float, default=250e6, help="packed weight bytes read per token")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process CPU clock instead of the wall clock (with -t 1 on a shared, "
                         "overloaded machine this counts the work done, not the time spent descheduled)")
    ap.add_argument("--model", help="GGUF file: time prefill and decode of the whole model instead")
    ap.add_argument("--gen", type=int, default=16, help="decoded tokens for --model")
    ap.add_argument("--gemm", action="store_true",
                    help="only the f32 GEMM of the prefill (OpenBLAS, one thread, CPU clock): 512 x 2048 x 5632 "
                         "and 512 x 5632 x 2048, with the OpenBLAS kernel that ran")
    ap.add_argument("--tiles", action="store_true",
                    help="only the prefill's tile dequantization (512 rows x --cols, one thread, CPU clock, "
                         "median of 7): G weights/s per type, and whether it equals the numpy reference")
    ap.add_argument("--compile-time", action="store_true",
                    help="only time the first call of every kernel (cold or warm Numba cache)")
    a = ap.parse_args(argv)
    global CLOCK
    if a.cpu_time:
        CLOCK = time.process_time
    if a.compile_time:
        return compile_time(a.types.split(","))
    if a.gemm:
        return gemm_rate(a.reps)
    if a.tiles:
        return tile_rate(a.types.split(","), a.cols)
    if a.model:
        return bench_model(a.model, a.threads, a.prefill or 128, a.gen)
    nthreads = backend.set_num_threads(a.threads)
    dram = dram_read_gbs()
    if not a.json:
        print(f"DRAM read bandwidth (Numba sum of 512 MiB, {nthreads} thread(s)): {dram:.1f} GB/s; "
              f"matrices {a.rows} x {a.cols}; {'CPU' if a.cpu_time else 'wall'} clock, best of {a.reps}; "
              f"load average {__import__('os').getloadavg()[0]:.1f}", flush=True)
    rows = []
    for qtype in a.types.split(","):
        w = random_qtensor(qtype, a.rows, a.cols)
        x1 = np.random.default_rng(0).standard_normal((1, a.cols)).astype(np.float32)
        t = best_time(lambda: backend.CPU.matmul(w, x1), a.reps)
        gbs = w.data.nbytes / t / 1e9
        r = {"type": qtype, "kernel": qtype in backend.KERNEL_TYPES, "rows": a.rows, "cols": a.cols,
             "threads": nthreads, "bytes": int(w.data.nbytes), "decode_ms": t * 1e3, "decode_GBps": gbs,
             "model_tok_s": gbs * 1e9 / a.model_bytes, "dram_GBps": dram, "of_dram": gbs / dram}
        if a.prefill:
            xp = np.random.default_rng(0).standard_normal((a.prefill, a.cols)).astype(np.float32)
            tp = best_time(lambda: backend.CPU.matmul(w, xp), max(2, a.reps // 2))
            r["prefill_ms"] = tp * 1e3
            r["prefill_GFLOPs"] = 2.0 * a.rows * a.cols * a.prefill / tp / 1e9
        rows.append(r)
        if not a.json:
            line = (f"{qtype:7s} {'numba' if r['kernel'] else 'numpy':5s} decode {r['decode_ms']:8.3f} ms "
                    f"{gbs:6.2f} GB/s ({100 * gbs / dram:4.0f}% of DRAM {dram:.1f})  "
                    f"~{r['model_tok_s']:6.1f} tok/s@{a.model_bytes / 1e6:.0f}MB")
            if a.prefill:
                line += f"  prefill{a.prefill} {r['prefill_ms']:8.1f} ms {r['prefill_GFLOPs']:6.1f} GFLOP/s"
            print(line, flush=True)
    if a.json:
        print(json.dumps(rows, indent=1))


def tile_rate(types, cols: int) -> None:
    """G weights/s of ``matmul.dequantize_tile`` (what each prefill thread runs before its GEMM)."""
    import importlib
    import os
    from quant.types import TYPES
    from runtime import reference
    mm = importlib.import_module("runtime.kernels.matmul")
    print(f"tile dequantization, 512 x {cols}, one thread, CPU clock, median of 7; "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in types:
        if name == "F32":
            continue
        w = random_qtensor(name, 512, cols)
        qt = TYPES[name].id
        got = mm.dequantize_tile(w.data, qt, cols, 0, 512)
        exact = np.array_equal(got, reference.dequantize_rows(w.data, name, cols), equal_nan=True)
        ts = []
        for _ in range(7):
            t0 = time.process_time()
            mm.dequantize_tile(w.data, qt, cols, 0, 512)
            ts.append(time.process_time() - t0)
        print(f"{name:8s} {512 * cols / sorted(ts)[3] / 1e9:6.2f} G weights/s  "
              f"{'equal to the reference' if exact else 'DIFFERS from the reference'}")


def gemm_rate(reps: int) -> None:
    """GFLOP/s of OpenBLAS's sgemm on one thread (the prefill's per-thread product)."""
    import os
    from threadpoolctl import threadpool_limits
    print(f"OpenBLAS kernel {backend.blas_setup()}; load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    with threadpool_limits(1, user_api="blas"):
        for m, k, n in ((512, 2048, 5632), (512, 5632, 2048)):
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            ts = []
            for _ in range(max(3, reps)):
                t0 = time.process_time()
                x @ w.T
                ts.append(time.process_time() - t0)
            print(f"sgemm {m} x {k} x {n}: {2 * m * k * n / sorted(ts)[len(ts) // 2] / 1e9:.1f} GFLOP/s "
                  f"(median of {len(ts)}, CPU clock)")
        # the prefill multiplies x [512, k] with one tile of weight rows at a time
        # (kernels.matmul.TILE_MIN_ROWS): OpenBLAS repacks x for each tile
        n = 3072
        for k in (2048, 5632, 14336):
            x = rng.standard_normal((512, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32)
            line = []
            for rows in (64, 96, 128, 256, 512, 768):
                ts = []
                for _ in range(max(3, reps)):
                    t0 = time.process_time()
                    for r0 in range(0, n, rows):
                        x @ w[r0:r0 + rows].T
                    ts.append(time.process_time() - t0)
                line.append(f"{rows}: {2 * 512 * k * n / sorted(ts)[len(ts) // 2] / 1e9:.0f}")
            print(f"sgemm 512 x {k} x {n} in tiles of N rows, GFLOP/s: " + ", ".join(line))


def bench_model(path: str, threads, n_prompt: int, n_gen: int):
    """Prefill n_prompt tokens, then decode n_gen one by one (greedy); tokens/s of each."""
    from runtime import loader
    from runtime.generate import decode_one, prefill
    nthreads = backend.set_num_threads(threads)
    m = loader.load(path, with_tokenizer=False)
    m = m[0] if isinstance(m, tuple) else m
    ids = [1] + list(range(1000, 1000 + n_prompt - 1))
    prefill(m, m.new_cache(32), ids[:16])                    # compile / load kernels
    cache = m.new_cache(n_prompt + n_gen)
    t0 = time.perf_counter()
    logits = prefill(m, cache, ids)
    t_pp = time.perf_counter() - t0
    ts = []
    tid = int(np.argmax(logits))
    for _ in range(n_gen):
        t0 = time.perf_counter()
        tid = int(np.argmax(decode_one(m, cache, tid)))
        ts.append(time.perf_counter() - t0)
    print(f"{Path(path).name}  threads {nthreads}  pp{n_prompt} {n_prompt / t_pp:.1f} tok/s  "
          f"tg{n_gen} {n_gen / sum(ts):.1f} tok/s (median {1 / np.median(ts):.1f})")


def compile_time(types):
    """Import time, then the first calls (decode, prefill, get_rows per type, and rope)."""
    t1 = time.perf_counter()
    for qtype in types:
        n_in = 256 if qtype not in ("F32", "F16", "BF16") else 64
        w = random_qtensor(qtype, 16, n_in)
        backend.CPU.matmul(w, np.ones((1, n_in), np.float32))
        backend.CPU.matmul(w, np.ones((9, n_in), np.float32))
        backend.CPU.get_rows(w, [1])
    backend.CPU.rope(np.ones((2, 2, 8), np.float32), np.array([0, 1]), 8, 1e4)
    t2 = time.perf_counter()
    print(f"import {t1 - T_START:.2f} s, first calls ({len(types)} types + rope) {t2 - t1:.2f} s")


if __name__ == "__main__":
    main()

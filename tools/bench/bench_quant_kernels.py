#!/usr/bin/env python3
"""Time quant's Numba kernels against libggml's ggml_quantize_chunk on the same rows.

ggml runs in NTHREADS Python threads over row chunks (ctypes releases the GIL), which is how
llama-quantize splits a tensor; quant runs with numba.set_num_threads(NTHREADS). Each figure
is the best of --repeat runs; with one thread both CPU time and wall time are printed (CPU
time is steadier on a shared machine). Outputs are also compared byte for byte.

    python -m tools.bench.bench_quant_kernels --types Q4_K,Q6_K,Q8_0 --threads 1 [--rows 256 --cols 4096]
(the file-level comparison with llama-quantize itself is a separate tool)
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

import quant
from tools.golden.gen_quant_golden import DEFAULT_LIB, GGML


def ggml_parallel(g: GGML, name, x, imatrix, nthreads):
    if nthreads <= 1:
        return g.quantize(name, x, imatrix)
    parts = np.array_split(np.arange(x.shape[0]), nthreads)
    out = [None] * nthreads

    def work(k):
        out[k] = g.quantize(name, x[parts[k]], imatrix)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return np.concatenate(out)


def best_of(f, repeat):
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        r = f()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return r, min(wall), min(cpu)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=DEFAULT_LIB)
    ap.add_argument("--types", default="Q8_0,Q4_K,Q6_K")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args(argv)
    g = GGML(a.lib)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((a.rows, a.cols)) * 0.02).astype(np.float32)
    im = rng.uniform(0.1, 2.0, a.cols).astype(np.float32)
    print(f"{a.rows} x {a.cols} f32, {a.threads} thread(s); times in ms (best of {a.repeat})")
    for name in [s.strip().upper() for s in a.types.split(",") if s.strip()]:
        for imx in (None, im):
            if imx is None and g.requires_imatrix(name):
                continue
            quant.quantize(x[:1], name, imx, nthreads=a.threads)          # compile / load cache
            e, gw, gc = best_of(lambda: ggml_parallel(g, name, x, imx, a.threads), a.repeat)
            q, qw_, qc = best_of(lambda: quant.quantize(x, name, imx, nthreads=a.threads), a.repeat)
            same = "same bytes" if np.array_equal(e, q) else "DIFFERENT BYTES"
            tag = f"{name:7s} imatrix={'yes' if imx is not None else 'no ':3s}"
            if a.threads == 1:
                print(f"{tag} ggml cpu {gc*1e3:8.1f} wall {gw*1e3:8.1f} | quant cpu {qc*1e3:8.1f} "
                      f"wall {qw_*1e3:8.1f} | ratio(cpu) {qc/gc:5.2f}  {same}")
            else:
                print(f"{tag} ggml wall {gw*1e3:8.1f} | quant wall {qw_*1e3:8.1f} | ratio {qw_/gw:5.2f}  {same}")


if __name__ == "__main__":
    main()

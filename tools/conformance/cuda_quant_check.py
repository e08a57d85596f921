"""Accuracy of the quantized CUDA matmul (runtime/cuda/qmatmul.py) on weights from quant's own
quantizers, per type, under emulation (or on a GPU with --gpu):

    python -m tools.conformance.cuda_quant_check [--types Q4_K,IQ2_XXS] [--n-out 16] [--n-in 1024] [--gpu]
    python -m tools.conformance.cuda_quant_check --gpu --bench [--n-out 8192 --n-in 8192] [--tokens 1]

For each type: N(0,1) weights [n_out, n_in] quantized with quant.quantize (IQ types with a flat
imatrix), x N(0,1) [4, n_in]. Prints the largest |y - y_ref| / sum|w*x| of
  exact:     numerics="exact" vs the CPU backend's math (runtime.reference.activations_as_seen x dequant W);
  fast:      numerics="fast" vs the float64 product of dequant W and q8_1-quantized x;
  diff:      how far the two numerics are apart, relative to |y| (RMS over outputs).

--bench (GPU): decode matvec speed per type on random blocks (tests/runtime/cuda/test_cuda_quant.py's
random_rows): 20 calls captured in one CUDA graph after 5 warm-ups, the median of 5 replays
timed by events divided by 20 (Python's launch gaps between calls are not timed), and the weight
bytes read per second. Compare with the card's memory bandwidth (gpu_check's mmvq step does the
same against a measured copy).
"""
from __future__ import annotations

import argparse

import numpy as np

import quant
from quant.types import TYPES
from runtime import reference
from runtime.cuda import qmatmul as qm


def bench(a) -> None:
    import cupy
    from tests.helpers.qtensors import random_rows

    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((a.tokens, a.n_in)).astype(np.float32))
    y = cupy.empty((a.tokens, a.n_out), np.float32)
    print(f"{'type':8} {'numerics':9} {'us':>9} {'GB/s':>8}   (n_out {a.n_out}, n_in {a.n_in}, {a.tokens} token(s))")
    for name in a.types.split(","):
        w = cupy.asarray(random_rows(name, a.n_out, a.n_in, rng))
        for numerics in qm.CUDA_NUMERICS:
            for _ in range(5):
                qm.matvec(w, name, a.n_out, a.n_in, x, numerics=numerics, out=y)
            # 20 calls replayed from one CUDA graph, so Python's launch gaps are not timed
            s = cupy.cuda.Stream(non_blocking=True)
            with s:
                s.begin_capture()
                for _ in range(20):
                    qm.matvec(w, name, a.n_out, a.n_in, x, numerics=numerics, out=y)
                g = s.end_capture()
                times = []
                for _ in range(5):
                    e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
                    e0.record(s)
                    g.launch(s)
                    e1.record(s)
                    e1.synchronize()
                    times.append(cupy.cuda.get_elapsed_time(e0, e1) * 1e3 / 20)
            us = float(np.median(times))
            print(f"{name:8} {numerics:9} {us:9.1f} {w.nbytes / us / 1e3:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(t for t in qm.TYPES_SUPPORTED))
    ap.add_argument("--n-out", type=int, default=16)
    ap.add_argument("--n-in", type=int, default=1024)
    ap.add_argument("--gpu", action="store_true", help="CuPy arrays (real kernels) instead of numpy (emulated)")
    ap.add_argument("--bench", action="store_true", help="time matvec per type (needs --gpu)")
    ap.add_argument("--tokens", type=int, default=1)
    a = ap.parse_args()
    if a.bench:
        if not a.gpu:
            ap.error("--bench needs --gpu")
        return bench(a)
    if a.gpu:
        import cupy
        put, get = cupy.asarray, cupy.asnumpy
    else:
        put = get = (lambda v: v)
    rng = np.random.default_rng(0)
    print(f"{'type':8} {'exact':>9} {'fast':>9} {'diff':>9}")
    for name in a.types.split(","):
        t = TYPES[name]
        w32 = rng.standard_normal((a.n_out, a.n_in)).astype(np.float32)
        qw = np.ones(a.n_in, np.float32) if t.refuses_without_imatrix else None
        w = quant.quantize(w32, name, qw, backend="numpy")
        wf = np.asarray(quant.dequantize(w, name, backend="numpy"), np.float64).reshape(a.n_out, a.n_in)
        x = rng.standard_normal((4, a.n_in)).astype(np.float32)
        y_cpu = get(qm.matvec(put(w), name, a.n_out, a.n_in, put(x), numerics="exact"))
        y_q81 = get(qm.matvec(put(w), name, a.n_out, a.n_in, put(x), numerics="fast"))
        xs = reference.activations_as_seen(x, name)
        if name in qm.FLOAT_TYPES:
            x81 = x.astype(np.float64)
        else:
            x81 = np.asarray(quant.dequantize(quant.quantize(x, "Q8_1", backend="numpy"), "Q8_1", backend="numpy"),
                             np.float64).reshape(x.shape)
        e_cpu = np.max(np.abs(y_cpu - xs @ wf.T) / (np.abs(xs) @ np.abs(wf).T))
        e_q81 = np.max(np.abs(y_q81 - x81 @ wf.T) / (np.abs(x81) @ np.abs(wf).T))
        diff = np.sqrt(np.mean((y_cpu - y_q81) ** 2) / np.mean(y_cpu.astype(np.float64) ** 2))
        print(f"{name:8} {e_cpu:9.2e} {e_q81:9.2e} {diff:9.2e}")


if __name__ == "__main__":
    main()

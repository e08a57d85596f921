"""CPU cost of the float64 numerics: the CPU backend's float64 attention (runtime/kernels/
attention.py) against the float32 BLAS version it replaced (tools/conformance/compare_cuda_emu.py's
attention_f32), per layer of 32 query heads / 8 KV heads of 128 (a Llama-3-8B layer), and its
swiglu (silu in float64) against the float32 numpy one, 512 tokens x 14336; medians of 5.

    OPENBLAS_NUM_THREADS=1 python -m tools.bench.bench_attention
"""
from __future__ import annotations

import time

import numpy as np


def main() -> None:
    from runtime.kernels.attention import attention as a64
    from tools.conformance.compare_cuda_emu import attention_f32 as a32
    rng = np.random.default_rng(0)
    print("| n_tok | n_past | float32 ms | float64 ms | ratio |\n|---:|---:|---:|---:|---:|")
    for n_tok, n_past in ((1, 511), (1, 4095), (512, 0), (512, 3584)):
        q = rng.standard_normal((n_tok, 32, 128)).astype(np.float32)
        k = rng.standard_normal((n_past + n_tok, 8, 128)).astype(np.float16)
        v = rng.standard_normal((n_past + n_tok, 8, 128)).astype(np.float16)
        med = []
        for f in (a32, a64):
            f(q, k, v, n_past, 0.088)
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                f(q, k, v, n_past, 0.088)
                ts.append(time.perf_counter() - t)
            med.append(sorted(ts)[2] * 1e3)
        print(f"| {n_tok} | {n_past} | {med[0]:.1f} | {med[1]:.1f} | {med[1] / med[0]:.2f} |", flush=True)
    from runtime.kernels.glu import swiglu

    def swiglu_f32(gate, up):
        with np.errstate(over="ignore"):
            return (gate / (np.float32(1.0) + np.exp(-gate)) * up).astype(np.float32)
    g = rng.standard_normal((512, 14336)).astype(np.float32)
    med = []
    for f in (swiglu_f32, swiglu):
        f(g, g)
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            f(g, g)
            ts.append(time.perf_counter() - t)
        med.append(sorted(ts)[2] * 1e3)
    print(f"\nswiglu 512 x 14336: float32 {med[0]:.1f} ms, silu in float64 {med[1]:.1f} ms ({med[1] / med[0]:.2f}x)")


if __name__ == "__main__":
    main()

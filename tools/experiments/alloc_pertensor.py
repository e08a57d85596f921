#!/usr/bin/env python3
"""Experiment (docs/ALLOCATION.md): the allocation with one sensitivity per tensor instead of per
block and kind, at the sizes of std-IQ3_M-emb, std-Q4_K_M-emb and 4.9 bpw. Run in
tools/experiments/alloc_bench.sh's workdir after it (the errors come from the measurement cache):

    python REPO/tools/experiments/alloc_pertensor.py && ggufkit compare base.gguf pt-IQ3_M-emb.gguf pt-bpw4.9.gguf \\
        pt-Q4_K_M-emb.gguf -f eval.txt -c 512 --chunks 10 -t 2
"""
import os
import time


def main():
    from ggufkit.budget import choose
    from ggufkit.measure import measure
    from ggufkit.quantize import open_source, quantize_file
    from quant.imatrix import load_imatrix
    from quant.recipes import fixed

    t = time.time()
    m = measure("base.gguf", "imatrix.gguf", "calib.txt", per="tensor", workers=2)
    print("per-tensor measurement", round(time.time() - t, 1), "s", m.units)
    s = open_source("base.gguf")
    m.header_bytes = len(s.header(s.plans(), "Q4_K_M", load_imatrix("imatrix.gguf"), "imatrix.gguf"))
    budgets = {n: os.path.getsize(f"std-{n}.gguf") for n in ("IQ3_M-emb", "Q4_K_M-emb")}
    budgets["bpw4.9"] = int(4.9 * m.n_params / 8)
    for name, b in budgets.items():
        types, nb, est = choose(m, b)
        quantize_file(s, f"pt-{name}.gguf", "Q4_K_M", imatrix="imatrix.gguf", recipe=fixed(types),
                      allow_requantize=True)
        print(name, "budget", b, "file", os.path.getsize(f"pt-{name}.gguf"), "estimated KLD", round(est, 5))


if __name__ == "__main__":
    main()

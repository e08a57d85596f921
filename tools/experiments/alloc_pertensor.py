#!/usr/bin/env python3
"""Experiment (docs/ALLOCATION.md): the allocation with one sensitivity per tensor instead of per
block and kind, at the sizes of std-IQ3_M-emb, std-Q4_K_M-emb and 4.9 bpw. Run in
tools/experiments/alloc_bench.sh's workdir after it (reuses base.gguf.alloc-measure.json's errors):

    python REPO/tools/experiments/alloc_pertensor.py && ggufkit compare base.gguf pt-IQ3_M-emb.gguf pt-bpw4.9.gguf \\
        pt-Q4_K_M-emb.gguf -f eval.txt -c 512 --chunks 10 -t 2
"""
import json
import os
import time


def main():
    import ggufkit.allocate as A
    from ggufkit.quantize import quantize_file
    from quant.imatrix import load_imatrix

    if os.path.exists("pertensor-measure.json"):
        m = A.Measurement.from_json(json.load(open("pertensor-measure.json")))
    else:
        m = A.Measurement.from_json(json.load(open("base.gguf.alloc-measure.json"))["measurement"])
        t = time.time()
        A._sensitivities(m, A._source("base.gguf"), "base.gguf", load_imatrix("imatrix.gguf"), "calib.txt", 1, 128,
                         True, per="tensor", workers=2)
        print("per-tensor sensitivities", round(time.time() - t, 1), "s")
        json.dump(m.to_json(), open("pertensor-measure.json", "w"))
    s = A._source("base.gguf")
    m.header_bytes = A.header_bytes(s, A._plans(s), "Q4_K_M", load_imatrix("imatrix.gguf"), "imatrix.gguf")
    budgets = {n: os.path.getsize(f"std-{n}.gguf") for n in ("IQ3_M-emb", "Q4_K_M-emb")}
    budgets["bpw4.9"] = int(4.9 * m.n_params / 8)
    for name, b in budgets.items():
        types, nb, est = A.choose(m, b)
        quantize_file("base.gguf", f"pt-{name}.gguf", "Q4_K_M", imatrix="imatrix.gguf",
                      tensor_types=A.tensor_type_lines(types), allow_requantize=True)
        print(name, "budget", b, "file", os.path.getsize(f"pt-{name}.gguf"), "estimated KLD", round(est, 5))


if __name__ == "__main__":
    main()

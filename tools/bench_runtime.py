#!/usr/bin/env python3
"""ggufkit bench vs llama-bench on the same GGUF files and thread count; prints a markdown table
with the ratios (ggufkit / llama.cpp) for pp and tg.

    python tools/bench_runtime.py MODEL.gguf [MODEL2.gguf ...] [-t 2] [-p 512] [-n 128] [-r 3]

llama-bench comes from $LLAMA_BIN (default /work/oracle/build/bin). Targets (issue 4):
tg >= 0.5x and pp >= 0.25x of llama.cpp.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LLAMA_BIN = Path(os.environ.get("LLAMA_BIN", "/work/oracle/build/bin"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # same OpenMP idle policy for both (runtime/loader.py)


def llama_bench(model: str, p: int, n: int, t: int, r: int) -> dict:
    out = subprocess.run([str(LLAMA_BIN / "llama-bench"), "-m", model, "-p", str(p), "-n", str(n), "-t", str(t),
                          "-r", str(r), "-o", "json"], capture_output=True, text=True, check=True).stdout
    res = json.loads(out)
    return {("pp" if x["n_prompt"] else "tg"): (x["avg_ts"], x["stddev_ts"]) for x in res}


def ours_bench(model: str, p: int, n: int, t: int, r: int) -> dict:
    from runtime.bench import bench
    res = bench(model, p, n, r, t)
    return {("pp" if x.n_prompt else "tg"): (x.avg_ts, x.stddev_ts) for x in res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    a = ap.parse_args()
    rows = ["| model | threads | test | llama.cpp t/s | ggufkit t/s | ratio | target |",
            "| ----- | ------: | ---- | ------------: | ----------: | ----: | -----: |"]
    for m in a.models:
        ref = llama_bench(m, a.p, a.n, a.t, a.r)
        ours = ours_bench(m, a.p, a.n, a.t, a.r)
        for test, size, target in (("pp", a.p, 0.25), ("tg", a.n, 0.5)):
            (lr, ls), (orr, os_) = ref[test], ours[test]
            rows.append(f"| {Path(m).name} | {a.t} | {test}{size} | {lr:.2f} ± {ls:.2f} | {orr:.2f} ± {os_:.2f} "
                        f"| {orr / lr:.3f} | {target} |")
        print("\n".join(rows[-2:]), flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()

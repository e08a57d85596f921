#!/usr/bin/env python3
"""Budgeted allocation's cost against the layer count (docs/ALLOCATION.md, "Memory and time"):
random-weight DeciLM GGUFs (F16, a 259-token vocab so the layers dominate) of the same layer shape
and 2, 4, 8... layers, each run through

    python -m ggufkit quantize BASE OUT --target-bpw B --calib-file TEXT --cache-dir FRESH --workers 1

twice (measuring, then a second budget from the cache), sampling every 0.1 s the resident memory
of the process and its children from /proc: anonymous (heap; what the method holds) and the
total (with the file pages of the mapped model, which the kernel can drop). Prints one row per run.

    python tools/bench/alloc_scale.py WORKDIR --layers 2,4,8 --n-embd 2048 --n-ff 7168 -f tests/golden/runtime/fixture-text.txt
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _rss(pid: int) -> tuple[int, int]:
    anon = total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        anon += int(line.split()[1]) * 1024
                    elif line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return anon, total


def run(cmd: list[str]) -> tuple[float, int, int, int]:
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_anon = peak_total = 0
    while p.poll() is None:
        a, t = _rss(p.pid)
        peak_anon, peak_total = max(peak_anon, a), max(peak_total, t)
        time.sleep(0.1)
    err = p.stderr.read()
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return time.time() - t0, peak_anon, peak_total, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir")
    ap.add_argument("--layers", default="2,4,8")
    ap.add_argument("--n-embd", type=int, default=2048)
    ap.add_argument("--n-ff", type=int, default=7168)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--target-bpw", type=float, default=3.5)
    ap.add_argument("-f", "--text", required=True)
    a = ap.parse_args()
    from ggufkit.synthetic import write_model
    from quant.gguf import GGUFReader

    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    print("| layers | parameters | step | wall s | peak anon RSS MiB | peak RSS with mapped file MiB | phases s |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(x) for x in a.layers.split(",")]:
        base = wd / f"deci-{n}L.gguf"
        if not base.exists():
            write_model(base, "deci", [(a.heads, a.kv_heads, a.n_ff)] * n, n_embd=a.n_embd,
                        head_dim=a.n_embd // a.heads, types="F16")
        n_params = sum(t.n_elements for t in GGUFReader(base).tensors.values())
        cache = wd / f"cache-{n}L"
        shutil.rmtree(cache, ignore_errors=True)
        for step in ("measure + budget", "second budget (cached)"):
            out = wd / f"out-{n}L.gguf"
            cmd = [sys.executable, "-m", "ggufkit", "quantize", str(base), str(out), "--target-bpw",
                   str(a.target_bpw), "--calib-file", a.text, "--cache-dir", str(cache), "--workers", "1"]
            wall, anon, total, _ = run(cmd)
            phases = json.loads(Path(f"{out}.alloc.json").read_text()).get("seconds", {})
            ph = ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
            print(f"| {n} | {n_params / 1e6:.1f} M | {step} | {wall:.0f} | {anon / 2**20:.0f} | {total / 2**20:.0f} | {ph} |",
                  flush=True)


if __name__ == "__main__":
    main()

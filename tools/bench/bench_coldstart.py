#!/usr/bin/env python3
"""Cold and warm start of ``ggufkit run``: seconds from launching the command to its first token.

    python -m tools.bench.bench_coldstart MODEL.gguf [-t 2] [--runs 3] [--jobs N]

Cold = a fresh install: Numba's on-disk cache is empty (a new temporary $NUMBA_CACHE_DIR, which
Numba then uses instead of runtime/kernels/__pycache__ and quant/fast/__pycache__). Warm = the
same command again with that cache filled. Each run is ``ggufkit run MODEL -p "Hello" -n 1
--temp 0``: with -n 1 the command ends right after printing its first generated token, so its wall
time is the time to first token (Python start-up, imports, loading the GGUF and tokenizer,
compiling or loading kernels, prefill, one token). Also prints the CLI's stderr notice line(s).
--jobs sets $GGUFKIT_COMPILE_JOBS (processes compiling kernel sets in parallel; default: cores).
Prints the cold time (one run: it fills the cache) and the median of --runs warm runs.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(model: str, threads: int, env: dict) -> tuple[float, str, float]:
    """(wall seconds, stderr, CPU seconds of the command and its children)."""
    cmd = [sys.executable, "-m", "ggufkit", "run", model, "-p", "Hello", "-n", "1", "--temp", "0", "-t", str(threads)]
    c0, t0 = _child_cpu(), time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{p.stderr}")
    return dt, p.stderr, _child_cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, help="GGUFKIT_COMPILE_JOBS for the cold run")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ggufkit-numba-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        if a.jobs:
            env["GGUFKIT_COMPILE_JOBS"] = str(a.jobs)
        load0 = os.getloadavg()[0]
        cold, err, cold_cpu = run_once(a.model, a.threads, env)
        notices = [ln for ln in err.splitlines() if "compiling" in ln]
        warm = [run_once(a.model, a.threads, env) for _ in range(a.runs)]
    wall = [w[0] for w in warm]
    print(f"model: {a.model}  threads: {a.threads}  load average: {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"stderr notice (cold): {notices[0] if notices else '(none)'}")
    print(f"cold start (empty Numba cache): first token after {cold:.1f} s wall, {cold_cpu:.1f} s CPU "
          f"(with the compiling child processes)")
    print(f"warm start: first token after {statistics.median(wall):.2f} s wall (median of {a.runs}: "
          f"{', '.join(f'{w:.2f}' for w in wall)}), {statistics.median(w[2] for w in warm):.2f} s CPU")


if __name__ == "__main__":
    main()

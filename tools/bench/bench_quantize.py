#!/usr/bin/env python3
"""Time ``ggufkit quantize`` against llama-quantize on the same input, type and thread count.

Each measurement is the wall time of the command line (``llama-quantize IN OUT TYPE N`` and
``python -m ggufkit quantize IN OUT TYPE N``, Python start-up and Numba cache loading included),
the median of ``--runs`` runs after one warm-up run of each. Types that need an importance
matrix get ``--imatrix`` (the same file for both) and the file type's normal mixture
(``--pure`` would make output.weight IQ2_XS etc. without an imatrix entry, which aborts
llama-quantize); the others use ``--pure`` so that each row measures one tensor type.

    python -m tools.bench.bench_quantize --input deci-tiny-f16.gguf --imatrix deci-tiny.imatrix.gguf \\
        [--types Q4_K,Q6_K,Q8_0,IQ4_XS] [--threads 2] [--runs 3] [--markdown out.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TYPES = "Q8_0,Q4_0,Q4_K_S,Q5_K_S,Q6_K,Q3_K_S,Q2_K,IQ4_NL,IQ4_XS,IQ3_S,IQ3_XXS,IQ2_S,IQ2_XS,IQ2_XXS,IQ1_S,IQ1_M,TQ2_0"
NEEDS_IMATRIX = {"IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_S", "IQ1_M", "IQ2_M"}


def timed(cmd) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{(p.stdout + p.stderr)[-1500:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--imatrix", type=Path)
    ap.add_argument("--llama-quantize", default="/work/oracle/build/bin/llama-quantize")
    ap.add_argument("--types", default=DEFAULT_TYPES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.gguf"
        for t in [x for x in args.types.split(",") if x]:
            extra = ["--pure"]
            if t in NEEDS_IMATRIX:
                if not args.imatrix:
                    print(f"{t}: skipped (needs --imatrix)")
                    continue
                extra = ["--imatrix", str(args.imatrix)]
            ref = [args.llama_quantize, *extra, args.input, out, t, str(args.threads)]
            ours = [sys.executable, "-m", "ggufkit", "quantize", *extra, args.input, out, t, str(args.threads)]
            timed(ref), timed(ours)   # warm-up (page cache, Numba cache)
            tr = statistics.median(timed(ref) for _ in range(args.runs))
            to = statistics.median(timed(ours) for _ in range(args.runs))
            rows.append((t, tr, to))
            print(f"{t:8s} llama-quantize {tr:6.2f} s   ggufkit {to:6.2f} s   ratio {to / tr:5.2f}", flush=True)

    size = args.input.stat().st_size / 2**20
    lines = [f"Input: `{args.input.name}` ({size:.0f} MiB), `--pure`, {args.threads} threads, median of "
             f"{args.runs} runs after a warm-up; wall time of the command line (ggufkit includes Python "
             f"start-up and Numba cache loading, several seconds). `--pure` except for types that need an "
             f"imatrix. Machine: {os.cpu_count()} cores, shared with other jobs.", "",
             "| type | llama-quantize (s) | ggufkit (s) | ggufkit / llama.cpp |", "|---|---|---|---|"]
    lines += [f"| {t} | {tr:.2f} | {to:.2f} | {to / tr:.2f} |" for t, tr, to in rows]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

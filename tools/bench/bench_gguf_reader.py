#!/usr/bin/env python3
"""Open time of quant.gguf.GGUFReader vs gguf-py's GGUFReader on one GGUF (default: gemma-3-270m,
262k-token vocabulary, from tools/get_gemma3.py). Medians of --repeat opens, each a fresh parse.

    python -m tools.bench.bench_gguf_reader [FILE.gguf] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import time


def _median_open(open_fn, path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        open_fn(path)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from tools.get_gemma3 import default_path
    ap = argparse.ArgumentParser()
    ap.add_argument("path", nargs="?", default=str(default_path()))
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    import gguf
    from quant.gguf import GGUFReader
    ours = _median_open(GGUFReader, a.path, a.repeat)
    theirs = _median_open(gguf.GGUFReader, a.path, max(1, a.repeat // 2))
    g = GGUFReader(a.path)
    n_vocab = len(g.get("tokenizer.ggml.tokens", []))
    print(f"{a.path}: {len(g.fields)} keys, {len(g.tensors)} tensors, {n_vocab} tokens")
    print(f"quant.gguf.GGUFReader  median {ours * 1000:8.1f} ms")
    print(f"gguf.GGUFReader        median {theirs * 1000:8.1f} ms  ({theirs / ours:.0f}x slower)")


if __name__ == "__main__":
    main()

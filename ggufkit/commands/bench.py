"""``ggufkit bench``: llama-bench's markdown table or JSON, from ``runtime.bench`` results."""
from __future__ import annotations

import json
from dataclasses import asdict

from ggufkit.mdtable import md_table
from runtime.bench import BenchResult


def format_results(results: list[BenchResult], output: str = "md") -> str:
    if output == "json":
        return json.dumps([asdict(r) for r in results], indent=2) + "\n"
    seqs = any(r.n_seq != 1 for r in results)       # the sequences column only for --parallel
    return md_table(["model", "size", "params", "backend", "ngl", "threads", "test"] + ["seqs"] * seqs + ["t/s"],
                    ["-----", "---:", "-----:", "-------", "--:", "------:", "---:"] + ["---:"] * seqs + ["--:"],
                    [[r.model_type, f"{r.model_size / 2**20:.2f} MiB", f"{r.model_n_params / 1e6:.2f} M", r.backend,
                      r.n_gpu_layers, r.n_threads, r.test] + [r.n_seq] * seqs + [f"{r.avg_ts:.2f} ± {r.stddev_ts:.2f}"]
                     for r in results])

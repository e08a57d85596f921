#!/usr/bin/env python3
"""Issue 10's criteria per pair of rows of a ``ggufkit compare -o json`` table: the allocation's file
is no larger than the reference, its mean KLD is at least 30% lower, its 99.9% KLD is no higher and
its same-top-p is no lower.

    python tools/experiments/alloc_verdict.py compare.json alloc-Q2_K:std-Q2_K alloc-bpw4.9:std-Q4_K_M-emb ...

Pairs are ALLOC_LABEL:REFERENCE_LABEL (labels as in the table: file stems by default). Prints a
markdown table; exit status 0 either way (the table says what holds).
"""
from __future__ import annotations

import json
import sys


def verdict(a: dict, r: dict) -> dict:
    red = 1 - a["kld_mean"] / r["kld_mean"] if r["kld_mean"] > 0 else float("nan")
    return dict(size=a["size_gib"] <= r["size_gib"] and _bytes(a) <= _bytes(r), red=red, kld=red >= 0.30,
                p999=a["kld_999"] <= r["kld_999"], top=a["same_top_pct"] >= r["same_top_pct"])


def _bytes(row: dict) -> float:
    return row["size_gib"] * 2**30


def main() -> None:
    rows = {r["label"]: r for r in json.load(open(sys.argv[1]))}
    yes = lambda b: "yes" if b else "**no**"   # noqa: E731
    print("| allocation | reference | bytes (alloc / ref) | mean KLD (alloc / ref) | KLD lower by | 99.9% KLD "
          "(alloc / ref) | same top p % (alloc / ref) | no larger | ≥30% lower | 99.9% no worse | top-p no worse |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for pair in sys.argv[2:]:
        al, rl = pair.split(":")
        a, r = rows[al], rows[rl]
        v = verdict(a, r)
        print(f"| {al} | {rl} | {_bytes(a):.0f} / {_bytes(r):.0f} | {a['kld_mean']:.5f} / {r['kld_mean']:.5f} | "
              f"{100 * v['red']:.0f}% | {a['kld_999']:.4f} / {r['kld_999']:.4f} | "
              f"{a['same_top_pct']:.2f} / {r['same_top_pct']:.2f} | {yes(v['size'])} | {yes(v['kld'])} | "
              f"{yes(v['p999'])} | {yes(v['top'])} |")


if __name__ == "__main__":
    main()

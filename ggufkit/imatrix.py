"""``ggufkit imatrix``: compute, merge and inspect importance matrices like llama-imatrix.

    ggufkit imatrix MODEL.gguf -f TEXT -o OUT [-c 512] [--chunks N] [--output-format gguf|dat]
                    [--in-file F ...] [--process-output] [--no-ppl]
    ggufkit imatrix --in-file A --in-file B -o OUT         # merge only
    ggufkit imatrix --in-file F --show-statistics          # llama-imatrix's statistics table
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ggufkit.atomic import atomic_path
from ggufkit.errors import GGUFKitError
from quant.imatrix import RawImatrix


def make_imatrix(model_path: str | None, text_file: str | None, out: str, n_ctx: int = 512, n_chunks: int = -1,
                 output_format: str = "gguf", in_files: Sequence[str] = (), process_output: bool = False,
                 compute_ppl: bool = True, progress: bool = True,
                 n_threads: int | None = None) -> tuple[RawImatrix, float | None]:
    """Collect (and/or merge) an imatrix and write it to ``out`` (GGUF or legacy .dat)."""
    if output_format not in ("gguf", "dat"):
        raise GGUFKitError(f"unknown output format '{output_format}' (gguf or dat)")
    raw = RawImatrix(chunk_size=n_ctx)
    for f in in_files:
        raw.merge_file(f)
    ppl = None
    if text_file:
        if not model_path:
            raise GGUFKitError("a model is needed to compute an imatrix from text")
        from tqdm import tqdm

        from runtime.imatrix import compute_imatrix
        from runtime.loader import load
        from runtime.perplexity import read_text_file

        model = load(model_path, n_threads=n_threads)
        text = read_text_file(text_file)
        bar = None

        def on_chunk(i, n, p):
            nonlocal bar
            if bar is None:
                bar = tqdm(total=n, desc="imatrix", unit="chunk", disable=not progress)
            bar.update(1)
            if p is not None:
                bar.set_postfix(ppl=f"{p:.4f}")

        try:
            raw, ppl = compute_imatrix(model, text, n_ctx, n_chunks, raw, process_output, compute_ppl, on_chunk)
        finally:
            if bar is not None:
                bar.close()
    elif not in_files:
        raise GGUFKitError("no text (-f) and no --in-file: nothing to compute or combine")
    with atomic_path(out) as tmp:
        raw.save(tmp, output_format, prompt_file=text_file or "")
    return raw, ppl


# ---------------------------------------------------------------- statistics

@dataclass
class TensorStats:
    tensor: str
    layer: str
    name: str
    total_sqract: float
    mean_sqract: float
    max_sqract: float
    min_sqract: float
    elements: int
    stddev: float
    active: float
    entropy: float
    zd: float
    cossim: float = 0.0
    values: np.ndarray | None = None


def _split_name(t: str) -> tuple[str, str]:
    parts = t.split(".")
    layer = next((parts[i + 1] for i in range(len(parts) - 1) if parts[i] == "blk"), "-")
    name = next((parts[i - 1] for i in range(1, len(parts)) if parts[i] == "weight"), "") or t
    return layer, name


def tensor_statistics(raw: RawImatrix) -> list[TensorStats]:
    """llama-imatrix ``--show-statistics``: per tensor (float32 as there) and cosine similarity
    with the same tensor of the previous block; sorted by tensor kind, then Σ(act²) descending."""
    out = []
    for tname, vals in raw.sums.items():
        c = raw.counts[tname]
        if not c.size:
            continue
        n_mat = c.size
        rs = vals.size // n_mat
        acts = [vals[i * rs:(i + 1) * rs] / np.float32(c[i]) for i in range(n_mat) if c[i] != 0]
        if not acts:
            continue
        a = np.concatenate(acts).astype(np.float32)
        total = np.float32(a.sum(dtype=np.float32))
        mean = np.float32(total / np.float32(a.size))
        sq = np.float32(np.dot(a, a))
        var = np.float32(sq / np.float32(a.size) - mean * mean)
        dev = np.float32(math.sqrt(max(0.0, float(var))))
        active = 1 - np.count_nonzero(np.abs(a) <= 1e-5) / a.size
        ent = 0.0
        if total > 0:
            p = a / total
            p = p[p > 0]
            ent = float(-(p * np.log2(p)).sum(dtype=np.float32))
        zd = float(np.count_nonzero((a - mean) / dev > 1)) / a.size if dev > 0 else 0.0
        layer, name = _split_name(tname)
        out.append(TensorStats(tname, layer, name, float(total), float(mean), float(a.max()), float(a.min()), a.size,
                               float(dev), float(active), ent, zd, 0.0, vals))
    by = {t.tensor: t for t in out}
    for t in out:
        m = re.search(r"blk\.(\d+)\.", t.tensor)
        if m:
            prev = t.tensor[:m.start(1)] + str(int(m.group(1)) - 1) + t.tensor[m.end(1):]
            p = by.get(prev)
            if p is not None and p.values.size == t.values.size:
                t.cossim = float(np.dot(t.values, p.values) / (np.linalg.norm(t.values) * np.linalg.norm(p.values)))
    out.sort(key=lambda t: (t.name, -t.total_sqract))
    return out


def format_statistics(stats: list[TensorStats], path: str) -> str:
    lines = [f"Computing statistics for {path} ({len(stats)} tensors)", "",
             "\t".join([" Layer", "       Tensor", "          Σ(Act²)", "  Min", "            Max", "           μ",
                        "   σ", " % Active", "N", "   Entropy", "E (norm)", "ZD", "  CosSim"]),
             "=" * 179]
    ws: dict[int, list[float]] = {}
    for t in stats:
        en = 100.0 * t.entropy / math.log2(t.elements) if t.elements > 1 else 0.0
        lines.append(f"{t.layer:>5s}\t{t.name:<20s}\t{t.total_sqract:10.2f}\t{t.min_sqract:8.4f}\t{t.max_sqract:11.4f}\t"
                     f"{t.mean_sqract:6.2f}\t{t.stddev:6.2f}\t{t.active * 100:8.2f}%\t{t.elements:6d}\t{t.entropy:10.4f}\t"
                     f"{en:6.2f}%\t{100 * t.zd:10.2f}%\t{t.cossim:8.4f}")
        try:
            blk = int(t.layer)
        except ValueError:
            blk = -1
        w = ws.setdefault(blk, [0.0, 0.0, 0.0, 0])
        w[0] += t.elements * t.total_sqract
        w[1] += t.elements * t.zd
        w[2] += t.elements * t.cossim
        w[3] += t.elements
    layers = [k for k in ws if k >= 0]
    lines += ["", f"Computing weighted average statistics per layer ({len(layers)} layers)", "",
              "  Layer\t     μΣ(Act²)\t      μZD\tμCosSim", "=" * 48]
    for k in sorted(layers):
        b, z, c, n = ws[k]
        if n:
            lines.append(f"{k:5d}\t{b / n:14.2f}\t{100 * z / n:10.4f}%\t{c / n:6.4f}")
    return "\n".join(lines)


def show_statistics(in_files: Sequence[str], n_ctx: int = 512) -> str:
    if len(in_files) != 1:
        raise GGUFKitError("a single imatrix file is required to compute tensor statistics")
    raw = RawImatrix(chunk_size=n_ctx)
    raw.merge_file(in_files[0])
    st = tensor_statistics(raw)
    if not st:
        raise GGUFKitError(f"cannot compute statistics for {in_files[0]}")
    return format_statistics(st, in_files[0])

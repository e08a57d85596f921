"""``ggufkit compare BASE.gguf Q1.gguf ... -f TEXT``: the quant-card table in one command.

Per file: size (GiB) and bpw (file bits / parameters), PPL and ΔPPL% against the base, mean KLD ±
its uncertainty, 99.9% KLD, RMS Δp and same-top-p %, all with llama-perplexity's
``--kl-divergence`` definitions (``runtime.perplexity.kl_divergence``), and decode tokens/s
(``runtime.bench``: tg N from an empty cache, median of the runs).

The base logits are computed once (``runtime.perplexity.perplexity`` with a logits file, the format
of llama-perplexity's ``--kl-divergence-base``) and cached beside the base model, keyed by text,
context and chunk count; a later compare with the same base and text reuses them, and each
compared file's row is cached beside them too (keyed by the file's size and mtime).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ggufkit.atomic import atomic_path
from ggufkit.errors import GGUFKitError


@dataclass
class Row:
    file: str
    label: str
    size_gib: float
    bpw: float
    ppl: float
    dppl_pct: float
    kld_mean: float
    kld_err: float
    kld_999: float
    rms_dp_pct: float
    same_top_pct: float
    decode_ts: float | None
    chunks: int
    tokens: int


def _n_params(path: str) -> int:
    from ggufkit.quantize import open_source
    s = open_source(path)
    n = 0
    for t in s.tensors:
        p = 1
        for d in t.shape:
            p *= int(d)
        n += p
    return n


def _digest_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def base_logits(base: str, text: str, n_ctx: int, n_chunks: int, cache_dir: str | None = None,
                progress: bool = True, n_threads: int | None = None) -> tuple[str, float]:
    """Path of the cached base logits file (computed if absent) and the base PPL."""
    from runtime.loader import load
    from runtime.perplexity import perplexity

    st = os.stat(base)
    d = Path(cache_dir) if cache_dir else Path(base).resolve().parent
    key = f"{Path(base).name}-{st.st_size}-{int(st.st_mtime)}-{_digest_text(text)}-c{n_ctx}-n{n_chunks}"
    path = d / f"{key}.logits"
    meta = d / f"{key}.json"
    if path.is_file() and meta.is_file():
        return str(path), json.loads(meta.read_text())["ppl"]
    model = load(base, n_threads=n_threads)
    bar = _Progress("base logits") if progress else None
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        r = perplexity(model, text, n_ctx, n_chunks, logits_out=f, on_chunk=bar)
    if bar:
        bar.close()
    meta.write_text(json.dumps({"ppl": r.ppl, "chunks": len(r.chunk_ppl)}))
    return str(path), r.ppl


class _Progress:
    """An ``on_chunk(i, result)`` callback for runtime.perplexity that drives a tqdm bar."""

    def __init__(self, desc: str):
        from tqdm import tqdm
        self.bar = tqdm(desc=desc, unit="chunk")

    def __call__(self, i: int, res) -> None:
        if i == 0:
            self.bar.reset(total=getattr(res, "n_chunk", None))
        else:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def decode_speed(model, n_gen: int = 16, reps: int = 3) -> float:
    """Median decode tokens/s (tg n_gen from an empty cache) after one warm-up run."""
    import numpy as np

    from runtime.bench import _run_once
    rng = np.random.default_rng(0)
    _run_once(model, 0, n_gen, rng, 512)
    ns = [_run_once(model, 0, n_gen, rng, 512) for _ in range(reps)]
    return n_gen * 1e9 / statistics.median(ns)


def compare(base: str, files: Sequence[str], text_file: str, n_ctx: int = 512, n_chunks: int = -1,
            decode_tokens: int = 16, cache_dir: str | None = None, labels: Sequence[str] | None = None,
            progress: bool = True, n_threads: int | None = None) -> list[Row]:
    from runtime.loader import load
    from runtime.perplexity import kl_divergence, percentile, read_text_file

    for f in [base, *files]:
        if not os.path.isfile(f):
            raise GGUFKitError(f"{f}: no such file")
    text = read_text_file(text_file)
    logits, ppl_base = base_logits(base, text, n_ctx, n_chunks, cache_dir, progress, n_threads)
    labels = list(labels) if labels else [Path(f).stem for f in files]
    if len(labels) != len(files):
        raise GGUFKitError(f"{len(labels)} labels for {len(files)} files")
    n_params = _n_params(base)
    rows = []
    size = os.path.getsize(base)
    bm = load(base, n_threads=n_threads)
    rows.append(Row(base, "base", size / 2**30, size * 8 / n_params, ppl_base, 0.0, 0.0, 0.0, 0.0, 0.0, 100.0,
                    decode_speed(bm, decode_tokens) if decode_tokens else None, 0, 0))
    del bm
    lkey = Path(logits).stem
    for f, lab in zip(files, labels):
        st = os.stat(f)
        rc = Path(logits).parent / f"{lkey}-{Path(f).name}-{st.st_size}-{int(st.st_mtime)}-d{decode_tokens}.row.json"
        if rc.is_file():                     # this file was already measured against these base logits
            row = Row(**json.loads(rc.read_text()))
            row.file, row.label = f, lab
            rows.append(row)
            rows[0].tokens = row.tokens
            continue
        m = load(f, n_threads=n_threads)
        bar = _Progress(f"KLD {lab}") if progress else None
        r = kl_divergence(m, logits, on_chunk=bar)
        if bar:
            bar.close()
        size = os.path.getsize(f)
        rows.append(Row(f, lab, size / 2**30, size * 8 / n_params, r.ppl, 100 * (r.ppl / ppl_base - 1),
                        r.kld_mean, r.kld_err, percentile(r.kld_values, 0.999), 100 * r.rms_dp, 100 * r.same_top,
                        decode_speed(m, decode_tokens) if decode_tokens else None, 0, r.count))
        rows[0].tokens = r.count
        rc.write_text(json.dumps(asdict(rows[-1])))
    return rows


def format_rows(rows: list[Row], fmt: str = "md") -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=1)
    head = ["file", "size GiB", "bpw", "PPL", "ΔPPL %", "mean KLD", "± ", "99.9% KLD", "RMS Δp %", "same top p %",
            "decode t/s"]
    vals = [[r.label, f"{r.size_gib:.4f}", f"{r.bpw:.3f}", f"{r.ppl:.4f}", f"{r.dppl_pct:+.2f}", f"{r.kld_mean:.5f}",
             f"{r.kld_err:.5f}", f"{r.kld_999:.4f}", f"{r.rms_dp_pct:.3f}", f"{r.same_top_pct:.2f}",
             f"{r.decode_ts:.1f}" if r.decode_ts is not None else "-"] for r in rows]
    if fmt == "csv":
        b = io.StringIO()
        w = csv.writer(b)
        w.writerow(["file", "size_gib", "bpw", "ppl", "dppl_pct", "kld_mean", "kld_err", "kld_999", "rms_dp_pct",
                    "same_top_pct", "decode_ts"])
        for r, v in zip(rows, vals):
            w.writerow([r.file] + v[1:])
        return b.getvalue()
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(v) + " |" for v in vals]
    return "\n".join(lines)


def plot(rows: list[Row], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GGUFKitError("--plot needs matplotlib (pip install 'ggufkit[plot]')") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [r for r in rows if r.label != "base"]
    ax.scatter([r.size_gib for r in pts], [r.kld_mean for r in pts])
    for r in pts:
        ax.annotate(r.label, (r.size_gib, r.kld_mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("file size (GiB)")
    ax.set_ylabel("mean KLD to base")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    from ggufkit.atomic import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

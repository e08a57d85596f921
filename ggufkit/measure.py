"""Measuring for the budgeted allocation (``ggufkit.budget``): what each candidate type costs each
tensor, and how much the model's output cares.

- ``e_t(type)``: importance-weighted relative error of every candidate type on sampled rows
  (``quant.allocate.relative_error``); types whose block does not divide the row length are not
  candidates for that tensor (K-/IQ-types on 640-wide rows, ...), types that need an imatrix only
  where the imatrix has the tensor;
- ``alpha_t``: KLD of the model with a group of tensors quantized to a reference type, over the
  group's summed ``e_t(reference)`` (``runtime.sensitivity.Probe`` on calibration text).

The source is opened once (``ggufkit.quantize.Source``) and read through its mmap, a tensor at a
time. ``docs/ALLOCATION.md`` has the method and its costs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

import quant
from ggufkit.errors import GGUFKitError
from ggufkit.quantize import Source, open_source, pad
from quant.allocate import relative_error
from quant.recipes import IMATRIX_TYPES

# types stock llama.cpp (CPU and GPU back ends) runs and llama-quantize writes, by rough bits/weight
DEFAULT_CANDIDATES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K", "IQ3_XXS", "IQ3_S", "Q3_K", "IQ4_XS", "IQ4_NL",
                      "Q4_0", "Q4_K", "Q4_1", "Q5_0", "Q5_K", "Q5_1", "Q6_K", "Q8_0", "F16")
STOCK_TYPES = frozenset(DEFAULT_CANDIDATES) | {"IQ1_S", "IQ1_M", "BF16", "F32"}
CACHE_VERSION = 1


@dataclass
class TensorMeasure:
    name: str
    shape: list
    n_rows: int
    src_type: str
    errors: dict           # type -> relative error on the sampled rows
    nbytes: dict           # type -> padded bytes
    ref_type: str = ""
    ref_kld: float = 0.0
    alpha: float = 0.0


@dataclass
class Measurement:
    src: str
    header_bytes: int
    fixed_bytes: int       # tensors that are not quantized (norms, 1-D), padded
    n_params: int
    tensors: list[TensorMeasure] = field(default_factory=list)
    probe: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["tensors"] = [t.__dict__ for t in self.tensors]
        d["version"] = CACHE_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Measurement":
        d = dict(d)
        d.pop("version", None)
        d["tensors"] = [TensorMeasure(**t) for t in d["tensors"]]
        return cls(**d)


def imatrix_row(im, name: str, ne0: int):
    if im is None:
        return None
    v = im.entries.get(name)
    return v[:ne0] if v is not None and v.size >= ne0 else None


def candidate_types(ne0: int, has_imatrix: bool, candidates: Sequence[str]) -> list[str]:
    out = []
    for c in candidates:
        qt = quant.get_type(c)
        if ne0 % qt.block_size:
            continue                      # K/IQ types on rows not a multiple of 256: not possible
        if c in IMATRIX_TYPES and not has_imatrix:     # llama-quantize would refuse it
            continue
        out.append(c)
    return out


def quant_dequant(x: np.ndarray, typ: str, imrow) -> np.ndarray:
    if typ in ("F32",):
        return x
    if typ == "F16":
        return x.astype(np.float16).astype(np.float32)
    q = quant.quantize(x, typ, imrow)
    return np.asarray(quant.dequantize(q, typ), np.float32).reshape(x.shape)


def measure(src: str | Source, imatrix: str | None, calib_text: str | None, *, candidates: Sequence[str] = DEFAULT_CANDIDATES,
            n_seq: int = 1, seq_len: int = 128, sample_rows: int = 256, cache: str | None = None,
            progress: bool = True, workers: int = 2) -> Measurement:
    """Per-tensor errors for every candidate type and per-tensor sensitivities (cached in ``cache``)."""
    import time

    from tqdm import tqdm

    from quant.imatrix import load_imatrix

    for c in candidates:
        if c not in STOCK_TYPES:
            raise GGUFKitError(f"candidate type {c} is not one stock llama.cpp runs "
                               f"(allowed: {', '.join(sorted(STOCK_TYPES))})")
    s = open_source(src)
    src = str(s.path)
    st = os.stat(src)
    key_err = dict(src=os.path.abspath(src), size=st.st_size, mtime=int(st.st_mtime), imatrix=_digest(imatrix),
                   candidates=list(candidates), sample_rows=sample_rows, version=CACHE_VERSION)
    key_sens = dict(text=_digest(calib_text), n_seq=n_seq, seq_len=seq_len, groups="block")
    cached = None
    if cache and Path(cache).is_file():
        try:
            d = json.loads(Path(cache).read_text())
            if d.get("key_err") == key_err:
                cached = Measurement.from_json(d["measurement"])
                if d.get("key_sens") == key_sens or not calib_text:
                    return cached
        except (ValueError, KeyError, TypeError):
            cached = None

    def save(m, with_sens):
        if cache:
            tmp = f"{cache}.tmp{os.getpid()}"
            Path(tmp).write_text(json.dumps({"key_err": key_err, "key_sens": key_sens if with_sens else None,
                                             "measurement": m.to_json()}))
            os.replace(tmp, cache)

    im = load_imatrix(imatrix) if imatrix else None
    if cached is not None:
        _sensitivities(cached, s, src, im, calib_text, n_seq, seq_len, progress, workers=workers)
        save(cached, True)
        return cached
    plans = s.plans()
    hdr = len(s.header(plans, "Q8_0", im, imatrix))
    fixed = 0
    n_params = 0
    meas = Measurement(str(src), hdr, 0, 0, probe=dict(n_seq=n_seq, seq_len=seq_len))
    t0 = time.time()
    todo = []
    for t, p in zip(s.tensors, plans):
        n_params += int(np.prod(p.shape))
        if p.dst_type == p.src_type or not p.allows_quantization:
            fixed += pad(t.n_bytes)
            continue
        todo.append((t, p))
    meas.fixed_bytes, meas.n_params = fixed, n_params
    rng = np.random.default_rng(0)
    for t, p in tqdm(todo, desc="errors", unit="tensor", disable=not progress):
        ne0 = p.shape[0]
        n_rows = int(np.prod(p.shape[1:]))
        imrow = imatrix_row(im, p.name, ne0)
        types = candidate_types(ne0, imrow is not None, candidates)
        rows = np.sort(rng.choice(n_rows, min(sample_rows, n_rows), replace=False))
        x = s.rows(t, rows)
        errs, nb = {}, {}
        for typ in types:
            q = quant_dequant(x, typ, imrow)
            errs[typ] = relative_error(x, q, imrow)
            nb[typ] = pad(n_rows * quant.row_size(typ, ne0))
        meas.tensors.append(TensorMeasure(p.name, list(p.shape), n_rows, p.src_type, errs, nb))
    meas.seconds["errors"] = time.time() - t0
    save(meas, False)
    if calib_text:
        _sensitivities(meas, s, src, im, calib_text, n_seq, seq_len, progress, workers=workers)
        save(meas, True)
    return meas


def _digest(path: str | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()[:16]


def _ref_type(tm: TensorMeasure) -> str:
    """The type whose error is used to measure a tensor's sensitivity: Q3_K where possible, else the
    candidate with the error nearest to Q3_K's typical one (the low end for 32-block-only rows)."""
    for pref in ("Q3_K", "Q4_0", "IQ4_NL"):
        if pref in tm.errors:
            return pref
    return sorted(tm.errors, key=lambda k: tm.errors[k])[len(tm.errors) // 2]


def probe_tokens(model, text: str, n_seq: int, seq_len: int) -> list[np.ndarray]:
    """n_seq windows of seq_len tokens of the calibration text (``runtime.perplexity.chunks``)."""
    from runtime.perplexity import chunks
    return chunks(model.tokenizer, text, seq_len, n_seq, f"in the calibration text for {n_seq} sequences "
                  f"of {seq_len}", min_tokens=n_seq * seq_len)[1]


_ATTN = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "attn_q_a", "attn_q_b", "attn_kv_a_mqa",
         "attn_kv_b")


def sensitivity_groups(names: Sequence[str], per: str = "block") -> list[list[str]]:
    """Tensors measured together: one per tensor (``per="tensor"``), or per block and kind
    (``"block"``: a block's attention weights, its FFN weights; every tensor outside blocks alone).
    Works for any layer structure (DeciLM blocks without attention or FFN simply have fewer groups)."""
    if per == "tensor":
        return [[n] for n in names]
    groups: dict[tuple, list[str]] = {}
    for n in names:
        m = re.match(r"^blk\.(\d+)\.([^.]+)", n)
        if not m:
            key = (n,)
        else:
            key = (int(m.group(1)), "attn" if m.group(2) in _ATTN or m.group(2).startswith("attn") else "ffn")
        groups.setdefault(key, []).append(n)
    return list(groups.values())


def _measure_groups(src, im, text_path, n_seq, seq_len, groups, refs, shapes, queue=None):
    """KLD of the model with each group of tensors quantized to its reference types."""
    from runtime.loader import load
    from runtime.perplexity import read_text_file
    from runtime.sensitivity import Probe

    s = open_source(src)
    model = load(src)
    probe = Probe(model, probe_tokens(model, read_text_file(text_path), n_seq, seq_len))
    out = []
    for g in groups:
        rep = {}
        for n in g:
            w = s.rows(n)
            rep[n] = quant_dequant(w, refs[n], imatrix_row(im, n, shapes[n][0])).reshape(-1, shapes[n][0])
        out.append(probe.kld(rep))
        if queue is not None:
            queue.put(1)
    return out, probe.n_rows


def _sensitivities(meas, s, src, im, text_path, n_seq, seq_len, progress, per: str = "block", workers: int = 2):
    import multiprocessing as mp
    import time
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    t0 = time.time()
    by = {tm.name: tm for tm in meas.tensors}
    for tm in meas.tensors:
        tm.ref_type = _ref_type(tm)
    refs = {n: tm.ref_type for n, tm in by.items()}
    shapes = {n: tm.shape for n, tm in by.items()}
    groups = sensitivity_groups(list(by), per)
    parts = [groups[i::workers] for i in range(workers)] if workers > 1 else [groups]
    bar = tqdm(total=len(groups), desc="sensitivity", unit="group", disable=not progress)
    if workers > 1:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as man, ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            q = man.Queue()
            futs = [ex.submit(_measure_groups, src, im, text_path, n_seq, seq_len, p, refs, shapes, q) for p in parts]
            done = 0
            while done < len(groups):
                q.get()
                done += 1
                bar.update(1)
            res = [f.result() for f in futs]
    else:
        res = [_measure_groups(src, im, text_path, n_seq, seq_len, groups, refs, shapes)]
        bar.update(len(groups))
    bar.close()
    klds = {}
    for part, (vals, n_rows) in zip(parts, res):
        for g, v in zip(part, vals):
            klds[tuple(g)] = v
        meas.probe["rows"] = n_rows
    for g, v in klds.items():
        e = sum(by[n].errors[by[n].ref_type] for n in g)
        for n in g:
            by[n].ref_kld = v
            by[n].alpha = max(v, 0.0) / e if e > 0 else 0.0
    meas.seconds["sensitivity"] = time.time() - t0
    meas.probe["groups"] = per

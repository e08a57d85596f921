"""Measuring for the budgeted allocation (``ggufkit.budget``): what each candidate type costs each
tensor, and how much the model's output cares.

- ``e_t(type)``: importance-weighted relative error of every candidate type on sampled rows
  (``quant.allocate.relative_error``); types whose block does not divide the row length are not
  candidates for that tensor (K-/IQ-types on 640-wide rows, ...), types that need an imatrix only
  where the imatrix has the tensor;
- ``alpha_t``: KLD of the model with a group of tensors quantized to a reference type, over the
  group's summed ``e_t(reference)`` (``runtime.sensitivity.Probe`` on calibration text).

Every measurement is one unit of work with a content-addressed key (``Cache``): an error unit is
(tensor bytes' hash, type, the tensor's importance row hash, sampled rows, method version); a
sensitivity unit is (model hash, the group's tensors and reference types, probe text hash, probe
size, method version). Units are written atomically as they finish, so a run killed at any point
loses only the units in flight, and any later run (another budget, other candidates, another
machine sharing the directory) reuses what is there. Units run in a local process pool or as Ray
tasks (``ggufkit.fanout``); the source is opened once per process and read through its mmap, a
tensor at a time. ``docs/ALLOCATION.md`` has the method and its costs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
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
METHOD_VERSION = 2     # part of every cache key: bump when what a unit measures changes


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
    units: dict = field(default_factory=dict)      # {"computed": n, "reused": n}: units of this run

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["tensors"] = [t.__dict__ for t in self.tensors]
        return d


# ---------------------------------------------------------------- the cache

def default_cache_dir() -> Path:
    """``$GGUFKIT_CACHE/measure``, by default ``~/.cache/ggufkit/measure``."""
    return Path(os.environ.get("GGUFKIT_CACHE") or Path.home() / ".cache" / "ggufkit") / "measure"


class Cache:
    """Content-addressed measurement units: one small JSON file per key, ``ROOT/ab/abcdef....json``.

    A unit is written to a temporary file in its directory and renamed (atomic on POSIX), so a
    reader sees a whole unit or none; a killed writer leaves at most a stray ``.tmp`` file."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_cache_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".writable.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise GGUFKitError(f"the measurement cache directory {self.root} is not writable: "
                               f"{e.strerror or e}") from None

    @staticmethod
    def key(**parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str):
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, value) -> None:
        p = self._path(key)
        p.parent.mkdir(exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, p)


def _sha(b) -> str:
    return hashlib.sha256(b).hexdigest()


def tensor_digest(s: Source, t, cache: Cache) -> str:
    """sha256 of a tensor's type, shape and bytes (read through the mmap in 64 MiB slices),
    remembered per (file, size, mtime, offset) so a rerun does not read the model again."""
    st = os.stat(s.path)
    k = Cache.key(kind="digest", path=str(Path(s.path).resolve()), size=st.st_size, mtime=st.st_mtime_ns,
                  name=t.name, offset=int(t.offset))
    hit = cache.get(k)
    if hit is not None:
        return hit
    h = hashlib.sha256(f"{t.qtype} {list(t.shape)}".encode())
    data = t.data
    for i in range(0, data.size, 64 << 20):
        h.update(data[i:i + (64 << 20)])
    d = h.hexdigest()
    cache.put(k, d)
    return d


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------- per tensor

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


def check_imatrix(s: Source, im, path: str) -> None:
    """An imatrix made on another model is refused: it must name some of this model's quantized
    tensors, each with one importance value per column (per expert)."""
    names = {p.name: p for p in s.plans() if p.dst_type != p.src_type}
    hits = [n for n in names if n in im.entries]
    if not hits:
        raise GGUFKitError(f"the imatrix {path} has none of this model's tensors (made on another model?)")
    for n in hits:
        shape = names[n].shape
        want = shape[0] * (shape[2] if len(shape) > 2 else 1)
        if im.entries[n].size != want and n != "token_embd.weight":
            raise GGUFKitError(f"the imatrix {path} does not fit this model: {n} has {im.entries[n].size} "
                               f"importance values, the tensor {want} columns (made on another model?)")


def smallest_mix(s: Source, im, candidates: Sequence[str]) -> tuple[int, int, int]:
    """(parameters, bytes of the tensors kept as they are, bytes of the quantized tensors each at
    its smallest candidate type), padded as written: what the smallest possible file holds."""
    n_params = fixed = least = 0
    for t, p in zip(s.tensors, s.plans()):
        n_params += int(np.prod(p.shape))
        if p.dst_type == p.src_type or not p.allows_quantization:
            fixed += pad(t.n_bytes)
            continue
        ne0, n_rows = p.shape[0], int(np.prod(p.shape[1:]))
        types = candidate_types(ne0, imatrix_row(im, p.name, ne0) is not None, candidates)
        if not types:
            raise GGUFKitError(f"no candidate type fits {p.name} (rows of {ne0}): add one whose block "
                               f"divides the row, such as Q8_0 or F16")
        least += min(pad(n_rows * quant.row_size(typ, ne0)) for typ in types)
    return n_params, fixed, least


def quant_dequant(x: np.ndarray, typ: str, imrow) -> np.ndarray:
    if typ in ("F32",):
        return x
    if typ == "F16":
        return x.astype(np.float16).astype(np.float32)
    q = quant.quantize(x, typ, imrow)
    return np.asarray(quant.dequantize(q, typ), np.float32).reshape(x.shape)


CHUNK_BYTES = 64 << 20     # float32 bytes quantized per step of ``requantized``


def requantized(s: Source, name: str, typ: str, imrow) -> np.ndarray:
    """A whole tensor as it reads after quantizing to ``typ``, f32 [n_rows, ne0]: one float32 copy,
    quantized and dequantized in place, a chunk of rows at a time (rows are independent, so this
    equals ``quant_dequant`` of the whole tensor bit for bit)."""
    x = s.rows(name)
    step = max(1, CHUNK_BYTES // (4 * x.shape[1]))
    for r0 in range(0, x.shape[0], step):
        x[r0:r0 + step] = quant_dequant(x[r0:r0 + step], typ, imrow)
    return x


# ---------------------------------------------------------------- units (run in workers)

_OPEN: dict = {}       # per process: opened sources, imatrices, probes (a worker serves many units)


def _stamp(path: str) -> tuple:
    """A file as long-lived workers must tell it apart: path, size, mtime (a file replaced at the
    same path is opened again)."""
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def _source(path: str) -> Source:
    k = ("source", *_stamp(path))
    if k not in _OPEN:
        _OPEN[k] = open_source(path)
    return _OPEN[k]


def _imatrix(path: str | None):
    if not path:
        return None
    k = ("imatrix", *_stamp(path))
    if k not in _OPEN:
        from quant.imatrix import load_imatrix
        _OPEN[k] = load_imatrix(path)
    return _OPEN[k]


def error_unit(src: str, imatrix: str | None, cache_root: str, name: str, rows: list[int],
               todo: list[tuple[str, str]]) -> tuple[str, dict]:
    """Errors of one tensor for the given (type, cache key) pairs, each cached as it is done."""
    s, cache = _source(src), Cache(cache_root)
    t = s.tensor(name)
    imrow = imatrix_row(_imatrix(imatrix), name, t.shape[0])
    x = s.rows(t, np.asarray(rows, np.int64))
    out = {}
    for typ, key in todo:
        out[typ] = relative_error(x, quant_dequant(x, typ, imrow), imrow)
        cache.put(key, {"error": out[typ]})
    return name, out


def _probe(src: str, text: str, n_seq: int, seq_len: int):
    k = ("probe", *_stamp(src), *_stamp(text), n_seq, seq_len)
    if k not in _OPEN:
        from runtime.loader import load
        from runtime.perplexity import read_text_file
        from runtime.sensitivity import Probe
        # one kernel thread, in every process: the prefill GEMMs' tiling (hence their rounding)
        # follows the thread count, and a unit must not depend on which process measured it
        model = load(src, reader=_source(src).gguf, n_threads=1)
        _OPEN[k] = Probe(model, probe_tokens(model, read_text_file(text), n_seq, seq_len), spill=True)
    return _OPEN[k]


def kld_unit(src: str, imatrix: str | None, cache_root: str, text: str, n_seq: int, seq_len: int,
             group: list[str], refs: list[str], key: str) -> tuple[str, float, int]:
    """KLD of the model with one group of tensors quantized to their reference types (cached)."""
    s, im = _source(src), _imatrix(imatrix)
    probe = _probe(src, text, n_seq, seq_len)
    # made when the probe reaches the tensor's layer, dropped after it
    rep = {n: (lambda n=n, ref=ref: requantized(s, n, ref, imatrix_row(im, n, s.tensor(n).shape[0])))
           for n, ref in zip(group, refs)}
    v = probe.kld(rep)
    Cache(cache_root).put(key, {"kld": v, "rows": probe.n_rows})
    return key, v, probe.n_rows


# ---------------------------------------------------------------- the driver

def measure(src: str | Source, imatrix: str | None, calib_text: str | None, *,
            candidates: Sequence[str] = DEFAULT_CANDIDATES, n_seq: int = 1, seq_len: int = 128,
            sample_rows: int = 256, cache_dir: str | os.PathLike | None = None, progress: bool = True,
            workers: int = 2, per: str = "block", ray=None) -> Measurement:
    """Per-tensor errors for every candidate type and per-group sensitivities, every unit taken from
    the cache when it is there and cached as soon as it is measured. ``workers`` > 1 runs units in
    that many local processes; ``ray`` (a ``ggufkit.fanout.RayRunner``) runs them as Ray tasks."""
    from ggufkit.fanout import run_units
    from quant.imatrix import load_imatrix

    for c in candidates:
        if c not in STOCK_TYPES:
            raise GGUFKitError(f"candidate type {c} is not one stock llama.cpp runs "
                               f"(allowed: {', '.join(sorted(STOCK_TYPES))})")
    cache = Cache(cache_dir)
    s = open_source(src)
    src = str(Path(s.path).resolve())
    _OPEN[("source", *_stamp(src))] = s
    im = load_imatrix(imatrix) if imatrix else None
    plans = s.plans()
    meas = Measurement(str(s.path), len(s.header(plans, "Q8_0", im, imatrix)), 0, 0,
                       probe=dict(n_seq=n_seq, seq_len=seq_len), units=dict(computed=0, reused=0))
    t0 = time.time()
    todo = []
    for t, p in zip(s.tensors, plans):
        meas.n_params += int(np.prod(p.shape))
        if p.dst_type == p.src_type or not p.allows_quantization:
            meas.fixed_bytes += pad(t.n_bytes)
            continue
        todo.append((t, p))
    from tqdm import tqdm
    digests = {t.name: tensor_digest(s, t, cache)
               for t in tqdm(s.tensors, desc="hash", unit="tensor", disable=not progress)}
    # sampled rows: one generator over the tensors in file order (the sample does not depend on
    # which units are cached or where they run)
    rng = np.random.default_rng(0)
    jobs, by = [], {}
    for t, p in todo:
        ne0 = p.shape[0]
        n_rows = int(np.prod(p.shape[1:]))
        imrow = imatrix_row(im, p.name, ne0)
        types = candidate_types(ne0, imrow is not None, candidates)
        rows = np.sort(rng.choice(n_rows, min(sample_rows, n_rows), replace=False))
        base = dict(kind="error", v=METHOD_VERSION, tensor=digests[p.name], rows=_sha(rows.astype(np.int64).tobytes()),
                    imatrix=None if imrow is None else _sha(np.ascontiguousarray(imrow, np.float32).tobytes()))
        tm = TensorMeasure(p.name, list(p.shape), n_rows, p.src_type, {}, {})
        missing = []
        for typ in types:
            key = Cache.key(type=typ, **base)
            hit = cache.get(key)
            tm.errors[typ] = None if hit is None else hit["error"]
            tm.nbytes[typ] = pad(n_rows * quant.row_size(typ, ne0))
            if hit is None:
                missing.append((typ, key))
        meas.units["reused"] += len(types) - len(missing)
        meas.units["computed"] += len(missing)
        if missing:
            jobs.append((src, imatrix, str(cache.root), p.name, rows.tolist(), missing))
        meas.tensors.append(tm)
        by[p.name] = tm
    for name, errs in run_units(error_unit, jobs, workers=workers, ray=ray, progress=progress, desc="errors",
                                unit="tensor"):
        by[name].errors.update(errs)
    meas.seconds["errors"] = time.time() - t0
    if calib_text:
        _sensitivities(meas, s, src, imatrix, im, calib_text, n_seq, seq_len, progress, per, workers, ray,
                       cache, digests)
    for k in [k for k in _OPEN if k[0] == "probe"]:
        del _OPEN[k]                  # a probe built here (no workers) is not kept past the measurement
    return meas


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


def _sensitivities(meas, s, src, imatrix, im, text_path, n_seq, seq_len, progress, per, workers, ray, cache,
                   digests):
    from ggufkit.fanout import run_units

    t0 = time.time()
    by = {tm.name: tm for tm in meas.tensors}
    for tm in meas.tensors:
        tm.ref_type = _ref_type(tm)
    model_digest = _sha("".join(digests[t.name] for t in s.tensors).encode()
                        + b"".join(raw for _, raw in s.kv_raw))
    text_digest = _file_digest(text_path)
    klds, jobs = {}, []
    for g in sensitivity_groups(list(by), per):
        refs = [by[n].ref_type for n in g]
        imrows = []
        for n in g:
            r = imatrix_row(im, n, by[n].shape[0])
            imrows.append(None if r is None else _sha(np.ascontiguousarray(r, np.float32).tobytes()))
        key = Cache.key(kind="kld", v=METHOD_VERSION, model=model_digest, group=g, refs=refs, imatrix=imrows,
                        text=text_digest, n_seq=n_seq, seq_len=seq_len)
        hit = cache.get(key)
        klds[tuple(g)] = (key, None if hit is None else hit["kld"])
        if hit is None:
            jobs.append((src, imatrix, str(cache.root), text_path, n_seq, seq_len, g, refs, key))
        else:
            meas.probe["rows"] = hit["rows"]
    meas.units["reused"] += len(klds) - len(jobs)
    meas.units["computed"] += len(jobs)
    got = {}
    for key, v, n_rows in run_units(kld_unit, jobs, workers=workers, ray=ray, progress=progress,
                                    desc="sensitivity", unit="group"):
        got[key] = v
        meas.probe["rows"] = n_rows
    for g, (key, v) in klds.items():
        v = got[key] if v is None else v
        e = sum(by[n].errors[by[n].ref_type] for n in g)
        for n in g:
            by[n].ref_kld = v
            by[n].alpha = max(v, 0.0) / e if e > 0 else 0.0
    meas.seconds["sensitivity"] = time.time() - t0
    meas.probe["groups"] = per

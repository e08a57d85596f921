"""Importance matrices written by llama-imatrix, read the way llama-quantize reads them.

Two formats (llama.cpp ``common/imatrix-loader.cpp``):

- GGUF (``general.type = imatrix``): keys ``imatrix.datasets`` (string array),
  ``imatrix.chunk_count`` and ``imatrix.chunk_size`` (u32); per weight two F32 tensors
  ``<name>.in_sum2`` [ne0, n_mat] (sums of squared activations) and ``<name>.counts`` [1, n_mat]
  (tokens seen, per expert). llama-quantize uses ``in_sum2 / lround(counts)`` per expert slice
  in float32, and 1.0 where a count is 0. All three keys must be present.
- legacy ``.dat``: int32 n_entries; per entry int32 name length, name bytes, int32 ncall,
  int32 nval, nval float32 (stored as ``mean * ncall``); an optional trailer of int32 chunk count,
  int32 length and the dataset name. llama-quantize divides the values by ncall (if ncall > 0).

``load_imatrix`` returns those normalised float32 vectors keyed by weight name
(``blk.0.attn_q.weight``), which is what ``quant.quantize(..., imatrix=...)`` takes per row.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from quant.errors import QuantError
from quant.gguf import GGUFReader

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"


@dataclass
class Imatrix:
    entries: dict[str, np.ndarray]          # weight name -> float32 [n_mat * ne0] importance
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    is_legacy: bool = False

    def for_tensor(self, name: str) -> np.ndarray | None:
        return self.entries.get(name)


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def load_imatrix(path: str | Path) -> Imatrix:
    """Read a GGUF or legacy .dat imatrix and normalise it like llama-quantize's load_imatrix."""
    path = Path(path)
    if not path.is_file():
        raise QuantError(f"imatrix file not found: {path}")
    im = _load_gguf(path) if _is_gguf(path) else _load_legacy(path)
    for name, v in im.entries.items():
        if not np.all(np.isfinite(v)):
            bad = v[~np.isfinite(v)][0]
            raise QuantError(f"imatrix contains non-finite value {bad} (entry {name})")
    return im


def _load_gguf(path: Path) -> Imatrix:
    r = GGUFReader(path)          # a bad file raises GGUFError naming it
    if not r.tensors:
        raise QuantError(f"no data in imatrix file {path}")
    fields = r.fields
    if not all(k in fields for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE)):
        raise QuantError(f"missing imatrix metadata in file {path}")
    ds = fields[KEY_DATASETS]
    datasets = [ds] if isinstance(ds, str) else [str(d) for d in ds]
    chunk_count = int(fields[KEY_CHUNK_COUNT])
    chunk_size = int(fields[KEY_CHUNK_SIZE])

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in r.tensors.values():
        for suffix, into in ((".in_sum2", sums), (".counts", counts)):
            if t.name.endswith(suffix) and len(t.name) > len(suffix):
                if t.qtype != "F32":
                    raise QuantError(f"sums and counts for {t.name[:-len(suffix)]} must be F32")
                into[t.name[: -len(suffix)]] = t.data.view(np.float32)
    entries = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise QuantError(f"mismatched sums and counts for {name}")
        s, c = sums[name], counts[name]
        n_mat = c.size
        ne0 = s.size // n_mat
        cnt = np.array([_lround(x) for x in c], dtype=np.int64).astype(np.float32)
        e = np.empty(s.size, dtype=np.float32)
        for j in range(n_mat):
            sl = slice(j * ne0, (j + 1) * ne0)
            e[sl] = s[sl] / cnt[j] if cnt[j] > 0 else np.float32(1.0)
        entries[name] = e
    return Imatrix(entries, datasets, chunk_count, chunk_size, is_legacy=False)


def _lround(x: float) -> int:
    """C lround: half away from zero."""
    x = float(x)
    return int(np.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def _load_legacy(path: Path) -> Imatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > len(data):
            raise QuantError(f"failed to load imatrix from '{path}': truncated file")
        v = struct.unpack_from(fmt, data, pos)
        pos += n
        return v

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise QuantError(f"failed to load imatrix from '{path}': no data")
    entries = {}
    for _ in range(n_entries):
        (length,) = take("<i")
        if length < 0 or pos + length > len(data):
            raise QuantError(f"failed to load imatrix from '{path}': bad entry name")
        name = data[pos:pos + length].split(b"\0")[0].decode("utf-8", "replace")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1:
            raise QuantError(f"failed to load imatrix from '{path}': bad number of values")
        if pos + 4 * nval > len(data):
            raise QuantError(f"failed to load imatrix from '{path}': truncated data")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        entries[name] = sums / np.float32(ncall) if ncall > 0 else sums.copy()
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):
        (chunk_count,) = struct.unpack_from("<i", data, pos)
        pos += 4
        if pos + 4 <= len(data):
            (length,) = struct.unpack_from("<i", data, pos)
            pos += 4
            if 0 < length and pos + length <= len(data):
                datasets.append(data[pos:pos + length].split(b"\0")[0].decode("utf-8", "replace"))
    return Imatrix(entries, datasets, chunk_count, 0, is_legacy=True)


def select_weights(im: Imatrix, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> Imatrix:
    """``--include-weights`` / ``--exclude-weights``: keep or drop entries whose name contains
    any of the given substrings (the two cannot be combined, as in llama-quantize)."""
    include, exclude = list(include), list(exclude)
    if include and exclude:
        raise QuantError("include and exclude weight lists cannot be used together")
    entries = dict(im.entries)
    if exclude:
        entries = {k: v for k, v in entries.items() if not any(s in k for s in exclude)}
    if include:
        entries = {k: v for k, v in entries.items() if any(s in k for s in include)}
    return Imatrix(entries, im.datasets, im.chunk_count, im.chunk_size, im.is_legacy)


def save_imatrix_gguf(path: str | Path, sums: dict[str, np.ndarray], counts: dict[str, np.ndarray],
                      *, datasets: Iterable[str] = (), chunk_count: int = 0,
                      chunk_size: int = 512) -> None:
    """Write a GGUF imatrix (llama-imatrix's layout); sums[name] is [n_mat, ne0] or [ne0]."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch="")
    # GGUFWriter always adds general.architecture; llama-imatrix does not write one, harmless
    w.add_string("general.type", "imatrix")
    w.add_array(KEY_DATASETS, list(datasets))
    w.add_uint32(KEY_CHUNK_COUNT, chunk_count)
    w.add_uint32(KEY_CHUNK_SIZE, chunk_size)
    for name in sorted(sums):
        s = np.asarray(sums[name], dtype=np.float32)
        s = s.reshape(1, -1) if s.ndim == 1 else s
        c = np.asarray(counts[name], dtype=np.float32).reshape(s.shape[0], 1)
        w.add_tensor(f"{name}.in_sum2", s)
        w.add_tensor(f"{name}.counts", c)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

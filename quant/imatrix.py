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


@dataclass
class RawImatrix:
    """llama-imatrix's collector state: per weight the raw sums of squared activations
    (float32 [n_mat * ne0]) and token counts (int64 [n_mat]); what its GGUF file stores."""
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_size: int = 512
    last_chunk: int = 0

    def add(self, name: str, x: np.ndarray, n_mat: int = 1) -> None:
        """Accumulate the activations x f32 [n_tok, ne0] seen by dense weight ``name``."""
        x = np.asarray(x, dtype=np.float32)
        ne0 = x.shape[1]
        v = self.sums.get(name)
        if v is None:
            v = self.sums[name] = np.zeros(ne0 * n_mat, np.float32)
            self.counts[name] = np.zeros(1, np.int64)
        elif v.size != ne0 * n_mat:
            raise QuantError(f"inconsistent size for {name} ({v.size} vs {ne0 * n_mat})")
        c = self.counts[name]
        if c.size > 1 and np.all(c == c[0]):
            c = self.counts[name] = c[:1].copy()
        sq = np.einsum("ij,ij->j", x, x, dtype=np.float32)
        for m in range(n_mat):        # a 2-D weight: every matrix slice sees the same activations
            v[m * ne0:(m + 1) * ne0] += sq
        if not np.all(np.isfinite(v)):
            raise QuantError(f"non-finite values detected in {name}")
        c += x.shape[0] // 1
        self.last_chunk = max(self.last_chunk, int(c.max()) // self.chunk_size)

    def merge_file(self, path: str | Path) -> None:
        """Add a GGUF or legacy .dat imatrix as llama-imatrix's ``--in-file`` does (legacy values
        are ``mean * ncall``: they count as ``ncall * chunk_size`` tokens)."""
        sums, counts, datasets, legacy = read_raw(path)
        cs = self.chunk_size
        for name, s in sums.items():
            c = counts[name]
            if legacy:
                if name not in self.sums:
                    self.sums[name] = np.zeros(s.size, np.float32)
                    self.counts[name] = np.zeros(1, np.int64)
                self.sums[name] += (s * np.float32(cs)).astype(np.float32)
                self.counts[name] += int(c[0]) * cs
                continue
            if name not in self.sums:
                self.sums[name] = np.zeros(s.size, np.float32)
            elif self.sums[name].size != s.size:
                raise QuantError(f"mismatched sums size for {name}: {s.size} != {self.sums[name].size}")
            if name not in self.counts:
                self.counts[name] = np.zeros(c.size, np.int64)
            elif self.counts[name].size == 1 and c.size > 1:
                self.counts[name] = np.full(c.size, self.counts[name][0], np.int64)
            elif self.counts[name].size != c.size:
                raise QuantError(f"mismatched counts size for {name}: {c.size} != {self.counts[name].size}")
            self.sums[name] += s
            self.counts[name] += c
        self.datasets.extend(datasets)
        mx = max((int(c.max()) for c in self.counts.values() if c.size), default=0)
        self.last_chunk = mx // cs

    def normalised(self) -> Imatrix:
        """The importance vectors llama-quantize would read from this data's GGUF file."""
        e = {}
        for name, s in self.sums.items():
            c = self.counts[name].astype(np.float32)
            n_mat = c.size
            ne0 = s.size // n_mat
            v = np.empty(s.size, np.float32)
            for j in range(n_mat):
                sl = slice(j * ne0, (j + 1) * ne0)
                v[sl] = s[sl] / c[j] if c[j] > 0 else np.float32(1.0)
            e[name] = v
        return Imatrix(e, list(self.datasets), self.last_chunk, self.chunk_size)

    def save(self, path: str | Path, fmt: str = "gguf", prompt_file: str = "") -> None:
        datasets = list(self.datasets) + ([prompt_file] if prompt_file else [])
        if fmt == "dat":
            save_imatrix_dat(path, self, prompt_file)
        else:
            save_imatrix_gguf(path, self.sums, self.counts, datasets=datasets,
                              chunk_count=self.last_chunk, chunk_size=self.chunk_size)


def read_raw(path: str | Path):
    """A file's raw contents: (sums, counts, datasets, is_legacy); legacy counts are [ncall]."""
    path = Path(path)
    if not path.is_file():
        raise QuantError(f"imatrix file not found: {path}")
    if not _is_gguf(path):
        data = path.read_bytes()
        pos = 0
        sums, counts = {}, {}
        try:
            (n,) = struct.unpack_from("<i", data, pos); pos += 4
            for _ in range(n):
                (ln,) = struct.unpack_from("<i", data, pos); pos += 4
                name = data[pos:pos + ln].decode("utf-8", "replace"); pos += ln
                ncall, nval = struct.unpack_from("<ii", data, pos); pos += 8
                sums[name] = np.frombuffer(data, "<f4", nval, pos).astype(np.float32); pos += 4 * nval
                counts[name] = np.array([ncall], np.int64)
        except (struct.error, ValueError):
            raise QuantError(f"failed to load imatrix from '{path}': truncated file") from None
        ds = []
        if pos + 8 <= len(data):
            (ln,) = struct.unpack_from("<i", data, pos + 4)
            if ln > 0:
                ds.append(data[pos + 8:pos + 8 + ln].decode("utf-8", "replace"))
        return sums, counts, ds, True
    r = GGUFReader(path)          # the one reader; a bad file raises GGUFError naming it
    if KEY_DATASETS not in r.fields:
        raise QuantError(f"missing imatrix metadata in file {path}")
    ds = r.fields[KEY_DATASETS]
    datasets = [ds] if isinstance(ds, str) else [str(d) for d in ds]
    sums, counts = {}, {}
    for t in r.tensors.values():
        if t.qtype != "F32" and t.name.endswith((".in_sum2", ".counts")):
            raise QuantError(f"sums and counts for {t.name.rsplit('.', 1)[0]} must be F32")
        if t.name.endswith(".in_sum2"):
            sums[t.name[:-8]] = t.data.view(np.float32).copy()
        elif t.name.endswith(".counts"):
            counts[t.name[:-7]] = np.array([_lround(x) for x in t.data.view(np.float32)], np.int64)
    for n in set(sums) ^ set(counts):
        raise QuantError(f"mismatched sums and counts for {n}")
    return sums, counts, datasets, False


def save_imatrix_dat(path: str | Path, raw: RawImatrix, prompt_file: str = "") -> None:
    """llama-imatrix ``--output-format dat``: per entry ncall = ceil(max count / chunk_size) and
    values (sum / count) * ncall; entries without data skipped; trailer last chunk + dataset."""
    cs = raw.chunk_size
    names = sorted(n for n in raw.sums if raw.counts[n].size and np.any(raw.counts[n] != 0))
    out = [struct.pack("<i", len(names))]
    for name in names:
        s, c = raw.sums[name], raw.counts[name]
        nb = name.encode()
        ncall = (int(c.max()) + cs - 1) // cs
        nmat = c.size
        per = s.size // nmat
        cnt = np.repeat(c.astype(np.float32), per)
        val = s.copy()
        zero = cnt == 0
        val[zero], cnt[zero] = 1.0, 1.0
        tmp = (val / cnt * np.float32(ncall)).astype("<f4")
        out += [struct.pack("<i", len(nb)), nb, struct.pack("<ii", ncall, s.size), tmp.tobytes()]
    ds = prompt_file if prompt_file else (raw.datasets[-1] if raw.datasets else "")
    out += [struct.pack("<i", raw.last_chunk), struct.pack("<i", len(ds.encode())), ds.encode()]
    Path(path).write_bytes(b"".join(out))


def save_imatrix_gguf(path: str | Path, sums: dict[str, np.ndarray], counts: dict[str, np.ndarray],
                      *, datasets: Iterable[str] = (), chunk_count: int = 0,
                      chunk_size: int = 512) -> None:
    """Write a GGUF imatrix (llama-imatrix's layout); sums[name] is [n_mat, ne0] or [ne0]."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch="")
    w.kv_data[0].pop("general.architecture", None)     # llama-imatrix writes none
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

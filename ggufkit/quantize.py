"""``ggufkit quantize`` / ``ggufkit dequantize``: rewrite a GGUF with new tensor types, the way
llama-quantize does (``llama_model_quantize_impl`` in llama.cpp's src/llama-quant.cpp).

What the output holds, byte for byte as llama-quantize writes it:

- header: ``GGUF``, version 3, n_tensors (u64), n_kv (u64);
- key/values: the input's, in input order (raw bytes copied), without ``split.*``; then
  ``general.quantization_version`` = 2 and ``general.file_type`` = the llama_ftype (both u32,
  moved to the end); then, with an imatrix, ``quantize.imatrix.file`` (the path as given, at most
  127 bytes), ``quantize.imatrix.dataset`` (first dataset), ``quantize.imatrix.entries_count`` and
  ``quantize.imatrix.chunks_count`` (u32, when > 0);
- tensor infos in llama.cpp's loader order (block number, then name; see
  ``quant.recipes.tensor_order``), ``n_dims`` as ``ggml_n_dims`` (trailing 1s dropped);
- data aligned to 32 bytes (GGUF_DEFAULT_ALIGNMENT), each tensor zero-padded to 32.

Tensors whose type does not change are copied; the others are converted to float32 in row
chunks (F16/BF16 exactly, quantized types with ``quant.dequantize``) and quantized with
``quant.quantize`` (the importance vector of the weight, if the imatrix has it). Memory stays
bounded by the chunk size; the input is memory-mapped.
"""
from __future__ import annotations

import os
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

import quant
from ggufkit.atomic import atomic_path, check_output
from ggufkit.errors import GGUFKitError
from quant.errors import QuantError
from quant.imatrix import Imatrix, load_imatrix, select_weights
from quant.recipes import (
    FileType, QuantOptions, TensorIn, TensorPlan, TOKEN_EMBD_NAMES, ggml_n_dims, is_quantized,
    model_info, parse_ftype, parse_tensor_type, parse_type, plan_types, tensor_order,
)

ALIGNMENT = 32               # GGUF_DEFAULT_ALIGNMENT; llama-quantize always pads to it
GGML_QNT_VERSION = 2
CHUNK_BYTES = 64 << 20       # float32 bytes converted per chunk (bounded memory)
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")

# GGUF value types (gguf.h)
GGUF_UINT32, GGUF_STRING = 4, 8


@dataclass
class TensorResult:
    name: str
    shape: tuple[int, ...]
    src_type: str
    dst_type: str
    src_bytes: int
    dst_bytes: int


@dataclass
class QuantizeReport:
    src: str
    dst: str | None
    ftype: str
    tensors: list[TensorResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def src_bytes(self) -> int:
        return sum(t.src_bytes for t in self.tensors)

    @property
    def dst_bytes(self) -> int:
        return sum(t.dst_bytes for t in self.tensors)

    def table(self) -> str:
        lines = []
        for i, t in enumerate(self.tensors):
            arrow = f" -> {t.dst_bytes / 2**20:9.3f} MiB ({t.dst_type})" if t.dst_type != t.src_type else ""
            lines.append(f"[{i + 1:4d}/{len(self.tensors):4d}] {t.name:<36s} {t.src_type:>7s} "
                         f"{t.src_bytes / 2**20:9.3f} MiB{arrow}")
        n = sum(int(np.prod(t.shape)) for t in self.tensors) or 1
        lines.append(f"model size = {self.src_bytes / 2**20:9.2f} MiB ({self.src_bytes * 8 / n:.2f} BPW)")
        lines.append(f"quant size = {self.dst_bytes / 2**20:9.2f} MiB ({self.dst_bytes * 8 / n:.2f} BPW)")
        return "\n".join(lines)


# --- GGUF serialisation helpers ------------------------------------------------------------------

def _gguf_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _kv_u32(key: str, v: int) -> bytes:
    return _gguf_str(key) + struct.pack("<II", GGUF_UINT32, v & 0xFFFFFFFF)


def _kv_str(key: str, v: str | bytes) -> bytes:
    return _gguf_str(key) + struct.pack("<I", GGUF_STRING) + _gguf_str(v)


def _pad(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


# --- reading the input (a fast header scan: gguf's GGUFReader decodes every vocabulary string,
# which takes ~10 s on a Llama-3 vocabulary) -------------------------------------------------------

# value type -> (struct format, size) for fixed-size GGUF values
_SCALAR = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
           6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_ARRAY, _KEEP_ARRAY_VALUES = 9, 4096   # arrays longer than this are only skipped, not decoded


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]   # ne order
    type_id: int
    offset: int              # from the start of the data section
    n_bytes: int = 0


@dataclass
class _Source:
    path: Path
    data: np.memmap                    # the whole file, memory-mapped
    kv_raw: list[tuple[str, bytes]]    # every key/value's bytes as stored, in file order
    kv: dict                           # decoded values (long arrays: None)
    tensors: list[_Tensor]             # in llama.cpp's order
    infos: list[TensorIn]
    data_offset: int


def _scan(path: Path) -> _Source:
    """Parse a GGUF (v2/v3) header; long arrays (the vocabulary) are skipped, not decoded."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    mv = memoryview(buf)
    pos = 0

    def need(n):
        if pos + n > len(buf):
            raise GGUFKitError(f"{path}: truncated GGUF header")

    def u(fmt, size):
        nonlocal pos
        need(size)
        v = struct.unpack_from(fmt, mv, pos)[0]
        pos += size
        return v

    def string():
        nonlocal pos
        n = u("<Q", 8)
        need(n)
        v = bytes(mv[pos:pos + n]).decode("utf-8", "replace")
        pos += n
        return v

    def value(vt):
        nonlocal pos
        if vt in _SCALAR:
            return u(*_SCALAR[vt])
        if vt == GGUF_STRING:
            return string()
        if vt != _ARRAY:
            raise GGUFKitError(f"{path}: unsupported GGUF value type {vt}")
        at = u("<I", 4)
        n = u("<Q", 8)
        if at in _SCALAR:
            fmt, size = _SCALAR[at]
            need(n * size)
            vals = None
            if n <= _KEEP_ARRAY_VALUES:
                vals = [struct.unpack_from(fmt, mv, pos + i * size)[0] for i in range(n)]
            pos += n * size
            return vals
        if at == GGUF_STRING:
            if n <= _KEEP_ARRAY_VALUES:
                return [string() for _ in range(n)]
            unpack, p = struct.Struct("<Q").unpack_from, pos   # skip: the hot loop of the scan
            try:
                for _ in range(n):
                    p += 8 + unpack(mv, p)[0]
            except struct.error:
                raise GGUFKitError(f"{path}: truncated GGUF header") from None
            pos = p
            need(0)
            return None
        raise GGUFKitError(f"{path}: unsupported GGUF array type {at}")

    if len(buf) < 24 or bytes(mv[:4]) != b"GGUF":
        raise GGUFKitError(f"{path} is not a GGUF file")
    pos = 4
    version = u("<I", 4)
    if version not in (2, 3):
        raise GGUFKitError(f"{path}: unsupported GGUF version {version}")
    n_tensors, n_kv = u("<Q", 8), u("<Q", 8)
    kv_raw, kv = [], {}
    for _ in range(n_kv):
        start = pos
        key = string()
        kv[key] = value(u("<I", 4))
        kv_raw.append((key, bytes(mv[start:pos])))
    tensors = []
    for _ in range(n_tensors):
        name = string()
        nd = u("<I", 4)
        shape = tuple(u("<q", 8) for _ in range(nd))
        tensors.append(_Tensor(name, shape, u("<I", 4), u("<Q", 8)))
    align = int(kv.get("general.alignment") or ALIGNMENT)
    data_offset = (pos + align - 1) // align * align
    infos = []
    for t in tensors:
        try:
            qt = quant.get_type(t.type_id)
            nrows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
            t.n_bytes = nrows * qt.row_size(t.shape[0])
        except QuantError as e:
            raise GGUFKitError(f"tensor {t.name}: {e}") from None
        if data_offset + t.offset + t.n_bytes > len(buf):
            raise GGUFKitError(f"{path}: tensor {t.name} lies beyond the end of the file")
        infos.append(TensorIn(t.name, t.shape, qt.name))
    order = tensor_order([t.name for t in tensors])
    return _Source(path, buf, kv_raw, kv, [tensors[i] for i in order], [infos[i] for i in order],
                   data_offset)


def _open(path: str | os.PathLike) -> _Source:
    path = Path(path)
    if not path.is_file():
        raise GGUFKitError(f"input file not found: {path}")
    if path.stat().st_size == 0:
        raise GGUFKitError(f"{path}: empty file (0 bytes), not a GGUF")
    return _scan(path)


# --- converting one tensor -----------------------------------------------------------------------

def _half_to_f32(src: np.ndarray, dst: np.ndarray, bf16: bool) -> None:
    if bf16:
        np.left_shift(src.view(np.uint16).astype(np.uint32), 16, out=dst.view(np.uint32))
    else:
        dst[...] = src.view(np.float16)


def _to_f32(raw: np.ndarray, src_type: str, n_per_row: int, backend: str, nthreads) -> np.ndarray:
    """Rows of raw bytes [nrows, row_bytes] -> float32 [nrows, n_per_row], exactly as ggml.

    F16/BF16 widen exactly (numpy casts release the GIL, so slices run on threads)."""
    if src_type == "F32":
        return raw.view(np.float32).reshape(-1, n_per_row)
    if src_type in ("F16", "BF16"):
        src = raw.reshape(-1).view(np.uint16)
        out = np.empty(src.size, np.float32)
        n = max(1, min(nthreads or os.cpu_count() or 1, src.size // (1 << 20) or 1))
        if n == 1:
            _half_to_f32(src, out, src_type == "BF16")
        else:
            edges = np.linspace(0, src.size, n + 1).astype(np.int64)
            with ThreadPoolExecutor(n) as ex:
                list(ex.map(lambda i: _half_to_f32(src[edges[i]:edges[i + 1]], out[edges[i]:edges[i + 1]],
                                                   src_type == "BF16"), range(n)))
        return out.reshape(-1, n_per_row)
    return quant.dequantize(raw, src_type, backend=backend, nthreads=nthreads).reshape(-1, n_per_row)


def _convert_rows(raw_rows: np.ndarray, src: str, dst: str, n_per_row: int, imatrix,
                  backend: str, nthreads) -> np.ndarray:
    x = _to_f32(raw_rows, src, n_per_row, backend, nthreads)
    return quant.quantize(x, dst, imatrix, backend=backend, nthreads=nthreads)


# --- the driver ----------------------------------------------------------------------------------

def quantize_file(src: str | os.PathLike, dst: str | os.PathLike | None, ftype: str | FileType,
                  nthreads: int | None = None, *,
                  imatrix: str | os.PathLike | Imatrix | None = None,
                  include_weights: Sequence[str] = (), exclude_weights: Sequence[str] = (),
                  pure: bool = False, output_tensor_type: str | None = None,
                  token_embedding_type: str | None = None,
                  tensor_types: Sequence[str | tuple[str, str]] = (),
                  leave_output_tensor: bool = False, allow_requantize: bool = False,
                  recipe: str | None = None, dry_run: bool = False, backend: str = "numba",
                  progress: bool | None = None) -> QuantizeReport:
    """Quantize GGUF ``src`` to ``dst`` as llama-quantize ``src dst ftype nthreads`` would.

    Options carry llama-quantize's names. ``imatrix`` is a path (GGUF or legacy .dat) or a loaded
    ``Imatrix``; ``tensor_types`` holds "PATTERN=TYPE" strings; ``recipe`` names a recipe from
    ``quant.recipes.RECIPES`` ("dynamic-gate") that replaces the llama.cpp mixture.
    ``dry_run`` writes nothing and returns the planned types and sizes.
    """
    ft = ftype if isinstance(ftype, FileType) else parse_ftype(ftype)
    if not dry_run:
        if dst is None:
            raise GGUFKitError("an output file is required (or a dry run)")
        if Path(dst).exists() and Path(src).exists() and os.path.samefile(src, dst):
            raise GGUFKitError(f"input and output files are the same: '{src}'")
        check_output(dst)
    opts = QuantOptions(
        pure=pure,
        output_tensor_type=parse_type(output_tensor_type) if output_tensor_type else None,
        token_embedding_type=parse_type(token_embedding_type) if token_embedding_type else None,
        tensor_types=tuple(parse_tensor_type(t) if isinstance(t, str) else (t[0].lower(), parse_type(t[1]))
                           for t in tensor_types),
        leave_output_tensor=leave_output_tensor, recipe=recipe)

    im = None
    imatrix_path = None
    if imatrix is not None:
        if isinstance(imatrix, Imatrix):
            im = imatrix
            imatrix_path = "imatrix"
        else:
            imatrix_path = str(imatrix)
            im = load_imatrix(imatrix)
    elif include_weights or exclude_weights:
        raise GGUFKitError("include/exclude weight lists need an importance matrix")
    if im is not None:
        im = select_weights(im, include_weights, exclude_weights)
        if not im.entries:
            im = None   # llama-quantize then quantizes as if no imatrix was given

    s = _open(src)
    model = model_info(s.kv, has_imatrix=im is not None)
    plans = plan_types(s.infos, model, ft, opts)
    report = QuantizeReport(str(src), None if dry_run else str(dst), ft.name)
    for p in plans:
        if p.fallback:
            report.warnings.append(p.fallback)

    # refuse before writing anything, in llama-quantize's order
    if im is None:
        for p in plans:
            if p.allows_quantization and p.requires_imatrix:
                if dry_run:
                    report.warnings.append("this quantization will require an importance matrix")
                    break
                raise QuantError(f"this quantization requires an importance matrix (imatrix): "
                                 f"tensor {p.name} would be {p.dst_type}")
    weights = {}
    for p in plans:
        if p.src_type == p.dst_type or dry_run:
            continue
        w = im.entries.get(p.name) if im is not None else None
        ne0 = p.shape[0]
        ne2 = p.shape[2] if len(p.shape) > 2 else 1
        if w is not None and w.size != ne0 * ne2:
            if p.name not in TOKEN_EMBD_NAMES:
                raise QuantError(f"imatrix size {w.size} is different from tensor size {ne0 * ne2} "
                                 f"for {p.name}")
            w = None
        if w is None and p.requires_imatrix:
            raise QuantError(f"Missing importance matrix for tensor {p.name} in a very low-bit "
                             f"quantization")
        if is_quantized(p.src_type) and not allow_requantize:
            raise QuantError(f"requantizing from type {p.src_type} is disabled "
                             f"(allow_requantize is off)")
        weights[p.name] = w

    for t, p in zip(s.tensors, plans):
        nrows = int(np.prod(p.shape[1:])) if len(p.shape) > 1 else 1
        report.tensors.append(TensorResult(
            p.name, p.shape, p.src_type, p.dst_type, int(t.n_bytes),
            nrows * quant.row_size(p.dst_type, p.shape[0])))
    if dry_run:
        return report

    meta = _metadata(s, plans, ft, im, imatrix_path)
    total = sum(int(t.n_bytes) for t in s.tensors)
    show = progress if progress is not None else sys.stderr.isatty()
    with atomic_path(dst) as tmp, open(tmp, "wb") as out, \
            tqdm(total=total, unit="B", unit_scale=True, desc="quantize", disable=not show) as bar:
        out.write(meta)
        for t, p in zip(s.tensors, plans):
            n = _write_tensor(out, s, t, p, weights.get(p.name), backend, nthreads, bar)
            out.write(b"\0" * (_pad(n) - n))
    return report


def _metadata(s: _Source, plans: list[TensorPlan], ft: FileType, im: Imatrix | None,
              imatrix_path: str | None) -> bytes:
    kvs = [raw for k, raw in s.kv_raw
           if k not in SPLIT_KEYS and k not in ("general.quantization_version", "general.file_type")]
    ftype_id = ft.ftype
    if ft.only_copy:   # COPY keeps the input's file type (or the loader's guess)
        ftype_id = _input_ftype(s)
    kvs.append(_kv_u32("general.quantization_version", GGML_QNT_VERSION))
    kvs.append(_kv_u32("general.file_type", ftype_id))
    if im is not None:
        kvs.append(_kv_str("quantize.imatrix.file", imatrix_path.encode()[:127]))
        if im.datasets:
            kvs.append(_kv_str("quantize.imatrix.dataset", im.datasets[0].encode()[:127]))
        kvs.append(_kv_u32("quantize.imatrix.entries_count", len(im.entries)))
        if im.chunk_count > 0:
            kvs.append(_kv_u32("quantize.imatrix.chunks_count", im.chunk_count))

    infos = []
    offset = 0
    for p in plans:
        qt = quant.get_type(p.dst_type)
        nd = ggml_n_dims(p.shape)
        dims = list(p.shape[:nd]) + [1] * max(0, nd - len(p.shape))
        nrows = int(np.prod(p.shape[1:])) if len(p.shape) > 1 else 1
        nbytes = nrows * qt.row_size(p.shape[0])
        infos.append(_gguf_str(p.name) + struct.pack("<I", nd) + struct.pack(f"<{nd}q", *dims)
                     + struct.pack("<IQ", qt.id, offset))
        offset += _pad(nbytes)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(plans), len(kvs))
    meta = head + b"".join(kvs) + b"".join(infos)
    return meta + b"\0" * (_pad(len(meta)) - len(meta))


_GUESS = {"F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7,
          "Q2_K": 10, "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "TQ1_0": 36, "TQ2_0": 37,
          "IQ2_XXS": 19, "IQ2_XS": 20, "IQ2_S": 28, "IQ3_XXS": 23, "IQ1_S": 24, "IQ1_M": 31,
          "IQ4_NL": 25, "IQ4_XS": 30, "IQ3_S": 26, "NVFP4": 39, "Q1_0": 40, "Q2_0": 41}


def _input_ftype(s: _Source) -> int:
    """llama_model_loader's ftype: general.file_type, else guessed from the commonest type."""
    v = s.kv.get("general.file_type")
    if v is not None:
        return int(v)
    counts: dict[str, int] = {}
    best, best_n = "F32", 0
    for t in s.infos:
        counts[t.type] = counts.get(t.type, 0) + 1
        if counts[t.type] > best_n:
            best, best_n = t.type, counts[t.type]
    return _GUESS.get(best, 0) | 1024   # LLAMA_FTYPE_GUESSED


def _write_tensor(out, s: _Source, t: _Tensor, p: TensorPlan, weight, backend: str, nthreads, bar) -> int:
    start = s.data_offset + t.offset
    raw = s.data[start:start + t.n_bytes]                 # memory-mapped input bytes
    if p.src_type == p.dst_type:
        step = CHUNK_BYTES
        for i in range(0, raw.size, step):
            out.write(raw[i:i + step].tobytes())
            bar.update(min(step, raw.size - i))
        return raw.size
    n_per_row = p.shape[0]
    nrows_per_expert = p.shape[1] if len(p.shape) > 1 else 1
    nrows = raw.size // quant.row_size(p.src_type, n_per_row)
    src_rs = quant.row_size(p.src_type, n_per_row)
    rows = raw.reshape(nrows, src_rs)
    chunk = max(1, CHUNK_BYTES // (4 * n_per_row))
    written = 0
    r0 = 0
    while r0 < nrows:
        # never cross an expert boundary: each expert has its own importance slice
        expert = r0 // nrows_per_expert
        r1 = min(nrows, r0 + chunk, (expert + 1) * nrows_per_expert)
        w = None
        if weight is not None:
            w = weight[expert * n_per_row:(expert + 1) * n_per_row]
        q = _convert_rows(rows[r0:r1], p.src_type, p.dst_type, n_per_row, w, backend, nthreads)
        b = q.tobytes()
        out.write(b)
        written += len(b)
        bar.update((r1 - r0) * src_rs)
        r0 = r1
    return written


def parse_positional(inp: str, args: Sequence[str], *, dry_run: bool = False):
    """llama-quantize's positionals: ``IN [OUT] TYPE [NTHREADS]`` -> (out, FileType, nthreads).

    When the word after IN is a file type, the output is ``<dir of IN>/ggml-model-<TYPE>.gguf``.
    """
    args = list(args)
    if not args:
        raise GGUFKitError("missing TYPE")
    try:
        ft = parse_ftype(args[0])
        out = None if dry_run else str(Path(inp).parent / f"ggml-model-{ft.name}.gguf")
        rest = args[1:]
    except QuantError:
        out = args[0]
        if len(args) < 2:
            raise GGUFKitError("missing ftype") from None
        ft = parse_ftype(args[1])
        rest = args[2:]
    nthreads = None
    if rest:
        try:
            nthreads = int(rest[0])
        except ValueError:
            raise GGUFKitError(f"invalid nthread '{rest[0]}'") from None
        if len(rest) > 1:
            raise GGUFKitError(f"unexpected arguments: {' '.join(rest[1:])}")
    return out, ft, (nthreads if nthreads and nthreads > 0 else None)


def read_tensor_type_file(path: str | os.PathLike | None) -> list[str]:
    """``--tensor-type-file``: PATTERN=TYPE entries separated by spaces or newlines."""
    if not path:
        return []
    try:
        return Path(path).read_text().split()
    except OSError as e:
        raise GGUFKitError(f"failed to open file '{path}': {e.strerror}") from None


def dequantize_file(src: str | os.PathLike, dst: str | os.PathLike, outtype: str = "f16",
                    nthreads: int | None = None, *, backend: str = "numba",
                    progress: bool | None = None) -> QuantizeReport:
    """Every quantizable weight to F32, F16 or BF16; the rest (norms, 1-D) kept.

    Exactly ``llama-quantize --allow-requantize IN OUT F16`` (or F32 / BF16): same tensors,
    same bytes, ``general.file_type`` 0, 1 or 32.
    """
    o = str(outtype).upper()
    if o not in ("F32", "F16", "BF16"):
        raise GGUFKitError(f"output type must be f32, f16 or bf16, not '{outtype}'")
    return quantize_file(src, dst, o, nthreads, allow_requantize=True, backend=backend,
                         progress=progress)

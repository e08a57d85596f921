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
from typing import Sequence

import numpy as np
from tqdm import tqdm

import quant
from ggufkit.atomic import atomic_path, check_output
from ggufkit.errors import GGUFKitError
from quant.errors import QuantError
from quant.gguf import DEFAULT_ALIGNMENT, STRING, UINT32, GGUFReader, TensorInfo
from quant.imatrix import Imatrix, load_imatrix, select_weights
from quant.recipes import (
    FileType, FixedRecipe, QuantOptions, TensorIn, TensorPlan, TOKEN_EMBD_NAMES, ggml_n_dims, is_quantized,
    model_info, parse_ftype, parse_tensor_type, parse_type, plan_types, tensor_order,
)
from quant.types import FTYPE_GUESSED, GUESSED_FTYPE
from quant.units import fmt_bytes

ALIGNMENT = DEFAULT_ALIGNMENT  # llama-quantize always pads to GGUF_DEFAULT_ALIGNMENT
GGML_QNT_VERSION = 2
CHUNK_BYTES = 64 << 20       # float32 bytes converted per chunk (bounded memory)
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


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
            arrow = f" -> {fmt_bytes(t.dst_bytes, 'MiB', '9.3f')} ({t.dst_type})" if t.dst_type != t.src_type else ""
            lines.append(f"[{i + 1:4d}/{len(self.tensors):4d}] {t.name:<36s} {t.src_type:>7s} "
                         f"{fmt_bytes(t.src_bytes, 'MiB', '9.3f')}{arrow}")
        n = sum(int(np.prod(t.shape)) for t in self.tensors) or 1
        lines.append(f"model size = {fmt_bytes(self.src_bytes, 'MiB', '9.2f')} ({self.src_bytes * 8 / n:.2f} BPW)")
        lines.append(f"quant size = {fmt_bytes(self.dst_bytes, 'MiB', '9.2f')} ({self.dst_bytes * 8 / n:.2f} BPW)")
        return "\n".join(lines)


# --- GGUF serialisation helpers ------------------------------------------------------------------

def _gguf_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _kv_u32(key: str, v: int) -> bytes:
    return _gguf_str(key) + struct.pack("<II", UINT32, v & 0xFFFFFFFF)


def _kv_str(key: str, v: str | bytes) -> bytes:
    return _gguf_str(key) + struct.pack("<I", STRING) + _gguf_str(v)


def pad(n: int) -> int:
    """n rounded up to the file's alignment (each tensor's bytes are zero-padded to it)."""
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


# --- reading the input (quant.gguf: the one reader) ---------------------------------------------

@dataclass
class Source:
    """An opened input GGUF: its header read and checked once, its tensors memory-mapped.

    ``tensors`` are in llama.cpp's loader order. Tensor data is read through the mmap, one tensor
    (or some of its rows) at a time (``rows``), so nothing holds the whole model; ``plans`` and
    ``header`` are what ``quantize_file`` writes, computed without writing."""
    path: Path
    gguf: GGUFReader
    kv_raw: list[tuple[str, bytes]]    # every key/value's bytes as stored, in file order
    kv: dict                           # decoded values
    tensors: list[TensorInfo]          # in llama.cpp's order
    infos: list[TensorIn]

    def tensor(self, name: str) -> TensorInfo:
        return self.gguf.tensors[name]

    def rows(self, t: TensorInfo | str, rows: np.ndarray | None = None, *, backend: str = "numba",
             nthreads: int | None = None) -> np.ndarray:
        """float32 [n, ne0] of a tensor: every row, or the given row indices (F32/F16/BF16 exactly,
        quantized types dequantized)."""
        t = self.tensor(t) if isinstance(t, str) else t
        ne0 = t.shape[0]
        raw = t.data.reshape(t.n_rows, quant.row_size(t.qtype, ne0))
        if rows is not None:
            raw = raw[rows]
        x = to_f32(np.ascontiguousarray(raw), t.qtype, ne0, backend, nthreads)
        # a new writable array, made once: F32 is a view of the mapped file until copied, the
        # other types are converted into a new array already
        return np.array(x, np.float32) if t.qtype == "F32" else np.asarray(x, np.float32)

    def plans(self, ftype: str | FileType = "Q8_0", opts: QuantOptions | None = None, *,
              has_imatrix: bool = False) -> list[TensorPlan]:
        """Every tensor's target type (``quant.recipes.plan_types``); default: pure Q8_0, which
        marks the tensors a quantization changes."""
        ft = ftype if isinstance(ftype, FileType) else parse_ftype(ftype)
        opts = opts if opts is not None else QuantOptions(pure=True)
        return plan_types(self.infos, model_info(self.kv, has_imatrix=has_imatrix), ft, opts)

    def header(self, plans: list[TensorPlan], ftype: str | FileType, im: Imatrix | None,
               imatrix_path: str | None) -> bytes:
        """The bytes written before the tensor data (key/values, tensor infos, alignment)."""
        ft = ftype if isinstance(ftype, FileType) else parse_ftype(ftype)
        return _metadata(self, plans, ft, im, imatrix_path)


def _scan(path: Path) -> Source:
    """Read and check a GGUF's header; tensors in llama.cpp's loader order."""
    g = GGUFReader(path)
    tensors = list(g.tensors.values())
    order = tensor_order([t.name for t in tensors])
    return Source(Path(path), g, [(k, g.raw_kv(k)) for k in g.fields], g.fields,
                  [tensors[i] for i in order], [TensorIn(tensors[i].name, tensors[i].shape, tensors[i].qtype)
                                                for i in order])


def open_source(path: str | os.PathLike | Source) -> Source:
    """Open an input GGUF once (a ``Source`` passes through)."""
    if isinstance(path, Source):
        return path
    path = Path(path)
    if not path.is_file():
        raise GGUFKitError(f"input file not found: {path}")
    return _scan(path)


# --- converting one tensor -----------------------------------------------------------------------

def _half_to_f32(src: np.ndarray, dst: np.ndarray, bf16: bool) -> None:
    if bf16:
        np.left_shift(src.view(np.uint16).astype(np.uint32), 16, out=dst.view(np.uint32))
    else:
        dst[...] = src.view(np.float16)


def to_f32(raw: np.ndarray, src_type: str, n_per_row: int, backend: str = "numba",
           nthreads: int | None = None) -> np.ndarray:
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
    x = to_f32(raw_rows, src, n_per_row, backend, nthreads)
    return quant.quantize(x, dst, imatrix, backend=backend, nthreads=nthreads)


# --- the driver ----------------------------------------------------------------------------------

def quantize_file(src: str | os.PathLike | Source, dst: str | os.PathLike | None, ftype: str | FileType,
                  nthreads: int | None = None, *,
                  imatrix: str | os.PathLike | Imatrix | None = None,
                  include_weights: Sequence[str] = (), exclude_weights: Sequence[str] = (),
                  pure: bool = False, output_tensor_type: str | None = None,
                  token_embedding_type: str | None = None,
                  tensor_types: Sequence[str | tuple[str, str]] = (),
                  leave_output_tensor: bool = False, allow_requantize: bool = False,
                  recipe: str | FixedRecipe | None = None, dry_run: bool = False, backend: str = "numba",
                  progress: bool | None = None) -> QuantizeReport:
    """Quantize GGUF ``src`` to ``dst`` as llama-quantize ``src dst ftype nthreads`` would.

    Options carry llama-quantize's names. ``imatrix`` is a path (GGUF or legacy .dat) or a loaded
    ``Imatrix``; ``tensor_types`` holds "PATTERN=TYPE" strings; ``recipe`` names a recipe from
    ``quant.recipes.RECIPES`` ("dynamic-gate") that replaces the llama.cpp mixture.
    ``dry_run`` writes nothing and returns the planned types and sizes.
    """
    ft = ftype if isinstance(ftype, FileType) else parse_ftype(ftype)
    src_path = src.path if isinstance(src, Source) else src
    if not dry_run:
        if dst is None:
            raise GGUFKitError("an output file is required (or a dry run)")
        if Path(dst).exists() and Path(src_path).exists() and os.path.samefile(src_path, dst):
            raise GGUFKitError(f"input and output files are the same: '{src_path}'")
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

    s = open_source(src)
    model = model_info(s.kv, has_imatrix=im is not None)
    plans = plan_types(s.infos, model, ft, opts)
    report = QuantizeReport(str(src_path), None if dry_run else str(dst), ft.name)
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
            out.write(b"\0" * (pad(n) - n))
    return report


def _metadata(s: Source, plans: list[TensorPlan], ft: FileType, im: Imatrix | None,
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
        offset += pad(nbytes)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(plans), len(kvs))
    meta = head + b"".join(kvs) + b"".join(infos)
    return meta + b"\0" * (pad(len(meta)) - len(meta))


def _input_ftype(s: Source) -> int:
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
    return GUESSED_FTYPE.get(best, 0) | FTYPE_GUESSED


def _write_tensor(out, s: Source, t: TensorInfo, p: TensorPlan, weight, backend: str, nthreads, bar) -> int:
    raw = t.data                                          # memory-mapped input bytes
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

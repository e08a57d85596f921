"""quantize / dequantize for whole arrays of rows: the one place that handles rows and tensors.

Rows are split into blocks of ``block_size``; each format only sees blocks
(see quant/types.py). The reference implementations live in quant/ref/*.py (numpy) and
the fast paths in quant/fast/*.py (Numba); every module there is imported on first use,
and importing it registers its types.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np

from .errors import QuantError
from .types import FAST, FORMATS, QType, get_type

_loaded: set[str] = set()


def _load(pkg: str) -> None:
    """Import every module of quant.ref / quant.fast (registration happens on import)."""
    if pkg in _loaded:
        return
    mod = importlib.import_module(f"quant.{pkg}")
    for info in pkgutil.iter_modules(mod.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"quant.{pkg}.{info.name}")
    _loaded.add(pkg)


def _format(t: QType):
    _load("ref")
    f = FORMATS.get(t.name)
    if f is None:
        raise QuantError(f"type {t.name} has no (de)quantizer")
    return f


def _fast(t: QType, what: str):
    _load("fast")
    return FAST.get(t.name, {}).get(what)


class _threads:
    """Temporarily set Numba's thread count."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import numba
        self.old = numba.get_num_threads()
        if self.n:
            numba.set_num_threads(max(1, min(int(self.n), numba.config.NUMBA_NUM_THREADS)))

    def __exit__(self, *exc):
        import numba
        numba.set_num_threads(self.old)


def _check_backend(backend: str) -> None:
    if backend not in ("numba", "numpy"):
        raise QuantError(f"unknown backend {backend!r} (numba or numpy)")


def quantize(x, qtype, imatrix=None, *, backend: str = "numba", nthreads: int | None = None) -> np.ndarray:
    """Quantize float32 rows like ggml_quantize_chunk.

    x: f32[..., n_per_row]; imatrix: f32[n_per_row] or None.
    Returns u8[..., row_size(qtype, n_per_row)].
    """
    t = get_type(qtype)
    _check_backend(backend)
    x = np.asarray(x)
    if x.ndim == 0:
        raise QuantError("cannot quantize a scalar")
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    n = x.shape[-1]
    rs = t.row_size(n)                        # raises QuantError for bad row lengths
    lead = x.shape[:-1]
    nbr = n // t.block_size                   # blocks per row
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (n,):
            raise QuantError(f"{t.name}: imatrix has shape {imatrix.shape}, expected ({n},)")
    elif t.refuses_without_imatrix:
        raise QuantError(f"{t.name} requires an importance matrix (imatrix)")
    fmt = _format(t)                          # also checks the type has a quantizer
    x2 = np.ascontiguousarray(x).reshape(-1, n)                   # [nrows, n_per_row]
    nrows = x2.shape[0]
    kern = _fast(t, "quantize") if backend == "numba" else None
    if nrows == 0:
        out = np.empty((0, rs), np.uint8)
    elif kern is not None:
        qw = imatrix if imatrix is not None else np.zeros(0, np.float32)
        out = np.empty((nrows, rs), np.uint8)
        with _threads(nthreads):
            kern(x2, qw, out)
    else:
        qw = imatrix.reshape(nbr, t.block_size) if imatrix is not None else None
        with np.errstate(all="ignore"):       # C semantics: inf/NaN flow through silently
            out = fmt.quantize_blocks(x2.reshape(nrows, nbr, t.block_size), qw)
    return out.reshape(*lead, rs)


def dequantize(data, qtype, *, backend: str = "numba", nthreads: int | None = None) -> np.ndarray:
    """Dequantize u8[..., row_bytes] to f32[..., n_per_row] (matches ggml to_float / gguf-py)."""
    t = get_type(qtype)
    _check_backend(backend)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        data = np.ascontiguousarray(data).view(np.uint8)
    if data.ndim == 0 or data.shape[-1] % t.type_size:
        raise QuantError(f"{t.name}: row of {data.shape[-1] if data.ndim else 0} bytes is not a "
                         f"multiple of the block size {t.type_size}")
    n = data.shape[-1] // t.type_size * t.block_size
    lead = data.shape[:-1]
    fmt = _format(t)
    b = np.ascontiguousarray(data).reshape(-1, t.type_size)
    kern = _fast(t, "dequantize") if backend == "numba" else None
    if kern is not None:
        out = np.empty((b.shape[0], t.block_size), np.float32)
        if b.shape[0]:
            with _threads(nthreads):
                kern(b, out)
    else:
        with np.errstate(all="ignore"):
            out = fmt.dequantize_blocks(b) if b.shape[0] else np.empty((0, t.block_size), np.float32)
    return out.reshape(*lead, n)

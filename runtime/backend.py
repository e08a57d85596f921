"""The small compute interface model code calls.

Everything here takes arrays and sizes; nothing knows about models. Activations
are float32 [n_tok, n]. Weights are ``QTensor``s: the packed GGUF bytes kept
memory-mapped, dequantized inside the kernels.

Each function uses a Numba kernel from ``runtime.kernels`` where one exists for
the case, and the numpy reference from ``runtime.reference`` otherwise (still
correct, just slow). ``KERNEL_TYPES`` lists the weight types with a fused
Numba matmul.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from runtime import reference as ref
from runtime.errors import ModelError

try:
    from runtime import kernels as _k
except ImportError:  # pragma: no cover - numba missing: references only
    _k = None


# ---------------------------------------------------------------- weights

@dataclass(frozen=True)
class QTensor:
    """A GGUF weight kept quantized.

    data:  uint8 [n_rows, row_bytes], a view of the file (memory-mapped, no copy)
    qtype: ggml type name ("Q4_K", "F16", ...), as ``GGMLQuantizationType[...]``
    shape: (n_out, n_in) in math order; GGUF's ne = [n_in, n_out, ...]
           (tensors with more than 2 dims are flattened to n_out = prod(ne[1:]))
    """

    data: np.ndarray
    qtype: str
    shape: tuple[int, int]
    name: str = ""

    def __post_init__(self):
        n_out, n_in = self.shape
        if self.qtype not in GGMLQuantizationType.__members__:
            raise ModelError(f"{self.name or 'tensor'}: unknown ggml type {self.qtype}")
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[self.qtype]]
        if n_in % block:
            raise ModelError(f"{self.name or 'tensor'}: row length {n_in} is not a multiple of "
                             f"{self.qtype}'s block size {block}")
        if self.data.dtype != np.uint8 or self.data.shape != (n_out, n_in // block * size):
            raise ModelError(f"{self.name or 'tensor'}: data is {self.data.dtype}{self.data.shape}, "
                             f"expected uint8({n_out}, {n_in // block * size}) for {self.qtype}{self.shape}")
        if self.data.flags.writeable:
            # always a read-only view (as the GGUF memmap is): Numba compiles, and caches, one
            # specialization per array flavour, so tests and models share the same kernels
            view = self.data.view()
            view.flags.writeable = False
            object.__setattr__(self, "data", view)

    @classmethod
    def from_reader_tensor(cls, t) -> "QTensor":
        """Wrap a ``gguf.ReaderTensor`` (any type, F32/F16/BF16 included) without copying."""
        ne = [int(d) for d in t.shape]
        n_in = ne[0]
        n_out = int(np.prod(ne[1:])) if len(ne) > 1 else 1
        qtype = GGMLQuantizationType(int(t.tensor_type)).name
        raw = t.data
        if raw.dtype != np.uint8:
            raw = raw.view(np.uint8)
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
        expect = n_out * (n_in // block) * size
        if raw.size != expect:
            raise ModelError(f"{t.name}: has {raw.size} bytes, expected {expect} (truncated file?)")
        return cls(raw.reshape(n_out, n_in // block * size), qtype, (n_out, n_in), t.name)

    @classmethod
    def from_float(cls, w: np.ndarray, qtype: str = "F32", name: str = "") -> "QTensor":
        """Quantize a float [n_out, n_in] array with gguf-py (tests and small tools)."""
        from gguf import quants
        w = np.ascontiguousarray(w, dtype=np.float32)
        t = GGMLQuantizationType[qtype]
        if t == GGMLQuantizationType.F32:
            data = w.view(np.uint8)
        elif t == GGMLQuantizationType.F16:
            data = w.astype(np.float16).view(np.uint8)
        else:
            data = quants.quantize(w, t)
        return cls(np.ascontiguousarray(data).reshape(w.shape[0], -1), qtype, w.shape, name)

    def dequantize(self) -> np.ndarray:
        """The whole tensor as f32 [n_out, n_in] (numpy reference path)."""
        return ref.dequantize_rows(self.data, self.qtype, self.shape[1])


# ---------------------------------------------------------------- threads

def _blas_setter():
    """OpenBLAS's set_num_threads from the library numpy loaded (numpy wheels bundle
    scipy-openblas), found with ctypes; None if there is no such library."""
    import ctypes
    import glob
    libdirs = [os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs"),
               os.path.join(os.path.dirname(np.__file__), ".libs")]
    for path in (p for d in libdirs for p in glob.glob(os.path.join(d, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                    "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                return fn
    return None


_BLAS_SET = None


def set_num_threads(n: int | None) -> int:
    """Threads for the Numba kernels and for the prefill GEMMs; None: all cores.

    OpenBLAS itself is kept single-threaded: its pool oversubscribes the cores on top of Numba's
    and spins while idle (a 64-token GEMM went from 1.6 ms to 64 ms on a busy 2-core box with 2
    BLAS threads); ``kernels.matmul.gemm_nt`` splits large GEMMs over n Python threads instead.
    Returns the count in use.
    """
    global _BLAS_SET
    if _k is None:
        return 1
    import numba
    n = numba.config.NUMBA_NUM_THREADS if n is None else max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    if _BLAS_SET is None:
        _BLAS_SET = _blas_setter() or (lambda _n: None)
    _BLAS_SET(1)
    return n


def _threads(nthreads):
    if nthreads is not None:
        set_num_threads(nthreads)


# ---------------------------------------------------------------- matmul

def _kernel_types() -> frozenset:
    return frozenset(_k.MATMUL_TYPES) if _k is not None else frozenset()


KERNEL_TYPES = _kernel_types()


def _as_act(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    return np.ascontiguousarray(x)


def matmul(w: QTensor, x: np.ndarray, nthreads: int | None = None, ggml_act: bool = True) -> np.ndarray:
    """y = x @ W.T: x f32 [n_tok, n_in] -> f32 [n_tok, n_out].

    Decode (few tokens): fused dequantize-times-vector per row, parallel over rows
    (integer dot products for Q8_0/Q4_0/Q5_0/Q4_K/Q5_K/Q6_K).
    Prefill: dequantize a tile of rows once to f32 and multiply with BLAS.
    ggml_act (default): x is first converted the way ggml-cpu converts it for this
    weight type (Q8_0/Q8_1/Q8_K int8 blocks, fp16 or bf16 rounding; see
    ``reference.activations_as_seen``), so results match llama.cpp's up to
    summation order. ggml_act=False multiplies with x exactly (float).
    """
    x = _as_act(x)
    if x.shape[1] != w.shape[1]:
        raise ModelError(f"matmul {w.name}: x has {x.shape[1]} columns, weight expects {w.shape[1]}")
    _threads(nthreads)
    if _k is not None and w.qtype in KERNEL_TYPES:
        return _k.matmul(w.data, w.qtype, w.shape[1], x, ggml_act)
    return ref.matmul(w.data, w.qtype, w.shape[1], x, ggml_act)


def get_rows(w: QTensor, ids: np.ndarray) -> np.ndarray:
    """Embedding lookup: f32 [len(ids), n_in], dequantizing only those rows."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise ModelError(f"get_rows {w.name}: token id out of range 0..{w.shape[0] - 1}")
    if _k is not None and w.qtype in KERNEL_TYPES:
        return _k.get_rows(w.data, w.qtype, w.shape[1], ids)
    return ref.get_rows(w.data, w.qtype, w.shape[1], ids)


# ---------------------------------------------------------------- elementwise

def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    """ggml rms_norm (double sum of squares) then * w. x: f32 [n_tok, n]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if _k is not None:
        return _k.rms_norm(x, w, eps)
    return ref.rms_norm(x, w, eps)


def rope(x: np.ndarray, pos: np.ndarray, n_rot: int, freq_base: float, freq_scale: float = 1.0,
         freq_factors: np.ndarray | None = None, mode: str = "norm") -> np.ndarray:
    """ggml RoPE (ext_factor 0). x: f32 [n_tok, n_head, head_dim]; pos: i32 [n_tok].

    mode "norm" rotates adjacent pairs (llama, deci: Q/K were permuted at
    conversion); "neox" rotates (i, i + n_rot/2) (gemma3). freq_factors:
    f32 [n_rot/2] divisors of theta (llama3 rope_freqs).
    """
    if mode not in ("norm", "neox"):
        raise ModelError(f"unknown rope mode {mode!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if _k is not None:
        return _k.rope(x, pos, n_rot, freq_base, freq_scale, freq_factors, mode)
    return ref.rope(x, pos, n_rot, freq_base, freq_scale, freq_factors, mode)


def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_past: int, scale: float,
              window: int | None = None, softcap: float | None = None) -> np.ndarray:
    """Causal GQA attention. q: f32 [n_tok, n_head, hd]; caches f16|f32 [n_ctx_max, n_kv, hd].

    Query i sits at position n_past + i and sees keys 0..n_past+i; with a
    sliding window only keys p with (n_past + i) - p < window (llama.cpp's
    standard SWA). Returns f32 [n_tok, n_head, hd].
    """
    n_tok = q.shape[0]
    if n_past + n_tok > k_cache.shape[0]:
        raise ModelError(f"context overflow: {n_past + n_tok} tokens > cache size {k_cache.shape[0]}")
    if q.shape[1] % k_cache.shape[1]:
        raise ModelError(f"{q.shape[1]} query heads do not group over {k_cache.shape[1]} kv heads")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if _k is not None:
        return _k.attention(q, k_cache, v_cache, n_past, scale, window, softcap)
    return ref.attention(q, k_cache, v_cache, n_past, scale, window, softcap)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up."""
    if _k is not None:
        return _k.swiglu(np.ascontiguousarray(gate, np.float32), np.ascontiguousarray(up, np.float32))
    return ref.swiglu(gate, up)


def geglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """gelu(gate) * up with ggml's fp16-table GELU."""
    if _k is not None:
        return _k.geglu(np.ascontiguousarray(gate, np.float32), np.ascontiguousarray(up, np.float32))
    return ref.geglu(gate, up)


def gelu(x: np.ndarray) -> np.ndarray:
    """ggml's GELU (tanh approximation through the fp16 table)."""
    return ref.gelu(x)


def silu(x: np.ndarray) -> np.ndarray:
    return ref.silu(x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (float64 math, f32 result); used for sampling."""
    return ref.softmax(x, axis)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Residual add in float32."""
    return np.add(a, b, dtype=np.float32)


def scale(x: np.ndarray, s: float) -> np.ndarray:
    """x * s in float32 (embedding scale, logit scale)."""
    return (np.asarray(x, dtype=np.float32) * np.float32(s)).astype(np.float32)

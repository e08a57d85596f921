"""The small compute interface model code calls.

Everything here takes arrays and sizes; nothing knows about models. Activations
are float32 [n_tok, n]. Weights are ``QTensor``s: the packed GGUF bytes kept
memory-mapped, dequantized inside the kernels.

Every function runs a Numba kernel from ``runtime.kernels``; ``KERNEL_TYPES``
(from the type table, ``quant.types``) are the weight types they take. There is
no silent fallback: if the kernels cannot load, a warning says so once on stderr
when this module is imported, ``BACKEND_NAME`` says what runs, and every kernel
call raises ``ModelError`` naming the cause. The numpy references in
``runtime.reference`` are test oracles only; nothing here imports them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

import quant
from quant.types import KERNEL_TYPES as _TABLE_KERNEL_TYPES
from quant.types import TYPES
from runtime.errors import ModelError

try:
    from runtime import kernels as _k
    KERNEL_ERROR = None
    BACKEND_NAME = "CPU (Numba)"
except Exception as e:  # noqa: BLE001 - numba missing or broken: say so, once
    _k = None
    KERNEL_ERROR = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    BACKEND_NAME = "none (the Numba CPU kernels did not load)"
    warnings.warn(f"ggufkit: the Numba CPU kernels did not load ({KERNEL_ERROR}); "
                  f"models cannot run", RuntimeWarning, stacklevel=2)


def backend_name() -> str:
    """The backend that runs the kernels ("CPU (Numba)"), for ``bench`` and logs."""
    return BACKEND_NAME


def _kernels():
    if _k is None:
        raise ModelError(f"the Numba CPU kernels did not load ({KERNEL_ERROR})")
    return _k


# ---------------------------------------------------------------- weights

@dataclass(frozen=True)
class QTensor:
    """A GGUF weight kept quantized.

    data:  uint8 [n_rows, row_bytes], a view of the file (memory-mapped, no copy)
    qtype: ggml type name ("Q4_K", "F16", ...) from ``quant.types.TYPES``
    shape: (n_out, n_in) in math order; GGUF's ne = [n_in, n_out, ...]
           (tensors with more than 2 dims are flattened to n_out = prod(ne[1:]))
    """

    data: np.ndarray
    qtype: str
    shape: tuple[int, int]
    name: str = ""

    def __post_init__(self):
        n_out, n_in = self.shape
        t = TYPES.get(self.qtype)
        if t is None:
            raise ModelError(f"{self.name or 'tensor'}: unknown ggml type {self.qtype}")
        if n_in % t.block_size:
            raise ModelError(f"{self.name or 'tensor'}: row length {n_in} is not a multiple of "
                             f"{self.qtype}'s block size {t.block_size}")
        row = n_in // t.block_size * t.type_size
        if self.data.dtype != np.uint8 or self.data.shape != (n_out, row):
            raise ModelError(f"{self.name or 'tensor'}: data is {self.data.dtype}{self.data.shape}, "
                             f"expected uint8({n_out}, {row}) for {self.qtype}{self.shape}")
        if self.data.flags.writeable:
            # always a read-only view (as the GGUF memmap is): Numba compiles, and caches, one
            # specialization per array flavour, so tests and models share the same kernels
            view = self.data.view()
            view.flags.writeable = False
            object.__setattr__(self, "data", view)

    @classmethod
    def from_reader_tensor(cls, t) -> "QTensor":
        """Wrap a ``quant.gguf.TensorInfo`` (any type) without copying."""
        n_in = t.shape[0]
        n_out = t.n_elements // n_in
        return cls(t.data.reshape(n_out, -1), t.qtype, (n_out, n_in), t.name)

    @classmethod
    def from_float(cls, w: np.ndarray, qtype: str = "F32", name: str = "") -> "QTensor":
        """Quantize a float [n_out, n_in] array with ``quant.quantize`` (tests and small tools)."""
        w = np.ascontiguousarray(w, dtype=np.float32)
        data = quant.quantize(w, qtype)
        return cls(np.ascontiguousarray(data).reshape(w.shape[0], -1), qtype, w.shape, name)

    def dequantize(self) -> np.ndarray:
        """The whole tensor as f32 [n_out, n_in]."""
        if self.qtype in KERNEL_TYPES:
            return get_rows(self, np.arange(self.shape[0]))
        return np.asarray(quant.dequantize(self.data, self.qtype), np.float32).reshape(self.shape)


# ---------------------------------------------------------------- threads

def _blas_limit(n: int) -> None:
    """Limit numpy's BLAS (OpenBLAS, MKL, BLIS) to n threads with threadpoolctl."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController
        _BLAS = ThreadpoolController()
    _BLAS.limit(limits=n, user_api="blas")


_BLAS = None


def blas_setup() -> str:
    """Which BLAS kernel numpy loaded (threadpoolctl) and whether the environment forces
    OpenBLAS's choice: the prefill GEMM's speed depends on both (benchmarks print it)."""
    import os
    from threadpoolctl import threadpool_info
    kern = [str(i.get("architecture")) for i in threadpool_info() if i.get("user_api") == "blas"]
    forced = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return f"{'/'.join(kern) or 'none'} (environment: {forced or 'not forced'})"


def set_num_threads(n: int | None) -> int:
    """Threads for the Numba kernels and for the prefill GEMMs; None: all cores.

    OpenBLAS itself is kept single-threaded: its pool oversubscribes the cores on top of Numba's
    and spins while idle (a 64-token GEMM went from 1.6 ms to 64 ms on a busy 2-core box with 2
    BLAS threads); ``kernels.matmul.gemm_nt`` splits large GEMMs over n Python threads instead.
    Returns the count in use.
    """
    if _k is None:
        return 1
    import numba
    n = numba.config.NUMBA_NUM_THREADS if n is None else max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    _blas_limit(1)
    return n


def _threads(nthreads):
    if nthreads is not None:
        set_num_threads(nthreads)


# ---------------------------------------------------------------- matmul

# weight types the runtime runs (quant.types marks them; tests/runtime/kernels/test_kernels_matmul.py checks
# runtime.kernels has each one)
KERNEL_TYPES = frozenset(_TABLE_KERNEL_TYPES)


def _as_act(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    return np.ascontiguousarray(x)


MATMUL_OBSERVERS: list = []   # callables (weight QTensor, x f32 [n_tok, n_in]) run before each matmul (imatrix)


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
    for obs in MATMUL_OBSERVERS:
        obs(w, x)
    _threads(nthreads)
    _supported(w)
    return _kernels().matmul(w.data, w.qtype, w.shape[1], x, ggml_act)


def _supported(w: QTensor) -> None:
    if w.qtype not in KERNEL_TYPES:
        raise ModelError(f"{w.name or 'tensor'}: no runtime kernel for type {w.qtype}")


def get_rows(w: QTensor, ids: np.ndarray) -> np.ndarray:
    """Embedding lookup: f32 [len(ids), n_in], dequantizing only those rows."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise ModelError(f"get_rows {w.name}: token id out of range 0..{w.shape[0] - 1}")
    _supported(w)
    return _kernels().get_rows(w.data, w.qtype, w.shape[1], ids)


# ---------------------------------------------------------------- elementwise

def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    """ggml rms_norm (double sum of squares) then * w. x: f32 [n_tok, n]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _kernels().rms_norm(x, w, eps)


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
    return _kernels().rope(x, pos, n_rot, freq_base, freq_scale, freq_factors, mode)


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
    return _kernels().attention(q, k_cache, v_cache, n_past, scale, window, softcap)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up."""
    return _kernels().swiglu(np.ascontiguousarray(gate, np.float32), np.ascontiguousarray(up, np.float32))


def geglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """gelu(gate) * up with ggml's fp16-table GELU."""
    return _kernels().geglu(np.ascontiguousarray(gate, np.float32), np.ascontiguousarray(up, np.float32))


def gelu(x: np.ndarray) -> np.ndarray:
    """ggml's GELU (tanh approximation through the fp16 table)."""
    x = np.ascontiguousarray(x, np.float32)
    return geglu(x, np.ones_like(x))


def silu(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    return swiglu(x, np.ones_like(x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (float64 math, f32 result); used for sampling."""
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Residual add in float32."""
    return np.add(a, b, dtype=np.float32)


def scale(x: np.ndarray, s: float) -> np.ndarray:
    """x * s in float32 (embedding scale, logit scale)."""
    return (np.asarray(x, dtype=np.float32) * np.float32(s)).astype(np.float32)

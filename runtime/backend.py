"""The compute interface model code calls: the ``Backend`` verbs, and ``CPUBackend``.

    be = model.backend(il)                 # the Backend that runs layer il
    h  = be.rms_norm(x, w_norm, eps)       # x lives on be's device
    y  = be.matmul(w, h)                   # w: runtime.qtensor.QTensor (quantized)

``Backend`` is the interface. ``CPUBackend`` runs every verb as a Numba kernel of
``runtime.kernels``; ``runtime.cuda.backend.CUDABackend`` runs the same verbs as CUDA kernels on
device arrays. Activations are f32 [n_tok, n] arrays of the backend's device; weights stay
``QTensor``s (a backend may keep its own copy, e.g. in device memory); norm vectors and rope
factors are host f32 arrays (a device backend caches its copy). ``runtime.device`` moves
activations between backends.

``NUMERICS`` names how a backend rounds (the ``numerics`` argument of both backends).
``KERNEL_TYPES`` (from the type table, ``quant.types``) are the weight types the kernels take.
There is no silent fallback: if the kernels cannot load, a warning says so once on stderr when
this module is imported, ``BACKEND_NAME`` says what runs, and every CPU kernel call raises
``ModelError`` naming the cause. The numpy references in ``runtime.reference`` are test oracles
only; nothing here imports them.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

import numpy as np

from quant.types import KERNEL_TYPES as _TABLE_KERNEL_TYPES
from quant.types import TYPES
from runtime.errors import ModelError

try:
    from runtime.kernels import attention as _attention
    from runtime.kernels import glu as _glu
    from runtime.kernels import matmul as _matmul
    from runtime.kernels import norm as _norm
    from runtime.kernels import rope as _rope
    from runtime.kernels import warm as _warm
    KERNEL_ERROR = None
    BACKEND_NAME = "CPU (Numba)"
except Exception as e:  # noqa: BLE001 - numba missing or broken: say so, once
    _attention = _glu = _matmul = _norm = _rope = _warm = None
    KERNEL_ERROR = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    BACKEND_NAME = "none (the Numba CPU kernels did not load)"
    warnings.warn(f"ggufkit: the Numba CPU kernels did not load ({KERNEL_ERROR}); "
                  f"models cannot run", RuntimeWarning, stacklevel=2)

# How a backend rounds: the CPU backend's default is "exact", the CUDA backend's "fast" (the
# command line's --numerics exact|fast, runtime.device.NUMERICS_OPTIONS, chooses for the GPU layers).
NUMERICS = {
    "exact": "as ggml-cpu: a matmul's activations are converted per weight type (int8 blocks of its "
             "vec_dot_type, fp16 or bf16 rounding) as ggml-cpu does; other ops in double, rounded once",
    "fast": "as ggml-cuda, no FP64 (CUDA only, its default): activations quantized to Q8_1 for every "
            "quantized weight type, f16 tiles and x in the prefill GEMM, attention and silu in float",
    "float": "activations unconverted: dequantized weights times the float32 activations (CPU only)",
}

# weight types the runtime runs (quant.types marks them; tests/runtime/kernels/test_kernels_matmul.py checks
# runtime.kernels has each one)
KERNEL_TYPES = frozenset(_TABLE_KERNEL_TYPES)

MATMUL_OBSERVERS: list = []   # callables (weight QTensor, x f32 [n_tok, n_in]) run before each matmul (imatrix)


def backend_name() -> str:
    """The backend that runs the kernels ("CPU (Numba)"), for ``bench`` and logs."""
    return BACKEND_NAME


def _loaded():
    if _matmul is None:
        raise ModelError(f"the Numba CPU kernels did not load ({KERNEL_ERROR})")


def prepare(qtypes, notify=None) -> list[str]:
    """Compile (or load from cache) only the kernels weight types ``qtypes`` need; notify(msg)
    once beforehand if something has to be compiled (``runtime.kernels.warm``). Returns the
    kernel sets compiled; nothing when the kernels did not load."""
    return [] if _warm is None else _warm.prepare(qtypes, notify)


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
    if _matmul is None:
        return 1
    import numba
    n = numba.config.NUMBA_NUM_THREADS if n is None else max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    _blas_limit(1)
    return n


# ---------------------------------------------------------------- host helpers (sampling)

def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (float64 math, f32 result); used for sampling."""
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------- the interface

class Backend(ABC):
    """The verbs a layer needs. Every method takes and returns arrays of this backend's device."""

    name = "abstract"          # "CPU", "CUDA0", ...
    device = "none"            # "cpu", "cuda:0": two backends with the same device share arrays

    # -- data movement
    @abstractmethod
    def from_host(self, x: np.ndarray):
        ...

    @abstractmethod
    def to_host(self, x) -> np.ndarray:
        ...

    @abstractmethod
    def take_rows(self, x, rows):
        """x[rows] for a host index array (or -1: the last row, kept 2-D)."""
        ...

    def load_weights(self, mats: dict, vecs: dict, groups=()) -> int:
        """Make these weights resident (upload once); returns the bytes it placed on the device.
        groups: tuples of QTensors (Q/K/V, gate/up) that ``matmuls`` will take together with
        one input (a device backend may store each group as one matrix)."""
        return 0

    # -- KV cache
    @abstractmethod
    def new_kv(self, n_ctx: int, n_head_kv: int, head_dim: int, dtype=np.float16):
        """(k, v) caches of one attention layer, [n_ctx, n_head_kv, head_dim] each."""
        ...

    @abstractmethod
    def kv_write(self, k_cache, v_cache, pos: int, k, v) -> None:
        """Store k, v [n_tok, n_head_kv, head_dim] at positions pos.. of the caches."""
        ...

    # -- compute (CPUBackend's docstrings give each verb's exact semantics)
    @abstractmethod
    def matmul(self, w, x):
        ...

    @abstractmethod
    def get_rows(self, w, ids):
        ...

    @abstractmethod
    def rms_norm(self, x, w, eps: float):
        ...

    @abstractmethod
    def rope(self, x, pos, n_rot, freq_base, freq_scale=1.0, freq_factors=None, mode="norm"):
        ...

    @abstractmethod
    def attention(self, q, k_cache, v_cache, n_past: int, scale: float, window=None, softcap=None):
        ...

    @abstractmethod
    def swiglu(self, gate, up):
        ...

    @abstractmethod
    def geglu(self, gate, up):
        ...

    @abstractmethod
    def add(self, a, b):
        """a + b; b of a's shape, or a host f32 vector [n] added to every row (a bias)."""
        ...

    @abstractmethod
    def scale(self, x, s: float):
        ...

    @abstractmethod
    def softcap(self, x, c: float):
        """c * tanh(x / c) (gemma's logit softcapping)."""
        ...

    # -- fused verbs: each is the chain of verbs its default runs, which a device backend may do
    # in fewer kernel launches (runtime.cuda.backend); the numbers are the chain's either way
    def add_rms_norm(self, a, b, w, eps: float, consumers=()):
        """(s, rms_norm(s, w, eps)) with s = a + b (b None: s = a): a residual add and the next
        norm. consumers: the weights that will multiply the normed rows (a hint: the device may
        convert the rows to their activation format in the same pass)."""
        s = a if b is None else self.add(a, b)
        return s, self.rms_norm(s, w, eps)

    def matmuls(self, ws, x) -> list:
        """[matmul(w, x) for w in ws]: several weights on one input (Q/K/V, gate/up)."""
        return [self.matmul(w, x) for w in ws]

    def rope_kv(self, q, k, v, k_cache, v_cache, pos, n_past: int, n_rot, freq_base, freq_scale=1.0,
                freq_factors=None, mode="norm", q_scale: float = 1.0):
        """RoPE on q and k, q * q_scale returned, k and v stored at positions n_past.. of the
        caches (``rope``, ``rope``, ``scale``, ``kv_write``). pos: the positions, i32 [n_tok]."""
        q = self.rope(q, pos, n_rot, freq_base, freq_scale, freq_factors, mode)
        k = self.rope(k, pos, n_rot, freq_base, freq_scale, freq_factors, mode)
        q = self.scale(q, q_scale)
        self.kv_write(k_cache, v_cache, n_past, k, v)
        return q

    def attention_for(self, consumer, q, k_cache, v_cache, n_past: int, scale: float, window=None, softcap=None):
        """``attention`` whose output the weight ``consumer`` multiplies next (the hint of
        ``add_rms_norm``)."""
        return self.attention(q, k_cache, v_cache, n_past, scale, window, softcap)

    def glu(self, kind: str, gate, up, consumer=None):
        """``swiglu`` (kind "silu") or ``geglu`` ("gelu") whose output ``consumer`` multiplies next."""
        if kind not in ("silu", "gelu"):
            raise ModelError(f"unknown gated activation {kind!r}")
        return self.swiglu(gate, up) if kind == "silu" else self.geglu(gate, up)

    # -- sampling: None means "not on this device" (the caller samples on the host)
    def sample(self, logits, params, rng, history=()) -> int | None:
        """The next token id from logits [n_vocab] of this device (runtime.generate.sample's
        chain), or None to sample on the host."""
        return None

    def synchronize(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device}>"


# ---------------------------------------------------------------- the CPU

def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _supported(w) -> None:
    if w.qtype not in KERNEL_TYPES:
        raise ModelError(f"{w.name or 'tensor'}: no runtime kernel for type {w.qtype}")


class CPUBackend(Backend):
    """The Numba kernels of ``runtime.kernels`` on host arrays.

    numerics "exact" (default): matmul converts the activations as ggml-cpu does for each weight
    type; "float" multiplies with the f32 activations unconverted (see ``NUMERICS``)."""

    name = "CPU"
    device = "cpu"

    def __init__(self, numerics: str = "exact"):
        if numerics not in NUMERICS or numerics == "fast":
            raise ModelError(f"CPU numerics {numerics!r}: expected exact or float (fast is for a GPU)")
        self.numerics = numerics

    def from_host(self, x):
        return np.asarray(x, dtype=np.float32)

    def to_host(self, x):
        return np.asarray(x)

    def take_rows(self, x, rows):
        if isinstance(rows, int) and rows == -1:
            return x[[-1]]
        return x[rows]

    def new_kv(self, n_ctx, n_head_kv, head_dim, dtype=np.float16):
        shape = (int(n_ctx), int(n_head_kv), int(head_dim))
        return np.zeros(shape, dtype), np.zeros(shape, dtype)

    def kv_write(self, k_cache, v_cache, pos, k, v):
        n = k.shape[0]
        k_cache[pos:pos + n] = k
        v_cache[pos:pos + n] = v

    def matmul(self, w, x):
        """y = x @ W.T: x f32 [n_tok, n_in] (or [n_in]) -> f32 [n_tok, n_out].

        Decode (few tokens): one parallel pass over the packed rows (integer dot products for the
        types of ``kernels.qdot``); prefill: tiles of rows dequantized once to f32 and multiplied
        with BLAS (``runtime.kernels.matmul``)."""
        x = _f32(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != w.shape[1]:
            raise ModelError(f"matmul {w.name}: x has {x.shape[1]} columns, weight expects {w.shape[1]}")
        for obs in MATMUL_OBSERVERS:
            obs(w, x)
        _supported(w)
        _loaded()
        return _matmul.matmul(w.data, TYPES[w.qtype].id, w.shape[1], x, self.numerics)

    def get_rows(self, w, ids):
        """Embedding lookup: f32 [len(ids), n_in], dequantizing only those rows."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
            raise ModelError(f"get_rows {w.name}: token id out of range 0..{w.shape[0] - 1}")
        _supported(w)
        _loaded()
        return _matmul.dequantize(w.data, TYPES[w.qtype].id, w.shape[1], ids)

    def rms_norm(self, x, w, eps):
        """ggml rms_norm (double sum of squares) then * w. x: f32 [n_tok, n]."""
        _loaded()
        return _norm.rms_norm(_f32(x), w, eps)

    def rope(self, x, pos, n_rot, freq_base, freq_scale=1.0, freq_factors=None, mode="norm"):
        """ggml RoPE (ext_factor 0). x: f32 [n_tok, n_head, head_dim]; pos: i32 [n_tok].

        mode "norm" rotates adjacent pairs (llama, deci: Q/K were permuted at conversion); "neox"
        rotates (i, i + n_rot/2) (gemma3). freq_factors: f32 [n_rot/2] divisors of theta (llama3
        rope_freqs)."""
        if mode not in ("norm", "neox"):
            raise ModelError(f"unknown rope mode {mode!r}")
        _loaded()
        return _rope.rope(_f32(x), pos, n_rot, freq_base, freq_scale, freq_factors, mode)

    def attention(self, q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
        """Causal GQA attention. q: f32 [n_tok, n_head, hd]; caches f16|f32 [n_ctx_max, n_kv, hd].

        Query i sits at position n_past + i and sees keys 0..n_past+i; with a sliding window only
        keys p with (n_past + i) - p < window (llama.cpp's standard SWA). Returns f32
        [n_tok, n_head, hd]."""
        n_tok = q.shape[0]
        if n_past + n_tok > k_cache.shape[0]:
            raise ModelError(f"context overflow: {n_past + n_tok} tokens > cache size {k_cache.shape[0]}")
        if q.shape[1] % k_cache.shape[1]:
            raise ModelError(f"{q.shape[1]} query heads do not group over {k_cache.shape[1]} kv heads")
        _loaded()
        return _attention.attention(_f32(q), k_cache, v_cache, n_past, scale, window, softcap)

    def swiglu(self, gate, up):
        """silu(gate) * up."""
        _loaded()
        return _glu.swiglu(_f32(gate), _f32(up))

    def geglu(self, gate, up):
        """gelu(gate) * up with ggml's fp16-table GELU."""
        _loaded()
        return _glu.geglu(_f32(gate), _f32(up))

    def add(self, a, b):
        """Residual add in float32."""
        return np.add(a, b, dtype=np.float32)

    def scale(self, x, s):
        """x * s in float32 (embedding scale, logit scale)."""
        return (np.asarray(x, dtype=np.float32) * np.float32(s)).astype(np.float32)

    def softcap(self, x, c):
        # tanh in double rounded once, so the CUDA backend's softcap_f32 gives the same floats
        t = (np.asarray(x, np.float32) * np.float32(1.0 / c)).astype(np.float64)
        return (np.tanh(t).astype(np.float32) * np.float32(c)).astype(np.float32)


CPU = CPUBackend()

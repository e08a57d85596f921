"""The backend object: what model code calls, chosen per layer.

    be = model.backend(il)                 # the Backend that runs layer il
    h  = be.rms_norm(x, w_norm, eps)       # x lives on be's device
    y  = be.matmul(w, h)                   # w: backend.QTensor (quantized)

``Backend`` is the interface; ``CPUBackend`` wraps the module functions of ``runtime.backend``
(Numba kernels, numpy references); ``runtime.cuda.backend.CUDABackend`` runs the same verbs as
CUDA kernels on device arrays. Activations are f32 [n_tok, n] arrays of the backend's device;
weights stay ``QTensor``s (the backend keeps its own copy, e.g. in device memory); norm vectors
and rope factors are host f32 arrays (a device backend caches its copy).

``move(x, src, dst)`` is the only place activations cross devices: the model calls it where two
consecutive layers sit on different devices (and before the output head).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from runtime import backend as B
from runtime.errors import ModelError


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

    def load_weights(self, mats: dict, vecs: dict) -> int:
        """Make these weights resident (upload once); returns the bytes it placed on the device."""
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

    # -- compute (see runtime.backend for each function's exact semantics)
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

    # -- sampling: None means "not on this device" (the caller samples on the host)
    def sample(self, logits, params, rng, history=()) -> int | None:
        """The next token id from logits [n_vocab] of this device (runtime.generate.sample's
        chain), or None to sample on the host."""
        return None

    def synchronize(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device}>"


class CPUBackend(Backend):
    """Today's runtime.backend functions (Numba kernels, numpy references) as an object.

    ggml_act (default): matmul converts activations as ggml-cpu does for each weight type
    (q8_0/q8_1/q8_K blocks, f16 rounding); False multiplies with the f32 activations exactly."""

    name = "CPU"
    device = "cpu"

    def __init__(self, ggml_act: bool = True):
        self.ggml_act = ggml_act

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
        return B.matmul(w, x, ggml_act=self.ggml_act)

    def get_rows(self, w, ids):
        return B.get_rows(w, ids)

    def rms_norm(self, x, w, eps):
        return B.rms_norm(x, w, eps)

    def rope(self, x, pos, n_rot, freq_base, freq_scale=1.0, freq_factors=None, mode="norm"):
        return B.rope(x, pos, n_rot, freq_base, freq_scale, freq_factors, mode)

    def attention(self, q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
        return B.attention(q, k_cache, v_cache, n_past, scale, window, softcap)

    def swiglu(self, gate, up):
        return B.swiglu(gate, up)

    def geglu(self, gate, up):
        return B.geglu(gate, up)

    def add(self, a, b):
        return B.add(a, b)

    def scale(self, x, s):
        return B.scale(x, s)

    def softcap(self, x, c):
        # tanh in double rounded once, so the CUDA backend's softcap_f32 gives the same floats
        t = (np.asarray(x, np.float32) * np.float32(1.0 / c)).astype(np.float64)
        return (np.tanh(t).astype(np.float32) * np.float32(c)).astype(np.float32)


CPU = CPUBackend()


def move(x, src: Backend, dst: Backend):
    """Activations of ``src``'s device as arrays of ``dst``'s device (no copy when they share one)."""
    if src is dst or src.device == dst.device:
        return x
    return dst.from_host(src.to_host(x))


def parse_device(device: str | None) -> tuple[str, int]:
    """"cpu" | "cuda" | "cuda:N" -> (kind, index)."""
    d = (device or "cpu").strip().lower()
    if d == "cpu":
        return "cpu", 0
    if d == "cuda" or d == "gpu":
        return "cuda", 0
    if d.startswith("cuda:") and d[5:].isdigit():
        return "cuda", int(d[5:])
    raise ModelError(f"unknown device {device!r} (expected cpu, cuda or cuda:N)")


@dataclass(frozen=True)
class DeviceOptions:
    """Where to run: ``device`` cpu | cuda | cuda:N; ``gpu_layers`` auto | all | N (llama.cpp's
    -ngl: the last N layers, the output head too when N > n_layer); ``gpu_memory`` the budget in
    bytes or as "8GiB" (None: the card's free memory less a safety margin)."""
    device: str = "cpu"
    gpu_layers: str = "auto"
    gpu_memory: str | int | None = None

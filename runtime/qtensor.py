"""``QTensor``: a GGUF weight kept quantized (the packed bytes, its ggml type and its shape).

Backends take weights as QTensors and dequantize them inside their kernels; ``dequantize`` here
is for tests and tools (``quant.dequantize``: the same Numba block dequantizers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import quant
from quant.types import TYPES
from runtime.errors import ModelError


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
        """The whole tensor as f32 [n_out, n_in] (``quant.dequantize``)."""
        return np.asarray(quant.dequantize(self.data, self.qtype), np.float32).reshape(self.shape)

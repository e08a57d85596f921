"""ggml quantization formats: one type table, numpy references, Numba fast paths,
and tensor-type recipes. This package is the floor: it imports neither ggufkit nor runtime."""

from .errors import QuantError
from .types import QK_K, TYPES, BY_ID, QType, Format, get_type, row_size, register_fast
from .api import quantize, dequantize

__all__ = ["QuantError", "QK_K", "TYPES", "BY_ID", "QType", "Format", "get_type", "row_size",
           "register_fast", "quantize", "dequantize"]

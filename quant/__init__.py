"""ggml quantization formats: the floor of the house. It imports neither ggufkit nor runtime.

    types.py      the one table of ggml types (block size, bytes, vec_dot_type, kernel, imatrix need)
    gguf.py       the one GGUF reader (metadata, tensor infos, memory-mapped data)
    api.py        quantize / dequantize of whole arrays of rows (the one place rows become blocks)
    ref/          numpy references, bit-exact with ggml, one module per family
    fast/         Numba fast paths, bit-exact with ref/ (blocks.py: every block dequantizer)
    recipes.py    llama-quantize's tensor-type recipes (a mixture is a function)
    imatrix.py    importance matrices as llama-quantize reads them
    allocate.py   budgeted allocation's solver (a pure function of choices and a budget)
    units.py      byte sizes: parse_size / fmt_bytes, one spelling for the whole tree
    errors.py     QuantError, GGUFError
"""

from .errors import QuantError
from .types import QK_K, TYPES, BY_ID, QType, Format, get_type, row_size, register_fast
from .api import quantize, dequantize

__all__ = ["QuantError", "QK_K", "TYPES", "BY_ID", "QType", "Format", "get_type", "row_size",
           "register_fast", "quantize", "dequantize"]

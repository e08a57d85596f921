"""The one table of ggml tensor types, and the registry of their block functions.

Every other module gets a type's id, block size, bytes per block, activation format
(``vec_dot_type``) and traits from ``TYPES`` / ``BY_ID``, and the llama_ftype tables
(``FTYPE_NAMES``, ``GUESSED_FTYPE``) from here. Values come from ggml/include/ggml.h
(``enum ggml_type``), ggml/src/ggml.c (``type_traits``: ``blck_size``, ``type_size =
sizeof(block_x)``), ggml-cpu.c (``type_traits_cpu``: ``vec_dot_type``), llama.h
(``enum llama_ftype``) and llama-model-loader.cpp (the guessed ftype). gguf-py's
``GGML_QUANT_SIZES`` is not used (it says 40 bytes for Q8_1 and lacks newer types).

A format implements only its block functions, by subclassing ``Format``::

    class Q8_0(Format, qtype="Q8_0"):
        @staticmethod
        def quantize_blocks(x, qw):   # f32[nrows, nbr, block_size], f32[nbr, block_size] | None
            ...                       # -> u8[nrows, nbr, type_size]   (nbr = blocks per row)
        @staticmethod
        def dequantize_blocks(b):     # u8[nb, type_size] -> f32[nb, block_size]
            ...

Subclassing registers the class in ``FORMATS`` (numpy reference, modules under
``quant/ref/``). Numba fast paths (modules under ``quant/fast/``) register with
``register_fast(name, quantize=..., dequantize=...)``. Rows and tensors are handled in
one shared place, ``quant/api.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

from .errors import QuantError

QK_K = 256


@dataclass(frozen=True)
class QType:
    name: str            # "Q4_K"; the GGUF/gguf-py name
    id: int              # enum ggml_type value
    block_size: int      # elements per block (blck_size)
    type_size: int       # bytes per block (sizeof(block_x))
    vec_dot_type: str | None = None  # ggml-cpu's type_traits_cpu[t].vec_dot_type: the format the
                                     # activations are converted to for dot products with t
    kernel: bool = False             # the runtime has a matmul/get_rows kernel for weights of t
    refuses_without_imatrix: bool = False  # ggml_quantize_requires_imatrix(): refused without weights

    @property
    def is_quantized(self) -> bool:
        """A block type (not F32/F16/BF16/F64 or the integer types)."""
        return self.block_size > 1

    def row_size(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` elements (ggml_row_size)."""
        if n_per_row % self.block_size:
            raise QuantError(
                f"{self.name}: row length {n_per_row} is not a multiple of the block size {self.block_size}")
        return n_per_row // self.block_size * self.type_size


K, IM = "kernel", "imatrix"   # traits: runtime kernel; ggml's quantizer refuses to run without an imatrix
# (the tools' wider "needs an imatrix" rule is quant.recipes.IMATRIX_TYPES)

# name, id, block_size, type_size, vec_dot_type, traits    # block layout (bytes)
_TABLE = [
    ("F32",     0,  1,    4,   "F32",  K),                 # f32
    ("F16",     1,  1,    2,   "F16",  K),                 # f16
    ("Q4_0",    2,  32,   18,  "Q8_0", K),                 # d:2 qs:16
    ("Q4_1",    3,  32,   20,  "Q8_1", K),                 # d:2 m:2 qs:16
    ("Q5_0",    6,  32,   22,  "Q8_0", K),                 # d:2 qh:4 qs:16
    ("Q5_1",    7,  32,   24,  "Q8_1", K),                 # d:2 m:2 qh:4 qs:16
    ("Q8_0",    8,  32,   34,  "Q8_0", K),                 # d:2 qs:32
    ("Q8_1",    9,  32,   36,  "Q8_1", ""),                # d:2 s:2 qs:32 (gguf-py says 40; ggml's struct is 36)
    ("Q2_K",    10, QK_K, 84,  "Q8_K", K),                 # scales:16 qs:64 d:2 dmin:2
    ("Q3_K",    11, QK_K, 110, "Q8_K", K),                 # hmask:32 qs:64 scales:12 d:2
    ("Q4_K",    12, QK_K, 144, "Q8_K", K),                 # d:2 dmin:2 scales:12 qs:128
    ("Q5_K",    13, QK_K, 176, "Q8_K", K),                 # d:2 dmin:2 scales:12 qh:32 qs:128
    ("Q6_K",    14, QK_K, 210, "Q8_K", K),                 # ql:128 qh:64 scales:16 d:2
    ("Q8_K",    15, QK_K, 292, None,   ""),                # d:4(f32) qs:256 bsums:32(16 x i16)
    ("IQ2_XXS", 16, QK_K, 66,  "Q8_K", K + IM),            # d:2 qs:64
    ("IQ2_XS",  17, QK_K, 74,  "Q8_K", K + IM),            # d:2 qs:64 scales:8
    ("IQ3_XXS", 18, QK_K, 98,  "Q8_K", K),                 # d:2 qs:96
    ("IQ1_S",   19, QK_K, 50,  "Q8_K", K + IM),            # d:2 qs:32 qh:16
    ("IQ4_NL",  20, 32,   18,  "Q8_0", K),                 # d:2 qs:16
    ("IQ3_S",   21, QK_K, 110, "Q8_K", K),                 # d:2 qs:64 qh:8 signs:32 scales:4
    ("IQ2_S",   22, QK_K, 82,  "Q8_K", K),                 # d:2 qs:64 qh:8 scales:8
    ("IQ4_XS",  23, QK_K, 136, "Q8_K", K),                 # d:2 scales_h:2 scales_l:4 qs:128
    ("I8",      24, 1,    1,   None,   ""),
    ("I16",     25, 1,    2,   None,   ""),
    ("I32",     26, 1,    4,   None,   ""),
    ("I64",     27, 1,    8,   None,   ""),
    ("F64",     28, 1,    8,   None,   ""),
    ("IQ1_M",   29, QK_K, 56,  "Q8_K", K),                 # qs:32 qh:16 scales:8
    ("BF16",    30, 1,    2,   "BF16", K),                 # bf16
    ("TQ1_0",   34, QK_K, 54,  "Q8_K", K),                 # qs:48 qh:4 d:2
    ("TQ2_0",   35, QK_K, 66,  "Q8_K", K),                 # qs:64 d:2
    ("MXFP4",   39, 32,   17,  "Q8_0", K),                 # e:1(E8M0) qs:16
    ("NVFP4",   40, 64,   36,  "Q8_0", K),                 # d:4(UE4M3 per 16) qs:32
    ("Q1_0",    41, 128,  18,  "Q8_0", K),                 # d:2 qs:16
    ("Q2_0",    42, 64,   18,  "Q8_0", K),                 # d:2 qs:16
]

TYPES: dict[str, QType] = {n: QType(n, i, b, s, v, K in tr, IM in tr) for n, i, b, s, v, tr in _TABLE}
BY_ID: dict[int, QType] = {t.id: t for t in TYPES.values()}
KERNEL_TYPES: tuple[str, ...] = tuple(n for n, t in TYPES.items() if t.kernel)


# ---------------------------------------------------------------------------- file types (llama_ftype)

# llama_ftype id -> canonical name (llama.h; the name llama.cpp's mixing rules use)
FTYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
    39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
FTYPE_IDS: dict[str, int] = {name: i for i, name in FTYPE_NAMES.items()}
FTYPE_GUESSED = 1024   # LLAMA_FTYPE_GUESSED: or-ed in when general.file_type is absent

# the ftype llama_model_loader guesses from a file's commonest tensor type (no general.file_type)
GUESSED_FTYPE: dict[str, int] = {
    "F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7,
    "Q2_K": 10, "Q3_K": 12, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "TQ1_0": 36, "TQ2_0": 37,
    "IQ2_XXS": 19, "IQ2_XS": 20, "IQ2_S": 28, "IQ3_XXS": 23, "IQ1_S": 24, "IQ1_M": 31,
    "IQ4_NL": 25, "IQ4_XS": 30, "IQ3_S": 26, "NVFP4": 39, "Q1_0": 40, "Q2_0": 41,
}


def get_type(name_or_id) -> QType:
    """Look a type up by name (case-insensitive), ggml id, QType, or gguf enum."""
    if isinstance(name_or_id, QType):
        return name_or_id
    if hasattr(name_or_id, "value") and hasattr(name_or_id, "name"):   # an IntEnum (gguf-py's)
        name_or_id = int(name_or_id.value)
    if isinstance(name_or_id, (int,)) and not isinstance(name_or_id, bool):
        if name_or_id in BY_ID:
            return BY_ID[name_or_id]
        raise QuantError(f"unknown ggml type id {name_or_id}")
    if isinstance(name_or_id, str):
        t = TYPES.get(name_or_id.upper())
        if t is not None:
            return t
    raise QuantError(f"unknown quantization type {name_or_id!r}; known: {', '.join(TYPES)}")


def row_size(qtype, n_per_row: int) -> int:
    return get_type(qtype).row_size(n_per_row)


def vec_dot_type(qtype) -> str | None:
    """ggml-cpu's vec_dot_type of a weight type: how the activations are converted for it."""
    return get_type(qtype).vec_dot_type


# ---------------------------------------------------------------------------- registry

FORMATS: dict[str, type["Format"]] = {}   # numpy references, by type name
FAST: dict[str, dict[str, Callable]] = {}  # Numba kernels: name -> {"quantize": f, "dequantize": f}


class Format:
    """Base of the numpy reference implementations; one subclass per ggml type.

    quantize_blocks(x: f32[nrows, nbr, block_size], qw: f32[nbr, block_size] | None)
            -> u8[nrows, nbr, type_size]
        ``qw`` is the importance matrix (one value per column; None when not given). Rows
        are passed whole because some formats use row statistics (Q4_0..Q5_1 with weights).
    dequantize_blocks(b: u8[nb, type_size]) -> f32[nb, block_size]
    """
    qtype: ClassVar[QType]

    def __init_subclass__(cls, qtype: str | None = None, **kw):
        super().__init_subclass__(**kw)
        if qtype is not None:
            cls.qtype = TYPES[qtype]
            FORMATS[qtype] = cls

    @staticmethod
    def quantize_blocks(x, qw):
        raise QuantError("quantization is not available for this type")

    @staticmethod
    def dequantize_blocks(b):
        raise QuantError("dequantization is not available for this type")


def register_fast(name: str, quantize: Callable | None = None, dequantize: Callable | None = None):
    """Register Numba kernels for a type.

    quantize(x: f32[nrows, n_per_row], qw: f32[n_per_row] or f32[0] (no imatrix),
             out: u8[nrows, row_bytes]) -> None
    dequantize(b: u8[nb, type_size], out: f32[nb, block_size]) -> None
    A second call for the same type adds what it gives (quantize and dequantize may live in
    different modules: block dequantizers are all in quant/fast/blocks.py).
    """
    entry = FAST.setdefault(name, {"quantize": None, "dequantize": None})
    if quantize is not None:
        entry["quantize"] = quantize
    if dequantize is not None:
        entry["dequantize"] = dequantize

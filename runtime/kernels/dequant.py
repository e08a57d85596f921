"""Row dequantization for the runtime: F16 / BF16 rows -> float32, and ``BLOCKS``, the types
the runtime dequantizes. The block types' dequantizers are ``quant.fast.blocks``'s (the one set),
inlined by the per-type kernels of matmul.py.

The numpy reference for all of them is ``runtime.reference.dequantize_rows``.
"""

import numpy as np
from numba import njit, prange

from quant.fast.blocks import BLOCK_TYPES
from quant.types import TYPES

# type id -> (block size, bytes per block) of the types the runtime dequantizes itself
BLOCKS = {TYPES[n].id: (TYPES[n].block_size, TYPES[n].type_size) for n in ("F32", "F16", "BF16") + BLOCK_TYPES}


@njit(parallel=True, cache=True)
def dequant_rows_f16(data, rows, out, lut):
    """F16 rows -> f32. data: uint16 [n_rows, n_in]."""
    for i in prange(rows.shape[0]):
        r = rows[i]
        for j in range(out.shape[1]):
            out[i, j] = lut[data[r, j]]


@njit(parallel=True, cache=True)
def dequant_rows_bf16(data, rows, out):
    """BF16 rows -> f32 (bits << 16). data: uint16 [n_rows, n_in]; out viewed as uint32."""
    for i in prange(rows.shape[0]):
        r = rows[i]
        for j in range(out.shape[1]):
            out[i, j] = np.uint32(data[r, j]) << np.uint32(16)

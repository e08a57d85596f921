"""Row dequantization for the runtime: packed weight rows -> float32, with the one set of Numba
block dequantizers (``quant.fast.blocks``: ``deq_block``, ``_deq_<type>``, the ids, ``F16_LUT``),
re-exported here for the kernels that inline them (matmul.py, qdot.py).

The numpy reference for all of them is ``runtime.reference.dequantize_rows``.
"""

import numpy as np
from numba import njit, prange

from quant.fast.blocks import (  # noqa: F401 (re-exported for matmul.py / qdot.py)
    BF16, BLOCK_TYPES, F16, F16_LUT, F32, IQ1_M, IQ1_S, IQ2_S, IQ2_XS, IQ2_XXS, IQ3_S, IQ3_XXS, IQ4_NL,
    IQ4_XS, MXFP4, NVFP4, Q1_0, Q2_0, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, TQ1_0,
    TQ2_0, _h, _scale_min_k4, _u32, deq_block, deq_block_of, make_f16_lut)
from quant.types import TYPES

# type id -> (block size, bytes per block) of the types the runtime dequantizes itself
BLOCKS = {TYPES[n].id: (TYPES[n].block_size, TYPES[n].type_size) for n in ("F32", "F16", "BF16") + BLOCK_TYPES}


@njit(parallel=True, cache=True)
def dequant_rows(data, rows, qt, qk, out, lut):
    """out[i] = dequantized data[rows[i]] for block types.

    data: uint8 [n_rows, row_bytes]; rows: int64 [n]; out: f32 [n, n_in]
    """
    nb = out.shape[1] // qk
    for i in prange(rows.shape[0]):
        row = data[rows[i]]
        buf = np.empty(qk, np.float32)
        for b in range(nb):
            deq_block(qt, row, b, buf, lut)
            for j in range(qk):
                out[i, b * qk + j] = buf[j]


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

"""Scalar helpers shared by the IQ Numba kernels (float32 throughout, no fastmath).

Numba promotes float32 op int/float64 to float64, so every literal is an np.float32 constant
and every int that meets a float is cast with np.float32() first.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

F32 = np.float32
MAGIC = F32(12582912.0)
FLT_MAX = F32(np.finfo(np.float32).max)


@njit(inline="always", cache=True)
def nearest_int(f):
    """ggml's nearest_int: bits of (f + 12582912.f), low 23 bits minus 0x400000.

    Equals round-half-even for |f| <= 2^22; the other branches reproduce the bit trick for
    out-of-range, infinite and NaN inputs (which ggml reaches on degenerate blocks)."""
    v = f + MAGIC
    if v != v:
        return 0                           # default NaN: mantissa 0x400000
    av = abs(v)
    if av >= F32(8388608.0) and av < F32(16777216.0):
        return int(av) - 12582912
    if av == np.inf or av == F32(0.0):
        return -4194304
    m, e = math.frexp(float(av))          # av = m * 2^e, 0.5 <= m < 1 (exact in float64)
    mant = int((m * 2.0 - 1.0) * 8388608.0)
    return mant - 4194304


@njit(inline="always", cache=True)
def best_index_int8(n, val, x):
    if x <= F32(val[0]):
        return 0
    if x >= F32(val[n - 1]):
        return n - 1
    ml = 0
    mu = n - 1
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < F32(val[mav]):
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - F32(val[mu - 1]) < F32(val[mu]) - x else mu


def put_f16(out: np.ndarray, offset: int, d: np.ndarray) -> None:
    """Store float32 scales d[nb] as little-endian fp16 (round to nearest even) at byte offset."""
    with np.errstate(over="ignore"):
        out[:, offset:offset + 2] = d.astype(np.float16).reshape(-1, 1).view(np.uint8)


def weights_or_empty(qw, block_size: int) -> np.ndarray:
    """imatrix (None, f32[0], f32[n_per_row] or f32[nbr, block_size]) -> f32[nbr or 0, block_size]."""
    if qw is None or np.size(qw) == 0:
        return np.zeros((0, block_size), np.float32)
    return np.ascontiguousarray(qw, dtype=np.float32).reshape(-1, block_size)


def as_blocks(x, qw, out, block_size: int, type_size: int):
    """Rows (f32[nrows, n] or blocks) and u8 output -> (f32[nb, bs], f32[nbr|0, bs], u8[nb, ts] view)."""
    xb = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, block_size)
    ob = out.reshape(-1, type_size)
    if not np.shares_memory(ob, out):
        raise ValueError("output must be contiguous")
    return xb, weights_or_empty(qw, block_size), ob

"""Helpers shared by the IQ numpy references (float32, C operation order)."""
from __future__ import annotations

import numpy as np

from ._util import F32

GROUP_MAX_EPS = F32(1e-15)


def blocks_and_weights(x, qw, block_size: int):
    """x: f32[..., block_size] blocks in row order; qw: f32[nbr, block_size] or None (block i uses
    qw[i % nbr]). Returns (f32[nb, block_size], f32[nb, block_size] or None)."""
    xb = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, block_size)
    if qw is None:
        return xb, None
    qw = np.asarray(qw, np.float32).reshape(-1, block_size)
    return xb, qw[np.arange(xb.shape[0]) % qw.shape[0]]


def best_index_int8(values, x) -> np.ndarray:
    """ggml best_index_int8 (nearest entry of an ascending int8 table; ties go up), elementwise."""
    v = np.asarray(values).astype(np.float32)
    n = v.shape[0]
    x = np.asarray(x, np.float32)
    mu = np.clip(np.searchsorted(v, x, side="right"), 1, n - 1)
    with np.errstate(invalid="ignore"):
        idx = np.where(x - v[mu - 1] < v[mu] - x, mu - 1, mu)
        idx = np.where(x >= v[n - 1], n - 1, idx)
        idx = np.where(x <= v[0], 0, idx)
    return idx


def first_absmax(x):
    """(amax, signed value) of the first element with the largest |x| along the last axis
    (C: `if (ax > amax)` scanning from amax = 0)."""
    a = np.abs(x)
    i = np.argmax(a, axis=-1)
    amax = np.take_along_axis(a, i[..., None], -1)[..., 0]
    mx = np.take_along_axis(x, i[..., None], -1)[..., 0]
    return amax, np.where(amax > 0, mx, F32(0.0)).astype(np.float32)


def fmax_seq(x):
    """C `max = x[0]; for i: max = MAX(max, x[i])` along the last axis (MAX(a,b) = a > b ? a : b)."""
    m = x[..., 0].copy()
    for i in range(1, x.shape[-1]):
        m = np.where(m > x[..., i], m, x[..., i])
    return m

"""Integer dot-product decode kernels, like ggml's vec_dot_<w>_q8_<a>.

The activations come quantized (``act.py``): xq int8 [n_tok, n_in] with per-block
scales xd (Q8_0: per 32, Q8_K: per 256) and 16-sums xs int32 [n_tok, n_in/16]
(ggml's bsums). Each weight block's integer products are summed exactly in
int32 with the SIMD dot products of ``simd.py``, then scaled, so the result
equals ``reference.matmul`` (dequantize W, multiply by the activations as ggml
sees them) up to float summation order.

Layouts (bytes per block):
  Q8_0 d:2 qs:32            Q4_0 d:2 qs:16           Q5_0 d:2 qh:4 qs:16
  Q4_1 d:2 m:2 qs:16        Q5_1 d:2 m:2 qh:4 qs:16
  Q2_K scales:16 qs:64 d:2 dmin:2                    Q3_K hmask:32 qs:64 scales:12 d:2
  Q4_K d:2 dmin:2 scales:12 qs:128                   Q5_K d:2 dmin:2 scales:12 qh:32 qs:128
  Q6_K ql:128 qh:64 scales:16 d:2
Parallel over chunks of output rows; the token loop is inside so each packed
byte is read once per call.
"""

import numpy as np
from numba import njit, prange

from runtime.kernels.dequant import _h, _scale_min_k4, _u32
from runtime.kernels.simd import (dot_k4_64, dot_k5_64, dot_q2_32, dot_q3_32, dot_q4_0_block, dot_q5_0_block,
                                  dot_q6_32, dot_s8_32)

ROW_CHUNK = 16
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q8_0(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 32):
                    s = dot_s8_32(row, 34 * b + 2, x, 32 * b)
                    acc += (_h(row, 34 * b, lut) * xd[t, b]) * np.float32(s)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q4_0(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 32):
                    o = 18 * b
                    s = dot_q4_0_block(row, o + 2, x, 32 * b)
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(s)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q5_0(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 32):
                    o = 22 * b
                    s = dot_q5_0_block(row, o + 6, _u32(row, o + 2), x, 32 * b)
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(s)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q4_1(data, xq, xd, xs, out, lut):
    """Q4_1 d:2 m:2 qs:16 with Q8_1 activations: d xd sum(q x) + m xd sum(x)."""
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 32):
                    o = 20 * b
                    sx = xs[t, 2 * b] + xs[t, 2 * b + 1]
                    s = dot_q4_0_block(row, o + 4, x, 32 * b) + 8 * sx
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(s) + (_h(row, o + 2, lut) * xd[t, b]) * np.float32(sx)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q5_1(data, xq, xd, xs, out, lut):
    """Q5_1 d:2 m:2 qh:4 qs:16 with Q8_1 activations: d xd sum(q x) + m xd sum(x)."""
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 32):
                    o = 24 * b
                    sx = xs[t, 2 * b] + xs[t, 2 * b + 1]
                    s = dot_q5_0_block(row, o + 8, _u32(row, o + 4), x, 32 * b) + 16 * sx
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(s) + (_h(row, o + 2, lut) * xd[t, b]) * np.float32(sx)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q2_k(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 84 * b
                    sumi = 0
                    summ = 0
                    for n in range(2):
                        for j in range(4):
                            k = 256 * b + 128 * n + 32 * j
                            s0 = np.int64(row[o + 8 * n + 2 * j])
                            s1 = np.int64(row[o + 8 * n + 2 * j + 1])
                            sumi += dot_q2_32(row, o + 16 + 32 * n, 2 * j, 0, 0, s0 & 15, s1 & 15, x, k)
                            summ += (s0 >> 4) * xs[t, k // 16] + (s1 >> 4) * xs[t, k // 16 + 1]
                    acc += (xd[t, b] * _h(row, o + 80, lut)) * np.float32(sumi) \
                        - (xd[t, b] * _h(row, o + 82, lut)) * np.float32(summ)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q3_k(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 110 * b
                    s0 = o + 96
                    sumi = 0
                    for n in range(2):
                        for j in range(4):
                            i = 8 * n + 2 * j                # scales i and i + 1 (low 4 | high 2 bits, - 32)
                            lo0 = (np.int64(row[s0 + i]) & 0xF) if i < 8 else (np.int64(row[s0 + i - 8]) >> 4)
                            lo1 = (np.int64(row[s0 + i + 1]) & 0xF) if i < 8 else (np.int64(row[s0 + i - 7]) >> 4)
                            hi0 = (np.int64(row[s0 + 8 + (i & 3)]) >> (2 * (i >> 2))) & 3
                            hi1 = (np.int64(row[s0 + 8 + ((i + 1) & 3)]) >> (2 * ((i + 1) >> 2))) & 3
                            k = 256 * b + 128 * n + 32 * j
                            sumi += dot_q3_32(row, o + 32 + 32 * n, 2 * j, o, 4 * n + j,
                                              (lo0 | (hi0 << 4)) - 32, (lo1 | (hi1 << 4)) - 32, x, k)
                    acc += (xd[t, b] * _h(row, o + 108, lut)) * np.float32(sumi)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q4_k(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 144 * b
                    sumi = 0
                    summ = 0
                    for j in range(4):
                        sc1, m1 = _scale_min_k4(2 * j, row, o + 4)
                        sc2, m2 = _scale_min_k4(2 * j + 1, row, o + 4)
                        k = 256 * b + 64 * j
                        sumi += dot_k4_64(row, o + 16 + 32 * j, row, 0, 0, sc1, sc2, x, k)
                        kk = k // 16
                        summ += m1 * (xs[t, kk] + xs[t, kk + 1]) + m2 * (xs[t, kk + 2] + xs[t, kk + 3])
                    acc += (xd[t, b] * _h(row, o, lut)) * np.float32(sumi) \
                        - (xd[t, b] * _h(row, o + 2, lut)) * np.float32(summ)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q5_k(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 176 * b
                    sumi = 0
                    summ = 0
                    for j in range(4):
                        sc1, m1 = _scale_min_k4(2 * j, row, o + 4)
                        sc2, m2 = _scale_min_k4(2 * j + 1, row, o + 4)
                        k = 256 * b + 64 * j
                        sumi += dot_k5_64(row, o + 48 + 32 * j, row, o + 16, 2 * j, sc1, sc2, x, k)
                        kk = k // 16
                        summ += m1 * (xs[t, kk] + xs[t, kk + 1]) + m2 * (xs[t, kk + 2] + xs[t, kk + 3])
                    acc += (xd[t, b] * _h(row, o, lut)) * np.float32(sumi) \
                        - (xd[t, b] * _h(row, o + 2, lut)) * np.float32(summ)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q6_k(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 210 * b
                    sumi = 0
                    for n in range(2):
                        ql = o + 64 * n
                        qh = o + 128 + 32 * n
                        sc = o + 192 + 8 * n
                        k = 256 * b + 128 * n
                        sumi += dot_q6_32(row, ql, qh, 0, 0, np.int8(row[sc]), np.int8(row[sc + 1]), x, k) \
                            + dot_q6_32(row, ql + 32, qh, 0, 2, np.int8(row[sc + 2]), np.int8(row[sc + 3]), x, k + 32) \
                            + dot_q6_32(row, ql, qh, 4, 4, np.int8(row[sc + 4]), np.int8(row[sc + 5]), x, k + 64) \
                            + dot_q6_32(row, ql + 32, qh, 4, 6, np.int8(row[sc + 6]), np.int8(row[sc + 7]), x, k + 96)
                    acc += (_h(row, o + 208, lut) * xd[t, b]) * np.float32(sumi)
                out[t, r] = acc

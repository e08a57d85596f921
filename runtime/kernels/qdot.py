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
  IQ4_NL d:2 qs:16   IQ4_XS d:2 scales_h:2 scales_l:4 qs:128   IQ2_XXS d:2 qs:64
  IQ2_XS d:2 qs:64 scales:8   IQ3_XXS d:2 qs:64 signs+scales:32   IQ3_S d:2 qs:64 qh:8 signs:32 scales:4
  IQ2_S d:2 qs:32 signs:32 qh:8 scales:8   MXFP4 e:1 qs:16   TQ2_0 qs:64 d:2
Q8_0/Q4_0/Q5_0/IQ4_NL/MXFP4 run a whole row per call (``row_*``: float accumulator over blocks);
K-quants and IQ types one 256-block per call (one horizontal sum per block). The IQ kernels
look their grids/sign tables up per 8 (or 4) values and dot them as u8 x s8 like ggml's AVX2 code.
Parallel over chunks of output rows; the token loop is inside so each packed
byte is read once per call.
"""

import numpy as np
from numba import njit, prange

from quant.fast.blocks import IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS
from runtime.kernels.dequant import _h, _scale_min_k4, _u32
from runtime.kernels.simd import (dot_k4_64, dot_u_32, dot_k5_64, dot_q4_0_block, dot_q5_0_block, q2k_block, q3k_block,
                                  dot_q4k_256, dot_q6_32, dot_q6k_256, dot_s8_32, q4k_block, q5k_block, row_q4_0, row_q5_0, row_q8_0,
                                  row_q4_1, row_q5_1,
                                  iq2s_block, iq2xs_block, iq2xxs_block, iq3s_block, iq3xxs_block, iq4xs_block, row_iq4_nl,
                                  row_mxfp4)

ROW_CHUNK = 16

# IQ grids as packed bytes (one uint64 / uint32 load per grid entry), sign table as bytes
GRID_IQ2XXS = np.ascontiguousarray(IQ2XXS_GRID.astype(np.uint8)).view(np.uint64).reshape(-1)     # [256]
GRID_IQ3S = np.ascontiguousarray(IQ3S_GRID.astype(np.uint8)).view(np.uint32).reshape(-1)         # [512]
GRID_IQ2XS = np.ascontiguousarray(IQ2XS_GRID.astype(np.uint8)).view(np.uint64).reshape(-1)       # [512]
GRID_IQ2S = np.ascontiguousarray(IQ2S_GRID.astype(np.uint8)).view(np.uint64).reshape(-1)         # [1024]
GRID_IQ3XXS = np.ascontiguousarray(IQ3XXS_GRID.astype(np.uint8)).view(np.uint32).reshape(-1)     # [256]
KSIGNS_U8 = KSIGNS_IQ2XS.astype(np.uint8)                                                        # [128]
# ggml's keven_signs_q2xs: entry i has byte j = -1 (0xFF) where bit j of ksigns_iq2xs[i] is set, else +1
KEVEN_SIGNS = np.where((KSIGNS_U8[:, None] >> np.arange(8)) & 1, 0xFF, 0x01).astype(np.uint8).view(np.uint64).reshape(-1)
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q8_0(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                out[t, r] = row_q8_0(row, 0, xq[t], 0, xd[t], 0, lut, n_in // 32)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q4_0(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                out[t, r] = row_q4_0(row, 0, xq[t], 0, xd[t], 0, lut, n_in // 32)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q5_0(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                out[t, r] = row_q5_0(row, 0, xq[t], 0, xd[t], 0, lut, n_in // 32)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q4_1(data, xq, xd, xs, out, lut):
    """Q4_1 d:2 m:2 qs:16 with Q8_1 activations: d xd sum(q x) + m xd sum(x)."""
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                out[t, r] = row_q4_1(row, 0, xq[t], 0, xd[t], 0, xs[t], 0, lut, n_in // 32)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_q5_1(data, xq, xd, xs, out, lut):
    """Q5_1 d:2 m:2 qh:4 qs:16 with Q8_1 activations: d xd sum(q x) + m xd sum(x)."""
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                out[t, r] = row_q5_1(row, 0, xq[t], 0, xd[t], 0, xs[t], 0, lut, n_in // 32)


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
                    sumi, summ = q2k_block(row, o, x, 256 * b, xs[t], 16 * b)
                    acc += (xd[t, b] * _h(row, o + 80, lut)) * np.float32(sumi) \
                        - (xd[t, b] * _h(row, o + 82, lut)) * np.float32(summ)
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_tq2_0(data, xq, xd, xs, out, lut):
    """TQ2_0 (qs:64 d:2, x = (q - 1) d): sum (q - 1) x = sum q x - sum x, the last from the 16-sums."""
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 66 * b
                    sumi = np.int32(0)
                    for j in range(2):
                        for sh in range(4):
                            sumi += dot_u_32(row, o + 32 * j, 2 * sh, 3, x, 256 * b + 128 * j + 32 * sh)
                    for k in range(16):
                        sumi -= np.int32(xs[t, 16 * b + k])
                    acc += (xd[t, b] * _h(row, o + 64, lut)) * np.float32(sumi)
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
                    sumi, _ = q3k_block(row, o, x, 256 * b, xs[t], 16 * b)
                    acc += (xd[t, b] * _h(row, o + 108, lut)) * np.float32(sumi)
                out[t, r] = acc


@njit(inline="always")
def _k4_scales(row, q, sm):
    """Q4_K/Q5_K 12-byte scale block at row[q] -> sm[0:8] scales, sm[8:16] mins (get_scale_min_k4)."""
    for j in range(4):
        sm[j] = row[q + j] & 63
        sm[8 + j] = row[q + j + 4] & 63
    for j in range(4, 8):
        sm[j] = (row[q + j + 4] & 0xF) | ((row[q + j - 4] >> 6) << 4)
        sm[8 + j] = (row[q + j + 4] >> 4) | ((row[q + j] >> 6) << 4)


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
                    sumi, summ = q4k_block(row, o, x, 256 * b, xs[t], 16 * b)
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
                    sumi, summ = q5k_block(row, o, x, 256 * b, xs[t], 16 * b)
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
                    acc += (_h(row, o + 208, lut) * xd[t, b]) * np.float32(dot_q6k_256(row, o, x, 256 * b))
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_iq4_nl(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                out[t, r] = row_iq4_nl(row, 0, xq[t], 0, xd[t], 0, lut, n_in // 32)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_mxfp4(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                out[t, r] = row_mxfp4(row, 0, xq[t], 0, xd[t], 0, lut, n_in // 32)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_iq4_xs(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 136 * b
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(iq4xs_block(row, o, x, 256 * b))
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_iq2_xxs(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    grid, ks = GRID_IQ2XXS, KEVEN_SIGNS
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 66 * b
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(iq2xxs_block(row, o, x, 256 * b, grid, ks))
                out[t, r] = acc * np.float32(0.125)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_iq3_s(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    grid = GRID_IQ3S
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 110 * b
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(iq3s_block(row, o, x, 256 * b, grid))
                out[t, r] = acc


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_iq2_xs(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    grid, ks = GRID_IQ2XS, KEVEN_SIGNS
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 74 * b
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(iq2xs_block(row, o, x, 256 * b, grid, ks))
                out[t, r] = acc * np.float32(0.125)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_iq2_s(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    grid = GRID_IQ2S
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 82 * b
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(iq2s_block(row, o, x, 256 * b, grid))
                out[t, r] = acc * np.float32(0.125)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dot_iq3_xxs(data, xq, xd, xs, out, lut):
    n_out = data.shape[0]
    n_tok, n_in = xq.shape
    grid, ks = GRID_IQ3XXS, KEVEN_SIGNS
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = data[r]
            for t in range(n_tok):
                x = xq[t]
                acc = np.float32(0.0)
                for b in range(n_in // 256):
                    o = 98 * b
                    acc += (_h(row, o, lut) * xd[t, b]) * np.float32(iq3xxs_block(row, o, x, 256 * b, grid, ks))
                out[t, r] = acc * np.float32(0.25)

"""Integer dot-product decode kernels, like ggml's vec_dot_<w>_q8_<a>: one generic kernel, built
per weight type.

The activations come quantized (``act.py``) in the weight type's ``vec_dot_type`` (the type
table's column: Q8_0, Q8_1 or Q8_K): xq int8 [n_tok, n_in] with per-block scales xd (per 32 or
per 256) and 16-sums xs int16 [n_tok, n_in/16] (ggml's bsums). Each weight block's integer
products are summed exactly in int32 with the SIMD intrinsics of ``simd.py``, then scaled, so the
result equals ``reference.matmul`` (dequantize W, multiply by the activations as ggml sees them)
up to float summation order.

``make_kernel(qt)`` builds the kernel of type id qt as a closure over that constant; it calls
``row_dot_of(qt, ...)``, an ``@overload`` resolved at typing time on the literal (like
``quant.fast.blocks.deq_block_of``), so each kernel inlines only its own type's code and Numba
caches it on disk per type. A type's dot comes in one of two shapes:

- ``ROW_DOT``: an intrinsic that runs a whole row of 32-blocks (float accumulator over blocks,
  one horizontal sum per row, as ggml's AVX2 code): Q8_0, Q4_0, Q5_0, Q4_1, Q5_1, IQ4_NL, MXFP4;
- ``BLOCK_DOT``: ``f(row, o, x, xo, d, xs, so, lut)`` -> the float32 contribution of the 256-block
  at byte o (d: the activation block's scale, xs/so: its 16-sums), summed over the row's blocks
  and times the type's constant factor: the K-quants, TQ2_0 and the IQ types. The IQ kernels look
  their grids/sign tables up per 8 (or 4) values and dot them as u8 x s8 like ggml's AVX2 code.

Block layouts are in ``quant/types.py`` (the table's comments); bytes per block come from there.
Parallel over chunks of output rows; the token loop is inside so each packed byte is read once
per call.
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from quant.fast.blocks import (IQ2_S, IQ2_XS, IQ2_XXS, IQ3_S, IQ3_XXS, IQ4_NL, IQ4_XS, MXFP4, Q2_K,
                               Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, TQ2_0, _h,
                               IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS,
                               per_type_kernel)
from quant.types import BY_ID
from runtime.kernels.simd import (dot_q6k_256, dot_u_32, iq2s_block, iq2xs_block, iq2xxs_block, iq3s_block,
                                  iq3xxs_block, iq4xs_block, q2k_block, q3k_block, q4k_block, q5k_block,
                                  row_iq4_nl, row_mxfp4, row_q4_0, row_q4_1, row_q5_0, row_q5_1, row_q8_0)

ROW_CHUNK = 16
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

# IQ grids as packed bytes (one uint64 / uint32 load per grid entry), sign table as bytes
GRID_IQ2XXS = np.ascontiguousarray(IQ2XXS_GRID.astype(np.uint8)).view(np.uint64).reshape(-1)     # [256]
GRID_IQ3S = np.ascontiguousarray(IQ3S_GRID.astype(np.uint8)).view(np.uint32).reshape(-1)         # [512]
GRID_IQ2XS = np.ascontiguousarray(IQ2XS_GRID.astype(np.uint8)).view(np.uint64).reshape(-1)       # [512]
GRID_IQ2S = np.ascontiguousarray(IQ2S_GRID.astype(np.uint8)).view(np.uint64).reshape(-1)         # [1024]
GRID_IQ3XXS = np.ascontiguousarray(IQ3XXS_GRID.astype(np.uint8)).view(np.uint32).reshape(-1)     # [256]
KSIGNS_U8 = KSIGNS_IQ2XS.astype(np.uint8)                                                        # [128]
# ggml's keven_signs_q2xs: entry i has byte j = -1 (0xFF) where bit j of ksigns_iq2xs[i] is set, else +1
KEVEN_SIGNS = np.where((KSIGNS_U8[:, None] >> np.arange(8)) & 1, 0xFF, 0x01).astype(np.uint8).view(np.uint64).reshape(-1)


# ---------------------------------------------------------------- block dots (256-blocks)
#
# f(row, o, x, xo, d, xs, so, lut): block at byte o of the packed row, activations x[xo:xo+256]
# with scale d and 16-sums xs[so:so+16] -> float32.

@njit(inline="always")
def _dot_q2_k(row, o, x, xo, d, xs, so, lut):
    sumi, summ = q2k_block(row, o, x, xo, xs, so)
    return (d * _h(row, o + 80, lut)) * np.float32(sumi) - (d * _h(row, o + 82, lut)) * np.float32(summ)


@njit(inline="always")
def _dot_q3_k(row, o, x, xo, d, xs, so, lut):
    sumi, _ = q3k_block(row, o, x, xo, xs, so)
    return (d * _h(row, o + 108, lut)) * np.float32(sumi)


@njit(inline="always")
def _dot_q4_k(row, o, x, xo, d, xs, so, lut):
    sumi, summ = q4k_block(row, o, x, xo, xs, so)
    return (d * _h(row, o, lut)) * np.float32(sumi) - (d * _h(row, o + 2, lut)) * np.float32(summ)


@njit(inline="always")
def _dot_q5_k(row, o, x, xo, d, xs, so, lut):
    sumi, summ = q5k_block(row, o, x, xo, xs, so)
    return (d * _h(row, o, lut)) * np.float32(sumi) - (d * _h(row, o + 2, lut)) * np.float32(summ)


@njit(inline="always")
def _dot_q6_k(row, o, x, xo, d, xs, so, lut):
    return (_h(row, o + 208, lut) * d) * np.float32(dot_q6k_256(row, o, x, xo))


@njit(inline="always")
def _dot_tq2_0(row, o, x, xo, d, xs, so, lut):
    """TQ2_0 (qs:64 d:2, x = (q - 1) d): sum (q - 1) x = sum q x - sum x, the last from the 16-sums."""
    sumi = np.int32(0)
    for j in range(2):
        for sh in range(4):
            sumi += dot_u_32(row, o + 32 * j, 2 * sh, 3, x, xo + 128 * j + 32 * sh)
    for k in range(16):
        sumi -= np.int32(xs[so + k])
    return (d * _h(row, o + 64, lut)) * np.float32(sumi)


def _iq_dot(block, *tables):
    """The block dot of an IQ type: d_w d_x times the intrinsic ``block``'s integer sum, with the
    type's grid and sign tables (constants of the compiled code)."""
    if len(tables) == 2:
        t0, t1 = tables

        def dot(row, o, x, xo, d, xs, so, lut):
            return (_h(row, o, lut) * d) * np.float32(block(row, o, x, xo, t0, t1))
    elif len(tables) == 1:
        t0, = tables

        def dot(row, o, x, xo, d, xs, so, lut):
            return (_h(row, o, lut) * d) * np.float32(block(row, o, x, xo, t0))
    else:
        def dot(row, o, x, xo, d, xs, so, lut):
            return (_h(row, o, lut) * d) * np.float32(block(row, o, x, xo))
    return njit(inline="always")(dot)


# type id -> (block dot, factor applied to the row's sum; ggml's 0.125 / 0.25 of the IQ2/IQ3 grids)
BLOCK_DOT = {
    Q2_K: (_dot_q2_k, 1.0), Q3_K: (_dot_q3_k, 1.0), Q4_K: (_dot_q4_k, 1.0), Q5_K: (_dot_q5_k, 1.0),
    Q6_K: (_dot_q6_k, 1.0), TQ2_0: (_dot_tq2_0, 1.0), IQ4_XS: (_iq_dot(iq4xs_block), 1.0),
    IQ2_XXS: (_iq_dot(iq2xxs_block, GRID_IQ2XXS, KEVEN_SIGNS), 0.125),
    IQ2_XS: (_iq_dot(iq2xs_block, GRID_IQ2XS, KEVEN_SIGNS), 0.125),
    IQ2_S: (_iq_dot(iq2s_block, GRID_IQ2S), 0.125),
    IQ3_XXS: (_iq_dot(iq3xxs_block, GRID_IQ3XXS, KEVEN_SIGNS), 0.25),
    IQ3_S: (_iq_dot(iq3s_block, GRID_IQ3S), 1.0),
}

# type id -> (row intrinsic, whether it takes the 16-sums: Q8_1 activations' d * sum x)
ROW_DOT = {
    Q8_0: (row_q8_0, False), Q4_0: (row_q4_0, False), Q5_0: (row_q5_0, False), IQ4_NL: (row_iq4_nl, False),
    MXFP4: (row_mxfp4, False), Q4_1: (row_q4_1, True), Q5_1: (row_q5_1, True),
}

# the weight types whose decode runs here (their activation format: quant.types vec_dot_type)
TYPES = frozenset(BLOCK_DOT) | frozenset(ROW_DOT)


def row_dot_of(qt, row, xq, xd, xs, t, lut):
    """sum_k W[k] x[k] of one packed row (type id qt, a compile-time constant) and token t's
    quantized activations: xq[t] (int8), xd[t] (block scales), xs[t] (16-sums) -> float32."""


@overload(row_dot_of, inline="always", prefer_literal=True)
def _row_dot_of(qt, row, xq, xd, xs, t, lut):
    if not isinstance(qt, types.IntegerLiteral):
        raise TypeError("row_dot_of needs a constant type id")
    t_ = BY_ID[qt.literal_value]
    qk = t_.block_size
    if t_.id in ROW_DOT:
        f, with_sums = ROW_DOT[t_.id]
        if with_sums:
            def impl(qt, row, xq, xd, xs, t, lut):
                return f(row, 0, xq[t], 0, xd[t], 0, xs[t], 0, lut, xq.shape[1] // qk)
        else:
            def impl(qt, row, xq, xd, xs, t, lut):
                return f(row, 0, xq[t], 0, xd[t], 0, lut, xq.shape[1] // qk)
        return impl
    f, factor = BLOCK_DOT[t_.id]
    nbytes, nsums, fac = t_.type_size, qk // 16, np.float32(factor)   # (x * 1.0 folds away: exact)

    def impl(qt, row, xq, xd, xs, t, lut):
        x = xq[t]
        acc = np.float32(0.0)
        for b in range(xq.shape[1] // qk):
            acc += f(row, nbytes * b, x, qk * b, xd[t, b], xs[t], nsums * b, lut)
        return acc * fac
    return impl


_ROW_FUNCS: dict = {}


def row_func(qt: int):
    """``row_dot_of`` of type id qt compiled as a function of its own (not inlined; FASTMATH),
    once per type and cached on disk: the decode kernel below and the layer programs of
    runtime/step.py call this same code, so their rows give the same floats."""
    f = _ROW_FUNCS.get(qt)
    if f is None:
        def row_dot(row, xq, xd, xs, t, lut):
            return row_dot_of(qt, row, xq, xd, xs, t, lut)
        f = _ROW_FUNCS[qt] = per_type_kernel(row_dot, qt, cache=True, fastmath=FASTMATH)
    return f


def row_dot(qt, row, xq, xd, xs, t, lut):
    """``row_func(qt)(row, xq, xd, xs, t, lut)`` for a constant type id qt, callable from kernels."""


@overload(row_dot, prefer_literal=True)
def _row_dot(qt, row, xq, xd, xs, t, lut):
    if not isinstance(qt, types.IntegerLiteral):
        raise TypeError("row_dot needs a constant type id")
    f = row_func(qt.literal_value)

    def impl(qt, row, xq, xd, xs, t, lut):
        return f(row, xq, xd, xs, t, lut)
    return impl


def make_kernel(qt: int):
    """The decode kernel of weight type id qt: qdot(data, xq, xd, xs, out, lut) sets
    out[t, r] = row r of data (uint8 [n_out, row_bytes]) dotted with token t's activations."""
    def qdot(data, xq, xd, xs, out, lut):
        n_out = data.shape[0]
        n_tok = xq.shape[0]
        for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
            for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
                row = data[r]
                for t in range(n_tok):
                    out[t, r] = row_dot(qt, row, xq, xd, xs, t, lut)
    return per_type_kernel(qdot, qt, parallel=True, cache=True, fastmath=FASTMATH)


"""Numba kernels for TQ1_0, TQ2_0 (ternary) and MXFP4, NVFP4 (E2M1 values).

Layouts: quant/ref/ternary.py and quant/ref/fp4.py. Weights are ignored (as in ggml).
"""

import math

import numpy as np
from numba import njit, prange

from ..ref.fp4 import KVALUES
from ..types import register_fast
from ._common import F32, JIT, put_f16, roundf

PJIT = dict(JIT, parallel=True)


@njit(inline="always", **JIT)
def trit(v, idd):
    """lroundf(v * id) + 1 (v*id is in [-1, 1] or inf/NaN for degenerate scales)."""
    t = roundf(v * idd)
    if t > F32(-1e9) and t < F32(1e9):
        return int(t) + 1
    return -9223372036854775807 - 1 + 1          # lroundf of inf/NaN: LONG_MIN (x86)


@njit(**PJIT)
def _tq_quantize(x, qw, out, tq1):
    nrows, n = x.shape
    nb = n // 256
    ts = 54 if tq1 else 66
    for r in prange(nrows):
        for i in range(nb):
            xs = x[r, 256 * i:256 * i + 256]
            y = out[r, ts * i:ts * i + ts]
            amax = F32(0.0)
            for j in range(256):
                a = abs(xs[j])
                amax = amax if amax > a else a
            d = amax
            idd = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            if tq1:
                put_f16(y, 52, d)
                for m in range(32):                      # qs[0:32]: x[m + 32n], n < 5
                    q = 0
                    for k in range(5):
                        q = (q * 3 + trit(xs[m + 32 * k], idd)) & 0xFF
                    y[m] = (q * 256 + 242) // 243
                for m in range(16):                      # qs[32:48]: x[160 + m + 16n]
                    q = 0
                    for k in range(5):
                        q = (q * 3 + trit(xs[160 + m + 16 * k], idd)) & 0xFF
                    y[32 + m] = (q * 256 + 242) // 243
                for j in range(4):                       # qh[j]: x[240 + j + 4m]
                    q = 0
                    for m in range(4):
                        q = (q * 3 + trit(xs[240 + j + 4 * m], idd)) & 0xFF
                    q = (q * 3) & 0xFF
                    y[48 + j] = (q * 256 + 242) // 243
            else:
                put_f16(y, 64, d)
                for j in range(2):
                    for m in range(32):
                        q = 0
                        for k in range(4):
                            q += (trit(xs[128 * j + m + 32 * k], idd) & 3) << (2 * k)
                        y[32 * j + m] = q & 0xFF


def tq1_0_quantize(x, qw, out):
    _tq_quantize(x, qw, out, True)


def tq2_0_quantize(x, qw, out):
    _tq_quantize(x, qw, out, False)


@njit(inline="always", **JIT)
def best_index(v, d, kv):
    best_i = 0
    best = abs(kv[0] * d - v)
    for i in range(1, 16):
        err = abs(kv[i] * d - v)
        if err < best:
            best_i = i
            best = err
    return best_i


@njit(**PJIT)
def _mxfp4_quantize(x, qw, out, kv):
    nrows, n = x.shape
    nb = n // 32
    for r in prange(nrows):
        dbuf = np.empty(1, np.uint32)
        dval = dbuf.view(np.float32)
        for i in range(nb):
            xs = x[r, 32 * i:32 * i + 32]
            y = out[r, 17 * i:17 * i + 17]
            amax = F32(0.0)
            for j in range(32):
                if amax < abs(xs[j]):
                    amax = abs(xs[j])
            # (uint8_t)(floorf(log2f(amax)) - 2 + 127)
            e = int(F32(math.floor(np.log2(amax))) - F32(2.0) + F32(127.0)) & 0xFF if amax > F32(0.0) else 0
            dbuf[0] = (0x00200000 << e) if e < 2 else ((e - 1) << 23)
            d = dval[0]
            y[0] = e
            for j in range(16):
                y[1 + j] = best_index(xs[j], d, kv) | (best_index(xs[j + 16], d, kv) << 4)


def mxfp4_quantize(x, qw, out):
    _mxfp4_quantize(x, qw, out, KVALUES.astype(np.float32))


@njit(inline="always", **JIT)
def ue4m3_value(u):
    if u == 0 or u == 0x7F:
        return F32(0.0)
    e = (u >> 3) & 0xF
    m = u & 7
    if e == 0:
        raw = F32(m) * F32(2.0 ** -9)
    else:
        raw = (F32(1.0) + F32(m) / F32(8.0)) * F32(2.0 ** (e - 7))
    return raw * F32(0.5)


@njit(**PJIT)
def _nvfp4_quantize(x, qw, out, kv):
    nrows, n = x.shape
    nb = n // 64
    for r in prange(nrows):
        fbuf = np.empty(1, np.float32)
        bits = fbuf.view(np.uint32)
        for i in range(nb):
            y = out[r, 36 * i:36 * i + 36]
            for s in range(4):
                xs = x[r, 64 * i + 16 * s:64 * i + 16 * s + 16]
                amax = F32(0.0)
                for j in range(16):
                    if amax < abs(xs[j]):
                        amax = abs(xs[j])
                v = amax / F32(6.0)                      # ggml_fp32_to_ue4m3(v)
                if not (v > F32(0.0)):
                    ue = 0
                else:
                    if v > F32(448.0):
                        v = F32(448.0)
                    fbuf[0] = v
                    b = np.int64(bits[0])
                    ex = ((b >> 23) & 0xFF) - 127 + 7
                    man = (b >> 20) & 7
                    if ex <= 0:
                        mm = int(v * F32(512.0) + F32(0.5))
                        mm = min(mm, 7)
                        ue = 0 if mm < 1 else mm
                    elif ex >= 15:
                        ue = 0x7E
                    else:
                        man += (b >> 19) & 1
                        if man > 7:
                            man = 0
                            ex += 1
                        ue = 0x7E if ex >= 15 else ((ex << 3) | man)
                y[s] = ue
                d = ue4m3_value(ue)
                for j in range(8):
                    y[4 + 8 * s + j] = best_index(xs[j], d, kv) | (best_index(xs[j + 8], d, kv) << 4)


def nvfp4_quantize(x, qw, out):
    _nvfp4_quantize(x, qw, out, KVALUES.astype(np.float32))


register_fast("TQ1_0", quantize=tq1_0_quantize)
register_fast("TQ2_0", quantize=tq2_0_quantize)
register_fast("MXFP4", quantize=mxfp4_quantize)
register_fast("NVFP4", quantize=nvfp4_quantize)

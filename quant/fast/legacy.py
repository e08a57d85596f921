"""Numba kernels for F32/F16/BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q1_0, Q2_0.

Layouts and rules: quant/ref/legacy.py and quant/ref/float.py. Each kernel is parallel over
rows (prange) and writes u8[nrows, row_bytes].
"""

import numpy as np
from numba import njit, prange

from ..types import register_fast
from ._common import F32, JIT, put_f16, put_u32, roundf
from .kmath import make_qkx, make_qx_quants

PJIT = dict(JIT, parallel=True)
FLT_MAX = F32(np.finfo(np.float32).max)


def f16_quantize(x, qw, out):
    """numpy's float16 cast (round to nearest even), NaN -> sign | 0x7e00 as in ggml."""
    from ..ref._util import f16_bytes
    out[...] = f16_bytes(x).reshape(out.shape)


def f16_dequantize(b, out):
    out[...] = np.ascontiguousarray(b).view(np.float16).astype(np.float32).reshape(out.shape)


def f32_quantize(x, qw, out):
    out[...] = x.view(np.uint8).reshape(out.shape)


@njit(**PJIT)
def _bf16_kernel(u, out):
    """ggml_compute_fp32_to_bf16 on the float bits u[nrows, n] -> u16 out[nrows, n]."""
    for r in prange(u.shape[0]):
        for j in range(u.shape[1]):
            v = np.uint32(u[r, j])
            if (v & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                out[r, j] = (v >> np.uint32(16)) | np.uint32(64)
            else:
                out[r, j] = (v + np.uint32(0x7FFF) + ((v >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


def bf16_quantize(x, qw, out):
    _bf16_kernel(x.view(np.uint32), out.view(np.uint16))


def _row_sigma2(xr, n):
    s = F32(0.0)
    for j in range(n):
        s += xr[j] * xr[j]
    return s / F32(n)


row_sigma2 = njit(inline="always", **JIT)(_row_sigma2)


# ------------------------------------------------------------------ Q4_0 / Q5_0 (d * (q - c))

@njit(**PJIT)
def _q_sym_quantize(x, qw, out, nbits, ts):
    """Q4_0 (nbits=4, ts=18) and Q5_0 (nbits=5, ts=22)."""
    nrows, n = x.shape
    nb = n // 32
    half = 1 << (nbits - 1)                       # 8 or 16
    has_w = qw.size > 0
    for r in prange(nrows):
        xr = x[r]
        o = out[r]
        L = np.empty(32, np.int32)
        w = np.empty(32, np.float32)
        sigma2 = row_sigma2(xr, n) if has_w else F32(0.0)
        for ib in range(nb):
            xb = xr[32 * ib:32 * ib + 32]
            ob = o[ts * ib:ts * ib + ts]
            if has_w:
                for j in range(32):
                    w[j] = qw[32 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j])
                d = make_qx_quants(32, half, xb, L, 1, w)
            else:
                amax = F32(0.0)
                mx = F32(0.0)
                for j in range(32):
                    if amax < abs(xb[j]):
                        amax = abs(xb[j])
                        mx = xb[j]
                d = mx / F32(-half)
                idd = F32(1.0) / d if d != F32(0.0) else F32(0.0)
                lim = 2 * half - 1
                for j in range(32):
                    v = xb[j] * idd + (F32(8.5) if nbits == 4 else F32(16.5))
                    # (int8_t)(v): truncation toward zero; NaN/inf give 0 on x86
                    q = int(v) if (v > F32(-128.0) and v < F32(128.0)) else 0
                    L[j] = min(lim, q)
            put_f16(ob, 0, d)
            if nbits == 4:
                for j in range(16):
                    ob[2 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
            else:
                qh = 0
                for j in range(16):
                    ob[6 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
                    qh |= ((L[j] & 0x10) >> 4) << j
                    qh |= ((L[j + 16] & 0x10) >> 4) << (j + 16)
                put_u32(ob, 2, qh)


def q4_0_quantize(x, qw, out):
    _q_sym_quantize(x, qw, out, 4, 18)


def q5_0_quantize(x, qw, out):
    _q_sym_quantize(x, qw, out, 5, 22)


# ------------------------------------------------------------------ Q4_1 / Q5_1 (d * q + m)

@njit(**PJIT)
def _q_min_quantize(x, qw, out, nbits, ts):
    """Q4_1 (nbits=4, ts=20) and Q5_1 (nbits=5, ts=24)."""
    nrows, n = x.shape
    nb = n // 32
    nmax = (1 << nbits) - 1
    has_w = qw.size > 0
    for r in prange(nrows):
        xr = x[r]
        o = out[r]
        L = np.empty(32, np.int32)
        Laux = np.empty(96, np.float32)   # make_qkx scratch (3 x n)
        w = np.empty(32, np.float32)
        the_min = np.empty(1, np.float32)
        sigma2 = row_sigma2(xr, n) if has_w else F32(0.0)
        for ib in range(nb):
            xb = xr[32 * ib:32 * ib + 32]
            ob = o[ts * ib:ts * ib + ts]
            if has_w:
                for j in range(32):
                    w[j] = qw[32 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j])
                d = make_qkx(32, nmax, xb, w, L, Laux, F32(-0.9), F32(0.05), 36, False, True, the_min)
                m = -the_min[0]
            else:
                mn = FLT_MAX
                mx = -FLT_MAX
                for j in range(32):
                    if xb[j] < mn:
                        mn = xb[j]
                    if xb[j] > mx:
                        mx = xb[j]
                d = (mx - mn) / F32(nmax)
                idd = F32(1.0) / d if d != F32(0.0) else F32(0.0)
                for j in range(32):
                    v = (xb[j] - mn) * idd + F32(0.5)
                    q = int(v) if (v > F32(-128.0) and v < F32(128.0)) else 0
                    L[j] = min(nmax, q) if nbits == 4 else (q & 0xFF)
                m = mn
            put_f16(ob, 0, d)
            put_f16(ob, 2, m)
            if nbits == 4:
                for j in range(16):
                    ob[4 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
            else:
                qh = 0
                for j in range(16):
                    ob[8 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
                    qh |= ((L[j] & 0x10) >> 4) << j
                    qh |= ((L[j + 16] & 0x10) >> 4) << (j + 16)
                put_u32(ob, 4, qh)


def q4_1_quantize(x, qw, out):
    _q_min_quantize(x, qw, out, 4, 20)


def q5_1_quantize(x, qw, out):
    _q_min_quantize(x, qw, out, 5, 24)


# ------------------------------------------------------------------ Q8_0 / Q8_1

@njit(**PJIT)
def _q8_quantize(x, qw, out, with_sum):
    nrows, n = x.shape
    nb = n // 32
    ts = 36 if with_sum else 34
    qoff = 4 if with_sum else 2
    for r in prange(nrows):
        xr = x[r]
        o = out[r]
        for ib in range(nb):
            amax = F32(0.0)
            for j in range(32):
                a = abs(xr[32 * ib + j])
                amax = amax if amax > a else a
            d = amax / F32(127.0)
            idd = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            base = ts * ib
            put_f16(o, base, d)
            s = 0
            for j in range(32):
                v = roundf(xr[32 * ib + j] * idd)
                q = int(v) if abs(v) < F32(128.0) else 0     # inf/NaN -> 0 as on x86
                s += q
                o[base + qoff + j] = q & 0xFF
            if with_sum:
                put_f16(o, base + 2, F32(s) * d)


def q8_0_quantize(x, qw, out):
    _q8_quantize(x, qw, out, False)


def q8_1_quantize(x, qw, out):
    _q8_quantize(x, qw, out, True)


# ------------------------------------------------------------------ Q1_0 / Q2_0

@njit(**PJIT)
def q1_0_quantize(x, qw, out):
    nrows, n = x.shape
    nb = n // 128
    for r in prange(nrows):
        xr = x[r]
        o = out[r]
        for ib in range(nb):
            s = F32(0.0)
            for j in range(128):
                s += abs(xr[128 * ib + j])
            put_f16(o, 18 * ib, s / F32(128.0))
            for k in range(16):
                byte = 0
                for bit in range(8):
                    if xr[128 * ib + 8 * k + bit] >= F32(0.0):
                        byte |= 1 << bit
                o[18 * ib + 2 + k] = byte


@njit(**PJIT)
def q2_0_quantize(x, qw, out):
    nrows, n = x.shape
    nb = n // 64
    for r in prange(nrows):
        xr = x[r]
        o = out[r]
        for ib in range(nb):
            amax = F32(0.0)
            for j in range(64):
                a = abs(xr[64 * ib + j])
                if a > amax:
                    amax = a
            d = amax
            idd = F32(1.0) / d if d > F32(0.0) else F32(0.0)
            put_f16(o, 18 * ib, d)
            for k in range(16):
                byte = 0
                for m in range(4):
                    v = roundf(xr[64 * ib + 4 * k + m] * idd)
                    q = (int(v) if abs(v) < F32(1e9) else -2147483648) + 1
                    q = max(0, min(3, q))
                    byte |= q << (2 * m)
                o[18 * ib + 2 + k] = byte


register_fast("F32", quantize=f32_quantize)
register_fast("F16", quantize=f16_quantize, dequantize=f16_dequantize)
register_fast("BF16", quantize=bf16_quantize)
register_fast("Q4_0", quantize=q4_0_quantize)
register_fast("Q4_1", quantize=q4_1_quantize)
register_fast("Q5_0", quantize=q5_0_quantize)
register_fast("Q5_1", quantize=q5_1_quantize)
register_fast("Q8_0", quantize=q8_0_quantize)   # numpy dequantization is faster here
register_fast("Q8_1", quantize=q8_1_quantize)
register_fast("Q1_0", quantize=q1_0_quantize)
register_fast("Q2_0", quantize=q2_0_quantize)

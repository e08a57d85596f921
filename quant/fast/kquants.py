"""Numba kernels for Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K (layouts: quant/ref/kquants.py).

One super-block (256 values) at a time, parallel over rows; C's quantize_row_<t>_ref without
weights and quantize_row_<t>_impl with them, line for line.
"""

import numpy as np
from numba import njit, prange

from ..types import register_fast
from ._common import F32, JIT, nearest_int, put_f16
from .kmath import GROUP_MAX_EPS, make_q3_quants, make_qkx, make_qp_quants, make_qx_quants

PJIT = dict(JIT, parallel=True)


@njit(inline="always", **JIT)
def sum_sq(x, n):
    s = F32(0.0)
    for j in range(n):
        s += x[j] * x[j]
    return s


@njit(inline="always", **JIT)
def scale_min_k4(j, q):
    """get_scale_min_k4 -> (sc, m)"""
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


@njit(inline="always", **JIT)
def pack2(L, qs):
    """qs[j/4 + l] = L[j+l] | L[j+l+32]<<2 | L[j+l+64]<<4 | L[j+l+96]<<6 for j in (0, 128)."""
    for j in range(0, 256, 128):
        for l in range(32):
            qs[j // 4 + l] = (L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4)
                              | (L[j + l + 96] << 6)) & 0xFF


# ---------------------------------------------------------------------------------- Q2_K
# scales:16 qs:64 d:2 dmin:2

@njit(**JIT)
def q2_k_block(x, qw, has_w, y, L, Laux, w, scales, mins, sw, Ls, Lm, tmin):
    if not has_w:
        max_scale = F32(0.0)
        max_min = F32(0.0)
        for j in range(16):
            for l in range(16):
                w[l] = abs(x[16 * j + l])
            scales[j] = make_qkx(16, 3, x[16 * j:16 * j + 16], w, L[16 * j:16 * j + 16], Laux,
                                 F32(-0.5), F32(0.1), 15, True, False, tmin)
            mins[j] = tmin[0]
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        if max_scale > F32(0.0):
            iscale = F32(15.0) / max_scale
            for j in range(16):
                y[j] = nearest_int(iscale * scales[j]) & 0xFF
            dd = put_f16(y, 80, max_scale / F32(15.0))
        else:
            for j in range(16):
                y[j] = 0
            dd = put_f16(y, 80, F32(0.0))
        if max_min > F32(0.0):
            iscale = F32(15.0) / max_min
            for j in range(16):
                y[j] = (y[j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            dmin = put_f16(y, 82, max_min / F32(15.0))
        else:
            dmin = put_f16(y, 82, F32(0.0))
    else:
        sigma2 = sum_sq(x, 256) / F32(256.0)
        for j in range(16):
            s = F32(0.0)
            for l in range(16):
                w[l] = qw[16 * j + l] * np.sqrt(sigma2 + x[16 * j + l] * x[16 * j + l])
                s += w[l]
            sw[j] = s
            scales[j] = make_qkx(16, 3, x[16 * j:16 * j + 16], w, L[16 * j:16 * j + 16], Laux,
                                 F32(-0.9), F32(0.05), 36, False, True, tmin)
            mins[j] = tmin[0]
        dm = make_qp_quants(16, 15, scales, Ls, sw)
        mm = make_qp_quants(16, 15, mins, Lm, sw)
        dd = put_f16(y, 80, dm)
        dmin = put_f16(y, 82, mm)
        for j in range(16):
            y[j] = (Ls[j] | (Lm[j] << 4)) & 0xFF
    for j in range(16):
        d = dd * F32(y[j] & 0xF)
        if d == F32(0.0):
            continue
        dm = dmin * F32(y[j] >> 4)
        for ii in range(16):
            l = nearest_int((x[16 * j + ii] + dm) / d)
            L[16 * j + ii] = max(0, min(3, l))
    pack2(L, y[16:80])


@njit(**PJIT)
def q2_k_quantize(x, qw, out):
    nrows, n = x.shape
    nb = n // 256
    has_w = qw.size > 0
    for r in prange(nrows):
        L = np.empty(256, np.int32)
        Laux = np.empty(96, np.float32)   # make_qkx scratch (3 x n)
        w = np.empty(32, np.float32)
        scales = np.empty(16, np.float32)
        mins = np.empty(16, np.float32)
        sw = np.empty(16, np.float32)
        Ls = np.empty(16, np.int32)
        Lm = np.empty(16, np.int32)
        tmin = np.empty(1, np.float32)
        for i in range(nb):
            q2_k_block(x[r, 256 * i:256 * i + 256], qw[256 * i:256 * i + 256] if has_w else qw,
                       has_w, out[r, 84 * i:84 * i + 84], L, Laux, w, scales, mins, sw, Ls, Lm, tmin)


# ---------------------------------------------------------------------------------- Q3_K
# hmask:32 qs:64 scales:12 d:2

@njit(**JIT)
def q3_k_block(x, qw, has_w, y, L, w, scales, sw, Ls):
    for j in range(12):
        y[96 + j] = 0
    sc12 = y[96:108]
    if not has_w:
        max_scale = F32(0.0)
        amax = F32(0.0)
        for j in range(16):
            scales[j] = make_q3_quants(16, 4, x[16 * j:16 * j + 16], L[16 * j:16 * j + 16], True)
            a = abs(scales[j])
            if a > amax:
                amax = a
                max_scale = scales[j]
        if max_scale != F32(0.0):
            iscale = F32(-32.0) / max_scale
            for j in range(16):
                l = max(-32, min(31, nearest_int(iscale * scales[j]))) + 32
                if j < 8:
                    sc12[j] = l & 0xF
                else:
                    sc12[j - 8] |= (l & 0xF) << 4
                l >>= 4
                sc12[j % 4 + 8] |= l << (2 * (j // 4))
            dd = put_f16(y, 108, F32(1.0) / iscale)
        else:
            dd = put_f16(y, 108, F32(0.0))
    else:
        sigma2 = F32(2.0) * sum_sq(x, 256) / F32(256.0)
        for j in range(16):
            s = F32(0.0)
            for l in range(16):
                w[l] = qw[16 * j + l] * np.sqrt(sigma2 + x[16 * j + l] * x[16 * j + l])
            for l in range(16):
                s += w[l]
            sw[j] = s
            scales[j] = make_qx_quants(16, 4, x[16 * j:16 * j + 16], L[16 * j:16 * j + 16], 1, w)
        d_block = make_qx_quants(16, 32, scales, Ls, 1, sw)
        for j in range(16):
            l = Ls[j]
            if j < 8:
                sc12[j] = l & 0xF
            else:
                sc12[j - 8] |= (l & 0xF) << 4
            l >>= 4
            sc12[j % 4 + 8] |= l << (2 * (j // 4))
        dd = put_f16(y, 108, d_block)
    for j in range(16):
        lo = (np.int64(sc12[j]) & 0xF) if j < 8 else (np.int64(sc12[j - 8]) >> 4)
        sc = (lo | (((np.int64(sc12[8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32
        d = dd * F32(sc)
        if d == F32(0.0):
            continue
        for ii in range(16):
            l = nearest_int(x[16 * j + ii] / d)
            L[16 * j + ii] = max(-4, min(3, l)) + 4
    for m in range(32):
        y[m] = 0
    for j in range(256):
        if L[j] > 3:
            y[j % 32] |= 1 << (j // 32)
            L[j] -= 4
    pack2(L, y[32:96])


@njit(**PJIT)
def q3_k_quantize(x, qw, out):
    nrows, n = x.shape
    nb = n // 256
    has_w = qw.size > 0
    for r in prange(nrows):
        L = np.empty(256, np.int32)
        w = np.empty(16, np.float32)
        scales = np.empty(16, np.float32)
        sw = np.empty(16, np.float32)
        Ls = np.empty(16, np.int32)
        for i in range(nb):
            q3_k_block(x[r, 256 * i:256 * i + 256], qw[256 * i:256 * i + 256] if has_w else qw,
                       has_w, out[r, 110 * i:110 * i + 110], L, w, scales, sw, Ls)


# ---------------------------------------------------------------------------------- Q4_K / Q5_K
# Q4_K: d:2 dmin:2 scales:12 qs:128     Q5_K: d:2 dmin:2 scales:12 qh:32 qs:128

@njit(**JIT)
def qk45_block(x, qw, has_w, y, nmax, L, Laux, w, scales, mins, sw, Ls, Lm, tmin):
    """Scale search + requantization shared by Q4_K (nmax 15) and Q5_K (nmax 31); fills y[0:16]
    and L."""
    if not has_w:
        max_scale = F32(0.0)
        max_min = F32(0.0)
        for j in range(8):
            xs = x[32 * j:32 * j + 32]
            av_x = np.sqrt(sum_sq(xs, 32) / F32(32.0))
            for l in range(32):
                w[l] = av_x + abs(xs[l])
            if nmax == 15:
                scales[j] = make_qkx(32, 15, xs, w, L[32 * j:32 * j + 32], Laux,
                                     F32(-1.0), F32(0.1), 20, False, False, tmin)
            else:
                scales[j] = make_qkx(32, 31, xs, w, L[32 * j:32 * j + 32], Laux,
                                     F32(-0.5), F32(0.1), 15, False, False, tmin)
            mins[j] = tmin[0]
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        inv_scale = F32(63.0) / max_scale if max_scale > F32(0.0) else F32(0.0)
        inv_min = F32(63.0) / max_min if max_min > F32(0.0) else F32(0.0)
        for j in range(8):
            Ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
            Lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
        d_block = max_scale / F32(63.0)
        m_block = max_min / F32(63.0)
    else:
        sigma2 = F32(2.0) * sum_sq(x, 256) / F32(256.0)
        for j in range(8):
            xs = x[32 * j:32 * j + 32]
            s = F32(0.0)
            for l in range(32):
                w[l] = qw[32 * j + l] * np.sqrt(sigma2 + xs[l] * xs[l])
            for l in range(32):
                s += w[l]
            sw[j] = s
            scales[j] = make_qkx(32, nmax, xs, w, L[32 * j:32 * j + 32], Laux,
                                 F32(-0.9), F32(0.05), 36, False, True, tmin)
            mins[j] = tmin[0]
        d_block = make_qp_quants(8, 63, scales, Ls, sw)
        m_block = make_qp_quants(8, 63, mins, Lm, sw)
        for j in range(8):
            Ls[j] = min(63, Ls[j] & 0xFF)
            Lm[j] = min(63, Lm[j] & 0xFF)
    sc = y[4:16]
    for j in range(8):
        ls = Ls[j]
        lm = Lm[j]
        if j < 4:
            sc[j] = ls
            sc[j + 4] = lm
        else:
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            sc[j - 4] |= (ls >> 4) << 6
            sc[j] |= (lm >> 4) << 6
    dd = put_f16(y, 0, d_block)
    dmin = put_f16(y, 2, m_block)
    for j in range(8):
        s, m = scale_min_k4(j, sc)
        d = dd * F32(s)
        if d == F32(0.0):
            continue
        dm = dmin * F32(m)
        for ii in range(32):
            l = nearest_int((x[32 * j + ii] + dm) / d)
            L[32 * j + ii] = max(0, min(nmax, l))


@njit(**PJIT)
def _qk45_quantize(x, qw, out, nmax, ts):
    nrows, n = x.shape
    nb = n // 256
    has_w = qw.size > 0
    for r in prange(nrows):
        L = np.empty(256, np.int32)
        Laux = np.empty(96, np.float32)   # make_qkx scratch (3 x n)
        w = np.empty(32, np.float32)
        scales = np.empty(8, np.float32)
        mins = np.empty(8, np.float32)
        sw = np.empty(8, np.float32)
        Ls = np.empty(8, np.int32)
        Lm = np.empty(8, np.int32)
        tmin = np.empty(1, np.float32)
        for i in range(nb):
            y = out[r, ts * i:ts * i + ts]
            qk45_block(x[r, 256 * i:256 * i + 256], qw[256 * i:256 * i + 256] if has_w else qw,
                       has_w, y, nmax, L, Laux, w, scales, mins, sw, Ls, Lm, tmin)
            if nmax == 15:
                for j in range(4):
                    for l in range(32):
                        y[16 + 32 * j + l] = L[64 * j + l] | (L[64 * j + l + 32] << 4)
            else:
                for l in range(32):
                    y[16 + l] = 0
                for j in range(4):
                    for l in range(32):
                        l1 = L[64 * j + l]
                        l2 = L[64 * j + l + 32]
                        if l1 > 15:
                            l1 -= 16
                            y[16 + l] |= 1 << (2 * j)
                        if l2 > 15:
                            l2 -= 16
                            y[16 + l] |= 2 << (2 * j)
                        y[48 + 32 * j + l] = l1 | (l2 << 4)


def q4_k_quantize(x, qw, out):
    _qk45_quantize(x, qw, out, 15, 144)


def q5_k_quantize(x, qw, out):
    _qk45_quantize(x, qw, out, 31, 176)


# ---------------------------------------------------------------------------------- Q6_K
# ql:128 qh:64 scales:16 d:2

@njit(**JIT)
def q6_k_block(x, qw, has_w, y, L, w, scales):
    max_scale = F32(0.0)
    max_abs = F32(0.0)
    for ib in range(16):
        xs = x[16 * ib:16 * ib + 16]
        if has_w:
            s = make_qx_quants(16, 32, xs, L[16 * ib:16 * ib + 16], 1, qw[16 * ib:16 * ib + 16])
        else:
            for l in range(16):
                w[l] = xs[l] * xs[l]
            s = make_qx_quants(16, 32, xs, L[16 * ib:16 * ib + 16], 1, w)
        scales[ib] = s
        a = abs(s)
        if a > max_abs:
            max_abs = a
            max_scale = s
    if max_abs < GROUP_MAX_EPS:
        for k in range(210):
            y[k] = 0
        return
    iscale = F32(-128.0) / max_scale
    dd = put_f16(y, 208, F32(1.0) / iscale)
    for ib in range(16):
        y[192 + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF
    for j in range(16):
        sc = np.int8(y[192 + j])
        d = dd * F32(sc)
        if d == F32(0.0):
            continue
        for ii in range(16):
            l = nearest_int(x[16 * j + ii] / d)
            L[16 * j + ii] = max(-32, min(31, l)) + 32
    for h in range(2):
        for l in range(32):
            j = 128 * h
            ql = 64 * h
            y[ql + l] = (L[j + l] & 0xF) | ((L[j + l + 64] & 0xF) << 4)
            y[ql + l + 32] = (L[j + l + 32] & 0xF) | ((L[j + l + 96] & 0xF) << 4)
            y[128 + 32 * h + l] = ((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2)
                                   | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6))


@njit(**PJIT)
def q6_k_quantize(x, qw, out):
    nrows, n = x.shape
    nb = n // 256
    has_w = qw.size > 0
    for r in prange(nrows):
        L = np.empty(256, np.int32)
        w = np.empty(16, np.float32)
        scales = np.empty(16, np.float32)
        for i in range(nb):
            q6_k_block(x[r, 256 * i:256 * i + 256], qw[256 * i:256 * i + 256] if has_w else qw,
                       has_w, out[r, 210 * i:210 * i + 210], L, w, scales)


# ---------------------------------------------------------------------------------- Q8_K
# d:4 (f32) qs:256 bsums:32

@njit(**PJIT)
def q8_k_quantize(x, qw, out):
    nrows, n = x.shape
    nb = n // 256
    for r in prange(nrows):
        dbuf = np.empty(1, np.float32)
        dbytes = dbuf.view(np.uint8)
        for i in range(nb):
            xs = x[r, 256 * i:256 * i + 256]
            y = out[r, 292 * i:292 * i + 292]
            mx = F32(0.0)
            amax = F32(0.0)
            for j in range(256):
                a = abs(xs[j])
                if a > amax:
                    amax = a
                    mx = xs[j]
            if amax == F32(0.0):
                for k in range(292):
                    y[k] = 0
                continue
            iscale = F32(-127.0) / mx
            for j in range(256):
                y[4 + j] = min(127, nearest_int(iscale * xs[j])) & 0xFF
            for j in range(16):
                s = 0
                for ii in range(16):
                    s += np.int8(y[4 + 16 * j + ii])
                y[260 + 2 * j] = s & 0xFF
                y[261 + 2 * j] = (s >> 8) & 0xFF
            dbuf[0] = F32(1.0) / iscale
            for k in range(4):
                y[k] = dbytes[k]


register_fast("Q2_K", quantize=q2_k_quantize)
register_fast("Q3_K", quantize=q3_k_quantize)
register_fast("Q4_K", quantize=q4_k_quantize)
register_fast("Q5_K", quantize=q5_k_quantize)
register_fast("Q6_K", quantize=q6_k_quantize)
register_fast("Q8_K", quantize=q8_k_quantize)

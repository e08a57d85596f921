"""Numba IQ4_NL / IQ4_XS (ggml-quants.c: quantize_row_iq4_nl_impl with ntry = 7, the
ggml_quantize_chunk path). Bit-identical to quant/ref/iq4.py.

IQ4_NL block (18 bytes):  d:2 (f16) | qs:16  (qs[j] = L[j] | L[j+16] << 4)
IQ4_XS block (136 bytes): d:2 (f16) | scales_h:2 (u16, 2 bits per sub-block) | scales_l:4 | qs:128
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..ref.iq_tables import kvalues_iq4nl
from ..types import register_fast
from .iq_common import F32, as_blocks, best_index_int8, nearest_int, put_f16

GROUP_MAX_EPS = F32(1e-15)
NTRY = 7


@njit(cache=True)
def _iq4_block(x, qw, has_w, values, ntry, nsub, L, weight, scales, qs, sc):
    """One super-block of nsub*32 values. Fills L (nsub*32), qs, sc (scales_h/l bytes); returns d."""
    sbs = nsub * 32
    sigma2 = F32(0.0)
    for j in range(sbs):
        sigma2 += x[j] * x[j]
    sigma2 *= F32(2.0) / F32(sbs)
    max_scale = F32(0.0)
    amax_scale = F32(0.0)
    for ib in range(nsub):
        o = ib * 32
        for j in range(32):
            if has_w:
                weight[j] = qw[o + j] * np.sqrt(sigma2 + x[o + j] * x[o + j])
            else:
                weight[j] = x[o + j] * x[o + j]
        amax = F32(0.0)
        mx = F32(0.0)
        for j in range(32):
            ax = abs(x[o + j])
            if ax > amax:
                amax = ax
                mx = x[o + j]
        if amax < GROUP_MAX_EPS:
            scales[ib] = F32(0.0)
            continue
        v0 = F32(values[0])
        d = -mx / v0 if ntry > 0 else mx / v0
        idd = F32(1.0) / d
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for j in range(32):
            al = idd * x[o + j]
            l = best_index_int8(16, values, al)
            L[o + j] = l
            q = F32(values[l])
            w = weight[j]
            sumqx += w * q * x[o + j]
            sumq2 += w * q * q
        d = sumqx / sumq2 if sumq2 > F32(0.0) else F32(0.0)
        best = d * sumqx
        for itry in range(-ntry, ntry + 1):
            idd = F32(itry + values[0]) / mx
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for j in range(32):
                al = idd * x[o + j]
                l = best_index_int8(16, values, al)
                q = F32(values[l])
                w = weight[j]
                sumqx += w * q * x[o + j]
                sumq2 += w * q * q
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales[ib] = d
        abs_d = abs(d)
        if abs_d > amax_scale:
            amax_scale = abs_d
            max_scale = d

    if nsub > 1:
        for k in range(sc.shape[0]):
            sc[k] = 0
        dout = -max_scale / F32(32.0)
        idd = F32(1.0) / dout if dout != F32(0.0) else F32(0.0)
        sh = 0
        for ib in range(nsub):
            l = nearest_int(idd * scales[ib])
            l = max(-32, min(31, l))
            dl = dout * F32(l)
            idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
            o = ib * 32
            for j in range(32):
                L[o + j] = best_index_int8(16, values, idl * x[o + j])
            l += 32
            if ib % 2 == 0:
                sc[2 + ib // 2] = l & 0xF
            else:
                sc[2 + ib // 2] |= (l & 0xF) << 4
            sh |= (l >> 4) << (2 * (ib % 8))
        sc[0] = sh & 0xFF
        sc[1] = (sh >> 8) & 0xFF
    else:
        dout = scales[0]
        if ntry > 0:
            idd = F32(1.0) / scales[0] if scales[0] != F32(0.0) else F32(0.0)
            for j in range(sbs):
                L[j] = best_index_int8(16, values, idd * x[j])

    for i in range(sbs // 32):
        for j in range(16):
            qs[16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4)
    return dout


@njit(parallel=True, cache=True)
def _quantize_iq4(x, qw, values, nsub, out, d):
    nb = x.shape[0]
    nbr = qw.shape[0]
    has_w = nbr > 0
    qoff = 2 if nsub == 1 else 8
    for i in prange(nb):
        L = np.zeros(nsub * 32, np.uint8)
        weight = np.empty(32, np.float32)
        scales = np.empty(nsub, np.float32)
        sc = np.zeros(6, np.uint8)
        w = qw[i % nbr] if has_w else x[i]
        d[i] = _iq4_block(x[i], w, has_w, values, NTRY, nsub, L, weight, scales,
                          out[i, qoff:], sc)
        if nsub > 1:
            for k in range(6):
                out[i, 2 + k] = sc[k]


def _quantize(x, qw, out, nsub):
    bs, ts = nsub * 32, 18 if nsub == 1 else 136
    xb, wb, ob = as_blocks(x, qw, out, bs, ts)
    d = np.empty(xb.shape[0], np.float32)
    _quantize_iq4(xb, wb, kvalues_iq4nl(), nsub, ob, d)
    put_f16(ob, 0, d)


def quantize_iq4_nl(x, qw, out):
    """x: f32[nrows, n] (or blocks), qw: imatrix f32[n] / empty / None, out: u8[nrows, row bytes]."""
    _quantize(x, qw, out, 1)


def quantize_iq4_xs(x, qw, out):
    _quantize(x, qw, out, 8)


register_fast("IQ4_NL", quantize=quantize_iq4_nl)
register_fast("IQ4_XS", quantize=quantize_iq4_xs)

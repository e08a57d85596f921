"""Numba IQ1_S / IQ1_M (ggml-quants.c quantize_row_iq1_s_impl, quantize_row_iq1_m_impl),
transliterated loop for loop. Bit-identical to quant/ref/iq1.py.

IQ1_S block (50 bytes): d:2 | qs:32 (grid index low 8 bits) | qh:8 x u16 (3 index bits per group,
                        scale 3 bits << 12, delta sign << 15)
IQ1_M block (56 bytes): qs:32 | qh:16 (3 index bits + delta sign bit per group of 8) | scales:8
                        (4 x u16: 4 x 3-bit scales; the fp16 d spread over the top nibbles)
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..ref.iq_common import require_weights
from ..ref.iq_tables import search_grid
from ..types import register_fast
from .iq_common import F32, FLT_MAX, as_blocks, nearest_int, put_f16

DELTA = F32(0.125)
EPS_S = F32(1e-12)
EPS_M = F32(1e-7)


@njit(inline="always", cache=True)
def _sort_pairs(xb, o, n, vals, idx):
    """Stable ascending sort of xb[o:o+n] (glibc qsort = merge sort here), indices into idx."""
    for j in range(n):
        v = xb[o + j]
        k = j
        while k > 0 and vals[k - 1] > v:
            vals[k] = vals[k - 1]
            idx[k] = idx[k - 1]
            k -= 1
        vals[k] = v
        idx[k] = j


@njit(inline="always", cache=True)
def _find_best_neighbour2(nbrs, off, grid, xb, o, weight, wo, scale, xx, L, lo):
    """iq1_find_best_neighbour2 on xb[o:o+8]; writes L[lo:lo+8]; returns the grid index."""
    n = int(nbrs[off])
    best = FLT_MAX
    gi = -1
    for j in range(1, n + 1):
        g = int(nbrs[off + j])
        d2 = F32(0.0)
        for i in range(8):
            q = xx[(grid[g, i] - 1) // 2]
            w = weight[wo + i]
            diff = scale * q - xb[o + i]
            d2 += w * diff * diff
        if d2 < best:
            best = d2
            gi = g
    for i in range(8):
        L[lo + i] = (grid[gi, i] - 1) // 2
    return gi


@njit(cache=True)
def _iq1s_block(x, qw, grid, kmap, nbrs, out, scales, shifts, weight, sumx, sumw, vals, idx, L, index):
    x_p = np.array([F32(-1.0) + DELTA, DELTA, F32(1.0) + DELTA], np.float32)
    x_m = np.array([F32(-1.0) - DELTA, -DELTA, F32(1.0) - DELTA], np.float32)
    out[:] = 0
    sumx2 = F32(0.0)
    for i in range(256):
        sumx2 += x[i] * x[i]
    sigma2 = F32(2.0) * sumx2 / F32(256.0)
    max_scale = F32(0.0)
    for ib in range(8):
        o = 32 * ib
        for i in range(32):
            weight[i] = qw[o + i] * np.sqrt(sigma2 + x[o + i] * x[o + i])
        mx = abs(x[o])
        for i in range(1, 32):
            a = abs(x[o + i])
            mx = mx if mx > a else a
        if mx < EPS_S:
            scales[ib] = F32(0.0)
            shifts[ib] = 1
            continue
        _sort_pairs(x, o, 32, vals, idx)
        sumx[0] = F32(0.0)
        sumw[0] = F32(0.0)
        for j in range(32):
            i = idx[j]
            sumx[j + 1] = sumx[j] + weight[i] * x[o + i]
            sumw[j + 1] = sumw[j] + weight[i]
        best_score = -FLT_MAX
        scale = mx
        besti1 = -1
        besti2 = -1
        best_shift = 0
        for i1 in range(33):
            for i2 in range(i1, 33):
                sumqx = (sumx[i1] - sumx[0]) * x_p[0] + (sumx[i2] - sumx[i1]) * x_p[1] + (sumx[32] - sumx[i2]) * x_p[2]
                sumq2 = ((sumw[i1] - sumw[0]) * x_p[0] * x_p[0] + (sumw[i2] - sumw[i1]) * x_p[1] * x_p[1]
                         + (sumw[32] - sumw[i2]) * x_p[2] * x_p[2])
                if sumq2 > F32(0.0) and sumqx * sumqx > best_score * sumq2:
                    scale = sumqx / sumq2
                    best_score = scale * sumqx
                    besti1 = i1
                    besti2 = i2
                    best_shift = 1
                sumqx = (sumx[i1] - sumx[0]) * x_m[0] + (sumx[i2] - sumx[i1]) * x_m[1] + (sumx[32] - sumx[i2]) * x_m[2]
                sumq2 = ((sumw[i1] - sumw[0]) * x_m[0] * x_m[0] + (sumw[i2] - sumw[i1]) * x_m[1] * x_m[1]
                         + (sumw[32] - sumw[i2]) * x_m[2] * x_m[2])
                if sumq2 > F32(0.0) and sumqx * sumqx > best_score * sumq2:
                    scale = sumqx / sumq2
                    best_score = scale * sumqx
                    besti1 = i1
                    besti2 = i2
                    best_shift = -1
        if besti1 < 0 or besti2 < 0 or best_shift == 0:
            scales[ib] = F32(0.0)
            shifts[ib] = 1
            continue
        for j in range(32):
            L[idx[j]] = 0 if j < besti1 else (1 if j < besti2 else 2)
        if scale < F32(0.0):
            for j in range(32):
                L[j] = 2 - L[j]
            scale = -scale
            best_shift = -best_shift
        xx = x_p if best_shift == 1 else x_m
        all_on_grid = True
        for k in range(4):
            u = 0
            for j in range(8):
                u |= L[8 * k + j] << (2 * j)
            gi = kmap[u]
            if gi < 0:
                all_on_grid = False
                gi = _find_best_neighbour2(nbrs, -gi - 1, grid, x, o + 8 * k, weight, 8 * k, scale, xx, L, 8 * k)
            index[k] = gi
        if not all_on_grid:
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for k in range(4):
                for j in range(8):
                    w = weight[8 * k + j]
                    q = xx[(grid[index[k], j] - 1) // 2]
                    sumqx += w * q * x[o + 8 * k + j]
                    sumq2 += w * q * q
            if sumqx > F32(0.0) and sumq2 > F32(0.0):
                scale = sumqx / sumq2
        h = 0
        for k in range(4):
            out[2 + 4 * ib + k] = index[k] & 255
            h |= (index[k] >> 8) << (3 * k)
        out[34 + 2 * ib] = h & 255
        out[35 + 2 * ib] = (h >> 8) & 255
        scales[ib] = scale
        shifts[ib] = best_shift
        max_scale = max_scale if max_scale > scale else scale

    if max_scale == F32(0.0):
        return F32(0.0)
    d = max_scale / F32(15.0)
    idd = F32(1.0) / d
    for ib in range(8):
        l = nearest_int(F32(0.5) * (idd * scales[ib] - F32(1.0)))
        l = max(0, min(7, l))
        if shifts[ib] == -1:
            l |= 8
        out[35 + 2 * ib] |= l << 4
    return d * F32(1.125)


@njit(cache=True)
def _iq1m_block(x, qw, has_w, grid, kmap, nbrs, out, scales, shifts, weight, vals, idx, L, index, px, pw):
    """Writes qs/qh/scales (without d's nibbles) into out; returns the f32 d whose fp16 bits go
    into the top nibbles of the scales."""
    x_p = np.array([F32(-1.0) + DELTA, DELTA, F32(1.0) + DELTA], np.float32)
    x_m = np.array([F32(-1.0) - DELTA, -DELTA, F32(1.0) - DELTA], np.float32)
    out[:] = 0
    sumx2 = F32(0.0)
    for i in range(256):
        sumx2 += x[i] * x[i]
    sigma2 = F32(2.0) * sumx2 / F32(256.0)
    max_scale = F32(0.0)
    p2 = x_p[2]
    m2 = x_m[2]
    cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1]
    cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2]
    cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1]
    cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2]
    sumqx = np.empty(4, np.float32)
    sumq2 = np.empty(4, np.float32)
    for ib in range(16):
        o = 16 * ib
        for i in range(16):
            if has_w:
                weight[i] = qw[o + i] * np.sqrt(sigma2 + x[o + i] * x[o + i])
            else:
                weight[i] = x[o + i] * x[o + i]
        mx = abs(x[o])
        for i in range(1, 16):
            a = abs(x[o + i])
            mx = mx if mx > a else a
        if mx < EPS_M:
            scales[ib] = F32(0.0)
            shifts[ib] = 0
            continue
        _sort_pairs(x, o, 16, vals, idx)
        best_score = -FLT_MAX
        scale = mx
        besti1 = -1
        besti2 = -1
        best_k = -1
        px[0, 0] = F32(0.0)
        px[1, 0] = F32(0.0)
        pw[0, 0] = F32(0.0)
        pw[1, 0] = F32(0.0)
        for j in range(16):
            i = idx[j]
            h = 0 if i < 8 else 1
            px[h, j + 1] = px[h, j] + weight[i] * x[o + i]
            px[1 - h, j + 1] = px[1 - h, j]
            pw[h, j + 1] = pw[h, j] + weight[i]
            pw[1 - h, j + 1] = pw[1 - h, j]
        txs0 = px[0, 16]
        txs1 = px[1, 16]
        tws0 = pw[0, 16]
        tws1 = pw[1, 16]
        for i1 in range(17):
            for i2 in range(i1, 17):
                sx0 = px[0, i1] + px[0, i2]
                qxp0 = txs0 * p2 - sx0
                qxm0 = txs0 * m2 - sx0
                q2p0 = tws0 * p2 * p2 + pw[0, i1] * cp1 + pw[0, i2] * cp2
                q2m0 = tws0 * m2 * m2 + pw[0, i1] * cm1 + pw[0, i2] * cm2
                sx1 = px[1, i1] + px[1, i2]
                qxp1 = txs1 * p2 - sx1
                qxm1 = txs1 * m2 - sx1
                q2p1 = tws1 * p2 * p2 + pw[1, i1] * cp1 + pw[1, i2] * cp2
                q2m1 = tws1 * m2 * m2 + pw[1, i1] * cm1 + pw[1, i2] * cm2
                sumqx[0] = qxp0 + qxp1
                sumqx[1] = qxp0 + qxm1
                sumqx[2] = qxm0 + qxp1
                sumqx[3] = qxm0 + qxm1
                sumq2[0] = q2p0 + q2p1
                sumq2[1] = q2p0 + q2m1
                sumq2[2] = q2m0 + q2p1
                sumq2[3] = q2m0 + q2m1
                for k in range(4):
                    if sumq2[k] > F32(0.0) and sumqx[k] * sumqx[k] > best_score * sumq2[k]:
                        scale = sumqx[k] / sumq2[k]
                        best_score = scale * sumqx[k]
                        besti1 = i1
                        besti2 = i2
                        best_k = k
        if besti1 < 0 or besti2 < 0 or best_k < 0:
            scales[ib] = F32(0.0)
            shifts[ib] = 0
            continue
        for j in range(16):
            L[idx[j]] = 0 if j < besti1 else (1 if j < besti2 else 2)
        if scale < F32(0.0):
            for j in range(16):
                L[j] = 2 - L[j]
            scale = -scale
            best_k = 3 - best_k
        all_on_grid = True
        for k in range(2):
            if k == 0:
                xx = x_p if best_k < 2 else x_m
            else:
                xx = x_p if best_k % 2 == 0 else x_m
            u = 0
            for j in range(8):
                u |= L[8 * k + j] << (2 * j)
            gi = kmap[u]
            if gi < 0:
                all_on_grid = False
                gi = _find_best_neighbour2(nbrs, -gi - 1, grid, x, o + 8 * k, weight, 8 * k, scale, xx, L, 8 * k)
            index[k] = gi
        if not all_on_grid:
            sqx = F32(0.0)
            sq2 = F32(0.0)
            for k in range(2):
                if k == 0:
                    xx = x_p if best_k < 2 else x_m
                else:
                    xx = x_p if best_k % 2 == 0 else x_m
                for j in range(8):
                    w = weight[8 * k + j]
                    q = xx[(grid[index[k], j] - 1) // 2]
                    sqx += w * q * x[o + 8 * k + j]
                    sq2 += w * q * q
            if sqx > F32(0.0) and sq2 > F32(0.0):
                scale = sqx / sq2
        out[2 * ib] = index[0] & 255
        out[2 * ib + 1] = index[1] & 255
        out[32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
        scales[ib] = scale
        shifts[ib] = best_k
        max_scale = max_scale if max_scale > scale else scale

    if max_scale == F32(0.0):
        return np.nan                      # block stays all zero
    d = max_scale / F32(15.0)
    idd = F32(1.0) / d
    sqx = F32(0.0)
    sq2 = F32(0.0)
    for ib in range(16):
        l = nearest_int(F32(0.5) * (idd * scales[ib] - F32(1.0)))
        l = max(0, min(7, l))
        sc = 48 + 2 * (ib // 4)
        v = l << (3 * (ib % 4))
        out[sc] |= v & 255
        out[sc + 1] |= v >> 8
        sh = shifts[ib]
        out[32 + ib] |= 0x00 if sh == 0 else (0x80 if sh == 1 else (0x08 if sh == 2 else 0x88))
        o = 16 * ib
        for i in range(16):
            if has_w:
                weight[i] = qw[o + i] * np.sqrt(sigma2 + x[o + i] * x[o + i])
            else:
                weight[i] = x[o + i] * x[o + i]
        for k in range(2):
            if k == 0:
                xx = x_p if sh < 2 else x_m
            else:
                xx = x_p if sh % 2 == 0 else x_m
            g = int(out[2 * ib + k]) + ((int(out[32 + ib]) << (8 - 4 * k)) & 0x700)
            for j in range(8):
                w = weight[8 * k + j]
                q = xx[(grid[g, j] - 1) // 2] * F32(2 * l + 1)
                sqx += w * q * x[o + 8 * k + j]
                sq2 += w * q * q
    if sq2 > F32(0.0):
        d = sqx / sq2
    return d * F32(1.1125)


@njit(parallel=True, cache=True)
def _quantize_iq1(x, qw, grid, kmap, nbrs, is_m, out, d):
    nb = x.shape[0]
    nbr = qw.shape[0]
    has_w = nbr > 0
    for ib in prange(nb):
        scales = np.empty(16, np.float32)
        shifts = np.zeros(16, np.int64)
        weight = np.empty(32, np.float32)
        sumx = np.empty(33, np.float32)
        sumw = np.empty(33, np.float32)
        vals = np.empty(32, np.float32)
        idx = np.zeros(32, np.int64)
        L = np.zeros(32, np.int64)
        index = np.zeros(4, np.int64)
        px = np.empty((2, 17), np.float32)
        pw = np.empty((2, 17), np.float32)
        w = qw[ib % nbr] if has_w else x[ib]
        if is_m:
            d[ib] = _iq1m_block(x[ib], w, has_w, grid, kmap, nbrs, out[ib], scales, shifts, weight,
                                vals, idx, L, index, px, pw)
        else:
            d[ib] = _iq1s_block(x[ib], w, grid, kmap, nbrs, out[ib], scales, shifts, weight, sumx,
                                sumw, vals, idx, L, index)


def quantize_iq1_s(x, qw, out):
    xb, wb, ob = as_blocks(x, qw, out, 256, 50)
    require_weights(wb, "IQ1_S")
    sg = search_grid("iq1s")
    d = np.empty(xb.shape[0], np.float32)
    _quantize_iq1(xb, wb, sg.grid, sg.kmap, sg.neighbours, False, ob, d)
    put_f16(ob, 0, d)


def quantize_iq1_m(x, qw, out):
    xb, wb, ob = as_blocks(x, qw, out, 256, 56)
    sg = search_grid("iq1s")
    d = np.empty(xb.shape[0], np.float32)
    _quantize_iq1(xb, wb, sg.grid, sg.kmap, sg.neighbours, True, ob, d)
    set_iq1m_scale(ob, d)


def set_iq1m_scale(ob, d):
    """OR the fp16 bits of d (NaN: empty block, left as is) into the top nibble of each u16 scale."""
    ok = ~np.isnan(d)
    u = np.where(ok, d, 0).astype(np.float16).view(np.uint16).astype(np.int64)
    for k in range(4):
        nib = ((u >> (4 * k)) & 0xF) << 4
        ob[:, 49 + 2 * k] |= np.where(ok, nib, 0).astype(np.uint8)


register_fast("IQ1_S", quantize=quantize_iq1_s)
register_fast("IQ1_M", quantize=quantize_iq1_m)

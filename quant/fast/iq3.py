"""Numba IQ3_XXS / IQ3_S (ggml-quants.c quantize_row_iq3_xxs_impl(256, ...) and
quantize_row_iq3_s_impl(32, ...)), transliterated loop for loop. Bit-identical to quant/ref/iq3.py.

IQ3_XXS block (98 bytes):  d:2 | qs:64 (grid index per 4 values) | scales_and_signs:32 (8 x u32:
                           4 x 7 sign bits, scale in bits 28..31)
IQ3_S block (110 bytes):   d:2 | qs:64 | qh:8 (bit 8 of each grid index) | signs:32 | scales:4
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..ref.iq_tables import search_grid
from ..types import register_fast
from .iq_common import F32, FLT_MAX, as_blocks, nearest_int, put_f16

EPS_XXS = F32(1e-8)


@njit(inline="always", cache=True)
def _find_best_neighbour(nbrs, off, grid, xval, waux, o, scale, L):
    """iq3_find_best_neighbour on xval[o:o+4]; writes L[o:o+4]; returns the grid index."""
    n = int(nbrs[off])
    best_d2 = FLT_MAX
    gi = -1
    for j in range(1, n + 1):
        g = int(nbrs[off + j])
        d2 = F32(0.0)
        for i in range(4):
            q = F32(grid[g, i])
            diff = scale * q - xval[o + i]
            d2 += waux[o + i] * diff * diff
        if d2 < best_d2:
            best_d2 = d2
            gi = g
    for i in range(4):
        L[o + i] = (grid[gi, i] - 1) // 2
    return gi


@njit(cache=True)
def _iq3_block(x, qw, has_w, grid, kmap, nbrs, is_xxs, out, scales, weight, xval, waux, L, Laux,
               on_grid, on_grid_aux, signs):
    """One 256-value super-block; writes everything but d into out; returns max_scale/31*fudge."""
    kMaxQ = 8
    out[:] = 0
    sumx2 = F32(0.0)
    for i in range(256):
        sumx2 += x[i] * x[i]
    sigma2 = F32(2.0) * sumx2 / F32(256.0)
    max_scale = F32(0.0)
    qs_pos = 2                      # IQ3_S: qs pointer only advances for non-zero sub-blocks
    sg_pos = 2 + 64 + 8
    for ib in range(8):
        o = 32 * ib
        for i in range(32):
            if has_w:
                weight[i] = qw[o + i] * np.sqrt(sigma2 + x[o + i] * x[o + i])
            else:
                weight[i] = x[o + i] * x[o + i]
        for i in range(32):
            waux[i] = np.sqrt(weight[i])
        for k in range(4):
            nflip = 0
            s = 0
            for i in range(8):
                v = x[o + 8 * k + i]
                if v >= F32(0.0):
                    xval[8 * k + i] = v
                else:
                    xval[8 * k + i] = -v
                    nflip += 1
                    s |= 1 << i
            if is_xxs and nflip % 2 == 1:
                imin = 0
                mn = weight[8 * k] * x[o + 8 * k] * x[o + 8 * k]
                for i in range(1, 8):
                    ax = weight[8 * k + i] * x[o + 8 * k + i] * x[o + 8 * k + i]
                    if ax < mn:
                        mn = ax
                        imin = i
                xval[8 * k + imin] = -xval[8 * k + imin]
                s ^= 1 << imin
            signs[k] = s & 127 if is_xxs else s
        mx = xval[0]
        for i in range(1, 32):
            mx = mx if mx > xval[i] else xval[i]
        for i in range(32):
            L[i] = 0
        if (is_xxs and mx < EPS_XXS) or (not is_xxs and mx == F32(0.0)):
            scales[ib] = F32(0.0)
            continue
        best = F32(0.0)
        scale = mx / F32(2 * kMaxQ - 1)
        for k in range(8):
            on_grid[k] = is_xxs
        nis = 15 if is_xxs else 9
        for is_ in range(-nis, nis + 1):
            idd = (F32(2 * kMaxQ - 1) + F32(is_) * F32(0.2)) / mx
            this_scale = F32(1.0) / idd
            for k in range(8):
                u = 0
                for i in range(4):
                    l = nearest_int(F32(0.5) * (idd * xval[4 * k + i] - F32(1.0)))
                    l = max(0, min(kMaxQ - 1, l))
                    Laux[4 * k + i] = l
                    u |= l << (3 * i)
                gi = kmap[u]
                on_grid_aux[k] = True
                if gi < 0:
                    on_grid_aux[k] = False
                    _find_best_neighbour(nbrs, -gi - 1, grid, xval, waux, 4 * k, this_scale, Laux)
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for i in range(32):
                w = weight[i]
                q = F32(2 * Laux[i] + 1)
                sumqx += w * xval[i] * q
                sumq2 += w * q * q
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                scale = sumqx / sumq2
                best = scale * sumqx
                for i in range(32):
                    L[i] = Laux[i]
                for k in range(8):
                    on_grid[k] = on_grid_aux[k]
        n_not = 0
        for k in range(8):
            if not on_grid[k]:
                n_not += 1
        if n_not > 0 and scale > F32(0.0):
            idd = F32(1.0) / scale
            for k in range(8):
                if is_xxs and on_grid[k]:
                    continue
                u = 0
                for i in range(4):
                    l = nearest_int(F32(0.5) * (idd * xval[4 * k + i] - F32(1.0)))
                    l = max(0, min(kMaxQ - 1, l))
                    u |= l << (3 * i)
                gi = kmap[u]
                if gi < 0:
                    gi = _find_best_neighbour(nbrs, -gi - 1, grid, xval, waux, 4 * k, scale, L)
                for i in range(4):
                    L[4 * k + i] = (grid[gi, i] - 1) // 2
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for i in range(32):
                w = weight[i]
                q = F32(2 * L[i] + 1)
                sumqx += w * xval[i] * q
                sumq2 += w * q * q
            if sumq2 > F32(0.0):
                scale = sumqx / sumq2
        if scale < F32(0.0):
            scale = -scale
            for k in range(4):
                signs[k] = (~signs[k]) & (127 if is_xxs else 255)
        for k in range(8):
            u = 0
            for i in range(4):
                u |= L[4 * k + i] << (3 * i)
            gi = kmap[u]
            if is_xxs:
                out[2 + 8 * ib + k] = gi
            else:
                out[qs_pos + k] = gi & 255
                out[2 + 64 + (ib * 8 + k) // 8] |= (gi >> 8) << ((ib * 8 + k) % 8)
        if is_xxs:
            ss = signs[0] | (signs[1] << 7) | (signs[2] << 14) | (signs[3] << 21)
            for b in range(4):
                out[2 + 64 + 4 * ib + b] = (ss >> (8 * b)) & 255
        else:
            qs_pos += 8
            for k in range(4):
                out[sg_pos + k] = signs[k]
            sg_pos += 4
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale

    if max_scale == F32(0.0):
        if is_xxs:                  # ggml: memset(qs, 0, quant_size); IQ3_S keeps what it wrote
            out[:] = 0
        return F32(0.0)
    d = max_scale / F32(31.0)
    idd = F32(1.0) / d
    for ib in range(8):
        l = nearest_int(F32(0.5) * (idd * scales[ib] - F32(1.0)))
        l = max(0, min(15, l))
        if is_xxs:
            out[2 + 64 + 4 * ib + 3] |= l << 4
        elif ib % 2 == 0:
            out[2 + 64 + 8 + 32 + ib // 2] = l
        else:
            out[2 + 64 + 8 + 32 + ib // 2] |= l << 4
    return d * (F32(1.0125) if is_xxs else F32(1.033))


@njit(parallel=True, cache=True)
def _quantize_iq3(x, qw, grid, kmap, nbrs, is_xxs, out, d):
    nb = x.shape[0]
    nbr = qw.shape[0]
    has_w = nbr > 0
    for ib in prange(nb):
        scales = np.empty(8, np.float32)
        weight = np.empty(32, np.float32)
        xval = np.empty(32, np.float32)
        waux = np.empty(32, np.float32)
        L = np.zeros(32, np.int64)
        Laux = np.zeros(32, np.int64)
        on_grid = np.zeros(8, np.bool_)
        on_grid_aux = np.zeros(8, np.bool_)
        signs = np.zeros(4, np.int64)
        w = qw[ib % nbr] if has_w else x[ib]
        d[ib] = _iq3_block(x[ib], w, has_w, grid, kmap, nbrs, is_xxs, out[ib], scales, weight, xval,
                           waux, L, Laux, on_grid, on_grid_aux, signs)


def _quantize(x, qw, out, is_xxs):
    ts = 98 if is_xxs else 110
    xb, wb, ob = as_blocks(x, qw, out, 256, ts)
    sg = search_grid("iq3xxs" if is_xxs else "iq3s")
    d = np.empty(xb.shape[0], np.float32)
    _quantize_iq3(xb, wb, sg.grid, sg.kmap, sg.neighbours, is_xxs, ob, d)
    put_f16(ob, 0, d)


def quantize_iq3_xxs(x, qw, out):
    _quantize(x, qw, out, True)


def quantize_iq3_s(x, qw, out):
    _quantize(x, qw, out, False)


register_fast("IQ3_XXS", quantize=quantize_iq3_xxs)
register_fast("IQ3_S", quantize=quantize_iq3_s)

"""Numba IQ2_XXS / IQ2_XS / IQ2_S (ggml-quants.c quantize_row_iq2_xxs_impl,
quantize_row_iq2_xs_impl, quantize_row_iq2_s_impl), transliterated loop for loop.
Bit-identical to quant/ref/iq2.py.

IQ2_XXS block (66 bytes): d:2 | 8 x (u32 four grid indices (u8), u32 4 x 7 sign bits + scale<<28)
IQ2_XS block (74 bytes):  d:2 | qs:32 x u16 (grid index 9 bits | 7 sign bits << 9) | scales:8 (nibbles)
IQ2_S block (82 bytes):   d:2 | qs:32 (grid index low 8 bits) | signs:32 | qh:8 (2 bits per index)
                          | scales:8 (nibbles)
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..ref.iq_common import require_weights
from ..ref.iq_tables import search_grid
from ..types import register_fast
from .kmath import make_qp_quants
from .iq_common import F32, FLT_MAX, as_blocks, nearest_int, put_f16

XXS, XS, S = 0, 1, 2
GROUP_MAX_EPS = F32(1e-15)
EPS_IQ2_S = F32(1e-8)


@njit(inline="always", cache=True)
def _find_best_neighbour(nbrs, off, grid, xval, waux, o, scale, L):
    """iq2_find_best_neighbour on xval[o:o+8]; writes L[o:o+8]; returns the grid index."""
    n = int(nbrs[off])
    best_d2 = FLT_MAX
    gi = -1
    for j in range(1, n + 1):
        g = int(nbrs[off + j])
        d2 = F32(0.0)
        for i in range(8):
            q = F32(grid[g, i])
            diff = scale * q - xval[o + i]
            d2 += waux[o + i] * diff * diff
        if d2 < best_d2:
            best_d2 = d2
            gi = g
    for i in range(8):
        L[o + i] = (grid[gi, i] - 1) // 2
    return gi


@njit(cache=True)
def _iq2_block(x, qw, has_w, grid, kmap, nbrs, kind, out, scales, weight, xval, waux, L, Laux, Lqp,
               on_grid, on_grid_aux, signs):
    """One 256-value super-block; writes everything but d into out; returns the f32 d to store."""
    kMaxQ = 3
    bsz = 32 if kind == XXS else 16
    ng = bsz // 8
    nsb = 256 // bsz
    out[:] = 0
    sumx2 = F32(0.0)
    for i in range(256):
        sumx2 += x[i] * x[i]
    if kind == S:
        sigma2 = F32(2.0) * sumx2 / F32(256.0)
    else:
        sigma2 = sumx2 / F32(256.0)
    max_scale = F32(0.0)
    for ib in range(nsb):
        o = bsz * ib
        for i in range(bsz):
            if has_w:
                weight[i] = qw[o + i] * np.sqrt(sigma2 + x[o + i] * x[o + i])
            else:
                weight[i] = F32(0.25) * sigma2 + x[o + i] * x[o + i]
        for i in range(bsz):
            waux[i] = np.sqrt(weight[i])
        for k in range(ng):
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
            if kind != S and nflip % 2 == 1:
                imin = 0
                mn = weight[8 * k] * x[o + 8 * k] * x[o + 8 * k]
                for i in range(1, 8):
                    ax = weight[8 * k + i] * x[o + 8 * k + i] * x[o + 8 * k + i]
                    if ax < mn:
                        mn = ax
                        imin = i
                xval[8 * k + imin] = -xval[8 * k + imin]
                s ^= 1 << imin
            signs[k] = s & 127 if kind != S else s
        mx = xval[0]
        for i in range(1, bsz):
            mx = mx if mx > xval[i] else xval[i]
        for i in range(bsz):
            L[i] = 0
        if mx < (EPS_IQ2_S if kind == S else GROUP_MAX_EPS):
            scales[ib] = F32(0.0)
            continue
        best = F32(0.0)
        if kind == XXS:
            scale = make_qp_quants(32, kMaxQ + 1, xval, Lqp, weight)
            for i in range(32):
                L[i] = Lqp[i]
            eff_max = scale * F32(kMaxQ)
            if eff_max <= F32(0.0):
                scales[ib] = F32(0.0)
                for i in range(32):
                    L[i] = 0
                continue
            denom = eff_max
            nis = 6
        else:
            scale = mx / F32(2 * kMaxQ - 1)
            denom = mx
            nis = 9
        for k in range(ng):
            on_grid[k] = True
        for is_ in range(-nis, nis + 1):
            idd = (F32(2 * kMaxQ - 1) + F32(is_) * F32(0.1)) / denom
            this_scale = F32(1.0) / idd
            for k in range(ng):
                u = 0
                for i in range(8):
                    l = nearest_int(F32(0.5) * (idd * xval[8 * k + i] - F32(1.0)))
                    l = max(0, min(kMaxQ - 1, l))
                    Laux[8 * k + i] = l
                    u |= l << (2 * i)
                gi = kmap[u]
                on_grid_aux[k] = True
                if gi < 0:
                    on_grid_aux[k] = False
                    _find_best_neighbour(nbrs, -gi - 1, grid, xval, waux, 8 * k, this_scale, Laux)
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for i in range(bsz):
                w = weight[i]
                q = F32(2 * Laux[i] + 1)
                sumqx += w * xval[i] * q
                sumq2 += w * q * q
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                scale = sumqx / sumq2
                best = scale * sumqx
                for i in range(bsz):
                    L[i] = Laux[i]
                for k in range(ng):
                    on_grid[k] = on_grid_aux[k]
        n_not = 0
        for k in range(ng):
            if not on_grid[k]:
                n_not += 1
        if scale > F32(0.0) and (kind == XXS or n_not > 0):
            idd = F32(1.0) / scale
            for k in range(ng):
                if kind != XXS and on_grid[k]:
                    continue
                u = 0
                for i in range(8):
                    l = nearest_int(F32(0.5) * (idd * xval[8 * k + i] - F32(1.0)))
                    l = max(0, min(kMaxQ - 1, l))
                    u |= l << (2 * i)
                    L[8 * k + i] = l
                gi = kmap[u]
                if gi < 0:
                    gi = _find_best_neighbour(nbrs, -gi - 1, grid, xval, waux, 8 * k, scale, L)
                for i in range(8):
                    L[8 * k + i] = (grid[gi, i] - 1) // 2
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for i in range(bsz):
                w = weight[i]
                q = F32(2 * L[i] + 1)
                sumqx += w * xval[i] * q
                sumq2 += w * q * q
            if sumq2 > F32(0.0):
                scale = sumqx / sumq2
        if scale < F32(0.0):
            scale = -scale
            for k in range(ng):
                signs[k] = (~signs[k]) & (255 if kind == S else 127)
        for k in range(ng):
            u = 0
            for i in range(8):
                u |= L[8 * k + i] << (2 * i)
            gi = kmap[u]
            if kind == XXS:
                out[2 + 8 * ib + k] = gi
                ss = signs[k] << (7 * k)
                for b in range(4):
                    out[2 + 8 * ib + 4 + b] |= (ss >> (8 * b)) & 255
            elif kind == XS:
                v = gi | (signs[k] << 9)
                out[2 + 2 * (2 * ib + k)] = v & 255
                out[3 + 2 * (2 * ib + k)] = (v >> 8) & 255
            else:
                i8 = 2 * ib + k
                out[2 + i8] = gi & 255
                out[2 + 64 + i8 // 4] |= (gi >> 8) << (2 * (i8 % 4))
                out[2 + 32 + i8] = signs[k]
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale

    if max_scale == F32(0.0):
        if kind != S:               # ggml: memset(qs, 0); IQ2_S keeps what it wrote
            out[:] = 0
        return F32(0.0)
    d = max_scale / F32(31.0)
    idd = F32(1.0) / d
    soff = 66 if kind == XS else 74
    for ib in range(nsb):
        l = nearest_int(F32(0.5) * (idd * scales[ib] - F32(1.0)))
        l = max(0, min(15, l))
        if kind == XXS:
            out[2 + 8 * ib + 7] |= l << 4
        elif ib % 2 == 0:
            out[soff + ib // 2] = l
        else:
            out[soff + ib // 2] |= l << 4
    return d * F32(0.9875) if kind == S else d


@njit(parallel=True, cache=True)
def _quantize_iq2(x, qw, grid, kmap, nbrs, kind, out, d):
    nb = x.shape[0]
    nbr = qw.shape[0]
    has_w = nbr > 0
    for ib in prange(nb):
        scales = np.empty(16, np.float32)
        weight = np.empty(32, np.float32)
        xval = np.empty(32, np.float32)
        waux = np.empty(32, np.float32)
        L = np.zeros(32, np.int64)
        Laux = np.zeros(32, np.int64)
        Lqp = np.zeros(32, np.int64)
        on_grid = np.zeros(4, np.bool_)
        on_grid_aux = np.zeros(4, np.bool_)
        signs = np.zeros(4, np.int64)
        w = qw[ib % nbr] if has_w else x[ib]
        d[ib] = _iq2_block(x[ib], w, has_w, grid, kmap, nbrs, kind, out[ib], scales, weight, xval,
                           waux, L, Laux, Lqp, on_grid, on_grid_aux, signs)


_NAMES = {XXS: ("iq2xxs", "iq2xxs_grid", 66), XS: ("iq2xs", "iq2xs_grid", 74), S: ("iq2s", "iq2s_grid", 82)}


def _quantize(x, qw, out, kind):
    name, _, ts = _NAMES[kind]
    xb, wb, ob = as_blocks(x, qw, out, 256, ts)
    if kind != S:
        require_weights(wb, "IQ2_XXS" if kind == XXS else "IQ2_XS")
    sg = search_grid(name)
    d = np.empty(xb.shape[0], np.float32)
    _quantize_iq2(xb, wb, sg.grid, sg.kmap, sg.neighbours, kind, ob, d)
    put_f16(ob, 0, d)


def quantize_iq2_xxs(x, qw, out):
    _quantize(x, qw, out, XXS)


def quantize_iq2_xs(x, qw, out):
    _quantize(x, qw, out, XS)


def quantize_iq2_s(x, qw, out):
    _quantize(x, qw, out, S)


register_fast("IQ2_XXS", quantize=quantize_iq2_xxs)
register_fast("IQ2_XS", quantize=quantize_iq2_xs)
register_fast("IQ2_S", quantize=quantize_iq2_s)

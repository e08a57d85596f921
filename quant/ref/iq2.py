"""IQ2_XXS, IQ2_XS and IQ2_S (ggml-quants.c quantize_row_iq2_xxs_impl, quantize_row_iq2_xs_impl,
quantize_row_iq2_s_impl), vectorized over sub-blocks.

Each group of 8 values is a point of a 2-bit grid (coordinates 1, 3, 5; kgrid_2bit_256 / _512 /
_1024); off-grid points go to their best listed neighbour (quant/ref/iq_tables.py).
IQ2_XXS and IQ2_XS need importance weights (ggml asserts); IQ2_S uses 0.25*sigma2 + x^2 without.
Sign bits: IQ2_XXS/XS keep 7 per 8 values (even parity: an odd count flips back the value with
the smallest weight*x^2); IQ2_S keeps all 8.

IQ2_XXS block (66 bytes): d:2 | 8 x (u8[4] grid index, u32 4 x 7 sign bits | scale << 28)
                          x = d*(0.5+s)*0.25 * grid * sign;  d = fp16(max_scale/31)
IQ2_XS block (74 bytes):  d:2 | 32 x u16 (grid index | sign index << 9) | scales:8 (2 nibbles per
                          32 values, one per 16);  d = fp16(max_scale/31)
IQ2_S block (82 bytes):   d:2 | qs:32 (index low 8 bits) | signs:32 | qh:8 (index bits 8-9, 2 per
                          group) | scales:8;  d = fp16(max_scale/31*0.9875)
"""
from __future__ import annotations

import numpy as np

from ..types import Format
from ._util import F32, f16_bytes, f16_from, nearest_int, seq_sum
from .iq_common import (GROUP_MAX_EPS, blocks_and_weights, flip_signs, fmax_seq, in_chunks, pack_codes,
                        refine, require_weights, trial_search)
from .iq_tables import search_grid, table

XXS, XS, S = "IQ2_XXS", "IQ2_XS", "IQ2_S"
_GRID = {XXS: "iq2xxs", XS: "iq2xs", S: "iq2s"}


@np.errstate(all="ignore")
def make_qp_quants(x, nmax: int, w):
    """ggml make_qp_quants over rows of x f32[S, n] (only the returned scale is used here).
    ggml stores the levels in uint8_t, so a negative level reads back as 256 + l."""
    S, n = x.shape
    mx = fmax_seq(np.concatenate([np.zeros((S, 1), np.float32), x], axis=1))
    zero = mx < GROUP_MAX_EPS
    iscale = (F32(nmax) / mx).astype(np.float32)
    L = nearest_int(iscale[:, None] * x) & 255
    scale = (F32(1.0) / iscale).astype(np.float32)
    diff = x - scale[:, None] * L.astype(np.float32)
    best = seq_sum(w * diff * diff)
    for is_ in (-4, -3, -2, -1, 1, 2, 3, 4):
        isc = ((F32(0.1) * F32(is_) + F32(nmax)) / mx).astype(np.float32)
        sc = (F32(1.0) / isc).astype(np.float32)
        l = np.minimum(nmax, nearest_int(isc[:, None] * x))
        diff = x - sc[:, None] * l.astype(np.float32)
        mse = seq_sum(w * diff * diff)
        upd = mse < best
        best = np.where(upd, mse, best)
        iscale = np.where(upd, isc, iscale)
    l = np.minimum(nmax, nearest_int(iscale[:, None] * x))
    L = l & 255
    lf = l.astype(np.float32)
    sumlx = seq_sum(w * x * lf)
    suml2 = seq_sum(w * lf * lf)
    active = ~zero
    for _ in range(5):
        changed = np.zeros(S, bool)
        for i in range(n):
            wi, xi, li = w[:, i], x[:, i], L[:, i].astype(np.float32)
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            ok = active & (slx > 0) & (sl2 > 0)
            new_l = np.minimum(nmax, nearest_int(xi * sl2 / slx))
            ok &= new_l != L[:, i]
            nf = new_l.astype(np.float32)
            slx = slx + wi * xi * nf
            sl2 = sl2 + wi * nf * nf
            ok &= slx * slx * suml2 > sumlx * sumlx * sl2
            L[:, i] = np.where(ok, new_l & 255, L[:, i])
            sumlx = np.where(ok, slx, sumlx).astype(np.float32)
            suml2 = np.where(ok, sl2, suml2).astype(np.float32)
            changed |= ok
        active &= changed
        if not active.any():
            break
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0.0)).astype(np.float32)
    return np.where(zero, F32(0.0), scale).astype(np.float32)


@np.errstate(all="ignore")
def quantize_iq2(x, qw, kind: str):
    """x: f32[nb, 256]; qw: f32[nb, 256] or None -> u8[nb, 66 | 74 | 82]."""
    if kind != S:
        require_weights(qw, kind)
    name = _GRID[kind]
    nb = x.shape[0]
    bsz = 32 if kind == XXS else 16
    nsb, ng = 256 // bsz, bsz // 8
    sumx2 = seq_sum(x * x)
    sigma2 = (F32(2.0) * sumx2 / F32(256.0)) if kind == S else (sumx2 / F32(256.0))
    xb = x.reshape(nb * nsb, bsz)
    s2 = np.repeat(sigma2, nsb)[:, None]
    if qw is not None:
        weight = qw.reshape(nb * nsb, bsz) * np.sqrt(s2 + xb * xb)
    else:
        weight = F32(0.25) * s2 + xb * xb
    weight = weight.astype(np.float32)
    waux = np.sqrt(weight)
    xval, signs = flip_signs(xb, weight, parity=kind != S)
    mx = fmax_seq(xval)
    zero = mx < (F32(1e-8) if kind == S else GROUP_MAX_EPS)
    if kind == XXS:
        scale0 = make_qp_quants(xval, 4, weight)
        denom = scale0 * F32(3)
        zero |= denom <= 0
        nis = 6
    else:
        scale0 = (mx / F32(5)).astype(np.float32)
        denom = mx
        nis = 9
    nums = [F32(5) + F32(i) * F32(0.1) for i in range(-nis, nis + 1)]
    scale, L, on, _ = trial_search(name, xval, weight, waux, nums, denom, scale0, True, 8, 2, 2)
    if kind == XXS:
        groups = np.repeat((scale > 0)[:, None], ng, 1)
    else:
        groups = ~on & (scale > 0)[:, None]
    scale, L = refine(name, xval, weight, waux, scale, L, groups, 8, 2, 2)
    # scale < 0 does not happen for these sums (ggml would flip the signs)
    gi = search_grid(name).kmap[pack_codes(L.reshape(-1, ng, 8), 2)].astype(np.int64)   # [S, ng]
    scale = np.where(zero, F32(0.0), scale).astype(np.float32).reshape(nb, nsb)
    gi = np.where(zero[:, None], 0, gi).reshape(nb, nsb, ng)
    signs = np.where(zero[:, None], 0, signs).reshape(nb, nsb, ng)

    max_scale = fmax_seq(np.concatenate([np.zeros((nb, 1), np.float32), scale], axis=1))
    d = (max_scale / F32(31)).astype(np.float32)
    idd = (F32(1.0) / d).astype(np.float32)
    ls = np.clip(nearest_int(F32(0.5) * (idd[:, None] * scale - F32(1.0))), 0, 15).astype(np.uint32)
    empty = max_scale == 0
    ls = np.where(empty[:, None], 0, ls)
    out = np.zeros((nb, {XXS: 66, XS: 74, S: 82}[kind]), np.uint8)
    out[:, 0:2] = f16_bytes(np.where(empty, F32(0.0), d * F32(0.9875) if kind == S else d))
    if kind == XXS:
        q = np.zeros((nb, 8, 2), np.uint32)
        g = gi.astype(np.uint32)
        sg = signs.astype(np.uint32)
        q[:, :, 0] = g[..., 0] | (g[..., 1] << 8) | (g[..., 2] << 16) | (g[..., 3] << 24)
        q[:, :, 1] = sg[..., 0] | (sg[..., 1] << 7) | (sg[..., 2] << 14) | (sg[..., 3] << 21) | (ls << 28)
        out[:, 2:] = np.ascontiguousarray(q).view(np.uint8).reshape(nb, 64)
    elif kind == XS:
        q = (gi | (signs << 9)).astype(np.uint16).reshape(nb, 32)
        out[:, 2:66] = np.ascontiguousarray(q).view(np.uint8)
        out[:, 66:74] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    else:
        g = gi.reshape(nb, 32)
        out[:, 2:34] = g & 255
        out[:, 34:66] = signs.reshape(nb, 32)
        out[:, 66:74] = ((g >> 8).reshape(nb, 8, 4) << (2 * np.arange(4))).sum(axis=-1)
        out[:, 74:82] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    out[empty & (kind != S), 2:] = 0
    return out


def _signs(sbytes):
    """u8/int sign bytes [...] -> f32[..., 8] of +-1 (bit j set -> -1)."""
    bits = (np.asarray(sbytes, np.int64)[..., None] >> np.arange(8)) & 1
    return np.where(bits == 0, F32(1.0), F32(-1.0))


def _grid(name):
    return table(name).view(np.uint8).reshape(-1, 8).astype(np.float32)


class IQ2_XXS(Format, qtype="IQ2_XXS"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        return in_chunks(quantize_iq2, xb, w, XXS)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        d = f16_from(b[:, 0:2])
        q = np.ascontiguousarray(b[:, 2:66]).view(np.uint32).reshape(nb, 8, 2)
        db = (d[:, None] * (F32(0.5) + (q[..., 1] >> 28).astype(np.float32)) * F32(0.25)).reshape(nb, 8, 1, 1)
        ks = table("ksigns_iq2xs")[(q[..., 1, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127]
        g = _grid("iq2xxs_grid")[b[:, 2:66].reshape(nb, 8, 8)[:, :, :4]]          # [nb, 8, 4, 8]
        return (db * g * _signs(ks)).reshape(nb, 256).astype(np.float32)


class IQ2_XS(Format, qtype="IQ2_XS"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        return in_chunks(quantize_iq2, xb, w, XS)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        d = f16_from(b[:, 0:2])
        qs = np.ascontiguousarray(b[:, 2:66]).view(np.uint16).reshape(nb, 8, 4)
        sc = b[:, 66:74]
        s = np.stack([sc & 0xF, sc >> 4], axis=-1).astype(np.float32)           # [nb, 8, 2]
        db = (d[:, None, None] * (F32(0.5) + s) * F32(0.25)).astype(np.float32)
        db = np.repeat(db, 2, axis=2).reshape(nb, 8, 4, 1)
        g = _grid("iq2xs_grid")[qs & 511]
        return (db * g * _signs(table("ksigns_iq2xs")[qs >> 9])).reshape(nb, 256).astype(np.float32)


class IQ2_S(Format, qtype="IQ2_S"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        return in_chunks(quantize_iq2, xb, w, S)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        d = f16_from(b[:, 0:2])
        qh = (b[:, 66:74, None].astype(np.int64) >> (2 * np.arange(4))) & 3           # [nb, 8, 4]
        idx = b[:, 2:34].reshape(nb, 8, 4).astype(np.int64) | (qh << 8)
        sc = b[:, 74:82]
        s = np.stack([sc & 0xF, sc >> 4], axis=-1).astype(np.float32)
        db = (d[:, None, None] * (F32(0.5) + s) * F32(0.25)).astype(np.float32)
        db = np.repeat(db, 2, axis=2).reshape(nb, 8, 4, 1)
        g = _grid("iq2s_grid")[idx]
        signs = _signs(b[:, 34:66].reshape(nb, 8, 4))
        return (db * g * signs).reshape(nb, 256).astype(np.float32)

"""IQ1_S and IQ1_M (ggml-quants.c quantize_row_iq1_s_impl, quantize_row_iq1_m_impl), vectorized
over sub-blocks.

Values are d * s * (g + delta), g in {-1, 0, 1} from a 2048-point grid of 8-value groups, delta
= +-0.125. Per sub-block the best 3-level split is found exhaustively over the sorted values
(ggml sorts with glibc qsort, a stable merge sort at these sizes, so ties keep input order);
groups off the grid go to their best listed neighbour (search grid "iq1s", nwant = 3).
IQ1_S needs importance weights (ggml asserts); IQ1_M uses x^2 without.

IQ1_S block (50 bytes): d:2 | qs:32 (grid index low 8 bits) | qh: 8 x u16, per 32 values:
                        3 index bits per group of 8 (bits 0..11), scale s (bits 12..14, x = d*(2s+1)),
                        delta sign (bit 15);  d = fp16(max_scale/15*1.125)
IQ1_M block (56 bytes): qs:32 | qh:16 (per group of 8: 3 index bits, delta sign bit 3) |
                        scales: 4 x u16, 3-bit scale per 16 values in bits 0..11, and the fp16 d
                        (refit over the whole block, times 1.1125) in the four top nibbles.
"""
from __future__ import annotations

import numpy as np

from ..types import Format
from ._util import F32, f16_bytes, f16_from, nearest_int, seq_sum
from .iq_common import blocks_and_weights, fmax_seq, in_chunks, pack_codes, padded_neighbours, require_weights
from .iq_tables import search_grid, table

DELTA = F32(0.125)
X_P = np.array([F32(-1) + DELTA, DELTA, F32(1) + DELTA], np.float32)
X_M = np.array([F32(-1) - DELTA, -DELTA, F32(1) - DELTA], np.float32)
FLT_MAX = F32(np.finfo(np.float32).max)


def _update(best, scale, sumqx, sumq2):
    """The `if (sumq2 > 0 && sumqx*sumqx > best_score*sumq2)` step; returns (mask, best, scale)."""
    upd = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
    scale = np.where(upd, sumqx / sumq2, scale).astype(np.float32)
    best = np.where(upd, scale * sumqx, best).astype(np.float32)
    return upd, best, scale


def _levels(order, i1, i2):
    """Level 0/1/2 of every value: sorted positions [0, i1) -> 0, [i1, i2) -> 1, rest -> 2."""
    S, n = order.shape
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(n)[None, :].repeat(S, 0), axis=1)
    return np.where(pos < i1[:, None], 0, np.where(pos < i2[:, None], 1, 2)).astype(np.int64)


def _project(u, xb, w, scale, xx):
    """Grid index for codes u[S, G]; off-grid groups take iq1_find_best_neighbour2's choice:
    min sum(w*(scale*xx[l] - x)^2), first on ties. xb, w: f32[S, G, 8]; xx: f32[S, G, 3]."""
    sg = search_grid("iq1s")
    gi = sg.kmap[u].astype(np.int64)
    off = gi < 0
    if off.any():
        cand = padded_neighbours("iq1s")[u[off]]                         # [m, maxn]
        lv = (sg.grid[np.maximum(cand, 0)].astype(np.int64) - 1) // 2      # [m, maxn, 8]
        q = np.take_along_axis(xx[off][:, None, :], lv, axis=2)            # [m, maxn, 8]
        x, ww = xb[off][:, None, :], w[off][:, None, :]
        s = np.broadcast_to(scale[:, None], u.shape)[off][:, None]
        d2 = np.zeros(cand.shape, np.float32)
        for i in range(8):
            diff = s * q[..., i] - x[..., i]
            d2 = d2 + ww[..., i] * diff * diff
        d2 = np.where((cand < 0) | np.isnan(d2), np.inf, d2)
        gi[off] = np.take_along_axis(cand, np.argmin(d2, axis=1)[:, None], 1)[:, 0]
    return gi, off


def _grid_q(gi, xx):
    """xx[level] for the points gi[S, G] -> f32[S, G, 8]."""
    lv = (search_grid("iq1s").grid[gi].astype(np.int64) - 1) // 2
    return np.take_along_axis(xx, lv, axis=2)


@np.errstate(all="ignore")
def quantize_iq1_s(x, qw):
    """x: f32[nb, 256]; qw: f32[nb, 256] -> u8[nb, 50]."""
    require_weights(qw, "IQ1_S")
    nb = x.shape[0]
    sigma2 = F32(2.0) * seq_sum(x * x) / F32(256.0)
    xb = x.reshape(nb * 8, 32)
    weight = (qw.reshape(nb * 8, 32) * np.sqrt(np.repeat(sigma2, 8)[:, None] + xb * xb)).astype(np.float32)
    mx = fmax_seq(np.abs(xb))
    zero = mx < F32(1e-12)
    S = xb.shape[0]
    order = np.argsort(xb, axis=1, kind="stable")
    ws, xs = np.take_along_axis(weight, order, 1), np.take_along_axis(xb, order, 1)
    z = np.zeros((S, 1), np.float32)
    # prefix sums: np.cumsum is a sequential loop; + 0 turns -0 into +0 as C's 0 + ... does
    sumx = np.concatenate([z, np.cumsum(ws * xs, axis=1, dtype=np.float32) + F32(0)], axis=1)
    sumw = np.concatenate([z, np.cumsum(ws, axis=1, dtype=np.float32) + F32(0)], axis=1)
    best = np.full(S, -FLT_MAX, np.float32)
    scale = mx.copy()
    bi1 = np.full(S, -1)
    bi2 = np.full(S, -1)
    shift = np.zeros(S, np.int64)
    for i1 in range(33):
        for i2 in range(i1, 33):
            a, b, c = sumx[:, i1] - sumx[:, 0], sumx[:, i2] - sumx[:, i1], sumx[:, 32] - sumx[:, i2]
            wa, wb, wc = sumw[:, i1] - sumw[:, 0], sumw[:, i2] - sumw[:, i1], sumw[:, 32] - sumw[:, i2]
            for sh, xx in ((1, X_P), (-1, X_M)):
                sumqx = a * xx[0] + b * xx[1] + c * xx[2]
                sumq2 = wa * xx[0] * xx[0] + wb * xx[1] * xx[1] + wc * xx[2] * xx[2]
                upd, best, scale = _update(best, scale, sumqx, sumq2)
                bi1 = np.where(upd, i1, bi1)
                bi2 = np.where(upd, i2, bi2)
                shift = np.where(upd, sh, shift)
    zero |= (bi1 < 0) | (bi2 < 0) | (shift == 0)
    L = _levels(order, bi1, bi2)
    neg = scale < 0
    L = np.where(neg[:, None], 2 - L, L)
    scale = np.where(neg, -scale, scale).astype(np.float32)
    shift = np.where(neg, -shift, shift)
    xx = np.where((shift == 1)[:, None], X_P, X_M)[:, None, :].repeat(4, 1)       # [S, 4, 3]
    u = pack_codes(L.reshape(S, 4, 8), 2)
    w8, x8 = weight.reshape(S, 4, 8), xb.reshape(S, 4, 8)
    gi, off = _project(u, x8, w8, scale, xx)
    q = _grid_q(gi, xx)
    sqx, sq2 = seq_sum((w8 * q * x8).reshape(S, 32)), seq_sum((w8 * q * q).reshape(S, 32))
    refit = off.any(axis=1) & (sqx > 0) & (sq2 > 0)
    scale = np.where(refit, sqx / sq2, scale).astype(np.float32)

    scale = np.where(zero, F32(0.0), scale).reshape(nb, 8)
    shift = np.where(zero, 1, shift).reshape(nb, 8)
    gi = np.where(zero[:, None], 0, gi).reshape(nb, 8, 4)
    max_scale = fmax_seq(np.concatenate([np.zeros((nb, 1), np.float32), scale], axis=1))
    d = (max_scale / F32(15)).astype(np.float32)
    idd = (F32(1.0) / d).astype(np.float32)
    ls = np.clip(nearest_int(F32(0.5) * (idd[:, None] * scale - F32(1.0))), 0, 7)
    ls = np.where(shift == -1, ls | 8, ls)
    empty = max_scale == 0
    qh = ((gi >> 8) << (3 * np.arange(4))).sum(axis=-1) | np.where(empty[:, None], 0, ls << 12)
    out = np.zeros((nb, 50), np.uint8)
    out[:, 0:2] = f16_bytes(np.where(empty, F32(0.0), d * F32(1.125)))
    out[:, 2:34] = (gi & 255).reshape(nb, 32)
    out[:, 34:50] = np.ascontiguousarray(qh.astype(np.uint16)).view(np.uint8)
    return out


@np.errstate(all="ignore")
def quantize_iq1_m(x, qw):
    """x: f32[nb, 256]; qw: f32[nb, 256] or None -> u8[nb, 56]."""
    nb = x.shape[0]
    sigma2 = F32(2.0) * seq_sum(x * x) / F32(256.0)
    xb = x.reshape(nb * 16, 16)
    S = xb.shape[0]

    def weights():
        if qw is None:
            return (xb * xb).astype(np.float32)
        return (qw.reshape(S, 16) * np.sqrt(np.repeat(sigma2, 16)[:, None] + xb * xb)).astype(np.float32)

    weight = weights()
    mx = fmax_seq(np.abs(xb))
    zero = mx < F32(1e-7)
    order = np.argsort(xb, axis=1, kind="stable")
    half = (order >= 8)                                                   # [S, 16] by sorted pos
    wsx = np.take_along_axis(weight * xb, order, 1)
    ws = np.take_along_axis(weight, order, 1)
    z = np.zeros((S, 1), np.float32)
    # px[h][j+1] = px[h][j] + w*x only for the half h owns; adding +0 elsewhere leaves the sum
    # unchanged, and the final + 0 turns -0 into +0 as C's sums starting from 0 do
    px = [np.concatenate([z, np.cumsum(np.where(half == h, wsx, F32(0.0)), 1, dtype=np.float32) + F32(0)], 1)
          for h in (0, 1)]
    pw = [np.concatenate([z, np.cumsum(np.where(half == h, ws, F32(0.0)), 1, dtype=np.float32) + F32(0)], 1)
          for h in (0, 1)]
    txs = [px[0][:, 16], px[1][:, 16]]
    tws = [pw[0][:, 16], pw[1][:, 16]]
    p2, m2 = X_P[2], X_M[2]
    cp1, cp2 = X_P[0] * X_P[0] - X_P[1] * X_P[1], X_P[1] * X_P[1] - X_P[2] * X_P[2]
    cm1, cm2 = X_M[0] * X_M[0] - X_M[1] * X_M[1], X_M[1] * X_M[1] - X_M[2] * X_M[2]
    best = np.full(S, -FLT_MAX, np.float32)
    scale = mx.copy()
    bi1 = np.full(S, -1)
    bi2 = np.full(S, -1)
    bk = np.full(S, -1)
    for i1 in range(17):
        for i2 in range(i1, 17):
            qxp, qxm, q2p, q2m = [], [], [], []
            for h in (0, 1):
                sx = px[h][:, i1] + px[h][:, i2]
                qxp.append(txs[h] * p2 - sx)
                qxm.append(txs[h] * m2 - sx)
                q2p.append(tws[h] * p2 * p2 + pw[h][:, i1] * cp1 + pw[h][:, i2] * cp2)
                q2m.append(tws[h] * m2 * m2 + pw[h][:, i1] * cm1 + pw[h][:, i2] * cm2)
            combos = ((qxp[0] + qxp[1], q2p[0] + q2p[1]), (qxp[0] + qxm[1], q2p[0] + q2m[1]),
                      (qxm[0] + qxp[1], q2m[0] + q2p[1]), (qxm[0] + qxm[1], q2m[0] + q2m[1]))
            for k, (sumqx, sumq2) in enumerate(combos):
                upd, best, scale = _update(best, scale, sumqx, sumq2)
                bi1 = np.where(upd, i1, bi1)
                bi2 = np.where(upd, i2, bi2)
                bk = np.where(upd, k, bk)
    zero |= (bi1 < 0) | (bi2 < 0) | (bk < 0)
    L = _levels(order, bi1, bi2)
    neg = scale < 0
    L = np.where(neg[:, None], 2 - L, L)
    scale = np.where(neg, -scale, scale).astype(np.float32)
    bk = np.where(neg, 3 - bk, bk)
    xx = np.stack([np.where((bk < 2)[:, None], X_P, X_M), np.where((bk % 2 == 0)[:, None], X_P, X_M)], 1)
    u = pack_codes(L.reshape(S, 2, 8), 2)
    w8, x8 = weight.reshape(S, 2, 8), xb.reshape(S, 2, 8)
    gi, off = _project(u, x8, w8, scale, xx)
    q = _grid_q(gi, xx)
    sqx, sq2 = seq_sum((w8 * q * x8).reshape(S, 16)), seq_sum((w8 * q * q).reshape(S, 16))
    refit = off.any(axis=1) & (sqx > 0) & (sq2 > 0)
    scale = np.where(refit, sqx / sq2, scale).astype(np.float32)

    scale = np.where(zero, F32(0.0), scale)
    bk = np.where(zero, 0, bk)
    gi = np.where(zero[:, None], 0, gi)
    max_scale = fmax_seq(np.concatenate([np.zeros((nb, 1), np.float32), scale.reshape(nb, 16)], axis=1))
    empty = max_scale == 0
    d = (max_scale / F32(15)).astype(np.float32)
    idd = (F32(1.0) / d).astype(np.float32)
    ls = np.clip(nearest_int(F32(0.5) * (np.repeat(idd, 16) * scale - F32(1.0))), 0, 7)   # [S]
    # refit d over the whole block with the final codes
    xx = np.stack([np.where((bk < 2)[:, None], X_P, X_M), np.where((bk % 2 == 0)[:, None], X_P, X_M)], 1)
    q = _grid_q(gi, xx) * (2 * ls + 1).astype(np.float32)[:, None, None]
    w8 = weights().reshape(S, 2, 8)
    sqx = seq_sum((w8 * q * x8).reshape(nb, 256))
    sq2 = seq_sum((w8 * q * q).reshape(nb, 256))
    d = np.where(sq2 > 0, sqx / sq2, d).astype(np.float32)
    dbits = (d * F32(1.1125)).astype(np.float16).view(np.uint16).astype(np.int64)

    out = np.zeros((nb, 56), np.uint8)
    out[:, 0:32] = (gi & 255).reshape(nb, 32)
    masks = np.array([0x00, 0x80, 0x08, 0x88])
    qh = (gi[:, 0] >> 8) | ((gi[:, 1] >> 8) << 4) | np.where(np.repeat(empty, 16), 0, masks[bk])
    out[:, 32:48] = qh.reshape(nb, 16)
    sc = (ls.reshape(nb, 4, 4) << (3 * np.arange(4))).sum(axis=-1)          # [nb, 4]
    sc = sc | (((dbits[:, None] >> (4 * np.arange(4))) & 0xF) << 12)
    sc = np.where(empty[:, None], 0, sc)
    out[:, 48:56] = np.ascontiguousarray(sc.astype(np.uint16)).view(np.uint8)
    return out


def _grid():
    return table("iq1s_grid").view(np.int8).reshape(-1, 8).astype(np.float32)


class IQ1_S(Format, qtype="IQ1_S"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        return in_chunks(quantize_iq1_s, xb, w)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        d = f16_from(b[:, 0:2])
        qh = np.ascontiguousarray(b[:, 34:50]).view(np.uint16).astype(np.int64)      # [nb, 8]
        dl = (d[:, None] * (2 * ((qh >> 12) & 7) + 1)).astype(np.float32).reshape(nb, 8, 1, 1)
        delta = np.where(qh & 0x8000 == 0, DELTA, -DELTA).reshape(nb, 8, 1, 1)
        idx = b[:, 2:34].reshape(nb, 8, 4).astype(np.int64) | (((qh[..., None] >> (3 * np.arange(4))) & 7) << 8)
        return (dl * (_grid()[idx] + delta)).reshape(nb, 256).astype(np.float32)


class IQ1_M(Format, qtype="IQ1_M"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        return in_chunks(quantize_iq1_m, xb, w)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        sc = np.ascontiguousarray(b[:, 48:56]).view(np.uint16).astype(np.int64)     # [nb, 4]
        u = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
        d = u.astype(np.uint16).view(np.float16).astype(np.float32)
        s = (sc[:, :, None] >> (3 * np.arange(4))) & 7                                  # [nb, 4, 4]
        dl = (d[:, None] * (2 * s.reshape(nb, 16) + 1)).astype(np.float32).reshape(nb, 8, 2, 1, 1)
        qh = b[:, 32:48].astype(np.int64).reshape(nb, 16, 1) >> np.array([0, 4])       # [nb, 16, 2]
        idx = b[:, 0:32].astype(np.int64) | ((qh & 7) << 8).reshape(nb, 32)
        delta = np.where(qh & 8 == 0, DELTA, -DELTA).reshape(nb, 8, 2, 2, 1)
        g = _grid()[idx].reshape(nb, 8, 2, 2, 8)
        return (dl * (g + delta)).reshape(nb, 256).astype(np.float32)

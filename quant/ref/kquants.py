"""K-quants (256-element super-blocks): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K.

Without weights ggml uses quantize_row_<t>_ref; with weights quantize_row_<t>_impl
(ggml-quants.c). Super-block scales are fp16-rounded before the final requantization.

Block layouts (bytes):
  Q2_K: scales:16 (lo4 scale, hi4 min) qs:64 d:2 dmin:2     x = d*sc*q - dmin*m, q in 0..3
  Q3_K: hmask:32 qs:64 scales:12 (6-bit, packed) d:2        x = d*(sc-32)*(q-4)
  Q4_K: d:2 dmin:2 scales:12 (6-bit sc/m, packed) qs:128    x = d*sc*q - dmin*m
  Q5_K: d:2 dmin:2 scales:12 qh:32 qs:128                   as Q4_K with 5-bit q
  Q6_K: ql:128 qh:64 scales:16 (int8) d:2                   x = d*sc*(q-32)
  Q8_K: d:4 (f32) qs:256 (int8) bsums:32 (16 x int16)       x = d*q
"""

import numpy as np

from ..types import Format
from ._util import F32, f16_bytes, f16_from, nearest_int, seq_sum
from .kmath import (GROUP_MAX_EPS, _first_absmax, make_q3_quants, make_qkx2_quants,
                    make_qkx3_quants, make_qp_quants, make_qx_quants)


def _sb(x):
    """[nrows, nbr, 256] -> [nsb, 256]"""
    return x.reshape(-1, 256)


def _sb_weights(x, qw):
    """Per-super-block imatrix weights, f32[nsb, 256] (qw repeats for every row)."""
    nrows, nbr, _ = x.shape
    return np.broadcast_to(qw[None], (nrows, nbr, 256)).reshape(-1, 256)


def _sigma2(xs, factor):
    """factor*sum(x^2)/256 per super-block, summed sequentially."""
    return (F32(factor) * seq_sum(xs * xs) / F32(256)).astype(np.float32)


def _row_out(x, b):
    return b.reshape(*x.shape[:-1], -1)


def _pack2(L):
    """L[nsb, 256] (0..3) -> qs[nsb, 64]: qs[j/4 + l] = L[j+l] | L[j+l+32]<<2 | ... for j in (0, 128)."""
    L = L.astype(np.uint8).reshape(-1, 2, 4, 32)
    q = L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)
    return q.reshape(-1, 64)


def _unpack2(qs):
    """qs[nb, 64] -> q[nb, 256] in 0..3 (inverse of _pack2)."""
    q = qs.reshape(-1, 2, 1, 32) >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]
    return (q & 3).reshape(-1, 256)


def _pack_scales_k4(ls, lm):
    """6-bit scales/mins (8 each) -> 12 bytes, as quantize_row_q4_K."""
    ls = ls.astype(np.uint8)
    lm = lm.astype(np.uint8)
    s = np.zeros((ls.shape[0], 12), np.uint8)
    s[:, 0:4] = ls[:, 0:4]
    s[:, 4:8] = lm[:, 0:4]
    s[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    s[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    s[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return s


def _unpack_scales_k4(s):
    """12 bytes -> (sc[nb, 8], m[nb, 8]) as get_scale_min_k4."""
    sc = np.empty((s.shape[0], 8), np.uint8)
    m = np.empty((s.shape[0], 8), np.uint8)
    sc[:, :4] = s[:, 0:4] & 63
    m[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    m[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, m


def _requant_min(xs, L, d, dmin, sc, m, nsub, nmax):
    """L = clamp(nearest_int((x + dmin*m)/(d*sc)), 0, nmax) where d*sc != 0."""
    n = 256 // nsub
    dd = (d[:, None] * sc.astype(np.float32)).astype(np.float32)           # [nsb, nsub]
    dm = (dmin[:, None] * m.astype(np.float32)).astype(np.float32)
    x3 = xs.reshape(-1, nsub, n)
    with np.errstate(all="ignore"):
        l = np.clip(nearest_int((x3 + dm[..., None]) / dd[..., None]), 0, nmax)
    return np.where((dd != 0)[..., None], l, L.reshape(-1, nsub, n)).reshape(-1, 256)


class Q2_K(Format, qtype="Q2_K"):
    @staticmethod
    def quantize_blocks(x, qw):
        xs = _sb(x)
        nsb = xs.shape[0]
        x16 = xs.reshape(-1, 16)
        if qw is None:
            scales, mins, L = make_qkx2_quants(x16, 3, np.abs(x16), -0.5, 0.1, 15, True)
            scales = scales.reshape(nsb, 16)
            mins = mins.reshape(nsb, 16)
            max_scale = np.maximum(scales.max(axis=1), F32(0))
            max_min = np.maximum(mins.max(axis=1), F32(0))
            q4 = F32(15)
            with np.errstate(all="ignore"):
                ls = np.where((max_scale > 0)[:, None], nearest_int((q4 / max_scale)[:, None] * scales), 0)
                lm = np.where((max_min > 0)[:, None], nearest_int((q4 / max_min)[:, None] * mins), 0)
            d = np.where(max_scale > 0, max_scale / q4, F32(0)).astype(np.float32)
            dmin = np.where(max_min > 0, max_min / q4, F32(0)).astype(np.float32)
            sc_b = (ls.astype(np.uint8) | (lm.astype(np.int64) << 4).astype(np.uint8)).astype(np.uint8)
        else:
            w = _sb_weights(x, qw)
            sigma2 = _sigma2(xs, 1)
            weight = (w * np.sqrt(sigma2[:, None] + xs * xs)).astype(np.float32).reshape(-1, 16)
            sw = seq_sum(weight).reshape(nsb, 16)
            scales, mins, L = make_qkx3_quants(x16, 3, weight, -0.9, 0.05, 36, False)
            dm, Ls = make_qp_quants(scales.reshape(nsb, 16), 15, sw)
            mm, Lm = make_qp_quants(mins.reshape(nsb, 16), 15, sw)
            d, dmin = dm, mm
            sc_b = (Ls.astype(np.uint8) | (Lm.astype(np.int64) << 4).astype(np.uint8)).astype(np.uint8)
        db, dminb = f16_bytes(d), f16_bytes(dmin)
        L = _requant_min(xs, L, f16_from(db), f16_from(dminb), sc_b & 0xF, sc_b >> 4, 16, 3)
        return _row_out(x, np.concatenate([sc_b, _pack2(L), db, dminb], axis=1))

    @staticmethod
    def dequantize_blocks(b):
        sc = b[:, 0:16]
        q = _unpack2(b[:, 16:80]).reshape(-1, 16, 16).astype(np.float32)
        d = f16_from(b[:, 80:82])[:, None]
        dmin = f16_from(b[:, 82:84])[:, None]
        dl = (d * (sc & 0xF).astype(np.float32)).astype(np.float32)
        ml = (dmin * (sc >> 4).astype(np.float32)).astype(np.float32)
        return (dl[..., None] * q - ml[..., None]).astype(np.float32).reshape(-1, 256)


def _q3_scales_pack(l):
    """l[nsb, 16] in 0..63 -> 12 bytes."""
    l = l.astype(np.uint8)
    s = np.zeros((l.shape[0], 12), np.uint8)
    s[:, 0:8] = l[:, 0:8] & 0xF
    s[:, 0:8] |= (l[:, 8:16] & 0xF) << 4
    hi = l >> 4
    for j in range(16):
        s[:, j % 4 + 8] |= hi[:, j] << (2 * (j // 4))
    return s


def _q3_scales_unpack(s):
    """12 bytes -> sc[nsb, 16] int32 in -32..31."""
    lo = np.concatenate([s[:, 0:8] & 0xF, s[:, 0:8] >> 4], axis=1).astype(np.int32)
    j = np.arange(16)
    hi = (s[:, 8 + j % 4] >> (2 * (j // 4))).astype(np.int32) & 3
    return (lo | (hi << 4)) - 32


def _q3_finish(x, xs, L, sc_bytes, d):
    db = f16_bytes(d)
    sc = _q3_scales_unpack(sc_bytes)
    dd = (f16_from(db)[:, None] * sc.astype(np.float32)).astype(np.float32)   # [nsb, 16]
    with np.errstate(all="ignore"):
        l = np.clip(nearest_int(xs.reshape(-1, 16, 16) / dd[..., None]), -4, 3) + 4
    L = np.where((dd != 0)[..., None], l, L.reshape(-1, 16, 16)).reshape(-1, 256)
    high = L > 3
    L = np.where(high, L - 4, L)
    # hmask[m] bit (j // 32) for element j, m = j % 32
    hb = high.reshape(-1, 8, 32).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]
    hmask = np.bitwise_or.reduce(hb, axis=1).astype(np.uint8)
    return _row_out(x, np.concatenate([hmask, _pack2(L), sc_bytes, db], axis=1))


class Q3_K(Format, qtype="Q3_K"):
    @staticmethod
    def quantize_blocks(x, qw):
        xs = _sb(x)
        nsb = xs.shape[0]
        if qw is None:
            scales, L = make_q3_quants(xs.reshape(-1, 16), 4, True)
            scales = scales.reshape(nsb, 16)
            _, max_scale = _first_absmax(scales)
            with np.errstate(all="ignore"):
                iscale = (F32(-32) / max_scale).astype(np.float32)
                l = np.clip(nearest_int(iscale[:, None] * scales), -32, 31) + 32
            nz = max_scale != 0
            sc_bytes = np.where(nz[:, None], _q3_scales_pack(np.where(nz[:, None], l, 0)), 0).astype(np.uint8)
            with np.errstate(all="ignore"):
                d = np.where(nz, F32(1) / iscale, F32(0)).astype(np.float32)
        else:
            w = _sb_weights(x, qw)
            sigma2 = _sigma2(xs, 2)
            weight = (w * np.sqrt(sigma2[:, None] + xs * xs)).astype(np.float32).reshape(-1, 16)
            sw = seq_sum(weight).reshape(nsb, 16)
            scales, L = make_qx_quants(xs.reshape(-1, 16), 4, weight, rmse_type=1)
            d, Ls = make_qx_quants(scales.reshape(nsb, 16), 32, sw, rmse_type=1)
            sc_bytes = _q3_scales_pack(Ls)
        return _q3_finish(x, xs, L, sc_bytes, d)

    @staticmethod
    def dequantize_blocks(b):
        hmask = b[:, 0:32]
        sc = _q3_scales_unpack(b[:, 96:108])
        d = f16_from(b[:, 108:110])[:, None]
        hbit = (hmask[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1   # [nb, 8, 32]
        # q - (high bit set ? 0 : 4), in int8
        q = _unpack2(b[:, 32:96]).astype(np.int8) - ((hbit.reshape(-1, 256) ^ 1) << 2).astype(np.int8)
        dl = (d * sc.astype(np.float32)).astype(np.float32)
        return (dl[..., None] * q.reshape(-1, 16, 16).astype(np.float32)).astype(np.float32).reshape(-1, 256)


def _qk45_quantize(x, qw, nmax, ref_rmin, ref_rdelta, ref_nstep):
    """Shared Q4_K/Q5_K scale search -> (L[nsb, 256], scales bytes [nsb, 12], d, dmin bytes)."""
    xs = _sb(x)
    nsb = xs.shape[0]
    x32 = xs.reshape(-1, 32)
    if qw is None:
        av_x = np.sqrt(seq_sum(x32 * x32) / F32(32)).astype(np.float32)
        weights = (av_x[:, None] + np.abs(x32)).astype(np.float32)
        scales, mins, L = make_qkx2_quants(x32, nmax, weights, ref_rmin, ref_rdelta, ref_nstep, False)
        scales = scales.reshape(nsb, 8)
        mins = mins.reshape(nsb, 8)
        max_scale = np.maximum(scales.max(axis=1), F32(0))
        max_min = np.maximum(mins.max(axis=1), F32(0))
        with np.errstate(all="ignore"):
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(np.float32)
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(np.float32)
        ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales).astype(np.uint8))
        lm = np.minimum(63, nearest_int(inv_min[:, None] * mins).astype(np.uint8))
        d = (max_scale / F32(63)).astype(np.float32)
        dmin = (max_min / F32(63)).astype(np.float32)
    else:
        w = _sb_weights(x, qw)
        sigma2 = _sigma2(xs, 2)
        weights = (w * np.sqrt(sigma2[:, None] + xs * xs)).astype(np.float32).reshape(-1, 32)
        sw = seq_sum(weights).reshape(nsb, 8)
        scales, mins, L = make_qkx3_quants(x32, nmax, weights, -0.9, 0.05, 36, False)
        d, Ls = make_qp_quants(scales.reshape(nsb, 8), 63, sw)
        dmin, Lm = make_qp_quants(mins.reshape(nsb, 8), 63, sw)
        ls = np.minimum(63, Ls.astype(np.uint8))
        lm = np.minimum(63, Lm.astype(np.uint8))
    sb = _pack_scales_k4(ls, lm)
    db, dminb = f16_bytes(d), f16_bytes(dmin)
    sc, m = _unpack_scales_k4(sb)
    L = _requant_min(xs, L, f16_from(db), f16_from(dminb), sc, m, 8, nmax)
    return L, sb, db, dminb


def _qk45_dequant(b, q):
    """q[nb, 256] unsigned quants; b the blocks (d, dmin, scales at 0:16)."""
    d = f16_from(b[:, 0:2])[:, None]
    dmin = f16_from(b[:, 2:4])[:, None]
    sc, m = _unpack_scales_k4(b[:, 4:16])
    d1 = (d * sc.astype(np.float32)).astype(np.float32)
    m1 = (dmin * m.astype(np.float32)).astype(np.float32)
    return (d1[..., None] * q.reshape(-1, 8, 32).astype(np.float32) - m1[..., None]).astype(np.float32).reshape(-1, 256)


class Q4_K(Format, qtype="Q4_K"):
    @staticmethod
    def quantize_blocks(x, qw):
        L, sb, db, dminb = _qk45_quantize(x, qw, 15, -1.0, 0.1, 20)
        L = L.astype(np.uint8).reshape(-1, 4, 2, 32)
        qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)
        return _row_out(x, np.concatenate([db, dminb, sb, qs], axis=1))

    @staticmethod
    def dequantize_blocks(b):
        qs = b[:, 16:144].reshape(-1, 4, 1, 32)
        q = np.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(-1, 256)
        return _qk45_dequant(b, q)


class Q5_K(Format, qtype="Q5_K"):
    @staticmethod
    def quantize_blocks(x, qw):
        L, sb, db, dminb = _qk45_quantize(x, qw, 31, -0.5, 0.1, 15)
        L = L.astype(np.uint8).reshape(-1, 4, 2, 32)          # [nsb, n/64, (lo, hi) half, 32]
        hi = (L > 15).astype(np.uint8)
        L = np.where(L > 15, L - 16, L).astype(np.uint8)
        qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)
        shifts = (2 * np.arange(4, dtype=np.uint8))[None, :, None]
        qh = np.bitwise_or.reduce((hi[:, :, 0] << shifts) | (hi[:, :, 1] << (shifts + 1)), axis=1)
        return _row_out(x, np.concatenate([db, dminb, sb, qh.astype(np.uint8), qs], axis=1))

    @staticmethod
    def dequantize_blocks(b):
        qh = b[:, 16:48]
        qs = b[:, 48:176].reshape(-1, 4, 1, 32)
        lo = np.concatenate([qs & 0xF, qs >> 4], axis=2)                 # [nb, 4, 2, 32]
        k = np.arange(4)[:, None]
        sh = (2 * k + np.arange(2)[None, :]).astype(np.uint8)             # [4, 2]
        hb = (qh[:, None, None, :] >> sh[None, :, :, None]) & 1
        q = lo.astype(np.int32) + 16 * hb.astype(np.int32)
        return _qk45_dequant(b, q.reshape(-1, 256))


class Q6_K(Format, qtype="Q6_K"):
    @staticmethod
    def quantize_blocks(x, qw):
        xs = _sb(x)
        nsb = xs.shape[0]
        w = None if qw is None else _sb_weights(x, qw).reshape(-1, 16)
        scales, L = make_qx_quants(xs.reshape(-1, 16), 32, w, rmse_type=1)
        scales = scales.reshape(nsb, 16)
        max_abs, max_scale = _first_absmax(scales)
        zero = max_abs < GROUP_MAX_EPS
        with np.errstate(all="ignore"):
            iscale = (F32(-128) / max_scale).astype(np.float32)
            d = (F32(1) / iscale).astype(np.float32)
            sc = np.minimum(127, nearest_int(iscale[:, None] * scales)).astype(np.int8)
        d = np.where(zero, F32(0), d)
        sc = np.where(zero[:, None], 0, sc).astype(np.int8)
        db = f16_bytes(d)
        dd = (f16_from(db)[:, None] * sc.astype(np.float32)).astype(np.float32)
        with np.errstate(all="ignore"):
            l = np.clip(nearest_int(xs.reshape(-1, 16, 16) / dd[..., None]), -32, 31) + 32
        L = np.where((dd != 0)[..., None], l, L.reshape(-1, 16, 16)).reshape(-1, 2, 4, 32).astype(np.uint8)
        ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                             (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(-1, 128)
        qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
              | ((L[:, :, 3] >> 4) << 6)).reshape(-1, 64)
        out = np.concatenate([ql, qh, sc.view(np.uint8), db], axis=1)
        out[zero] = 0
        return _row_out(x, out)

    @staticmethod
    def dequantize_blocks(b):
        ql = b[:, 0:128].reshape(-1, 2, 2, 32)          # [nb, half, (l, l+32), 32]
        qh = b[:, 128:192].reshape(-1, 2, 1, 32)
        sc = b[:, 192:208].view(np.int8).reshape(-1, 2, 8)
        d = f16_from(b[:, 208:210])
        lo = np.concatenate([ql & 0xF, ql >> 4], axis=2)                 # q1, q2, q3, q4
        hb = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
        q = (lo | (hb << 4)).astype(np.int32) - 32                       # [nb, 2, 4, 32]
        # element e = 128h + 32k + l uses sc[8h + 2k + l//16] = sc[e // 16]
        dsc = (d[:, None] * sc.reshape(-1, 16).astype(np.float32)).astype(np.float32)
        return (dsc[..., None] * q.reshape(-1, 16, 16).astype(np.float32)).astype(np.float32).reshape(-1, 256)


class Q8_K(Format, qtype="Q8_K"):
    @staticmethod
    def quantize_blocks(x, qw):          # quantize_row_q8_K_ref (not in ggml_quantize_chunk)
        xs = _sb(x)
        amax, mx = _first_absmax(xs)
        zero = amax == 0
        with np.errstate(all="ignore"):
            iscale = (F32(-127) / mx).astype(np.float32)
            q = np.minimum(127, nearest_int(iscale[:, None] * xs))
            d = (F32(1) / iscale).astype(np.float32)
        q = np.where(zero[:, None], 0, q).astype(np.int8)
        d = np.where(zero, F32(0), d).astype(np.float32)
        bsums = q.reshape(-1, 16, 16).astype(np.int16).sum(axis=2).astype(np.int16)
        return _row_out(x, np.concatenate([d.view(np.uint8).reshape(-1, 4), q.view(np.uint8),
                                           bsums.view(np.uint8)], axis=1))

    @staticmethod
    def dequantize_blocks(b):
        d = np.ascontiguousarray(b[:, 0:4]).view(np.float32)
        q = np.ascontiguousarray(b[:, 4:260]).view(np.int8).astype(np.float32)
        return (d * q).astype(np.float32)

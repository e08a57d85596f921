"""IQ4_NL and IQ4_XS: 4-bit non-linear quants (ggml-quants.c quantize_row_iq4_nl_impl, as
called by quantize_iq4_nl / quantize_iq4_xs, i.e. ntry = 7; without an imatrix the weights
are x^2). Vectorized over blocks; every sum is a sequential float32 loop as in C.

IQ4_NL block (18 bytes):  d:2 (f16) | qs:16            x = d * kvalues[q]
IQ4_XS block (136 bytes): d:2 (f16) | scales_h:2 (u16) | scales_l:4 | qs:128
  sub-block ib (32 values): ls = scales_l nibble | 2 bits of scales_h << 4;  x = d*(ls-32)*kvalues[q]
  qs of sub-block ib: 16 bytes, low nibbles = values 0..15, high nibbles = values 16..31.
"""
from __future__ import annotations

import numpy as np

from ..types import Format
from ._util import F32, f16_bytes, f16_from, inv, nearest_int, seq_sum
from .iq_common import GROUP_MAX_EPS, best_index_int8, blocks_and_weights, first_absmax
from .iq_tables import kvalues_iq4nl

NTRY = 7


def _sums(w, q, x):
    """sumqx = sum(w*q*x), sumq2 = sum(w*q*q) in C order over the last axis."""
    return seq_sum(w * q * x), seq_sum(w * q * q)


@np.errstate(all="ignore")
def quantize_iq4(x, qw, nsub: int):
    """x: f32[nb, nsub*32] super-blocks; qw: f32[nb, nsub*32] or None.
    Returns (d f32[nb], sub-block scale codes i[nb, nsub] (IQ4_XS only), L u8[nb, nsub*32])."""
    values = kvalues_iq4nl()
    v = values.astype(np.float32)
    nb = x.shape[0]
    sigma2 = seq_sum(x * x) * (F32(2.0) / F32(nsub * 32))
    xs = x.reshape(nb, nsub, 32)
    if qw is not None:
        weight = qw.reshape(nb, nsub, 32) * np.sqrt(sigma2[:, None, None] + xs * xs)
    else:
        weight = xs * xs
    amax, mx = first_absmax(xs)                                    # [nb, nsub]
    zero = amax < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = -mx / v[0]
        l = best_index_int8(values, (F32(1.0) / d)[..., None] * xs)
        sumqx, sumq2 = _sums(weight, v[l], xs)
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0.0)).astype(np.float32)
        best = d * sumqx
        for itry in range(-NTRY, NTRY + 1):
            idd = F32(itry + int(values[0])) / mx
            l = best_index_int8(values, idd[..., None] * xs)
            sumqx, sumq2 = _sums(weight, v[l], xs)
            upd = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(upd, sumqx / sumq2, d).astype(np.float32)
            best = np.where(upd, d * sumqx, best).astype(np.float32)
    scales = np.where(zero, F32(0.0), d).astype(np.float32)
    if nsub > 1:
        _, max_scale = first_absmax(scales)                        # first largest |scale|
        dd = (-max_scale / F32(32.0)).astype(np.float32)
        ls = np.clip(nearest_int(inv(dd)[:, None] * scales), -32, 31)
        dl = dd[:, None] * ls.astype(np.float32)
        L = best_index_int8(values, inv(dl)[..., None] * xs).reshape(nb, -1)
        return dd, ls + 32, L.astype(np.uint8)
    d = scales[:, 0]
    L = best_index_int8(values, inv(d)[:, None] * x)
    return d, None, L.astype(np.uint8)


def _pack_qs(L):
    """L u8[nb, 32*k] -> qs u8[nb, 16*k]: per 32 values, low nibble j, high nibble j+16."""
    L = L.reshape(L.shape[0], -1, 2, 16)
    return (L[:, :, 0, :] | (L[:, :, 1, :] << 4)).reshape(L.shape[0], -1).astype(np.uint8)


class IQ4_NL(Format, qtype="IQ4_NL"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 32)
        d, _, L = quantize_iq4(xb, w, 1)
        return np.concatenate([f16_bytes(d), _pack_qs(L)], axis=1)

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        qs = b[:, 2:18]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
        return (d * kvalues_iq4nl()[q].astype(np.float32)).astype(np.float32)


class IQ4_XS(Format, qtype="IQ4_XS"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        d, ls, L = quantize_iq4(xb, w, 8)
        ls = ls.astype(np.uint32)
        scales_h = np.bitwise_or.reduce((ls >> 4) << (2 * np.arange(8, dtype=np.uint32)), axis=1)
        lo = (ls & 0xF).astype(np.uint8)
        scales_l = lo[:, 0::2] | (lo[:, 1::2] << 4)
        sh = scales_h.astype(np.uint16).reshape(-1, 1).view(np.uint8)
        return np.concatenate([f16_bytes(d), sh, scales_l, _pack_qs(L)], axis=1)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        d = f16_from(b[:, 0:2])[:, None]
        sh = np.ascontiguousarray(b[:, 2:4]).view(np.uint16)             # [nb, 1]
        sl = b[:, 4:8]
        lo = np.stack([sl & 0x0F, sl >> 4], axis=-1).reshape(nb, 8)
        hi = (sh >> (2 * np.arange(8, dtype=np.uint16))) & 3
        ls = (lo | (hi.astype(np.uint8) << 4)).astype(np.int8) - np.int8(32)
        dl = (d * ls.astype(np.float32)).reshape(nb, 8, 1)
        qs = b[:, 8:136].reshape(nb, 8, 16)
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=2)                  # [nb, 8, 32]
        return (dl * kvalues_iq4nl()[q].astype(np.float32)).reshape(nb, 256).astype(np.float32)

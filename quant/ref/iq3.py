"""IQ3_XXS and IQ3_S (ggml-quants.c quantize_row_iq3_xxs_impl(256, ...) and
quantize_row_iq3_s_impl(32, ...)), vectorized over 32-value sub-blocks.

Each group of 4 values is a point of a 3-bit grid (coordinates 2l+1, l = 0..7, kgrid_256 /
kgrid_512); off-grid points go to their best listed neighbour (quant/ref/iq_tables.py).
Without an imatrix the weights are x^2.

IQ3_XXS block (98 bytes): d:2 | qs:64 (grid index, 8 per sub-block) | 8 x u32 (4 x 7 sign bits,
                          even parity per 8 values; scale 0..15 in bits 28..31);
                          x = d*(0.5+s)*0.5 * grid * sign,  d stored as fp16(max_scale/31*1.0125)
IQ3_S block (110 bytes):  d:2 | qs:64 (grid index low 8 bits) | qh:8 (bit 8, one byte per sub-block)
                          | signs:32 (one bit per value) | scales:4 (nibbles);
                          x = d*(1+2s) * grid * sign,  d stored as fp16(max_scale/31*1.033)
                          ggml quirk kept: qs/signs of an all-zero sub-block are not skipped, so
                          the following sub-blocks are written that many slots earlier.
"""
from __future__ import annotations

import numpy as np

from ..types import Format
from ._util import F32, f16_bytes, f16_from, nearest_int, seq_sum
from .iq_common import blocks_and_weights, flip_signs, fmax_seq, in_chunks, pack_codes, refine, trial_search
from .iq_tables import search_grid, table


@np.errstate(all="ignore")
def quantize_iq3(x, qw, xxs: bool):
    """x: f32[nb, 256]; qw: f32[nb, 256] or None -> u8[nb, 98 or 110]."""
    name = "iq3xxs" if xxs else "iq3s"
    nb = x.shape[0]
    sigma2 = F32(2.0) * seq_sum(x * x) / F32(256.0)
    xb = x.reshape(nb * 8, 32)
    if qw is not None:
        weight = qw.reshape(nb * 8, 32) * np.sqrt(np.repeat(sigma2, 8)[:, None] + xb * xb)
    else:
        weight = xb * xb
    weight = weight.astype(np.float32)
    waux = np.sqrt(weight)
    xval, signs = flip_signs(xb, weight, parity=xxs)                 # signs [S, 4]
    mx = fmax_seq(xval)
    zero = mx < F32(1e-8) if xxs else mx == 0
    nis = 15 if xxs else 9
    nums = [F32(15) + F32(i) * F32(0.2) for i in range(-nis, nis + 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale0 = (mx / F32(15)).astype(np.float32)
    scale, L, on, _ = trial_search(name, xval, weight, waux, nums, mx, scale0, xxs, 4, 3, 7)
    redo = (~on).any(axis=1) & (scale > 0)
    groups = (~on if xxs else np.ones_like(on)) & redo[:, None]
    scale, L = refine(name, xval, weight, waux, scale, L, groups, 4, 3, 7)
    # scale < 0 never happens for these sums (ggml would flip the signs)
    gi = search_grid(name).kmap[pack_codes(L.reshape(-1, 8, 4), 3)].astype(np.int64)   # [S, 8]
    scale = np.where(zero, F32(0.0), scale).astype(np.float32).reshape(nb, 8)
    gi = np.where(zero[:, None], 0, gi).reshape(nb, 8, 8)
    signs = np.where(zero[:, None], 0, signs).reshape(nb, 8, 4)
    zero = zero.reshape(nb, 8)

    max_scale = fmax_seq(np.concatenate([np.zeros((nb, 1), np.float32), scale], axis=1))
    with np.errstate(divide="ignore"):
        d = (max_scale / F32(31)).astype(np.float32)
        idd = (F32(1.0) / d).astype(np.float32)
        ls = np.clip(nearest_int(F32(0.5) * (idd[:, None] * scale - F32(1.0))), 0, 15).astype(np.uint32)
    empty = max_scale == 0
    out = np.zeros((nb, 98 if xxs else 110), np.uint8)
    if xxs:
        out[:, 0:2] = f16_bytes(np.where(empty, F32(0.0), d * F32(1.0125)))
        out[:, 2:66] = gi.reshape(nb, 64)
        sg = signs.astype(np.uint32)
        ss = sg[..., 0] | (sg[..., 1] << 7) | (sg[..., 2] << 14) | (sg[..., 3] << 21)
        ss = np.where(empty[:, None], 0, ss | (ls << 28)).astype(np.uint32)
        out[:, 66:98] = np.ascontiguousarray(ss).view(np.uint8).reshape(nb, 32)
        out[empty, 2:] = 0
        return out
    out[:, 0:2] = f16_bytes(np.where(empty, F32(0.0), d * F32(1.033)))
    qh = ((gi >> 8) << np.arange(8)).sum(axis=-1)                   # [nb, 8]
    out[:, 66:74] = qh
    for i in range(nb):                                               # the skipped-pointer quirk
        slot = 0
        for ib in range(8):
            if zero[i, ib]:
                continue
            out[i, 2 + 8 * slot:10 + 8 * slot] = gi[i, ib] & 255
            out[i, 74 + 4 * slot:78 + 4 * slot] = signs[i, ib]
            slot += 1
    ls = np.where(empty[:, None], 0, ls)
    out[:, 106:110] = ls[:, 0::2] | (ls[:, 1::2] << 4)
    return out


def _sign_table(sbytes):
    """u8[...] sign bytes -> f32[..., 8] of +-1 (bit j set -> -1)."""
    bits = (sbytes[..., None] >> np.arange(8, dtype=np.uint8)) & 1
    return np.where(bits == 0, F32(1.0), F32(-1.0))


class IQ3_XXS(Format, qtype="IQ3_XXS"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        return in_chunks(quantize_iq3, xb, w, True)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        d = f16_from(b[:, 0:2])
        aux = np.ascontiguousarray(b[:, 66:98]).view(np.uint32)          # [nb, 8]
        db = (d[:, None] * (F32(0.5) + (aux >> 28).astype(np.float32)) * F32(0.5)).reshape(nb, 8, 1, 1)
        ks = table("ksigns_iq2xs")[(aux[..., None] >> (7 * np.arange(4, dtype=np.uint32))) & 127]
        signs = _sign_table(ks)                                          # [nb, 8, 4, 8]
        grid = table("iq3xxs_grid").view(np.uint8).reshape(-1, 4).astype(np.float32)
        g = grid[b[:, 2:66]].reshape(nb, 8, 4, 8)
        return (db * g * signs).reshape(nb, 256).astype(np.float32)


class IQ3_S(Format, qtype="IQ3_S"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb, w = blocks_and_weights(x, qw, 256)
        return in_chunks(quantize_iq3, xb, w, False)

    @staticmethod
    def dequantize_blocks(b):
        nb = b.shape[0]
        d = f16_from(b[:, 0:2])
        sc = b[:, 106:110]
        s = np.stack([sc & 0xF, sc >> 4], axis=-1).reshape(nb, 8)
        db = (d[:, None] * (1 + 2 * s)).astype(np.float32).reshape(nb, 8, 1, 1)
        qh = (b[:, 66:74, None] >> np.arange(8, dtype=np.uint8)) & 1          # [nb, 8, 8]
        idx = b[:, 2:66].reshape(nb, 8, 8).astype(np.int64) | (qh.astype(np.int64) << 8)
        grid = table("iq3s_grid").view(np.uint8).reshape(-1, 4).astype(np.float32)
        g = grid[idx].reshape(nb, 8, 4, 8)
        signs = _sign_table(b[:, 74:106]).reshape(nb, 8, 4, 8)
        return (db * g * signs).reshape(nb, 256).astype(np.float32)

"""Ternary types TQ1_0 and TQ2_0 (quantize_row_tq*_0_ref; weights are ignored by ggml).

  TQ1_0: qs:48 qh:4 d:2   5 trits per qs byte (base 3, scaled by 256/243), 4 per qh byte
  TQ2_0: qs:64 d:2        4 x 2-bit values per byte, x = d * (q - 1)
"""

import numpy as np

from ..types import Format
from ._util import f16_bytes, f16_from, inv, roundf

_POW3 = np.array([1, 3, 9, 27, 81, 243], np.uint8)


def _trits(xs):
    d = np.abs(xs).max(axis=1).astype(np.float32)
    with np.errstate(all="ignore"):
        t = roundf(xs * inv(d)[:, None]).astype(np.int64) + 1       # lroundf(x*id) + 1
    return d, t


def _pack_trits(t):
    """t[..., k] (k = 4 or 5, first = most significant) -> ceil(q * 256 / 243) as u8."""
    q = np.zeros(t.shape[:-1], np.int64)
    for n in range(t.shape[-1]):
        q = (q * 3 + t[..., n]) & 0xFF                                # uint8_t arithmetic
    return q


def _ceil243(q):
    return (((q & 0xFF) * 256 + 242) // 243).astype(np.uint8)


class TQ1_0(Format, qtype="TQ1_0"):
    @staticmethod
    def quantize_blocks(x, qw):
        xs = x.reshape(-1, 256)
        d, t = _trits(xs)
        a = t[:, :160].reshape(-1, 5, 32).transpose(0, 2, 1)          # qs[m] from x[m + 32n]
        b = t[:, 160:240].reshape(-1, 5, 16).transpose(0, 2, 1)       # qs[32 + m] from x[160 + m + 16n]
        c = t[:, 240:256].reshape(-1, 4, 4).transpose(0, 2, 1)        # qh[j] from x[240 + j + 4m]
        qs = np.concatenate([_ceil243(_pack_trits(a)), _ceil243(_pack_trits(b))], axis=1)
        qh = _ceil243(_pack_trits(c) * 3)
        return np.concatenate([qs, qh, f16_bytes(d)], axis=1).reshape(*x.shape[:-1], -1)

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 52:54])[:, None]

        def trits(bytes_, k):
            q = (bytes_[:, None, :].astype(np.uint16) * _POW3[:k, None]).astype(np.uint8)   # [nb, k, m]
            return ((q.astype(np.uint16) * 3) >> 8).astype(np.int32) - 1

        parts = [trits(b[:, 0:32], 5).reshape(-1, 160), trits(b[:, 32:48], 5).reshape(-1, 80),
                 trits(b[:, 48:52], 4).reshape(-1, 16)]
        return (np.concatenate(parts, axis=1).astype(np.float32) * d).astype(np.float32)


class TQ2_0(Format, qtype="TQ2_0"):
    @staticmethod
    def quantize_blocks(x, qw):
        xs = x.reshape(-1, 256)
        d, t = _trits(xs)
        t = (t & 3).astype(np.uint8).reshape(-1, 2, 4, 32)            # [nb, j/32, n, m]
        qs = t[:, :, 0] | (t[:, :, 1] << 2) | (t[:, :, 2] << 4) | (t[:, :, 3] << 6)
        return np.concatenate([qs.reshape(-1, 64), f16_bytes(d)], axis=1).reshape(*x.shape[:-1], -1)

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 64:66])[:, None]
        qs = b[:, 0:64].reshape(-1, 2, 1, 32)
        q = ((qs >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3).astype(np.int32) - 1
        return (q.reshape(-1, 256).astype(np.float32) * d).astype(np.float32)

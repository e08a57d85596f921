"""Legacy 32-element block types, plus Q1_0 / Q2_0 (ggml-quants.c quantize_q*_0/1).

Block layouts (bytes):
  Q4_0: d:2 qs:16            x = d * (q - 8)
  Q4_1: d:2 m:2 qs:16        x = d * q + m
  Q5_0: d:2 qh:4 qs:16       x = d * (q - 16), bit 4 of q in qh
  Q5_1: d:2 m:2 qh:4 qs:16   x = d * q + m
  Q8_0: d:2 qs:32            x = d * q (int8)
  Q8_1: d:2 s:2 qs:32        s = d * sum(q)
  Q1_0: d:2 qs:16 (128/blk)  x = +d if bit else -d
  Q2_0: d:2 qs:16 (64/blk)   x = d * (q - 1), q in 0..3
"""

import numpy as np

from ..types import Format
from ._util import F32, f16_bytes, f16_from, inv, roundf, seq_sum, u32_bytes, pack_nibbles
from .kmath import _first_absmax, _first_min_max, make_qx_quants, make_qkx3_quants


def _flat(x):
    return x.reshape(-1, x.shape[-1])


def _row_weights(x, qw):
    """qw * sqrtf(sigma2 + x^2) with sigma2 = sum(x^2 over the row) / n_per_row (row-sequential)."""
    nrows, nbr, bs = x.shape
    xr = x.reshape(nrows, nbr * bs)
    sigma2 = seq_sum(xr * xr) / F32(nbr * bs)                 # [nrows]
    w = qw[None] * np.sqrt(sigma2[:, None, None] + x * x)
    return w.astype(np.float32).reshape(-1, bs)


def _absmax_signed(x):
    """C: if (amax < fabsf(v)) { amax = fabsf(v); max = v; } -> max (0 for an all-zero block)."""
    return _first_absmax(x)[1]


def _trunc_u8(v, lim):
    """MIN(lim, (int8_t)(v)): C truncation toward zero of a float to int8, clipped at lim."""
    return np.minimum(lim, np.trunc(v).astype(np.int64)).astype(np.uint8)


def _qh_bits(q):
    """5th bits of q[nb, 32] -> u32 qh: bit j from q[j] (j < 16), bit 16+j from q[16+j]."""
    bits = ((q.astype(np.uint32) & 0x10) >> 4) << np.arange(32, dtype=np.uint32)
    return np.bitwise_or.reduce(bits, axis=-1).astype(np.uint32)


def _out(x, parts):
    """Concatenate per-block byte parts [nb, k] into u8[nrows, nbr, type_size]."""
    return np.concatenate(parts, axis=-1).reshape(*x.shape[:-1], -1)


class Q4_0(Format, qtype="Q4_0"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb = _flat(x)
        if qw is None:
            mx = _absmax_signed(xb)
            d = (mx / F32(-8)).astype(np.float32)
            q = _trunc_u8(xb * inv(d)[:, None] + F32(8.5), 15)
        else:
            d, L = make_qx_quants(xb, 8, _row_weights(x, qw), rmse_type=1)
            q = L.astype(np.uint8)
        return _out(x, [f16_bytes(d), pack_nibbles(q[:, :16], q[:, 16:])])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        qs = b[:, 2:18]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32) - 8
        return (q.astype(np.float32) * d).astype(np.float32)


class Q4_1(Format, qtype="Q4_1"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb = _flat(x)
        if qw is None:
            mn, mx = _first_min_max(xb)
            d = ((mx - mn) / F32(15)).astype(np.float32)
            q = _trunc_u8((xb - mn[:, None]) * inv(d)[:, None] + F32(0.5), 15)
            m = mn
        else:
            d, mneg, L = make_qkx3_quants(xb, 15, _row_weights(x, qw), -0.9, 0.05, 36, False)
            m = -mneg
            q = L.astype(np.uint8)
        return _out(x, [f16_bytes(d), f16_bytes(m), pack_nibbles(q[:, :16], q[:, 16:])])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        m = f16_from(b[:, 2:4])[:, None]
        qs = b[:, 4:20]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
        return (q * d + m).astype(np.float32)


class Q5_0(Format, qtype="Q5_0"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb = _flat(x)
        if qw is None:
            mx = _absmax_signed(xb)
            d = (mx / F32(-16)).astype(np.float32)
            q = _trunc_u8(xb * inv(d)[:, None] + F32(16.5), 31)
        else:
            d, L = make_qx_quants(xb, 16, _row_weights(x, qw), rmse_type=1)
            q = L.astype(np.uint8)
        return _out(x, [f16_bytes(d), u32_bytes(_qh_bits(q)), pack_nibbles(q[:, :16], q[:, 16:])])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        qh = np.ascontiguousarray(b[:, 2:6]).view(np.uint32)           # [nb, 1]
        hb = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32) << 4
        qs = b[:, 6:22]
        q = (np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32) | hb) - 16
        return (q.astype(np.float32) * d).astype(np.float32)


class Q5_1(Format, qtype="Q5_1"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb = _flat(x)
        if qw is None:
            mn, mx = _first_min_max(xb)
            d = ((mx - mn) / F32(31)).astype(np.float32)
            v = (xb - mn[:, None]) * inv(d)[:, None] + F32(0.5)
            q = np.trunc(v).astype(np.int64).astype(np.uint8)           # (uint8_t)(x0 + 0.5f)
            m = mn
        else:
            d, mneg, L = make_qkx3_quants(xb, 31, _row_weights(x, qw), -0.9, 0.05, 36, False)
            m = -mneg
            q = L.astype(np.uint8)
        return _out(x, [f16_bytes(d), f16_bytes(m), u32_bytes(_qh_bits(q)),
                        pack_nibbles(q[:, :16], q[:, 16:])])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        m = f16_from(b[:, 2:4])[:, None]
        qh = np.ascontiguousarray(b[:, 4:8]).view(np.uint32)
        hb = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32) << 4
        qs = b[:, 8:24]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32) | hb
        return (q.astype(np.float32) * d + m).astype(np.float32)


def _q8(xb):
    amax = np.abs(xb).max(axis=1)
    d = (amax / F32(127)).astype(np.float32)
    q = roundf(xb * inv(d)[:, None]).astype(np.int8)
    return d, q


class Q8_0(Format, qtype="Q8_0"):
    @staticmethod
    def quantize_blocks(x, qw):          # weights ignored by ggml
        d, q = _q8(_flat(x))
        return _out(x, [f16_bytes(d), q.view(np.uint8)])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        return (np.ascontiguousarray(b[:, 2:34]).view(np.int8).astype(np.float32) * d).astype(np.float32)


class Q8_1(Format, qtype="Q8_1"):
    @staticmethod
    def quantize_blocks(x, qw):          # quantize_row_q8_1_ref (not in ggml_quantize_chunk)
        d, q = _q8(_flat(x))
        s = q.astype(np.int32).sum(axis=1)
        return _out(x, [f16_bytes(d), f16_bytes((s.astype(np.float32) * d).astype(np.float32)),
                        q.view(np.uint8)])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        return (np.ascontiguousarray(b[:, 4:36]).view(np.int8).astype(np.float32) * d).astype(np.float32)


class Q1_0(Format, qtype="Q1_0"):
    @staticmethod
    def quantize_blocks(x, qw):          # weights ignored by ggml
        xb = _flat(x)
        d = (seq_sum(np.abs(xb)) / F32(128)).astype(np.float32)
        bits = (xb >= 0).reshape(-1, 16, 8).astype(np.uint8) << np.arange(8, dtype=np.uint8)
        qs = np.bitwise_or.reduce(bits, axis=-1).astype(np.uint8)
        return _out(x, [f16_bytes(d), qs])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        bits = (b[:, 2:18, None] >> np.arange(8, dtype=np.uint8)) & 1
        return np.where(bits.reshape(-1, 128) != 0, d, -d).astype(np.float32)


class Q2_0(Format, qtype="Q2_0"):
    @staticmethod
    def quantize_blocks(x, qw):          # weights ignored by ggml
        xb = _flat(x)
        d = np.abs(xb).max(axis=1).astype(np.float32)
        q = np.clip(roundf(xb * inv(d)[:, None]).astype(np.int64) + 1, 0, 3).astype(np.uint8)
        qs = np.bitwise_or.reduce(q.reshape(-1, 16, 4) << (2 * np.arange(4, dtype=np.uint8)), axis=-1)
        return _out(x, [f16_bytes(d), qs.astype(np.uint8)])

    @staticmethod
    def dequantize_blocks(b):
        d = f16_from(b[:, 0:2])[:, None]
        q = (b[:, 2:18, None] >> (2 * np.arange(4, dtype=np.uint8))) & 3
        return ((q.reshape(-1, 64).astype(np.int32) - 1).astype(np.float32) * d).astype(np.float32)

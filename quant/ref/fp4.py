"""MXFP4 (E8M0 shared exponent) and NVFP4 (UE4M3 scale per 16) with E2M1 values.

  MXFP4: e:1 qs:16          x = kvalues[q] * 2^(e-128)
  NVFP4: d:4 qs:32 (64/blk) per 16-element sub-block s: x = kvalues[q] * ue4m3(d[s]) / 2
kvalues (kvalues_mxfp4 = 2 * E2M1) = 0 1 2 3 4 6 8 12 0 -1 -2 -3 -4 -6 -8 -12.
Weights are ignored by ggml.
"""

import numpy as np

from ..types import Format
from ._util import F32

KVALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)


def e8m0_half(e):
    """GGML_E8M0_TO_FP32_HALF: 2^(e-128) as f32 bits."""
    e = np.asarray(e).astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23).astype(np.uint32)
    return bits.view(np.float32)


def best_index(x, d):
    """best_index_mxfp4: first index minimizing fabsf(kvalues[i]*d - x). x [..., n], d [..., 1]."""
    kv = KVALUES.astype(np.float32)
    best_i = np.zeros(x.shape, np.uint8)
    best = np.abs(kv[0] * d - x)
    for i in range(1, 16):
        err = np.abs(kv[i] * d - x)
        upd = err < best
        best_i = np.where(upd, np.uint8(i), best_i)
        best = np.where(upd, err, best)
    return best_i


def ue4m3_from_f32(x):
    """ggml_fp32_to_ue4m3 (elementwise)."""
    x = np.asarray(x, np.float32)
    out = np.zeros(x.shape, np.uint8)
    pos = x > 0
    xc = np.where(x > F32(448), F32(448), x).astype(np.float32)
    bits = xc.view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.int32) - 127 + 7
    man = ((bits >> 20) & 0x7).astype(np.int32)
    rb = ((bits >> 19) & 1).astype(np.int32)
    sub_man = np.minimum(7, np.trunc(xc * F32(512) + F32(0.5)).astype(np.int32))
    sub = np.where(sub_man < 1, 0, sub_man)
    m2 = man + rb
    carry = m2 > 7
    e2 = np.where(carry, exp + 1, exp)
    m2 = np.where(carry, 0, m2)
    norm = np.where(e2 >= 15, 0x7E, (e2 << 3) | m2)
    res = np.where(exp <= 0, sub, np.where(exp >= 15, 0x7E, norm))
    return np.where(pos, res, 0).astype(np.uint8) | out


def ue4m3_to_f32(u):
    """ggml_ue4m3_to_fp32: value * 0.5."""
    u = np.asarray(u).astype(np.int32)
    e = (u >> 3) & 0xF
    m = u & 7
    raw = np.where(e == 0, np.ldexp(m.astype(np.float32), -9),
                   np.ldexp(F32(1) + m.astype(np.float32) / F32(8), e - 7)).astype(np.float32)
    v = (raw * F32(0.5)).astype(np.float32)
    return np.where((u == 0) | (u == 0x7F), F32(0), v).astype(np.float32)


class MXFP4(Format, qtype="MXFP4"):
    @staticmethod
    def quantize_blocks(x, qw):
        xb = x.reshape(-1, 32)
        amax = np.abs(xb).max(axis=1)
        with np.errstate(divide="ignore"):
            e = np.where(amax > 0, np.floor(np.log2(np.where(amax > 0, amax, 1)).astype(np.float32))
                         - F32(2) + F32(127), 0)
        e = e.astype(np.int64).astype(np.uint8)
        d = e8m0_half(e)[:, None]
        q = best_index(xb, d)
        qs = q[:, :16] | (q[:, 16:] << 4)
        return np.concatenate([e[:, None], qs], axis=1).reshape(*x.shape[:-1], -1)

    @staticmethod
    def dequantize_blocks(b):
        d = e8m0_half(b[:, 0])[:, None]
        qs = b[:, 1:17]
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1)
        return (KVALUES[q].astype(np.float32) * d).astype(np.float32)


class NVFP4(Format, qtype="NVFP4"):
    @staticmethod
    def quantize_blocks(x, qw):
        xs = x.reshape(-1, 4, 16)
        amax = np.abs(xs).max(axis=2)
        ue = ue4m3_from_f32((amax / F32(6)).astype(np.float32))           # [nb, 4]
        d = ue4m3_to_f32(ue)[..., None]
        q = best_index(xs, d)                                             # [nb, 4, 16]
        qs = (q[..., :8] | (q[..., 8:] << 4)).reshape(-1, 32)
        return np.concatenate([ue, qs], axis=1).reshape(*x.shape[:-1], -1)

    @staticmethod
    def dequantize_blocks(b):
        d = ue4m3_to_f32(b[:, 0:4])[..., None]
        qs = b[:, 4:36].reshape(-1, 4, 8)
        q = np.concatenate([qs & 0xF, qs >> 4], axis=2)
        return (KVALUES[q].astype(np.float32) * d).astype(np.float32).reshape(-1, 64)

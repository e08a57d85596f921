"""Scalar helpers for the Numba kernels: float32 arithmetic exactly as ggml's C.

Rules kept everywhere in quant/fast: no fastmath (no FMA contraction, no reassociation),
error_model='numpy' (x/0 gives inf like C, no exception), every literal is np.float32 and
every int meeting a float is cast with F32() first (Numba would otherwise widen to float64).
"""

import math

import numpy as np
from numba import njit

F32 = np.float32
JIT = dict(cache=True, error_model="numpy", nogil=True)
MAGIC = F32(12582912.0)
LIM = F32(4194303.0)


@njit(**JIT)
def _nearest_int_slow(f):
    """The bit trick of nearest_int for |f| > 2^22, inf and NaN (degenerate ggml blocks)."""
    v = f + MAGIC
    if v != v:
        return 0                                   # default NaN: mantissa 0x400000
    av = abs(v)
    if av == np.inf or av == F32(0.0):
        return -4194304
    m, e = math.frexp(float(av))                   # av = m * 2^e, 0.5 <= m < 1
    if e >= -125:
        mant = int((m * 2.0 - 1.0) * 8388608.0)
    else:                                          # float32 subnormal
        mant = int(float(av) * 2.0 ** 149)
    return mant - 4194304


@njit(inline="always", **JIT)
def nearest_int(f):
    """ggml nearest_int(): round half to even for |f| <= 2^22 (fval + 12582912.f trick)."""
    if f >= -LIM and f <= LIM:
        return int(f + MAGIC) - 12582912           # f32 add rounds half to even, as in C
    return _nearest_int_slow(f)


@njit(inline="always", **JIT)
def roundf(f):
    """C roundf: half away from zero (returns float32)."""
    t = F32(math.trunc(f))
    if abs(f - t) >= F32(0.5):
        t = t + (F32(1.0) if f > 0 else F32(-1.0))
    return t


@njit(**JIT)
def f16_bits(f):
    """float32 -> IEEE fp16 bits, round to nearest even (GGML_FP32_TO_FP16)."""
    sign = 0x8000 if math.copysign(1.0, float(f)) < 0 else 0
    if f != f:
        return sign | 0x7E00                       # NaN keeps its sign, as in ggml
    a = abs(float(f))
    if a >= 65520.0:
        return sign | 0x7C00
    if a < 6.103515625e-05:                        # 2^-14: subnormal fp16
        return sign | int(np.rint(a * 16777216.0))
    m, e = math.frexp(a)                           # a = m * 2^e, m in [0.5, 1)
    q = int(np.rint(m * 2048.0))                   # 11 significant bits, may round to 2048
    return sign | (((e + 14) << 10) + q - 1024)


_POW2 = np.array([2.0 ** (e - 25) for e in range(32)], np.float64)


@njit(inline="always", **JIT)
def f16_value(h):
    """fp16 bits -> float32 (GGML_FP16_TO_FP32)."""
    e = (h >> 10) & 31
    m = h & 1023
    if e == 0:
        v = m * 5.960464477539063e-08             # 2^-24
    elif e == 31:
        v = np.inf if m == 0 else np.nan
    else:
        v = (m + 1024) * _POW2[e]
    if h & 0x8000:
        v = -v
    return F32(v)


@njit(inline="always", **JIT)
def put_f16(out, off, f):
    """Store f as fp16 at out[off:off+2]; returns the stored value as float32."""
    h = f16_bits(f)
    out[off] = h & 0xFF
    out[off + 1] = h >> 8
    return f16_value(h)


@njit(inline="always", **JIT)
def put_u32(out, off, v):
    out[off] = v & 0xFF
    out[off + 1] = (v >> 8) & 0xFF
    out[off + 2] = (v >> 16) & 0xFF
    out[off + 3] = (v >> 24) & 0xFF

"""Bit-level helpers shared by the numpy references (all float32, like ggml's C)."""

import numpy as np

F32 = np.float32


def f16_bytes(a) -> np.ndarray:
    """f32[...] -> u8[..., 2]: GGML_FP32_TO_FP16 (round to nearest even), little endian."""
    a = np.asarray(a, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        h = np.ascontiguousarray(a.astype(np.float16)).view(np.uint16)
    nan = a != a
    if nan.any():                          # ggml: sign | 0x7e00 (numpy keeps NaN payload bits)
        h = np.where(nan, (np.ascontiguousarray(a).view(np.uint32) >> 16 & 0x8000) | 0x7E00,
                     h).astype(np.uint16)
    return np.ascontiguousarray(h).view(np.uint8).reshape(*a.shape, 2)


def f16_from(b) -> np.ndarray:
    """u8[..., 2] -> f32[...]: GGML_FP16_TO_FP32."""
    b = np.ascontiguousarray(b)
    return b.view(np.float16).reshape(b.shape[:-1]).astype(np.float32)


def nearest_int(v) -> np.ndarray:
    """ggml's nearest_int: fval + 12582912.f, low 23 bits minus 0x400000 (half to even)."""
    w = np.asarray(v, np.float32) + F32(12582912.0)
    return (w.view(np.int32) & 0x007FFFFF) - 0x00400000


def roundf(v) -> np.ndarray:
    """C roundf (half away from zero), exactly, as float32."""
    v = np.asarray(v, np.float32)
    t = np.trunc(v)
    return np.where(np.abs(v - t) >= F32(0.5), t + np.sign(v), t).astype(np.float32)


def inv(d) -> np.ndarray:
    """d ? 1.0f/d : 0.0f, elementwise in float32."""
    d = np.asarray(d, np.float32)
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1.0) / np.where(d != 0, d, F32(1.0)), F32(0.0)).astype(np.float32)


def seq_sum(a) -> np.ndarray:
    """Sum over the last axis with a sequential float32 loop (C order), not numpy's pairwise sum."""
    a = np.asarray(a, np.float32)
    s = np.zeros(a.shape[:-1], np.float32)
    for j in range(a.shape[-1]):
        s += a[..., j]
    return s


def u32_bytes(v) -> np.ndarray:
    """u32[...] -> u8[..., 4] little endian."""
    v = np.ascontiguousarray(np.asarray(v, np.uint32))
    return v.view(np.uint8).reshape(*v.shape, 4)


def pack_nibbles(lo, hi) -> np.ndarray:
    """lo | hi << 4, as u8."""
    return (np.asarray(lo, np.uint8) & 0x0F) | ((np.asarray(hi, np.uint8) & 0x0F) << 4)

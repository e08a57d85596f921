"""F32, F16 and BF16 (block size 1) - ggml_fp32_to_fp16_row / ggml_fp32_to_bf16_row_ref."""

import numpy as np

from ..types import Format
from ._util import f16_bytes, f16_from


class F32(Format, qtype="F32"):
    @staticmethod
    def quantize_blocks(x, qw):
        return np.ascontiguousarray(x, np.float32).view(np.uint8).reshape(*x.shape[:-1], 4)

    @staticmethod
    def dequantize_blocks(b):
        return np.ascontiguousarray(b).view(np.float32).reshape(-1, 1)


class F16(Format, qtype="F16"):
    @staticmethod
    def quantize_blocks(x, qw):
        return f16_bytes(x[..., 0])

    @staticmethod
    def dequantize_blocks(b):
        return f16_from(b).reshape(-1, 1)


def bf16_bits(x, xp=np) -> np.ndarray:
    """ggml_compute_fp32_to_bf16: (u + 0x7fff + ((u >> 16) & 1)) >> 16; NaN -> (u >> 16) | 64.
    ``xp``: the array module of x (numpy, or cupy for device arrays)."""
    u = xp.ascontiguousarray(x, np.float32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16     # wraps only for NaNs, replaced below
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = xp.where(nan, (u >> 16) | 64, r)
    return r.astype(np.uint16)


class BF16(Format, qtype="BF16"):
    @staticmethod
    def quantize_blocks(x, qw):
        return bf16_bits(x[..., 0]).view(np.uint8).reshape(*x.shape[:-1], 2)

    @staticmethod
    def dequantize_blocks(b):
        h = np.ascontiguousarray(b).view(np.uint16).astype(np.uint32) << 16
        return h.view(np.float32).reshape(-1, 1)

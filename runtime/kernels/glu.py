"""Gated activations of the feed-forward: SwiGLU (silu in float64 rounded once) and GeGLU
(ggml's fp16-table GELU). Numpy, split over the shared thread pool; references
``runtime.reference.swiglu`` / ``geglu``."""

import math

import numba
import numpy as np
from numba import njit

from runtime.kernels.pool import pool

_GELU_TABLE = None
GELU_COEF_A = np.float32(0.044715)
SQRT_2_OVER_PI = np.float32(0.79788456080286535587989211986876)


def _gelu_f32(x):
    """ggml_gelu_f32: 0.5x(1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))), float32 math."""
    inner = SQRT_2_OVER_PI * x * (np.float32(1.0) + GELU_COEF_A * x * x)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner.astype(np.float64)).astype(np.float32))


def gelu_table():
    """f32[65536]: ggml_table_gelu_f16 (fp16 GELU of every fp16 input), as float32."""
    global _GELU_TABLE
    if _GELU_TABLE is None:
        xs = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
        with np.errstate(all="ignore"):
            _GELU_TABLE = _gelu_f32(xs).astype(np.float16).astype(np.float32)
    return _GELU_TABLE


def geglu(gate, up):
    """ggml_vec_geglu_f32 (GGML_GELU_FP16): table[fp16(gate)] * up, with the +-10 cut-offs."""
    g = gelu_table()[gate.astype(np.float16).view(np.uint16)]
    g = np.where(gate <= -10.0, np.float32(0.0), np.where(gate >= 10.0, gate, g))
    return (g * up).astype(np.float32)


SILU_PARALLEL_MIN = 1 << 16


@njit(cache=True, nogil=True)
def silu_mul(gate, up, out, a, b):
    """out[a:b] = silu(gate[a:b]) * up[a:b] on flat f32 arrays: silu in float64 rounded once to
    float32 (runtime.reference.silu; exp(-gate) -> inf gives -0, as in ggml), times up in float32.
    The decode layer programs (runtime/step.py) call it too, so both paths give the same floats."""
    for i in range(a, b):
        g = np.float64(gate[i])
        out[i] = np.float32(g / (1.0 + math.exp(-g))) * up[i]


def swiglu(gate, up):
    """silu(gate) * up (``silu_mul``; the CUDA backend's swiglu_f64 gives the same floats), split
    over Numba's thread count of Python threads (the kernel releases the GIL)."""
    gf = np.ascontiguousarray(gate, np.float32).reshape(-1)
    uf = np.ascontiguousarray(up, np.float32).reshape(-1)
    out = np.empty(gate.shape, np.float32)
    of = out.reshape(-1)
    n, nt = gf.size, numba.get_num_threads()
    if nt == 1 or n < SILU_PARALLEL_MIN:
        silu_mul(gf, uf, of, 0, n)
        return out
    step = -(-n // nt)
    list(pool(nt).map(lambda a: silu_mul(gf, uf, of, a, min(n, a + step)), range(0, n, step)))
    return out

"""RoPE kernel (ggml_compute_forward_rope_flt, forward, ext_factor = 0).

Numpy reference: ``runtime.reference.rope``. Same float32 theta recurrence:
theta_0 = float(p), theta_{i+1} = theta_i * powf(base, -2/n_rot); pair i uses
freq_scale * theta_i / freq_factors[i]; cos/sin in double, rounded to float.
"""

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _rope_token(x, t, pos, n_rot, theta_scale, freq_scale, ff, neox, out):
    """Token t: x, out f32 [n_tok, n_head, head_dim]; pos int [n_tok]; ff f32 [>= n_rot/2] (ones if none)."""
    n_tok, n_head, hd = x.shape
    half = n_rot // 2
    cos = np.empty(half, np.float32)
    sin = np.empty(half, np.float32)
    theta = np.float32(pos[t])
    for i in range(half):
        th = np.float32(freq_scale) * (theta / ff[i])
        cos[i] = np.float32(np.cos(np.float64(th)))
        sin[i] = np.float32(np.sin(np.float64(th)))
        theta = np.float32(theta * theta_scale)
    for h in range(n_head):
        for i in range(half):
            if neox:
                i0 = i
                i1 = i + half
            else:
                i0 = 2 * i
                i1 = 2 * i + 1
            x0 = x[t, h, i0]
            x1 = x[t, h, i1]
            out[t, h, i0] = x0 * cos[i] - x1 * sin[i]
            out[t, h, i1] = x0 * sin[i] + x1 * cos[i]
        for k in range(n_rot, hd):
            out[t, h, k] = x[t, h, k]


@njit(parallel=True, cache=True)
def rope_kernel(x, pos, n_rot, theta_scale, freq_scale, ff, neox, out):
    """All tokens, in parallel over tokens."""
    for t in prange(x.shape[0]):
        _rope_token(x, t, pos, n_rot, theta_scale, freq_scale, ff, neox, out)


@njit(cache=True)
def rope_kernel_serial(x, pos, n_rot, theta_scale, freq_scale, ff, neox, out):
    """All tokens on the calling thread (decode: a parallel region costs more than the work)."""
    for t in range(x.shape[0]):
        _rope_token(x, t, pos, n_rot, theta_scale, freq_scale, ff, neox, out)


PARALLEL_MIN = 1 << 16     # elements of x below which rope runs on one thread


def rope(x, pos, n_rot, freq_base, freq_scale=1.0, freq_factors=None, mode="norm"):
    theta_scale = np.float32(np.float64(np.float32(freq_base)) ** np.float64(np.float32(-2.0) / np.float32(n_rot)))
    ff = np.ones(n_rot // 2, np.float32) if freq_factors is None else np.ascontiguousarray(freq_factors, np.float32)
    out = np.empty_like(x)
    k = rope_kernel if x.size >= PARALLEL_MIN else rope_kernel_serial
    k(x, np.ascontiguousarray(pos, np.int64), n_rot, theta_scale, np.float32(freq_scale), ff, mode == "neox", out)
    return out

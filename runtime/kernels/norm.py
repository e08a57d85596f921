"""RMS norm kernel (ggml_compute_forward_rms_norm_f32, then ggml_mul by w).

Numpy reference: ``runtime.reference.rms_norm``. Float squares summed in double,
mean and 1/sqrtf(mean + eps) in float32, y = (x * scale) * w in float32.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def rms_norm_kernel(x, w, has_w, eps, out):
    """x, out: f32 [n_rows, n]; w: f32 [n] (ignored unless has_w)."""
    n_rows, n = x.shape
    for i in range(n_rows):
        s = 0.0
        for j in range(n):
            v = x[i, j] * x[i, j]                       # float32 product
            s += np.float64(v)
        mean = np.float32(s / n)
        scale = np.float32(1.0) / np.float32(np.sqrt(np.float32(mean + np.float32(eps))))
        for j in range(n):
            y = x[i, j] * scale
            out[i, j] = y * w[j] if has_w else y


def rms_norm(x, w, eps):
    x2 = x.reshape(-1, x.shape[-1])
    out = np.empty_like(x2)
    wv = np.ascontiguousarray(w, np.float32) if w is not None else np.ones(1, np.float32)
    rms_norm_kernel(x2, wv, w is not None, np.float32(eps), out)
    return out.reshape(x.shape)

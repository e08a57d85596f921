"""Causal GQA attention over a KV cache, float64 math with BLAS, rounded to float32 once.

Per kv head, the queries of its group are stacked into one matrix so the scores
and the weighted sum are two GEMMs (numpy ``@``). Numpy reference (float64,
einsum): ``runtime.reference.attention``. In float64 the result is the exact attention
rounded to float whatever the summation order, so the CUDA backend (its *_f64 attention
kernels) gives the same floats: see docs/CUDA.md "Agreement with the CPU backend".
"""

import numpy as np


def attention(q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
    """q: f32 [n_tok, n_head, hd]; caches f16|f32 [n_ctx_max, n_kv, hd] -> f32 [n_tok, n_head, hd]."""
    n_tok, n_head, hd = q.shape
    n_kv = k_cache.shape[1]
    group = n_head // n_kv
    n_keys = n_past + n_tok
    qpos = n_past + np.arange(n_tok)[:, None]
    kpos = np.arange(n_keys)[None, :]
    masked = kpos > qpos                                           # [n_tok, n_keys]
    if window is not None:
        masked |= (qpos - kpos) >= window
    out = np.empty((n_tok, n_head, q.shape[2] if v_cache.shape[2] == hd else v_cache.shape[2]), np.float32)
    for g in range(n_kv):
        k = np.asarray(k_cache[:n_keys, g, :], dtype=np.float64)   # [n_keys, hd]
        v = np.asarray(v_cache[:n_keys, g, :], dtype=np.float64)
        qg = q[:, g * group:(g + 1) * group, :].astype(np.float64)  # [n_tok, group, hd]
        s = (qg.reshape(n_tok * group, hd) @ k.T).reshape(n_tok, group, n_keys)
        s *= np.float32(scale)                                      # float64 math, float32 constants
        if softcap:
            s = np.float32(softcap) * np.tanh(s / np.float32(softcap))
        s[np.broadcast_to(masked[:, None, :], s.shape)] = -np.inf
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        out[:, g * group:(g + 1) * group, :] = (s.reshape(n_tok * group, n_keys) @ v).reshape(n_tok, group, -1)
    return out

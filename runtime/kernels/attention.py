"""Causal GQA attention over a KV cache, float64 math with BLAS, rounded to float32 once.

Per kv head, the queries of its group are stacked into one matrix so the scores
and the weighted sum are two GEMMs (numpy ``@``). In float64 the result is the exact
attention rounded to float whatever the summation order, so the CUDA backend (its
*_f64 attention kernels) gives the same floats (docs/CUDA.md "Agreement with the CPU
backend"), and so does any split of the work here:

- a prefill is cut into tiles of ``Q_TILE`` query rows; a tile multiplies only the keys
  its queries can see (the causal upper triangle, and keys left of a sliding window, are
  skipped rather than masked: about half the products of a long prompt);
- the (kv head, tile) jobs run on Numba's thread count of Python threads (numpy releases
  the GIL in the products and the softmax's ufuncs).

Numpy reference (float64, einsum): ``runtime.reference.attention``.
"""

import numba
import numpy as np

Q_TILE = 128                 # query rows per job
PARALLEL_MIN_WORK = 1 << 20  # (tokens x keys x head dim x heads) below this, one thread


def _job(q, k_cache, v_cache, out, g, group, i0, i1, n_past, scale, window, softcap):
    """Queries i0..i1 of kv head g's group -> out[i0:i1, group of g]."""
    hd = q.shape[2]
    kend = n_past + i1                                                 # keys seen by the tile's last query
    kbeg = 0 if window is None else max(0, n_past + i0 - window + 1)   # ... and by its first
    k = np.asarray(k_cache[kbeg:kend, g, :], dtype=np.float64)         # [keys, hd]
    v = np.asarray(v_cache[kbeg:kend, g, :], dtype=np.float64)
    n, h0, h1 = i1 - i0, g * group, (g + 1) * group
    qg = q[i0:i1, h0:h1, :].astype(np.float64)                         # [n, group, hd]
    s = (qg.reshape(n * group, hd) @ k.T).reshape(n, group, kend - kbeg)
    s *= np.float32(scale)                                             # float64 math, float32 constants
    if softcap:
        s = np.float32(softcap) * np.tanh(s / np.float32(softcap))
    qpos = n_past + np.arange(i0, i1)[:, None]
    kpos = np.arange(kbeg, kend)[None, :]
    masked = kpos > qpos
    if window is not None:
        masked |= (qpos - kpos) >= window
    if masked.any():
        s[np.broadcast_to(masked[:, None, :], s.shape)] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    out[i0:i1, h0:h1, :] = (s.reshape(n * group, kend - kbeg) @ v).reshape(n, group, -1)


def attention(q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
    """q: f32 [n_tok, n_head, hd]; caches f16|f32 [n_ctx_max, n_kv, hd] -> f32 [n_tok, n_head, hd]."""
    n_tok, n_head, hd = q.shape
    n_kv = k_cache.shape[1]
    group = n_head // n_kv
    n_keys = n_past + n_tok
    out = np.empty((n_tok, n_head, q.shape[2] if v_cache.shape[2] == hd else v_cache.shape[2]), np.float32)
    jobs = [(g, i0, min(n_tok, i0 + Q_TILE)) for g in range(n_kv) for i0 in range(0, n_tok, Q_TILE)]
    n_threads = numba.get_num_threads()
    if n_threads == 1 or len(jobs) == 1 or n_tok * n_keys * hd * n_head < PARALLEL_MIN_WORK:
        for g, i0, i1 in jobs:
            _job(q, k_cache, v_cache, out, g, group, i0, i1, n_past, scale, window, softcap)
        return out
    from runtime.kernels.matmul import _pool
    list(_pool(n_threads).map(
        lambda j: _job(q, k_cache, v_cache, out, j[0], group, j[1], j[2], n_past, scale, window, softcap), jobs))
    return out

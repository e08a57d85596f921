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

A few queries (decode: one) on a short cache instead run ``attn_rows``, one single-threaded
Numba call with the same float64 math and no numpy temporaries (the BLAS jobs cost 0.27 ms a
decode call on deci-mid at 16-144 cached tokens, mostly per-call overhead; attn_rows 0.04-0.15).

Numpy reference (float64, einsum): ``runtime.reference.attention``.
"""

import math

import numba
import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from quant.fast.blocks import F16_LUT
from runtime.kernels.pool import pool
from runtime.kernels.simd import half_to_f64

Q_TILE = 128                 # query rows per job
PARALLEL_MIN_WORK = 1 << 20  # (tokens x keys x head dim x heads) below this, one thread
ROWS_MAX_TOKENS = 4          # up to this many queries on a short cache (work < PARALLEL_MIN_WORK):
                             # attn_rows (Numba, one thread), else the BLAS tiles


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


_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10    # fdlibm's split of ln 2
_EXP_C = np.array([1.0 / math.factorial(i) for i in range(14)])             # Taylor to r^13: error < 1e-17


def _load_row(c, off, lut, row, n):
    """row[:n] = float64 of the cache row starting at flat element ``off`` (f16 bits or float32;
    the implementation is chosen per cache dtype by the overload below)."""


@overload(_load_row, inline="always")
def _load_row_impl(c, off, lut, row, n):
    if isinstance(c.dtype, types.Integer):            # f16 bits: 8 at a time in vector code, the tail by table
        def impl(c, off, lut, row, n):
            n8 = n // 8
            half_to_f64(c, off, row, n8)
            flat = c.reshape(-1)
            for d in range(8 * n8, n):
                row[d] = np.float64(lut[flat[off + d]])
        return impl

    def impl_f(c, off, lut, row, n):
        flat = c.reshape(-1)
        for d in range(n):
            row[d] = np.float64(flat[off + d])
    return impl_f


@njit(inline="always")
def _rows_job(q, kc, vc, lut, out, t, g, group, n_past, scale, window, softcap):
    """Query t against kv head g's keys, for the heads of g's group (float64, rounded once)."""
    hd, dv = q.shape[2], vc.shape[2]
    n_kv = kc.shape[1]
    kend = n_past + t + 1
    kbeg = 0 if window <= 0 else max(0, kend - window)
    nk, h0 = kend - kbeg, g * group
    sc = np.float64(np.float32(scale))
    cap = np.float64(np.float32(softcap))
    s = np.empty((group, nk))
    row = np.empty(max(hd, dv))
    qd = np.empty((group, hd))
    for hh in range(group):
        for d in range(hd):
            qd[hh, d] = np.float64(q[t, h0 + hh, d])
    for j in range(nk):
        _load_row(kc, ((kbeg + j) * n_kv + g) * hd, lut, row, hd)
        for hh in range(group):
            a = 0.0
            for d in range(hd):
                a += qd[hh, d] * row[d]
            a *= sc
            if softcap > 0:
                a = cap * math.tanh(a / cap)
            s[hh, j] = a
    pw = np.empty(nk, np.int64)                    # 2^n of each exp, as float64 bits
    fw = pw.view(np.float64)
    for hh in range(group):
        mx = -np.inf
        for j in range(nk):
            mx = max(mx, s[hh, j])
        for j in range(nk):                        # exp(s - mx) <= 1 in vector code (libm's is scalar)
            x = s[hh, j] - mx
            n = np.rint(x * _LOG2E)
            r = (x - n * _LN2_HI) - n * _LN2_LO    # |r| <= ln2 / 2
            p = _EXP_C[13]
            for c in range(12, -1, -1):
                p = p * r + _EXP_C[c]
            ok = x > -708.0                        # below: exp underflows (0, as libm's to double)
            s[hh, j] = p if ok else 0.0
            pw[j] = (np.int64(n) + 1023) << 52 if ok else np.int64(1023) << 52
        tot = 0.0
        for j in range(nk):
            e = s[hh, j] * fw[j]
            s[hh, j] = e
            tot += e
        for j in range(nk):
            s[hh, j] /= tot
    acc = np.zeros((group, dv))
    for j in range(nk):
        _load_row(vc, ((kbeg + j) * n_kv + g) * dv, lut, row, dv)
        for hh in range(group):
            p = s[hh, j]
            for d in range(dv):
                acc[hh, d] += p * row[d]
    for hh in range(group):
        for d in range(dv):
            out[t, h0 + hh, d] = np.float32(acc[hh, d])


_ROWS_MATH = {"reassoc", "contract", "nsz", "arcp"}   # vectorized sums; float64 makes the order moot


@njit(cache=True, fastmath=_ROWS_MATH)
def attn_rows(q, kc, vc, lut, out, n_past, scale, window, softcap):
    """Causal GQA attention of a few queries (window <= 0: none; softcap <= 0: none)."""
    n_tok, n_head = q.shape[0], q.shape[1]
    n_kv = kc.shape[1]
    for i in range(n_tok * n_kv):
        _rows_job(q, kc, vc, lut, out, i // n_kv, i % n_kv, n_head // n_kv, n_past, scale, window, softcap)


def _cache_arg(c):
    c = np.ascontiguousarray(c)
    return c.view(np.uint16) if c.dtype == np.float16 else c


def attention(q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
    """q: f32 [n_tok, n_head, hd]; caches f16|f32 [n_ctx_max, n_kv, hd] -> f32 [n_tok, n_head, hd]."""
    n_tok, n_head, hd = q.shape
    n_kv = k_cache.shape[1]
    group = n_head // n_kv
    n_keys = n_past + n_tok
    out = np.empty((n_tok, n_head, q.shape[2] if v_cache.shape[2] == hd else v_cache.shape[2]), np.float32)
    n_threads = numba.get_num_threads()
    if (n_tok <= ROWS_MAX_TOKENS and n_tok * n_keys * hd * n_head < PARALLEL_MIN_WORK
            and k_cache.dtype == v_cache.dtype and k_cache.dtype in (np.float16, np.float32)):
        attn_rows(q, _cache_arg(k_cache), _cache_arg(v_cache), F16_LUT, out, n_past, scale,
                  0 if window is None else int(window), float(softcap or 0.0))
        return out
    jobs = [(g, i0, min(n_tok, i0 + Q_TILE)) for g in range(n_kv) for i0 in range(0, n_tok, Q_TILE)]
    if n_threads == 1 or len(jobs) == 1 or n_tok * n_keys * hd * n_head < PARALLEL_MIN_WORK:
        for g, i0, i1 in jobs:
            _job(q, k_cache, v_cache, out, g, group, i0, i1, n_past, scale, window, softcap)
        return out
    list(pool(n_threads).map(
        lambda j: _job(q, k_cache, v_cache, out, j[0], group, j[1], j[2], n_past, scale, window, softcap), jobs))
    return out

"""Helpers shared by the IQ numpy references (float32, C operation order)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import QuantError
from ._util import F32, nearest_int, seq_sum
from .iq_tables import search_grid

GROUP_MAX_EPS = F32(1e-15)


def require_weights(qw, qtype: str) -> None:
    """IQ2_XXS, IQ2_XS and IQ1_S have no weightless path (ggml asserts quant_weights)."""
    if qw is None or np.size(qw) == 0:
        raise QuantError(f"{qtype} requires an importance matrix (imatrix)")


def blocks_and_weights(x, qw, block_size: int):
    """x: f32[..., block_size] blocks in row order; qw: f32[nbr, block_size] or None (block i uses
    qw[i % nbr]). Returns (f32[nb, block_size], f32[nb, block_size] or None)."""
    xb = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, block_size)
    if qw is None:
        return xb, None
    qw = np.asarray(qw, np.float32).reshape(-1, block_size)
    return xb, qw[np.arange(xb.shape[0]) % qw.shape[0]]


def in_chunks(fn, xb, w, *args, chunk: int = 128):
    """fn(x[c], w[c], *args) over chunks of `chunk` blocks, concatenated: bounds the memory of
    the vectorised search (neighbour candidates are [groups, max neighbours, 8])."""
    parts = [fn(xb[i:i + chunk], None if w is None else w[i:i + chunk], *args)
             for i in range(0, xb.shape[0], chunk)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.uint8)


def best_index_int8(values, x) -> np.ndarray:
    """ggml best_index_int8 (nearest entry of an ascending int8 table; ties go up), elementwise."""
    v = np.asarray(values).astype(np.float32)
    n = v.shape[0]
    x = np.asarray(x, np.float32)
    mu = np.clip(np.searchsorted(v, x, side="right"), 1, n - 1)
    with np.errstate(invalid="ignore"):
        idx = np.where(x - v[mu - 1] < v[mu] - x, mu - 1, mu)
        idx = np.where(x >= v[n - 1], n - 1, idx)
        idx = np.where(x <= v[0], 0, idx)
    return idx


def first_absmax(x):
    """(amax, signed value) of the first element with the largest |x| along the last axis,
    scanning like C: `if (ax > amax) { amax = ax; max = x; }` from amax = max = 0 (NaN never wins)."""
    a = np.abs(x)
    amax = np.zeros(x.shape[:-1], np.float32)
    mx = np.zeros(x.shape[:-1], np.float32)
    for i in range(x.shape[-1]):
        gt = a[..., i] > amax
        amax = np.where(gt, a[..., i], amax)
        mx = np.where(gt, x[..., i], mx)
    return amax, mx


def fmax_seq(x):
    """C `max = x[0]; for i: max = MAX(max, x[i])` along the last axis (MAX(a,b) = a > b ? a : b)."""
    m = x[..., 0].copy()
    for i in range(1, x.shape[-1]):
        m = np.where(m > x[..., i], m, x[..., i])
    return m


# ------------------------------------------------------------------ grid search (IQ2 / IQ3)


@lru_cache(maxsize=None)
def padded_neighbours(name: str):
    """kmap's neighbour lists as a dense table: (idx i64[kmap_size, maxn] padded with -1)."""
    sg = search_grid(name)
    kmap, nb = sg.kmap, sg.neighbours.astype(np.int64)
    offs = np.nonzero(kmap < -1)[0]
    o = -kmap[offs].astype(np.int64) - 1
    cnt = nb[o]
    out = np.full((kmap.shape[0], int(cnt.max())), -1, np.int64)
    for code, off, n in zip(offs, o, cnt):
        out[code, :n] = nb[off + 1:off + 1 + n]
    return out


def project(name: str, u, xg, wg, scale):
    """Map packed codes u[...] to grid points: kmap[u] if on the grid, else the neighbour with the
    smallest sum(w*(scale*q - x)^2) (first one on ties; ggml's *_find_best_neighbour).
    xg, wg: f32[..., nf]; scale: f32[...]. Returns (grid index i64[...], on_grid bool[...])."""
    sg = search_grid(name)
    gi = sg.kmap[u].astype(np.int64)
    on = gi >= 0
    off = ~on
    if off.any():
        cand = padded_neighbours(name)[u[off]]                        # [m, maxn]
        pts = sg.grid[np.maximum(cand, 0)].astype(np.float32)         # [m, maxn, nf]
        x = xg[off][:, None, :]
        w = wg[off][:, None, :]
        s = np.broadcast_to(scale, u.shape)[off][:, None]
        d2 = np.zeros(cand.shape, np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for i in range(pts.shape[-1]):
                diff = s * pts[..., i] - x[..., i]
                d2 = d2 + w[..., i] * diff * diff
        d2 = np.where((cand < 0) | np.isnan(d2), np.inf, d2)
        gi[off] = np.take_along_axis(cand, np.argmin(d2, axis=1)[:, None], 1)[:, 0]
    return gi, on


def pack_codes(l, bits: int):
    """l i64[..., nf] -> u i64[...] = sum(l_i << bits*i)."""
    return (l << (bits * np.arange(l.shape[-1]))).sum(axis=-1)


def grid_levels(name: str, gi):
    """Grid indices -> level values l = (coordinate - 1) / 2, i64[..., nf]."""
    return (search_grid(name).grid[gi].astype(np.int64) - 1) // 2


def round_levels(idd, xval, kmax: int):
    """MAX(0, MIN(kmax, nearest_int(0.5f*(id*xval - 1)))) elementwise; idd broadcasts over xval."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = F32(0.5) * (idd * xval - F32(1.0))
    return np.clip(nearest_int(v), 0, kmax).astype(np.int64)


def qsums(weight, xval, L):
    """q = 2L+1: sumqx = sum(w*x*q), sumq2 = sum(w*q*q), sequential over the last axis."""
    q = (2 * L + 1).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return seq_sum(weight * xval * q), seq_sum(weight * q * q)


@np.errstate(all="ignore")
def trial_search(name, xval, weight, waux, numerators, denom, scale0, on0, nf, bits, kmax):
    """The `for (is = ...)` scale scan of the IQ2/IQ3 quantizers, vectorized over sub-blocks.

    xval, weight, waux: f32[S, n]; numerators: float32 list (2*kMaxQ-1 + is*step);
    denom, scale0: f32[S]. Returns (scale f32[S], L i64[S, n], on_grid bool[S, n/nf], improved bool[S])."""
    S, n = xval.shape
    G = n // nf
    best = np.zeros(S, np.float32)
    scale = scale0.astype(np.float32).copy()
    L = np.zeros((S, n), np.int64)
    on = np.full((S, G), on0)
    improved = np.zeros(S, bool)
    for num in numerators:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            idd = (F32(num) / denom).astype(np.float32)
            this_scale = (F32(1.0) / idd).astype(np.float32)
        la = round_levels(idd[:, None], xval, kmax).reshape(S, G, nf)
        gi, ong = project(name, pack_codes(la, bits), xval.reshape(S, G, nf), waux.reshape(S, G, nf),
                          np.repeat(this_scale[:, None], G, 1))
        la = grid_levels(name, gi).reshape(S, n)
        sumqx, sumq2 = qsums(weight, xval, la)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            upd = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            scale = np.where(upd, sumqx / sumq2, scale).astype(np.float32)
            best = np.where(upd, scale * sumqx, best).astype(np.float32)
        L = np.where(upd[:, None], la, L)
        on = np.where(upd[:, None], ong, on)
        improved |= upd
    return scale, L, on, improved


@np.errstate(all="ignore")
def refine(name, xval, weight, waux, scale, L, groups, nf, bits, kmax):
    """Requantize the groups marked in groups bool[S, G] with id = 1/scale (neighbour search with
    `scale`), then scale = sumqx/sumq2 if sumq2 > 0. Only rows with any group marked change."""
    S, n = xval.shape
    G = n // nf
    rows = groups.any(axis=1)
    if not rows.any():
        return scale, L
    with np.errstate(divide="ignore"):
        idd = (F32(1.0) / scale).astype(np.float32)
    la = round_levels(idd[:, None], xval, kmax).reshape(S, G, nf)
    gi, _ = project(name, pack_codes(la, bits), xval.reshape(S, G, nf), waux.reshape(S, G, nf),
                    np.repeat(scale[:, None], G, 1))
    la = grid_levels(name, gi)
    L = np.where(groups[:, :, None], la, L.reshape(S, G, nf)).reshape(S, n)
    sumqx, sumq2 = qsums(weight, xval, L)
    with np.errstate(divide="ignore", invalid="ignore"):
        new = np.where(sumq2 > 0, sumqx / sumq2, scale).astype(np.float32)
    return np.where(rows, new, scale).astype(np.float32), L


def flip_signs(xb, weight, parity: bool):
    """|x| per group of 8 and the sign bits; with parity, an odd count of negatives flips back the
    element with the smallest weight*x^2 (first on ties) so the sign byte has even parity.
    Returns (xval f32[S, n], signs i64[S, n/8] (7 bits with parity, 8 without))."""
    S, n = xb.shape
    neg = xb < 0
    xval = np.where(neg, -xb, xb).astype(np.float32)
    bits = neg.reshape(S, n // 8, 8)
    s = (bits.astype(np.int64) << np.arange(8)).sum(axis=-1)
    if parity:
        odd = bits.sum(axis=-1) % 2 == 1
        with np.errstate(over="ignore", invalid="ignore"):
            ax = (weight * xb * xb).reshape(S, n // 8, 8)
        # first minimum with strict '<' from i = 0
        imin = np.zeros(ax.shape[:2], np.int64)
        mn = ax[..., 0].copy()
        for i in range(1, 8):
            lt = ax[..., i] < mn
            mn = np.where(lt, ax[..., i], mn)
            imin = np.where(lt, i, imin)
        xv = xval.reshape(S, n // 8, 8)
        sel = odd[..., None] & (np.arange(8) == imin[..., None])
        xval = np.where(sel, -xv, xv).reshape(S, n).astype(np.float32)
        s = np.where(odd, s ^ (1 << imin), s) & 127
    return xval, s

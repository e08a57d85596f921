"""Budgeted per-tensor type allocation: the pure algorithm (no files, no model).

Model of the error (HIGGS-like, additive over tensors):

    KLD(mix) ~= sum_t alpha_t * e_t(type_t)

- ``e_t(type)``: the importance-weighted relative quantization error of tensor t in that type,
  ``sum_j imat_j (w - q(w))_j^2 / sum_j imat_j w_j^2`` over sampled rows (``relative_error``);
- ``alpha_t``: the tensor's sensitivity, KLD per unit of relative error, measured by the caller
  (``runtime.sensitivity``) by quantizing that one tensor and running the model.

``allocate`` solves the multiple-choice knapsack ``min sum D_t(c_t)  s.t.  sum S_t(c_t) <= budget``
(S_t: exact padded bytes): a Lagrangian sweep over lambda (each tensor picks argmin D + lambda*S,
i.e. a point of its lower convex hull), binary search for the smallest lambda that fits, then a
greedy fill of the left-over bytes by best error reduction per extra byte (which also reaches
points inside the hull), then a greedy exchange pass. Exact: every size is an integer byte count.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from quant.errors import QuantError


@dataclass
class Choice:
    type: str
    nbytes: int          # exact bytes in the file, padding included
    error: float         # estimated KLD contribution (alpha * e)


@dataclass
class TensorOptions:
    name: str
    choices: list[Choice] = field(default_factory=list)


@dataclass
class Allocation:
    types: dict[str, str]
    nbytes: int
    error: float


def relative_error(w: np.ndarray, q: np.ndarray, imatrix: np.ndarray | None) -> float:
    """sum imat (w - q)^2 / sum imat w^2 over rows (imatrix: one weight per column, or None)."""
    w = np.asarray(w, np.float64)
    d = w - np.asarray(q, np.float64)
    if imatrix is None:
        return float((d * d).sum() / max((w * w).sum(), 1e-30))
    im = np.asarray(imatrix, np.float64)[None, :]
    return float((im * d * d).sum() / max((im * w * w).sum(), 1e-30))


def _pick(opts: list[TensorOptions], lam: float) -> list[int]:
    return [min(range(len(o.choices)), key=lambda i, o=o: (o.choices[i].error + lam * o.choices[i].nbytes,
                                                            o.choices[i].nbytes)) for o in opts]


def _total(opts, idx) -> tuple[int, float]:
    return (sum(o.choices[i].nbytes for o, i in zip(opts, idx)),
            sum(o.choices[i].error for o, i in zip(opts, idx)))


def allocate(opts: list[TensorOptions], budget: int) -> Allocation:
    """One choice per tensor minimising the summed error with total bytes <= budget."""
    for o in opts:
        if not o.choices:
            raise QuantError(f"no candidate type fits tensor {o.name}")
    smallest = [min(range(len(o.choices)), key=lambda i, o=o: (o.choices[i].nbytes, o.choices[i].error)) for o in opts]
    min_bytes = _total(opts, smallest)[0]
    if min_bytes > budget:
        raise QuantError(f"the budget of {budget} bytes is below the smallest possible mix ({min_bytes} bytes)")
    # Lagrangian: larger lambda -> smaller files; find the smallest lambda that fits
    lo, hi = 0.0, 1.0
    while _total(opts, _pick(opts, hi))[0] > budget:
        hi *= 4
        if hi > 1e30:
            break
    if _total(opts, _pick(opts, lo))[0] <= budget:
        idx = _pick(opts, lo)
    else:
        for _ in range(100):
            mid = (lo + hi) / 2
            if _total(opts, _pick(opts, mid))[0] > budget:
                lo = mid
            else:
                hi = mid
        idx = _pick(opts, hi)
        if _total(opts, idx)[0] > budget:
            idx = smallest
    idx = _greedy_fill(opts, idx, budget)
    idx = _exchange(opts, idx, budget)
    nb, err = _total(opts, idx)
    return Allocation({o.name: o.choices[i].type for o, i in zip(opts, idx)}, nb, err)


def _greedy_fill(opts, idx, budget):
    idx = list(idx)
    used = _total(opts, idx)[0]
    while True:
        best, best_r = None, 0.0
        for t, o in enumerate(opts):
            cur = o.choices[idx[t]]
            for i, c in enumerate(o.choices):
                extra = c.nbytes - cur.nbytes
                gain = cur.error - c.error
                if gain <= 0 or used + extra > budget:
                    continue
                r = gain / extra if extra > 0 else float("inf")
                if r > best_r:
                    best, best_r = (t, i), r
        if best is None:
            return idx
        t, i = best
        used += opts[t].choices[i].nbytes - opts[t].choices[idx[t]].nbytes
        idx[t] = i


def _exchange(opts, idx, budget, rounds: int = 50):
    """Pairs of moves: downgrade one tensor to pay for a better upgrade of another."""
    idx = list(idx)
    used = _total(opts, idx)[0]
    for _ in range(rounds):
        downs = []   # (bytes freed, error added, t, i)
        ups = []     # (bytes needed, error removed, t, i)
        for t, o in enumerate(opts):
            cur = o.choices[idx[t]]
            for i, c in enumerate(o.choices):
                if c.nbytes < cur.nbytes and c.error >= cur.error:
                    downs.append((cur.nbytes - c.nbytes, c.error - cur.error, t, i))
                elif c.nbytes > cur.nbytes and c.error < cur.error:
                    ups.append((c.nbytes - cur.nbytes, cur.error - c.error, t, i))
        best, best_gain = None, 1e-15
        slack = budget - used
        downs.sort(key=lambda d: d[1] / max(d[0], 1))
        for nb_u, gain_u, tu, iu in ups:
            if nb_u <= slack and gain_u > best_gain:
                best, best_gain = ((tu, iu),), gain_u
            for nb_d, loss_d, td, idd in downs[:64]:
                if td == tu or nb_u > slack + nb_d:
                    continue
                g = gain_u - loss_d
                if g > best_gain:
                    best, best_gain = ((tu, iu), (td, idd)), g
        if best is None:
            return idx
        for t, i in best:
            used += opts[t].choices[i].nbytes - opts[t].choices[idx[t]].nbytes
            idx[t] = i
    return idx

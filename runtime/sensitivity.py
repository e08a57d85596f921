"""How much a model's output moves when some of its weights change: KL divergence of the
next-token distributions to the unmodified model on a few token sequences.

``Probe`` runs the base model once over the sequences, keeping every layer's input and the base
log-probabilities of the scored rows; ``kld(replace)`` then runs the model with some weights
replaced (name -> f32 [n_out, n_in]) from the first layer that changed, and returns the mean KLD
(base || modified) over the scored rows. Used by the allocator to measure per-tensor sensitivity.
"""
from __future__ import annotations

import re

import numpy as np

from runtime import backend as B
from runtime.qtensor import QTensor

_BLK = re.compile(r"^blk\.(\d+)\.")


def _log_softmax(lg: np.ndarray) -> np.ndarray:
    lg = np.asarray(lg, np.float32)
    m = lg.max(axis=1, keepdims=True)
    s = np.exp(lg - m).sum(axis=1, keepdims=True, dtype=np.float64)
    return lg - m - np.log(s).astype(np.float32)


class Probe:
    def __init__(self, model, seqs: list[np.ndarray], score_from: int = 16, score_step: int = 2,
                 cache_dtype=np.float32):
        self.m, self.seqs, self.cache_dtype = model, [np.asarray(s, np.int32) for s in seqs], cache_dtype
        self.rows = [np.arange(score_from, len(s), score_step) for s in self.seqs]
        self.inputs: list[list[np.ndarray]] = []
        self.base_lp: list[np.ndarray] = []
        for s, rows in zip(self.seqs, self.rows):
            xs = []
            x = model.embed(s)
            cache = model.new_cache(len(s), cache_dtype)
            pos = np.arange(len(s), dtype=np.int32)
            for il in range(model.hp.n_layer):
                xs.append(x)
                x = model.layer(il, x, pos, cache)
            self.inputs.append(xs)
            self.base_lp.append(self._out(x, rows).astype(np.float32))

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows)

    def _out(self, x, rows):
        h = B.CPU.rms_norm(x[rows], self.m.w.vec("output_norm.weight"), self.m.hp.eps)
        return _log_softmax(self.m.logits(h))

    def kld(self, replace: dict[str, np.ndarray]) -> float:
        """Mean KL(base || modified) over the scored rows with ``replace`` swapped in."""
        m = self.m
        saved = {k: m.w.mats[k] for k in replace}
        saved_out = m.output
        first = m.hp.n_layer
        for k, v in replace.items():
            qt = QTensor(np.ascontiguousarray(v, np.float32).view(np.uint8).reshape(v.shape[0], -1), "F32",
                           v.shape, k)
            m.w.mats[k] = qt
            if m.output is saved[k]:
                m.output = qt
            mt = _BLK.match(k)
            first = min(first, int(mt.group(1)) if mt else (0 if k == "token_embd.weight" else first))
        try:
            tot, n = 0.0, 0
            for s, rows, xs, base in zip(self.seqs, self.rows, self.inputs, self.base_lp):
                pos = np.arange(len(s), dtype=np.int32)
                cache = m.new_cache(len(s), self.cache_dtype)
                if "token_embd.weight" in replace:
                    x = m.embed(s)
                    start = 0
                else:
                    start = first
                    x = xs[start] if start < m.hp.n_layer else None
                for il in range(start, m.hp.n_layer):
                    x = m.layer(il, x, pos, cache)
                if x is None:   # only the output changed
                    x = m.layer(m.hp.n_layer - 1, xs[-1], pos, cache)
                lp = self._out(x, rows)
                tot += float((np.exp(base) * (base - lp)).sum(dtype=np.float64))
                n += len(rows)
            return tot / n
        finally:
            for k, v in saved.items():
                m.w.mats[k] = v
            m.output = saved_out

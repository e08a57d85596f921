"""How much a model's output moves when some of its weights change: KL divergence of the
next-token distributions to the unmodified model on a few token sequences.

``Probe`` runs the base model once over the sequences, layer by layer, keeping each layer's input
hidden states (in memory, or with ``spill`` in files mapped back read-only, which the kernel can
drop like the model's own mapped pages) and the base log-probabilities of the scored rows.
``kld(replace)`` then runs the model with some weights replaced (name -> f32 [n_out, n_in], or a
function returning it) from the first layer that changed, layer by layer: a block's replacements
are made just before it runs and dropped after it, so at most one layer's replaced weights exist
at a time (token_embd and output, outside the blocks, for the whole run). It returns the mean KLD
(base || modified) over the scored rows. Used by the allocator to measure sensitivities and to
check a mix against llama.cpp's standard one.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Callable, Mapping

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
                 cache_dtype=np.float32, spill: bool = False):
        self.m, self.seqs, self.cache_dtype = model, [np.asarray(s, np.int32) for s in seqs], cache_dtype
        self.rows = [np.arange(score_from, len(s), score_step) for s in self.seqs]
        self._dir = tempfile.TemporaryDirectory(prefix="ggufkit-probe-") if spill else None
        self.inputs: list[list[np.ndarray]] = []       # [layer][sequence]: the layer's input
        xs = [model.embed(s) for s in self.seqs]
        caches = [model.new_cache(len(s), cache_dtype) for s in self.seqs]
        for il in range(model.hp.n_layer):
            self.inputs.append([self._keep(il, j, x) for j, x in enumerate(xs)])
            xs = [model.layer(il, x, self._pos(s), c) for x, s, c in zip(xs, self.seqs, caches)]
        self.base_lp = [self._out(x, rows).astype(np.float32) for x, rows in zip(xs, self.rows)]

    def _keep(self, il: int, j: int, x: np.ndarray) -> np.ndarray:
        if self._dir is None:
            return x
        path = os.path.join(self._dir.name, f"{il}-{j}.npy")
        np.save(path, x)
        return np.load(path, mmap_mode="r")

    @staticmethod
    def _pos(s) -> np.ndarray:
        return np.arange(len(s), dtype=np.int32)

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows)

    def _out(self, x, rows):
        h = B.CPU.rms_norm(x[rows], self.m.w.vec("output_norm.weight"), self.m.hp.eps)
        return _log_softmax(self.m.logits(h))

    def _swap(self, k: str, v) -> None:
        v = v() if callable(v) else v
        qt = QTensor(np.ascontiguousarray(v, np.float32).view(np.uint8).reshape(v.shape[0], -1), "F32",
                     v.shape, k)
        if self.m.output is self.m.w.mats[k]:
            self.m.output = qt
        self.m.w.mats[k] = qt

    def kld(self, replace: Mapping[str, np.ndarray | Callable[[], np.ndarray]]) -> float:
        """Mean KL(base || modified) over the scored rows with ``replace`` swapped in."""
        m = self.m
        n_layer = m.hp.n_layer
        saved = {k: m.w.mats[k] for k in replace}
        saved_out = m.output
        per_layer: dict[int, list[str]] = {}
        first = n_layer
        for k in replace:
            mt = _BLK.match(k)
            if mt:
                per_layer.setdefault(int(mt.group(1)), []).append(k)
                first = min(first, int(mt.group(1)))
            elif k == "token_embd.weight":
                first = 0
        try:
            for k in replace:
                if not _BLK.match(k):
                    self._swap(k, replace[k])          # outside the blocks: for the whole run
            if "token_embd.weight" in replace:
                xs = [m.embed(s) for s in self.seqs]
            elif first < n_layer:
                xs = [np.array(x) for x in self.inputs[first]]
            else:
                xs = None
            caches = [m.new_cache(len(s), self.cache_dtype) for s in self.seqs]
            for il in range(first, n_layer):
                for k in per_layer.get(il, ()):
                    self._swap(k, replace[k])
                xs = [m.layer(il, x, self._pos(s), c) for x, s, c in zip(xs, self.seqs, caches)]
                for k in per_layer.get(il, ()):
                    m.w.mats[k] = saved[k]              # one layer's replacements at a time
            if xs is None:   # only the output changed
                xs = [m.layer(n_layer - 1, np.array(x), self._pos(s), c)
                      for x, s, c in zip(self.inputs[-1], self.seqs, caches)]
            tot, n = 0.0, 0
            for x, rows, base in zip(xs, self.rows, self.base_lp):
                lp = self._out(x, rows)
                tot += float((np.exp(base) * (base - lp)).sum(dtype=np.float64))
                n += len(rows)
            return tot / n
        finally:
            for k, v in saved.items():
                m.w.mats[k] = v
            m.output = saved_out

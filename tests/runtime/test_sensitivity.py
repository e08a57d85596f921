"""runtime.sensitivity.Probe: the KLD it reports is the KLD of the whole modified model (run from
scratch), layer by layer with one layer's replacements alive at a time, with the hidden states
in memory or spilled to mapped files alike."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.loader import load
from runtime.qtensor import QTensor
from runtime.sensitivity import Probe, _log_softmax
from tests.helpers.tiny_models import DECI_LAYERS, write_gguf

SEQS = [np.array([5, 17, 42, 3, 88, 61, 7, 29, 50, 11, 9, 2, 77, 31, 64, 8, 19, 23, 4, 6], np.int32),
        np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], np.int32)]


def _full_kld(path, replace, rows) -> float:
    """Reference: the modified model run from scratch over each sequence (forward), against the base."""
    base, mod = load(str(path), with_tokenizer=False), load(str(path), with_tokenizer=False)
    for k, v in replace.items():
        qt = QTensor(np.ascontiguousarray(v, np.float32).view(np.uint8).reshape(v.shape[0], -1), "F32", v.shape, k)
        if mod.output is mod.w.mats[k]:
            mod.output = qt
        mod.w.mats[k] = qt
    tot, n = 0.0, 0
    for s, r in zip(SEQS, rows):
        lb = _log_softmax(base.logits(base.forward(s, base.new_cache(len(s), np.float32))[r]))
        lm = _log_softmax(mod.logits(mod.forward(s, mod.new_cache(len(s), np.float32))[r]))
        tot += float((np.exp(lb) * (lb - lm)).sum(dtype=np.float64))
        n += len(r)
    return tot / n


@pytest.mark.parametrize("arch,layers,tied", [("llama", [(4, 2, 128)] * 3, True), ("deci", DECI_LAYERS, False)])
def test_probe_kld_is_the_whole_model_kld(tmp_path, arch, layers, tied):
    path = write_gguf(tmp_path / f"{arch}.gguf", arch, layers, tied=tied)
    model = load(str(path), with_tokenizer=False)
    rng = np.random.default_rng(3)
    names = [k for k in model.w.mats if k.startswith("blk.1.") or k.startswith("blk.3.") or k == "token_embd.weight"]
    noisy = {}
    for k in names:
        w = model.w.mats[k].dequantize()
        noisy[k] = (w + rng.normal(0, 0.02, w.shape)).astype(np.float32)
    probe = Probe(model, SEQS, score_from=4, score_step=2)
    spilled = Probe(model, SEQS, score_from=4, score_step=2, spill=True)
    orig = dict(model.w.mats)
    alive = []

    def lazy(k):
        def make():
            # one layer's replacements at a time: every other block tensor is the original
            alive.append(sorted(n for n in model.w.mats if n.startswith("blk.") and model.w.mats[n] is not orig[n]))
            return noisy[k]
        return make

    for group in ([k for k in names if k.startswith("blk.")], names):
        sub = {k: noisy[k] for k in group}
        want = _full_kld(path, sub, probe.rows)
        got = probe.kld(sub)
        assert got > 0 and got == pytest.approx(want, rel=1e-4, abs=1e-9)
        assert spilled.kld(sub) == got
        alive.clear()
        assert probe.kld({k: lazy(k) for k in group}) == got
        assert alive and all(all(n.split(".")[1] == a[0].split(".")[1] for n in a) for a in alive if a)
        assert all(model.w.mats[k] is orig[k] for k in orig)             # everything put back


def test_kld_holds_one_layer_of_replacements(tmp_path):
    """Peak memory of ``kld`` with every layer's FFN replaced (made on demand): about one layer's
    replacement, not all four (tracemalloc sees numpy's allocations)."""
    import tracemalloc

    path = write_gguf(tmp_path / "wide.gguf", "llama", [(4, 2, 2048)] * 4)
    model = load(str(path), with_tokenizer=False)
    probe = Probe(model, SEQS, score_from=4, score_step=2)
    names = [k for k in model.w.mats if ".ffn_" in k]
    shapes = {k: model.w.mats[k].shape for k in names}
    layer_bytes = sum(4 * np.prod(shapes[k]) for k in names) // 4
    rep = {k: (lambda k=k: np.full(shapes[k], 0.01, np.float32)) for k in names}
    probe.kld(rep)                                     # warm-up: kernels compiled, caches made
    tracemalloc.start()
    probe.kld(rep)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.6 * layer_bytes, (peak, layer_bytes)

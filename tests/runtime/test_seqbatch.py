"""Several sequences in one decode step (runtime.models.base.SeqBatch): each row equals that token
decoded alone on its cache, token for token and logits bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import ModelError
from runtime.generate import decode_one, prefill
from runtime.loader import load
from runtime.models.base import MAX_SEQS, SeqBatch
from tests.helpers.tiny_models import DECI_BLOCKS, GEMMA3_BLOCKS, write_tiny

PROMPTS = [[1, 40, 41, 42], [1, 99], [1, 7, 8, 9, 10, 11, 12], [1, 200, 201], [1, 5], [1, 6, 7], [1, 250],
           [1, 3, 4, 5, 6]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("seqbatch")
    return {"deci-q4km": write_tiny(d / "deci.gguf", "deci", DECI_BLOCKS, types="Q4_K_M"),
            "gemma3-q8": write_tiny(d / "gemma3.gguf", "gemma3", GEMMA3_BLOCKS, types="Q8_0")}


def _alone(model, prompt, n):
    """Greedy decode of one sequence: (token ids, logits of each step)."""
    cache = model.new_cache(32)
    lg = prefill(model, cache, prompt)
    toks, lgs = [], []
    for _ in range(n):
        t = int(np.argmax(lg))
        toks.append(t)
        lg = decode_one(model, cache, t)
        lgs.append(lg)
    return toks, lgs


@pytest.mark.parametrize("name,n_seq", [("deci-q4km", 4), ("deci-q4km", MAX_SEQS), ("gemma3-q8", 4)])
def test_batched_greedy_equals_alone(models, name, n_seq):
    m = load(str(models[name]), with_tokenizer=False)
    prompts = PROMPTS[:n_seq]
    n = 5
    want = [_alone(m, p, n) for p in prompts]
    caches = [m.new_cache(32) for _ in prompts]
    last = [prefill(m, c, p) for c, p in zip(caches, prompts)]
    batch = SeqBatch(caches)
    toks = [int(np.argmax(lg)) for lg in last]
    for step in range(n):
        for i, (wt, wl) in enumerate(want):
            assert toks[i] == wt[step], (name, i, step)
        lg = m.logits(m.forward(toks, batch))
        assert lg.shape == (n_seq, m.hp.n_vocab)
        for i, (wt, wl) in enumerate(want):
            np.testing.assert_array_equal(lg[i], wl[step], err_msg=f"{name} sequence {i} step {step}")
        toks = [int(np.argmax(r)) for r in lg]
    assert [c.n_past for c in caches] == [len(p) + n for p in prompts]


def test_batch_errors(models):
    m = load(str(models["deci-q4km"]), with_tokenizer=False)
    a, b = m.new_cache(8), m.new_cache(2)
    with pytest.raises(ModelError, match="twice"):
        SeqBatch([a, a])
    with pytest.raises(ModelError, match="1 to"):
        SeqBatch([m.new_cache(2) for _ in range(MAX_SEQS + 1)])
    with pytest.raises(ModelError, match="3 tokens for a batch of 2"):
        m.forward([1, 2, 3], SeqBatch([a, b]))
    b.n_past = 2
    with pytest.raises(ModelError, match="overflow in sequence 1"):
        m.forward([1, 2], SeqBatch([a, b]))
    assert a.n_past == 0           # nothing ran

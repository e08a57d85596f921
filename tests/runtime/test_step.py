"""The decode layer programs (runtime/step.py) against the per-op path: logits bit for bit on tiny
models of several weight types, at several positions, for one sequence and for a SeqBatch; the
models and settings it refuses; no numpy allocation in a step after warm-up."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from runtime import step as S
from runtime.backend import CPUBackend
from runtime.generate import decode_one, prefill
from runtime.loader import load
from runtime.models.base import SeqBatch
from tests.helpers.tiny_models import DECI_BLOCKS, GEMMA3_BLOCKS, LLAMA_BLOCKS, write_tiny

CASES = [("deci", DECI_BLOCKS, "Q4_K_M"), ("llama", LLAMA_BLOCKS, "Q4_0"), ("llama", LLAMA_BLOCKS, "Q4_1"),
         ("gemma3", GEMMA3_BLOCKS, "Q8_0")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("step")
    return {f"{a}-{t}": str(write_tiny(d / f"{a}-{t}.gguf", a, b, types=t)) for a, b, t in CASES} | \
        {"deci-F16": str(write_tiny(d / "deci-f16.gguf", "deci", DECI_BLOCKS, types="F16"))}


def _decode(m, fused: bool, prompt, n: int):
    m.fused_decode = fused
    c = m.new_cache(48)
    lg = prefill(m, c, prompt)
    out = []
    for _ in range(n):
        lg = decode_one(m, c, int(np.argmax(lg)))
        out.append(lg)
    return out


@pytest.mark.parametrize("name", [f"{a}-{t}" for a, _, t in CASES])
def test_layer_programs_equal_per_op(files, name):
    m = load(files[name], with_tokenizer=False)
    prompt = [1, 40, 41, 42, 7, 9, 200, 201, 5, 6, 17]      # 11 tokens: the prefill is per-op (BLAS)
    want = _decode(m, False, prompt, 5)
    got = _decode(m, True, prompt, 5)
    assert m.step is not None and m.step_refused == ""
    for i, (a, b) in enumerate(zip(want, got)):
        np.testing.assert_array_equal(b, a, err_msg=f"{name} step {i}")
    # a few tokens of one sequence (rows at consecutive positions) also run as layer programs
    for fused in (False, True):
        m.fused_decode = fused
        c = m.new_cache(16)
        prefill(m, c, [1, 2, 3])
        h = m.forward([4, 5, 6], c)
        (want if not fused else got).append(m.logits(h))
    np.testing.assert_array_equal(got[-1], want[-1])


def test_layer_programs_several_sequences(files):
    m = load(files["deci-Q4_K_M"], with_tokenizer=False)
    prompts = [[1, 40, 41], [1, 99], [1, 7, 8, 9, 10, 11, 12, 13, 14, 15]]
    res = {}
    for fused in (False, True):
        m.fused_decode = fused
        caches = [m.new_cache(32) for _ in prompts]
        toks = [int(np.argmax(prefill(m, c, p))) for c, p in zip(caches, prompts)]
        batch, out = SeqBatch(caches), []
        for _ in range(4):
            lg = m.logits(m.forward(toks, batch))
            out.append(lg)
            toks = [int(np.argmax(r)) for r in lg]
        res[fused] = out
    for a, b in zip(res[False], res[True]):
        np.testing.assert_array_equal(b, a)


def test_refusals(files):
    m = load(files["deci-F16"], with_tokenizer=False)
    decode_one(m, m.new_cache(4), 1)
    assert m.step is None and "F16" in m.step_refused
    m = load(files["llama-Q4_0"], with_tokenizer=False)
    m.place([CPUBackend("float")] * m.hp.n_layer, m.out_backend)
    assert "CPUBackend" in S.supported(m)
    m = load(files["llama-Q4_0"], with_tokenizer=False)
    assert m.decode_step(m.new_cache(4, dtype=np.float32), 1) is None           # f32 cache
    assert m.decode_step(m.new_cache(16), S.DECODE_MAX_TOKENS + 1) is None       # a prefill


def test_compiled_layer_programs_are_stamped(files):
    m = load(files["llama-Q4_0"], with_tokenizer=False)
    decode_one(m, m.new_cache(4), 1)
    kernels = {e[1] for e in m.step.layers if e is not None}
    assert m.step.unstamped == [] and all(S._stamp(k).exists() for k in kernels)
    m2 = load(files["llama-Q4_0"], with_tokenizer=False)
    assert m2.decode_step(m2.new_cache(4), 1).unstamped == []      # a later load sends no notice


def test_step_allocates_no_numpy_arrays(files):
    m = load(files["deci-Q4_K_M"], with_tokenizer=False)
    c = m.new_cache(40)
    prefill(m, c, [1, 2, 3])
    step = m.decode_step(c, 1)
    kv = m.step_kv(step, c, 1)
    tok, pos = np.array([5], np.int64), np.zeros(1, np.int64)
    for _ in range(2):                             # warm-up
        pos[0] = c.n_past
        step.run(tok, kv, pos)
        c.n_past += 1
    tracemalloc.start()
    try:
        for _ in range(16):
            pos[0] = c.n_past
            step.run(tok, kv, pos)
            c.n_past += 1
        snap = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    arrays = snap.filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    assert not arrays.traces, arrays.statistics("lineno")[:5]


def test_background_compile_serves_per_op_until_the_child_ends(files, tmp_path, monkeypatch):
    """``model.step_background`` (run, chat, serve): with its layer programs not compiled on disk
    (here: their stamps moved to an empty directory), decode steps take the per-op path while one
    child process compiles them; once it has ended the layer programs run, with the same logits."""
    monkeypatch.setattr(S, "_stamp", lambda k: tmp_path / "stamps" / k.py_func.__qualname__)
    monkeypatch.setattr(S, "_CHILDREN", {})
    m = load(files["llama-Q4_0"], with_tokenizer=False)
    m.step_background = True
    c = m.new_cache(8)
    prefill(m, c, [5, 17, 42])
    assert m.decode_step(c, 1) is None and m.step is not None and m.step.unstamped
    child = S._CHILDREN[m.path]
    want = m.logits(m.forward([7], c))            # the per-op path, while the child compiles
    assert m.decode_step(c, 1) is None or child.poll() is not None
    assert child.wait(timeout=600) == 0
    assert len(S._CHILDREN) == 1                  # one child per file
    c2 = m.new_cache(8)
    prefill(m, c2, [5, 17, 42])
    assert m.decode_step(c2, 1) is m.step
    got = m.logits(m.forward([7], c2))
    np.testing.assert_array_equal(got, want)

"""Decode on the CUDA backend under emulation: kernel launches per llama layer (eager, the fused
verbs: at most 12), one CUDA graph launch per token (layers, output head and sampling in one
capture), and graph tokens equal to eager and CPU tokens (up to near-ties) past 600 positions,
crossing the flash-decoding split boundaries with a split grid sized for the whole context.

Models: ggufkit.synthetic tiny llamas (tests/helpers/tiny_models.py), so a 600-token prompt and
a few dozen decode steps stay a few seconds of emulation."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from ggufkit.synthetic import write_model
from runtime.backend import CPU
from runtime.device import DeviceOptions
from runtime.generate import GREEDY, SamplingParams, generate
from runtime.loader import load
from runtime.plan import place_model
from tests.helpers import tiny_models as T
from tools.conformance.cuda_launch_counts import step_launches

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")

MAX_LAUNCHES_PER_LAYER = 12      # issue 18; docs/CUDA.md gives the counts


@pytest.fixture(scope="module", autouse=True)
def emulate(cuda_emulation):
    pass


@pytest.fixture(scope="module")
def q4km(tmp_path_factory):
    """llama.cpp's Q4_K_M mixture: attn_v and ffn_down Q6_K in some layers, so Q/K/V are two
    groups of types there."""
    return T.write_tiny(tmp_path_factory.mktemp("graphs") / "llama-q4km.gguf", "llama", T.LLAMA_BLOCKS, "Q4_K_M")


@pytest.mark.parametrize("numerics", ["fast", "exact"])
def test_eager_launches_per_llama_layer(q4km, tmp_path, monkeypatch, numerics):
    monkeypatch.setenv("GGUFKIT_CUDA_GRAPHS", "0")
    for path in (q4km, T.write_tiny(tmp_path / "f16.gguf", "llama", T.LLAMA_BLOCKS)):
        m = load(str(path), with_tokenizer=False)
        per_layer, total = step_launches(m, numerics)
        assert len(per_layer) == m.hp.n_layer
        assert max(per_layer) <= MAX_LAUNCHES_PER_LAYER, (path.name, per_layer)
        assert total <= sum(per_layer) + 2, (path.name, total)      # output: add + norm + q8, matvec


def test_one_graph_launch_per_token(q4km, monkeypatch):
    """Graphs are the default; bench's tg: no kernel launched from Python, one graph per token
    (the graph is captured once, in the warm-up run, and serves every repetition)."""
    import json

    from ggufkit.commands.bench import format_results
    from runtime.bench import bench
    monkeypatch.delenv("GGUFKIT_CUDA_GRAPHS", raising=False)
    m = load(str(q4km), with_tokenizer=False)
    r = bench(m, n_prompt=0, n_gen=6, reps=2, dev=DeviceOptions("cuda", "all"))[0]
    assert m.decode_graph is not None and m.decode_graph.error is None and m.decode_graph.captures == 1
    assert r.graph_launches_per_token == 1 and r.kernel_launches_per_token == 0
    row = json.loads(format_results([r], "json"))[0]
    assert row["graph_launches_per_token"] == 1 and row["kernel_launches_per_token"] == 0
    monkeypatch.setenv("GGUFKIT_CUDA_GRAPHS", "0")
    eager = bench(m, n_prompt=0, n_gen=2, reps=1, dev=DeviceOptions("cuda", "all"))[0]
    assert m.decode_graph is None and eager.graph_launches_per_token == 0
    assert 0 < eager.kernel_launches_per_token <= MAX_LAUNCHES_PER_LAYER * m.hp.n_layer + 2
    cpu = bench(load(str(q4km), with_tokenizer=False), n_prompt=0, n_gen=1, reps=1)[0]
    assert cpu.kernel_launches_per_token is None


def _first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def _near_tie(m, prompt, out, i, tol=2e-3):
    """CPU logits at step i (greedy continuation out[:i]): the two tokens within tol of the scale."""
    cache = m.new_cache(len(prompt) + len(out) + 1)
    logits = m.logits(m.forward(prompt + out[:i], cache, out_rows=-1))[0]
    top = np.sort(logits)[::-1]
    return float(top[0] - top[1]) / float(np.abs(logits).max()) <= tol


def test_graph_decode_past_600_positions_equals_eager_and_cpu(tmp_path, monkeypatch):
    """Greedy decode from position 590 to 614 of a 1024-position cache (4 splits of 256 keys
    in the captured grid, the last one empty): the graph's tokens (the whole step, sampling
    included, replayed from device memory) equal eager decode's exactly (the same kernels), and
    the CPU's up to a near-tie. A sampled chain (top-k, penalty from the graph's id buffer, the
    draw from its u buffer) equals eager device sampling too. (The GPU runs start from one
    emulated prefill's cache, copied; the penalty then sees only the generated ids.)"""
    path = write_model(tmp_path / "llama-q8.gguf", "llama", [(2, 1, 128)] * 2, n_embd=64, head_dim=32, types="Q8_0")
    m = load(str(path), with_tokenizer=False)
    prompt = [256] + [int(t) for t in np.random.default_rng(0).integers(1, 255, 589)]
    n_ctx, n_gen = 1024, 25
    chains = (GREEDY, SamplingParams(temp=0.9, top_k=20, top_p=0.9, min_p=0.02, repeat_penalty=1.3,
                                     repeat_last_n=16, seed=3))
    runs = {}
    monkeypatch.setenv("GGUFKIT_CUDA_GRAPHS", "0")
    place_model(m, DeviceOptions("cuda", "all"), n_ctx)
    filled = m.new_cache(n_ctx)
    m.forward(prompt[:-1], filled)                 # one emulated 589-token prefill for every run

    def cache():                                   # the prompt but its last token, on this placement
        c = m.new_cache(n_ctx)
        for il in range(m.hp.n_layer):
            c.k[il][...], c.v[il][...] = filled.k[il], filled.v[il]
        c.n_past = filled.n_past
        return c
    for graphs in ("0", "1"):
        monkeypatch.setenv("GGUFKIT_CUDA_GRAPHS", graphs)
        place_model(m, DeviceOptions("cuda", "all"), n_ctx)
        g = m.decode_graph
        for p in chains:
            runs[graphs, p] = list(generate(m, prompt[-1:], n_gen, p, cache=cache()))
            if graphs == "1":
                assert g.error is None and g.replays > 0
        if graphs == "1":
            assert g.captures == len(chains) and g.replays == len(chains) * (n_gen - 2)
    for p in chains:
        assert runs["1", p] == runs["0", p]
    m.place([CPU] * m.hp.n_layer, CPU)
    want = list(generate(m, prompt, n_gen, GREEDY, n_ctx=n_ctx))
    got = runs["1", GREEDY]
    i = _first_difference(got, want)
    assert i is None or _near_tie(m, prompt, want, i), (i, got, want)


def test_decode_graph_past_split_growth(tmp_path, monkeypatch):
    """L1: graph decode across 256 keys (the flash-decoding split count grows). An allocation
    from the graph's pool after the capture could land on an intermediate the graph still needs
    (here layer 0's FFN output, the residual across layer 1's attention: layer 0 has no
    attention); the emulated pool (graph.EmuPool) poisons every block CuPy would consider free
    when that happens. Tokens equal eager, no pool allocation after the capture, one capture."""
    from runtime.cuda import xp as X
    monkeypatch.setattr(X, "WORKSPACE", {})        # workspaces as a fresh process has them
    m = load(str(T.write_tiny(tmp_path / "deci.gguf", "deci", [(0, 0, 256), (4, 2, 512), (4, 1, 256)])))
    prompt = [256] + [int(t) for t in np.random.default_rng(0).integers(1, 255, 251)]
    n_ctx = 272
    monkeypatch.delenv("GGUFKIT_CUDA_GRAPHS", raising=False)
    place_model(m, DeviceOptions("cuda", "all"), n_ctx)
    g, be = m.decode_graph, m.out_backend
    got = list(generate(m, prompt, 10, n_ctx=n_ctx))
    monkeypatch.setenv("GGUFKIT_CUDA_GRAPHS", "0")
    place_model(m, DeviceOptions("cuda", "all"), n_ctx)
    want = list(generate(m, prompt, 10, n_ctx=n_ctx))
    assert g.error is None and g.replays == 8 and g.captures == 1
    assert be.graph_pool.allocations_after_capture == 0 and be.graph_pool.free
    assert got == want


def test_decode_graph_stream_waits_for_default_stream(q4km, monkeypatch):
    """L2: the graph stream is not ordered after the default stream (uploads, the KV-cache
    memset, prefill) unless it waits for an event recorded there; the emulator counts the
    default stream's work and fails a launch on the graph stream that did not wait. A fresh
    cache decoded at once (bench's tg) is the case the review names."""
    from runtime.cuda.module import CudaError
    monkeypatch.delenv("GGUFKIT_CUDA_GRAPHS", raising=False)
    m = load(str(q4km), with_tokenizer=False)
    place_model(m, DeviceOptions("cuda", "all"), 16)
    g, be = m.decode_graph, m.out_backend
    with pytest.raises(CudaError, match="not ordered after"):        # the emulator's check itself
        with be.stream:
            be.add(be.from_host(np.ones((1, 4), np.float32)), be.from_host(np.ones((1, 4), np.float32)))
    cache = m.new_cache(16)
    for t in (5, 17, 42):
        assert g(cache, t) is not None, g.error
    assert g.error is None and g.replays == 2

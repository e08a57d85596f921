"""The real model: gemma-3-270m Q4_K_M against llama.cpp's numbers (goldens from
tools/conformance/compare_runtime.py). Runs where the model is installed (tools/get_gemma3.py); CI installs
it (.ci/run), and with CI=true a missing model is a failure, not a skip.

This file is numerically touchy: ~1e-6 differences in a matmul (e.g. another thread count, which
changes the kernels' tiling) flip Q8 activation roundings and move hidden states visibly (see
docs/RUNTIME.md). The tests therefore pin 2 threads, compare the "France" prompt over 32 tokens,
and only the first token of the second prompt, whose second token is a near-tie."""
from __future__ import annotations

import json

import pytest
from tests.helpers import GOLDENS

GOLDEN = GOLDENS / "runtime"
WIKITEXT_HEAD = GOLDEN / "wikitext-2-test-head.txt"    # first 41 lines: chunk 1's 512 tokens (see NOTICE-wikitext.md)


@pytest.fixture(scope="module")
def gemma(gemma3_path):
    from runtime import backend as B
    from runtime.loader import load
    m = load(str(gemma3_path), n_threads=2)
    yield m
    B.set_num_threads(None)


def test_hparams(gemma):
    hp = gemma.hp
    assert hp.arch == "gemma3" and hp.n_layer == 18 and hp.n_embd == 640 and hp.head_dim == 256
    assert [s.window for s in hp.layers].count(None) == 3                       # layers 5, 11, 17 global
    assert {s.rope_base for s in hp.layers} == {10000.0, 1000000.0}
    assert gemma.output is gemma.w.mats["token_embd.weight"]                   # tied output


@pytest.mark.parametrize("name, n_check", [("gemma3-q4km", None), ("gemma3-q4km-2", 1)])
def test_greedy_generation_equals_llama_cpp(gemma, name, n_check):
    from runtime.generate import generate_ids

    g = json.loads((GOLDEN / f"greedy-{name}.json").read_text(encoding="utf-8"))
    n = n_check or g["n"]
    ids = generate_ids(gemma, gemma.tokenizer.encode(g["prompt"]), n)
    text = gemma.tokenizer.decode(ids)
    assert text == g["text"] if n == g["n"] else g["text"].startswith(text)


def test_perplexity_first_chunk_within_1pct_of_llama_cpp(gemma):
    """One 512-token chunk (a few seconds to a minute on 2 cores). llama.cpp's default run
    (flash attention, f16 V accumulation) and its -fa off run bracket ours; 1% is the target."""
    from runtime.perplexity import perplexity, read_text_file

    g = json.loads((GOLDEN / "ppl-gemma3-q4km.json").read_text())
    r = perplexity(gemma, read_text_file(str(WIKITEXT_HEAD)), n_ctx=g["n_ctx"], n_chunks=1)
    assert abs(r.chunk_ppl[0] - g["chunks"][0]) / g["chunks"][0] < 0.01
    assert abs(r.chunk_ppl[0] - g["fa_off"]["chunks"][0]) / g["fa_off"]["chunks"][0] < 0.01

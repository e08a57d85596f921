"""qwen2 (yarn), qwen3, phi3 (longrope), gemma2 (softcaps, SWA) and llama (llama3 rope) against
llama.cpp: tiny random-weight HF checkpoints converted by llama.cpp's convert_hf_to_gguf.py
(F16, committed under tests/data/models) and llama-quantize (Q8_0: ggufkit quantize writes the
same bytes, checked when the goldens were made, so only the F16 files are committed); perplexity at c=128 over 4
chunks of tests/golden/arch/text.txt within 0.1% (F16) / 1% (Q8_0) of llama-perplexity's
(tests/golden/arch/*.json, from tools/golden/gen_arch_fixtures.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.loader import load
from runtime.perplexity import perplexity, read_text_file
from tests.helpers import DATA, GOLDENS

GOLDEN = GOLDENS / "arch"
MODELS = DATA / "models"
ARCHS = sorted(p.stem.removesuffix("-tiny") for p in GOLDEN.glob("*-tiny.json"))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("wtype,tol", [("f16", 1e-3), ("q8_0", 1e-2)])
def test_perplexity_matches_llama_perplexity(arch, wtype, tol, tmp_path):
    g = json.loads((GOLDEN / f"{arch}-tiny.json").read_text())
    path = MODELS / f"{arch}-tiny-f16.gguf"
    if wtype == "q8_0":
        from ggufkit.quantize import quantize_file
        quantize_file(path, tmp_path / "q8_0.gguf", "Q8_0")
        path = tmp_path / "q8_0.gguf"
    m = load(str(path))
    assert m.hp.arch == arch
    r = perplexity(m, read_text_file(str(GOLDEN / "text.txt")), n_ctx=g["ctx"], n_chunks=g["chunks"])
    want = g[f"ppl_{wtype}"]
    assert abs(r.ppl - want) / want < tol, (r.ppl, want)


def test_archs_covered():
    assert {"qwen2", "qwen3", "phi3", "gemma2"} <= set(ARCHS)


TIE = 1e-3   # a greedy step whose top two logits are this close (of the logit scale) is a coin toss


def _first_step_off(m, ids, out, want):
    """The first step i whose token takes ids + out[:i+1] off llama-simple's text ``want``, with
    the logits there (computed as generate does: prefill, then one decode step per token)."""
    def on_track(toks):
        t = (m.tokenizer.decode(ids, special=True) + m.tokenizer.decode(toks)).strip().rstrip("\ufffd")
        return want.startswith(t)
    cache = m.new_cache(len(ids) + len(out))
    logits = m.logits(m.forward(ids, cache, out_rows=-1))[0]
    for i, tid in enumerate(out):
        if not on_track(out[:i + 1]):
            return i, logits, on_track
        logits = m.logits(m.forward([tid], cache, out_rows=-1))[0]
    return None, None, on_track


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_text_equals_llama_simple(arch):
    """llama-simple -n 24 PROMPT prints the prompt (with specials) and 24 greedy tokens. These
    tiny random models have near-ties: where our greedy token leaves llama.cpp's text, llama.cpp's
    token must be one whose logit is within TIE of the scale of ours (a last-bit difference in any
    op decides such a step: the f32 rms_norm sum ggml-cuda uses flips qwen3's step 18, as does the
    CPU backend's float64 attention), and the texts are compared only up to there."""
    from runtime.generate import generate

    g = json.loads((GOLDEN / f"{arch}-tiny.json").read_text())
    m = load(str(MODELS / f"{arch}-tiny-f16.gguf"))
    for case in g["greedy"]:
        ids = m.tokenizer.encode(case["prompt"])
        out = list(generate(m, ids, case["n_predict"]))
        text = m.tokenizer.decode(ids, special=True) + m.tokenizer.decode(out)
        want = case["llama_simple"].strip()
        if text.strip() == want:
            continue
        i, logits, on_track = _first_step_off(m, ids, out, want)
        assert i is not None, (text, want)
        top = [int(t) for t in np.argsort(logits)[::-1][:8]]
        theirs = [t for t in top if on_track(out[:i] + [t])]
        assert theirs, (i, text, want)                        # llama.cpp's token is one of our top 8
        gap = float(logits[out[i]] - logits[theirs[0]]) / float(np.abs(logits).max())
        assert gap <= TIE, (i, gap, text, want)

"""qwen2 (yarn), qwen3, phi3 (longrope), gemma2 (softcaps, SWA) and llama (llama3 rope) against
llama.cpp: tiny random-weight HF checkpoints converted by llama.cpp's convert_hf_to_gguf.py
(F16, committed under tests/data/models) and llama-quantize (Q8_0: ggufkit quantize writes the
same bytes, checked when the goldens were made, so only the F16 files are committed); perplexity at c=128 over 4
chunks of tests/golden/arch/text.txt within 0.1% (F16) / 1% (Q8_0) of llama-perplexity's
(tests/golden/arch/*.json, from tools/make_arch_fixtures.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.loader import load
from runtime.perplexity import perplexity, read_text_file

GOLDEN = Path(__file__).parent / "golden" / "arch"
MODELS = Path(__file__).parent / "data" / "models"
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


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_text_equals_llama_simple(arch):
    """llama-simple -n 24 PROMPT prints the prompt (with specials) and 24 greedy tokens."""
    from runtime.generate import generate

    g = json.loads((GOLDEN / f"{arch}-tiny.json").read_text())
    m = load(str(MODELS / f"{arch}-tiny-f16.gguf"))
    for case in g["greedy"]:
        ids = m.tokenizer.encode(case["prompt"])
        out = list(generate(m, ids, case["n_predict"]))
        text = m.tokenizer.decode(ids, special=True) + m.tokenizer.decode(out)
        assert text.strip() == case["llama_simple"].strip()

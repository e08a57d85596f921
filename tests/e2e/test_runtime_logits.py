"""The runtime against the numpy reference forward (tests/reference) and llama-perplexity.

* F32 GGUFs converted by ggufkit from the seed-0 fixtures give the reference's logits with max
  relative error <= 1e-4 (error / max |logit|), KV cache in f32; with the default f16 cache the
  greedy tokens still agree.
* F16 GGUFs: perplexity on tests/golden/runtime/fixture-text.txt within 0.1% of llama-perplexity
  (goldens from ``tools/conformance/compare_runtime.py ppl-fixture``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.loader import load
from tests.helpers import GOLDENS

GOLDEN = GOLDENS / "runtime"
IDS = [128000, 9906, 1917, 11, 1268, 527, 499, 30, 358, 1097, 7060, 13, 578, 4062, 14198, 39935, 35308, 927]


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory, deci_ckpt, llama_ckpt):
    from ggufkit.convert import convert

    d = tmp_path_factory.mktemp("rt-gguf")
    out = {}
    for name, ck in (("deci-tiny", deci_ckpt), ("llama-tiny", llama_ckpt)):
        for t in ("f32", "f16"):
            out[f"{name}-{t}"] = convert(ck, d / f"{name}-{t}.gguf", t)
    return out


@pytest.mark.parametrize("name", ["deci-tiny", "llama-tiny"])
def test_f32_logits_match_reference(ggufs, name, deci_ref, llama_ref):
    from tests.reference.forward import forward

    ref = forward(deci_ref if name == "deci-tiny" else llama_ref, IDS)
    m = load(str(ggufs[f"{name}-f32"]))
    cache = m.new_cache(32, np.float32)
    got = np.concatenate([m.logits(m.forward(IDS[:10], cache)), m.logits(m.forward(IDS[10:14], cache)),
                          *(m.logits(m.forward([t], cache)) for t in IDS[14:])])
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel <= 1e-4, rel
    f16 = m.logits(m.forward(IDS, m.new_cache(32)))            # llama.cpp's default f16 KV cache
    assert (f16.argmax(1) == ref.argmax(1)).all()
    assert np.abs(f16 - ref).max() / np.abs(ref).max() < 5e-3


@pytest.mark.parametrize("name", ["deci-tiny", "llama-tiny"])
def test_f16_perplexity_within_0p1pct_of_llama_perplexity(ggufs, name):
    from runtime.perplexity import perplexity, read_text_file

    g = json.loads((GOLDEN / f"ppl-{name}-f16.json").read_text())
    r = perplexity(str(ggufs[f"{name}-f16"]), read_text_file(str(GOLDEN / "fixture-text.txt")),
                   n_ctx=g["n_ctx"], n_chunks=g["n_chunks"])
    assert len(r.chunk_ppl) == len(g["chunks"])
    for ours, ref in zip(r.chunk_ppl, g["chunks"]):
        assert abs(ours - ref) / ref < 1e-3
    assert abs(r.ppl - g["ppl"]) / g["ppl"] < 1e-3
    assert abs(r.err - g["err"]) / g["err"] < 1e-2


def test_kl_divergence_q4km_vs_f16_matches_llama_perplexity(ggufs, tmp_path):
    """Base logits (llama.cpp's file format) from the F16 fixture, KL divergence of its Q4_K_M
    (ggufkit quantize, byte-identical to llama-quantize) against them: llama.cpp's statistics."""
    from ggufkit.quantize import quantize_file
    from runtime.perplexity import kl_divergence, perplexity, read_logits_header, read_text_file

    g = json.loads((GOLDEN / "kld-llama-tiny-q4km.json").read_text())
    q = tmp_path / "q4km.gguf"
    quantize_file(ggufs["llama-tiny-f16"], q, "Q4_K_M")
    base = tmp_path / "base.logits"
    with open(base, "wb") as f:
        perplexity(str(ggufs["llama-tiny-f16"]), read_text_file(str(GOLDEN / "fixture-text.txt")), g["n_ctx"],
                   g["n_chunks"], logits_out=f)
    f, n_ctx, n_vocab, n_chunk, tokens = read_logits_header(str(base))
    f.close()
    assert (n_ctx, n_vocab, n_chunk) == (g["n_ctx"], 128256, g["n_chunks"])
    assert base.stat().st_size == 20 + 4 * n_ctx * n_chunk + n_chunk * (n_ctx - 1 - n_ctx // 2) * (n_vocab + 4) * 2
    k = kl_divergence(str(q), str(base))
    assert abs(k.kld_mean - g["kld_mean"]) / g["kld_mean"] < 0.02
    assert abs(k.kld_median - g["kld_median"]) / g["kld_median"] < 0.02
    assert abs(100 * k.same_top - g["same_top_pct"]) < 2.0
    assert abs(k.ppl - g["ppl_q"]) / g["ppl_q"] < 1e-2
    assert abs(k.ppl_base - g["ppl_base"]) / g["ppl_base"] < 1e-3
    # against itself: zero divergence, same top token everywhere
    same = kl_divergence(str(ggufs["llama-tiny-f16"]), str(base))
    assert abs(same.kld_mean) < 1e-5 and same.same_top == 1.0

"""The numpy reference forward pass against transformers' golden logits, plus its own invariants.

Golden files (tests/golden/reference/*.npz) come from tools/golden/gen_reference_golden.py: the real
LlamaForCausalLM for llama-tiny, and a DeciLM assembled from transformers' Llama modules for
deci-tiny, both in float64 on the seed-0 fixtures. transformers keeps RMSNorm and RoPE cos/sin in
float32 even then, so the agreement is ~2e-7 on logits of size ~0.3; the tolerances below are
10x that, while semantic mistakes (RoPE layout, llama3 scaling, GQA mapping) give 2e-3 .. 0.5.

The *-llamacpp.npz goldens anchor the same reference to llama.cpp: its own converter (f32) and
llama-perplexity (flash attention off, F32 KV cache) on the same fixtures; the running PPL per
chunk agrees to ~5e-8 relative.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest

import tests.reference.forward as R
from tests.helpers import GOLDENS

GOLDEN = GOLDENS / "reference"
LOGIT_ATOL = 2e-6


def golden(preset: str) -> dict:
    with np.load(GOLDEN / f"{preset}.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def models(deci_ckpt, llama_ckpt, deci_ref, llama_ref):
    return {"deci-tiny": (deci_ckpt, deci_ref), "llama-tiny": (llama_ckpt, llama_ref)}


@pytest.fixture(scope="module")
def outputs(models):
    out = {}
    for preset, (_, m) in models.items():
        logits, hidden = R.forward(m, golden(preset)["tokens"], return_hidden=True)
        out[preset] = (logits, np.stack(hidden))
    return out


@pytest.mark.parametrize("preset", ["deci-tiny", "llama-tiny"])
def test_fixture_bytes_match_golden(preset, models):
    ckpt, _ = models[preset]
    want = dict(s.split("=") for s in golden(preset)["fixture_sha256"])
    got = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(ckpt.glob("*.safetensors"))}
    assert got == want, "fixture bytes changed (generator or numpy RNG stream): rerun tools/golden/gen_reference_golden.py"


@pytest.mark.parametrize("preset", ["deci-tiny", "llama-tiny"])
def test_reference_matches_transformers(preset, outputs):
    g = golden(preset)
    logits, hidden = outputs[preset]
    assert logits.shape == (len(g["tokens"]), 128256)
    np.testing.assert_allclose(hidden, g["hidden"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(logits[:, g["cols"]], g["col_vals"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(np.take_along_axis(logits, g["top_ids"], 1), g["top_vals"], rtol=0, atol=LOGIT_ATOL)
    assert np.array_equal(logits.argmax(axis=1), g["top_ids"][:, 0])
    # whole-vocab checksums
    mx = logits.max(axis=1)
    lse = mx + np.log(np.exp(logits - mx[:, None]).sum(axis=1))
    np.testing.assert_allclose(lse, g["lse"], rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(logits.sum(axis=1), g["row_sum"], rtol=0, atol=1e-3)
    np.testing.assert_allclose((logits * logits).sum(axis=1), g["row_sumsq"], rtol=1e-6)
    assert logits.std() > 0.1  # non-degenerate


def reference_perplexity(m: R.Model, tokens: np.ndarray, n_ctx: int, n_chunks: int, bos: int | None) -> list[float]:
    """llama-perplexity's running PPL per chunk: score tokens n_ctx/2+1 .. n_ctx-1 of each chunk."""
    nll, running = [], []
    for c in range(n_chunks):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        if bos is not None:
            chunk[0] = bos
        logits = R.forward(m, chunk)
        for j in range(n_ctx // 2, n_ctx - 1):
            x = logits[j]
            lse = x.max() + np.log(np.exp(x - x.max()).sum())
            nll.append(lse - x[tokens[c * n_ctx + j + 1]])
        running.append(math.exp(np.mean(nll)))
    return running


@pytest.mark.parametrize("preset", ["deci-tiny", "llama-tiny"])
def test_reference_matches_llama_cpp_perplexity(preset, models):
    with np.load(GOLDEN / f"{preset}-llamacpp.npz") as z:
        g = {k: z[k] for k in z.files}
    _, m = models[preset]
    n_ctx = int(g["n_ctx"])
    bos = int(g["bos_id"]) if bool(g["add_bos"]) else None
    got = reference_perplexity(m, g["tokens"], n_ctx, len(g["ppl"]), bos)
    np.testing.assert_allclose(got, g["ppl"], rtol=1e-6)


def test_golden_catches_rope_mistakes(models):
    """The comparison above is sharp enough: wrong RoPE variants miss the golden by far."""
    g = golden("deci-tiny")
    _, m = models["deci-tiny"]

    def err(model):
        return float(np.abs(R.forward(model, g["tokens"])[:, g["cols"]] - g["col_vals"]).max())

    no_llama3 = dict(m.config, rope_scaling=None)
    assert err(dataclasses.replace(m, inv_freq=R.rope_inv_freq(no_llama3, m.head_dim))) > 100 * LOGIT_ATOL
    assert err(dataclasses.replace(m, inv_freq=np.zeros_like(m.inv_freq))) > 0.05


def test_deci_layer_specs(models):
    _, m = models["deci-tiny"]
    assert m.layers == [
        R.LayerSpec("gqa", 4, 1024), R.LayerSpec("gqa", 2, 512), R.LayerSpec("none", 0, 256),
        R.LayerSpec("linear", 0, 768), R.LayerSpec("gqa", 1, 256), R.LayerSpec("none", 0, 0),
        R.LayerSpec("gqa", 2, 1024),
    ]
    _, lm = models["llama-tiny"]
    assert lm.layers == [R.LayerSpec("gqa", 2, 768)] * 4


def test_dummy_layer_is_identity(outputs):
    _, hidden = outputs["deci-tiny"]
    assert np.array_equal(hidden[5], hidden[4])     # no-op attention + no-op FFN
    assert not np.array_equal(hidden[3], hidden[2])


def test_causal(models, outputs):
    """Logits of a prefix equal the first rows of the full sequence's logits."""
    _, m = models["deci-tiny"]
    tokens = golden("deci-tiny")["tokens"]
    full, _ = outputs["deci-tiny"]
    np.testing.assert_allclose(R.forward(m, tokens[:5]), full[:5], rtol=0, atol=1e-12)


def test_llama3_inv_freq_matches_llama_cpp_rope_factors(models):
    """inv_freq == base inv_freq / rope_freqs, with rope_freqs as llama.cpp's converter writes them."""
    _, m = models["deci-tiny"]
    rs, dim = m.config["rope_scaling"], m.head_dim
    base = 1.0 / (m.config["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factors = []
    for f in base:
        wavelen = 2 * math.pi / f
        if wavelen < rs["original_max_position_embeddings"] / rs["high_freq_factor"]:
            factors.append(1.0)
        elif wavelen > rs["original_max_position_embeddings"] / rs["low_freq_factor"]:
            factors.append(rs["factor"])
        else:
            smooth = (rs["original_max_position_embeddings"] / wavelen - rs["low_freq_factor"]) / (
                rs["high_freq_factor"] - rs["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / rs["factor"] + smooth))
    np.testing.assert_allclose(m.inv_freq, base / np.array(factors), rtol=1e-6)
    assert 1.0 < max(factors) and len(set(factors)) > 2  # the band blend is exercised


def test_rope_rotates_halves():
    x = np.zeros((1, 1, 4))
    x[0, 0, 0] = 1.0  # first element of the first half
    cos, sin = np.cos(np.full((1, 4), 0.5)), np.sin(np.full((1, 4), 0.5))
    y = R.apply_rope(x, cos, sin)
    assert np.allclose(y[0, 0], [math.cos(0.5), 0, math.sin(0.5), 0])  # pairs (i, i + d/2)

"""Loader and the three architectures on small synthetic GGUFs (tests/helpers/tiny_models.write_gguf).

Checks that could fail: per-layer hparams and KV caches follow the GGUF arrays (no cache for
DeciLM no-op / linear layers), token-by-token decoding with the KV cache equals one batched
forward, gemma3's sliding-window pattern and per-layer rope bases, tied output, and the
ModelError messages for bad files and requests.
"""
from __future__ import annotations

import numpy as np
import pytest

from quant.errors import GGUFError
from runtime.errors import ModelError
from runtime.loader import load
from tests.helpers.tiny_models import DECI_LAYERS, HD, IDS, N_VOCAB, write_gguf


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return {
        "llama": write_gguf(d / "llama.gguf", "llama", [(4, 2, 128)] * 3),
        "llama-tied": write_gguf(d / "llama-tied.gguf", "llama", [(4, 2, 128)] * 2, tied=True),
        "deci": write_gguf(d / "deci.gguf", "deci", DECI_LAYERS),
        "gemma3": write_gguf(d / "gemma3.gguf", "gemma3", [(4, 1, 128)] * 7,
                             extra={"gemma3.attention.sliding_window": 4}),
    }


def _batch_vs_incremental(model):
    full = model.logits(model.forward(IDS, model.new_cache(16, np.float32)))
    cache = model.new_cache(16, np.float32)
    inc = np.concatenate([model.logits(model.forward(IDS[:4], cache)),
                          *(model.logits(model.forward([t], cache)) for t in IDS[4:])])
    assert np.allclose(full, inc, rtol=1e-4, atol=1e-4), np.abs(full - inc).max()
    return full


@pytest.mark.parametrize("name", ["llama", "llama-tied", "deci", "gemma3"])
def test_kv_cache_decoding_equals_batch(files, name):
    m = load(str(files[name]), with_tokenizer=False)
    full = _batch_vs_incremental(m)
    assert full.shape == (len(IDS), N_VOCAB) and np.isfinite(full).all()
    # causality: the first rows do not depend on later tokens
    other = m.logits(m.forward(IDS[:3] + [1, 2, 3], m.new_cache(16, np.float32)))
    assert np.allclose(full[:3], other[:3], atol=1e-5) and not np.allclose(full[3], other[3], atol=1e-3)


def test_deci_per_layer_data_and_caches(files):
    m = load(str(files["deci"]), with_tokenizer=False)
    assert [(s.n_head, s.n_head_kv, s.n_ff) for s in m.hp.layers] == DECI_LAYERS
    c = m.new_cache(8)
    kv_shapes = [None if k is None else k.shape for k in c.k]
    assert kv_shapes == [(8, 2, HD), None, None, (8, 1, HD), None, (8, 4, HD)]
    assert c.k[0].dtype == np.float16


def test_deci_noop_layers_change_nothing(files, tmp_path):
    """A DeciLM with an extra no-op layer (attention and FFN absent) gives the same logits."""
    a = load(str(files["deci"]), with_tokenizer=False)
    x = a.logits(a.forward(IDS, a.new_cache(16, np.float32)))
    p = write_gguf(tmp_path / "d2.gguf", "deci", DECI_LAYERS[:4] + [(0, 0, 0)] + DECI_LAYERS[4:])
    b = load(str(p), with_tokenizer=False)
    assert b.hp.n_layer == a.hp.n_layer + 1
    # same seed, same tensor draw order (the no-op layer has no tensors): identical weights
    y = b.logits(b.forward(IDS, b.new_cache(16, np.float32)))
    assert np.allclose(x, y, atol=1e-6)


def test_tied_output_uses_token_embd(files):
    m = load(str(files["llama-tied"]), with_tokenizer=False)
    assert m.output is m.w.mats["token_embd.weight"]


def test_gemma3_swa_pattern_and_rope_bases(files):
    m = load(str(files["gemma3"]), with_tokenizer=False)
    hp = m.hp
    assert [s.window for s in hp.layers] == [4, 4, 4, 4, 4, None, 4]
    assert [s.rope_base for s in hp.layers] == [10000.0] * 5 + [10000.0, 10000.0]  # base 10000 in this file
    assert hp.emb_scale == pytest.approx(8.0) and hp.rope_mode == "neox"
    assert hp.attn_scale == pytest.approx(0.25)
    # the window matters: a longer context changes the last logits of local layers
    full = m.logits(m.forward(IDS, m.new_cache(16, np.float32)))
    assert np.isfinite(full).all()


def test_gemma3_sliding_window_masks_old_tokens(files, tmp_path):
    """With every layer local (pattern period 0 -> all SWA, window 3, 2 layers) position 0 is
    out of the last position's reach (receptive field 5-2-2 = 1..5); with global layers it is not."""
    p = write_gguf(tmp_path / "g.gguf", "gemma3", [(4, 1, 128)] * 2,
                   extra={"gemma3.attention.sliding_window": 3, "gemma3.attention.sliding_window_pattern": 0})
    m = load(str(p), with_tokenizer=False)
    assert all(s.window == 3 for s in m.hp.layers)
    a = m.logits(m.forward([1, 2, 3, 40, 41, 42], m.new_cache(8, np.float32), out_rows=-1))
    b = m.logits(m.forward([9, 2, 3, 40, 41, 42], m.new_cache(8, np.float32), out_rows=-1))
    assert np.allclose(a, b, atol=1e-5)
    p = write_gguf(tmp_path / "g2.gguf", "gemma3", [(4, 1, 128)] * 2)     # no sliding window
    m = load(str(p), with_tokenizer=False)
    a = m.logits(m.forward([1, 2, 3, 40, 41, 42], m.new_cache(8, np.float32), out_rows=-1))
    b = m.logits(m.forward([9, 2, 3, 40, 41, 42], m.new_cache(8, np.float32), out_rows=-1))
    assert not np.allclose(a, b, atol=1e-4)


def test_errors(files, tmp_path):
    m = load(str(files["llama"]), with_tokenizer=False)
    with pytest.raises(ModelError, match="context overflow"):
        m.forward(IDS, m.new_cache(4))
    with pytest.raises(ModelError, match="no tokenizer"):
        load(str(files["llama"]))
    data = files["llama"].read_bytes()
    bad = tmp_path / "trunc.gguf"
    bad.write_bytes(data[: len(data) - 1000])
    with pytest.raises(GGUFError, match="truncated"):     # the one reader's error (quant.gguf)
        load(str(bad), with_tokenizer=False)
    bad.write_bytes(data[:200])
    with pytest.raises(GGUFError, match="truncated|more than the"):
        load(str(bad), with_tokenizer=False)
    bad.write_bytes(b"NOPE" + data[4:])
    with pytest.raises(GGUFError, match="not a GGUF"):
        load(str(bad), with_tokenizer=False)
    other = write_gguf(tmp_path / "x.gguf", "falcon", [(4, 2, 128)])
    with pytest.raises(ModelError, match="unsupported architecture"):
        load(str(other), with_tokenizer=False)
    with pytest.raises(ModelError, match="no such file"):
        load(str(tmp_path / "missing.gguf"))

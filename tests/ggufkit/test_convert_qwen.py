"""ggufkit convert for MistralForCausalLM (written as llama, as llama.cpp does), Qwen2ForCausalLM (Q/K/V biases, yarn) and Qwen3ForCausalLM (q_norm/k_norm,
head_dim != hidden/heads): the whole file's sha256 equals what llama.cpp's convert_hf_to_gguf.py
wrote for the same fixture checkpoint (tests/golden/convert/oracle_sha256_qwen.json; f16, bf16
and q8_0 goldens, 4 of the 6 pairs tested to keep CI short); and the converted file runs (loads, finite logits)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ggufkit.convert import convert
from ggufkit.fixtures import make_checkpoint
from tests.helpers import GOLDENS

GOLDEN = json.loads((GOLDENS / "convert" / "oracle_sha256_qwen.json").read_text())


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen")
    out = {p: make_checkpoint(root / p, p, seed=0, n_shards=2) for p in ("qwen2-tiny", "qwen3-tiny")}
    d = make_checkpoint(root / "mistral-tiny", "llama-tiny", seed=0, n_shards=2)   # Mistral = llama arch
    c = json.loads((d / "config.json").read_text())
    c.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None, rope_theta=1000000.0)
    c.pop("rope_scaling")
    (d / "config.json").write_text(json.dumps(c, indent=2) + "\n")
    out["mistral-tiny"] = d
    return out


@pytest.mark.parametrize("preset,outtype", [("qwen2-tiny", "f16"), ("qwen2-tiny", "bf16"), ("qwen3-tiny", "f16"),
                                            ("qwen3-tiny", "q8_0"), ("mistral-tiny", "f16")])
def test_convert_equals_llama_cpp(ckpts, tmp_path, preset, outtype):
    out = convert(ckpts[preset], tmp_path / f"{preset}.gguf", outtype)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == GOLDEN[preset][outtype]
    if outtype == "f16":
        from runtime.loader import load
        m = load(str(out))
        assert m.hp.arch == {"mistral": "llama"}.get(preset.split("-")[0], preset.split("-")[0])
        lg = m.logits(m.forward(m.tokenizer.encode("Hello world"), m.new_cache(16)))
        assert np.isfinite(lg).all() and lg.shape[1] == 128256

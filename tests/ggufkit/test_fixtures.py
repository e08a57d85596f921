"""The fixture checkpoints look like real HF checkpoints: shards, index, BF16, per-block tensor sets."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import quant
from ggufkit import fixtures as F
from ggufkit.cli import main
from tests.reference.checkpoint import bf16_bits_to_f32, load_checkpoint, read_header, shard_files

ATTN_KEYS = {"n_heads_in_group", "no_op", "num_sink_tokens", "replace_with_linear", "sparsify",
             "unshifted_sink", "use_prefill_window_in_sink_attention", "window_length"}
FFN_KEYS = {"ffn_mult", "no_op", "replace_with_linear", "sparsify"}
GQA = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}
LINEAR = {"input_layernorm", "self_attn.linear_attn"}
FFN = {"post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
# deci-tiny, per layer: (expected tensor set, KV heads or None, FFN size or None)
DECI_LAYERS = [
    (GQA | FFN, 4, 1024),
    (GQA | FFN, 2, 512),
    (FFN, None, 256),
    (LINEAR | FFN, None, 768),
    (GQA | FFN, 1, 256),
    (set(), None, None),
    (GQA | FFN, 2, 1024),
]


def layer_tensors(names, i):
    p = f"model.layers.{i}."
    return {n[len(p):].removesuffix(".weight") for n in names if n.startswith(p)}


def test_deci_config_is_real_shaped(deci_ckpt):
    cfg = json.loads((deci_ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["DeciLMForCausalLM"] and cfg["model_type"] == "nemotron-nas"
    assert cfg["num_key_value_heads"] is None and cfg["intermediate_size"] is None
    assert "auto_map" in cfg and cfg["vocab_size"] == 128256
    assert cfg["rope_scaling"]["rope_type"] == "llama3" and cfg["rope_scaling"]["factor"] == 8.0
    assert cfg["bos_token_id"] == 128000 and cfg["eos_token_id"] == [128001, 128008, 128009]
    assert cfg["num_hidden_layers"] == len(cfg["block_configs"]) == len(DECI_LAYERS)
    for b in cfg["block_configs"]:
        assert set(b["attention"]) == ATTN_KEYS and set(b["ffn"]) == FFN_KEYS
    groups = {b["attention"]["n_heads_in_group"] for b in cfg["block_configs"]}
    assert {1, 2, 4} <= groups
    dummy = cfg["block_configs"][5]
    assert dummy["attention"]["no_op"] and dummy["ffn"]["no_op"] and dummy["ffn"]["ffn_mult"] is None


def test_shards_index_and_dtype(deci_ckpt):
    index = json.loads((deci_ckpt / "model.safetensors.index.json").read_text())
    files = shard_files(deci_ckpt)
    assert [f.name for f in files] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    seen, data_bytes = {}, 0
    for f in files:
        header, start = read_header(f)
        assert header, f"{f.name} is empty"
        for name, info in header.items():
            assert info["dtype"] == "BF16"
            b, e = info["data_offsets"]
            assert e - b == 2 * int(np.prod(info["shape"]))
            seen[name] = f.name
            data_bytes += e - b
        assert start % 8 == 0 and f.stat().st_size == start + max(i["data_offsets"][1] for i in header.values())
    assert seen == index["weight_map"]
    assert index["metadata"]["total_size"] == data_bytes
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (deci_ckpt / name).is_file()


def test_deci_per_layer_tensors_and_sizes(deci_ckpt):
    cfg, t = load_checkpoint(deci_ckpt)
    d, hd = 256, 64
    assert t["model.embed_tokens.weight"].shape == (128256, d) and t["lm_head.weight"].shape == (128256, d)
    assert t["model.norm.weight"].shape == (d,)
    for i, (expected, n_kv, n_ff) in enumerate(DECI_LAYERS):
        assert layer_tensors(t, i) == expected, f"layer {i}"
        p = f"model.layers.{i}."
        if n_kv is not None:
            assert t[p + "self_attn.q_proj.weight"].shape == (4 * hd, d)
            assert t[p + "self_attn.k_proj.weight"].shape == (n_kv * hd, d)
            assert t[p + "self_attn.v_proj.weight"].shape == (n_kv * hd, d)
        if n_ff is not None:
            assert t[p + "mlp.gate_proj.weight"].shape == (n_ff, d)
            assert t[p + "mlp.down_proj.weight"].shape == (d, n_ff)
            mult = cfg["block_configs"][i]["ffn"]["ffn_mult"]
            assert F.ffn_mult_to_intermediate_size(mult, d) == n_ff
    assert t["model.layers.3.self_attn.linear_attn.weight"].shape == (d, d)


def test_llama_tensors(llama_ckpt):
    cfg, t = load_checkpoint(llama_ckpt)
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    for i in range(4):
        assert layer_tensors(t, i) == GQA | FFN
        assert t[f"model.layers.{i}.self_attn.k_proj.weight"].shape == (128, 256)
        assert t[f"model.layers.{i}.mlp.up_proj.weight"].shape == (768, 256)
    assert len(t) == 3 + 4 * 9


def test_weight_statistics(llama_ckpt):
    _, t = load_checkpoint(llama_ckpt)
    w = t["lm_head.weight"]
    assert abs(float(w.std()) - 0.02) < 1e-3 and abs(float(w.mean())) < 1e-3
    n = t["model.layers.0.input_layernorm.weight"]
    assert abs(float(n.mean()) - 1.0) < 0.02 and 0.02 < float(n.std()) < 0.1
    assert not np.array_equal(t["model.layers.0.mlp.up_proj.weight"], t["model.layers.1.mlp.up_proj.weight"])


def _digest(d):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}


def test_deterministic_from_seed(deci_ckpt, tmp_path):
    again = F.make_checkpoint(tmp_path / "a", "deci-tiny", seed=0, n_shards=2)
    assert _digest(again) == _digest(deci_ckpt)
    other = F.make_checkpoint(tmp_path / "b", "deci-tiny", seed=1, n_shards=2)
    assert _digest(other)["model-00001-of-00002.safetensors"] != _digest(deci_ckpt)["model-00001-of-00002.safetensors"]


def test_single_shard_via_cli(tmp_path, llama_ckpt):
    main(["fixture", str(tmp_path / "one"), "--preset", "llama-tiny", "--shards", "1"])
    out = tmp_path / "one"
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    _, a = load_checkpoint(out)
    _, b = load_checkpoint(llama_ckpt)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(F.GGUFKitError):
        F.make_checkpoint(tmp_path, "nope")
    with pytest.raises(F.GGUFKitError):
        F.make_checkpoint(tmp_path, "llama-tiny", n_shards=0)
    with pytest.raises(F.GGUFKitError):
        F.make_checkpoint(tmp_path, "llama-tiny", seed=-1)
    assert not any(tmp_path.iterdir())  # nothing written for bad input


def test_bf16_round_to_nearest_even():
    """The fixtures' bf16 (quant's BF16, ggml's rounding)."""
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5, 0.0], dtype=np.float32)
    bits = quant.quantize(x, "BF16").view(np.uint16)
    assert bits.tolist() == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020, 0x0000]
    assert np.array_equal(bf16_bits_to_f32(bits)[[0, 4, 5]], x[[0, 4, 5]])


def test_super49b_plan_streams_in_bounded_chunks():
    cfg = F.make_config("super49b-4layer")
    plan = F.tensor_plan(cfg)
    shapes = dict(plan)
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == (28672, 8192)
    assert shapes["model.layers.3.self_attn.k_proj.weight"] == (1024, 8192)
    total = sum(2 * int(np.prod(s)) for s in shapes.values())
    assert 10e9 < total < 12e9  # ~11 GB of bf16
    first = next(F._tensor_chunks("model.layers.0.mlp.down_proj.weight", (8192, 28672), 0))
    assert first.size <= F.CHUNK_ELEMENTS and first.shape[1] == 28672

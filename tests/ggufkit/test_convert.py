"""ggufkit convert: the written GGUF, read back with gguf-py, equals the HF checkpoint exactly.

Checked for deci-tiny (GQA with 1/2/4 heads per group, no_op attention, replace_with_linear
attention, five ffn_mult values, a no_op FFN) and llama-tiny, for every outtype:
  * tensor data == HF tensors (bf16 -> f32 widening; Q/K rows permuted as llama.cpp's permute,
    written here independently with reshape/swapaxes), cast as the outtype prescribes;
  * per-layer metadata arrays, the tensor set of every block kind, the tokenizer keys;
  * the whole file's sha256 == what llama.cpp's convert_hf_to_gguf.py wrote for the same
    checkpoint (tests/golden/convert/oracle_sha256.json, made by tools/conformance/compare_convert.py).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggufkit.convert import convert
from ggufkit.fixtures import DECI_TINY_BLOCKS
from tests.helpers import GOLDENS

GOLDEN = GOLDENS / "convert" / "oracle_sha256.json"
LLAMA_BIN = Path("/work/oracle/build/bin")
QT = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def converted(deci_ckpt, llama_ckpt, tmp_path_factory):
    """converted(preset, outtype) -> GGUF path, each converted once per module.

    Checkpoints are linked under their preset names: general.name falls back to the directory
    name, and the oracle goldens were made from directories with these names.
    """
    root = tmp_path_factory.mktemp("converted")
    for preset, src in (("deci-tiny", deci_ckpt), ("llama-tiny", llama_ckpt)):
        (root / preset).symlink_to(src, target_is_directory=True)
    cache: dict = {}

    def get(preset: str, outtype: str) -> Path:
        if (preset, outtype) not in cache:
            cache[preset, outtype] = convert(root / preset, root / f"{preset}-{outtype}.gguf", outtype)
        return cache[preset, outtype]

    return get


def read_hf(model_dir: Path) -> dict[str, np.ndarray]:
    """All HF tensors as float32 (bf16 widened), read with a plain header parse (no ggufkit code)."""
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            assert meta["dtype"] == "BF16"
            a, b = meta["data_offsets"]
            bits = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.uint16)
            out[name] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(meta["shape"])
    return out


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute, numpy version."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name_of(gguf_name: str) -> str:
    table = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
             "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    base = gguf_name.removesuffix(".weight")
    if base.startswith("blk."):
        _, bid, part = base.split(".")
        return f"model.layers.{bid}.{table[part]}.weight"
    return table[base] + ".weight"


def kv(r: gguf.GGUFReader, key: str):
    return r.fields[key].contents()


def expected_bytes(x: np.ndarray, qtype: QT) -> bytes:
    if qtype == QT.F32:
        return x.astype(np.float32).tobytes()
    if qtype == QT.F16:
        return x.astype(np.float16).tobytes()
    if qtype == QT.BF16:  # bf16-exact inputs: the top 16 bits
        return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return gguf.quants.quantize(x.astype(np.float32), qtype).tobytes()


def deci_layer_heads(cfg: dict, bid: int) -> tuple[int, int]:
    attn = cfg["block_configs"][bid]["attention"]
    h = cfg["num_attention_heads"]
    return h, h // attn["n_heads_in_group"]


def check_tensors(path: Path, ckpt: Path, outtype: str) -> gguf.GGUFReader:
    r = gguf.GGUFReader(path)
    hf = read_hf(ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    weight_type = {"f32": QT.F32, "f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "auto": QT.BF16}[outtype]
    seen = set()
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        name = t.name
        hf_name = hf_name_of(name)
        if hf_name not in hf:  # DeciLM linear attention is stored as attn_output
            hf_name = hf_name.replace("o_proj", "linear_attn")
        x = hf[hf_name]
        seen.add(hf_name)
        bid = int(name.split(".")[1]) if name.startswith("blk.") else None
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            if "block_configs" in cfg:
                n_head, n_kv = deci_layer_heads(cfg, bid)
            else:
                n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
            x = permute(x, n_head if name.endswith("attn_q.weight") else n_kv)
        qtype = QT.F32 if x.ndim == 1 else weight_type
        assert t.tensor_type == qtype, name
        assert [int(s) for s in t.shape] == list(reversed(x.shape)), name
        assert t.data.tobytes() == expected_bytes(x, qtype), name
        if qtype in (QT.F32, QT.BF16, QT.F16):  # round trip through gguf's dequantizer, exact
            back = gguf.quants.dequantize(t.data, qtype).reshape(x.shape)
            assert np.array_equal(back, x.astype(np.float16).astype(np.float32) if qtype == QT.F16 else x), name
        else:
            back = gguf.quants.dequantize(t.data, qtype).reshape(x.shape)
            assert np.abs(back - x).max() <= np.abs(x).max() / 127 + 1e-6, name
    assert seen == set(hf), set(hf) - seen
    return r


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "auto"])
def test_deci_tensors_exact(converted, deci_ckpt, outtype):
    check_tensors(converted("deci-tiny", outtype), deci_ckpt, outtype)


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llama_tensors_exact(converted, llama_ckpt, outtype):
    check_tensors(converted("llama-tiny", outtype), llama_ckpt, outtype)


def test_deci_metadata_per_layer(converted):
    r = gguf.GGUFReader(converted("deci-tiny", "f16"))
    assert kv(r, "general.architecture") == "deci"
    # DECI_TINY_BLOCKS: gqa g=1, gqa g=2, no_op, linear, gqa g=4, no_op+no_op FFN, gqa g=2
    assert kv(r, "deci.attention.head_count") == [4, 4, 0, 4, 4, 0, 4]
    assert kv(r, "deci.attention.head_count_kv") == [4, 2, 0, 0, 1, 0, 2]
    assert kv(r, "deci.feed_forward_length") == [1024, 512, 256, 768, 256, 0, 1024]
    assert kv(r, "deci.block_count") == len(DECI_TINY_BLOCKS) == 7
    assert kv(r, "deci.embedding_length") == 256
    assert kv(r, "deci.attention.key_length") == kv(r, "deci.attention.value_length") == 64
    assert kv(r, "deci.rope.dimension_count") == 64
    assert kv(r, "deci.rope.freq_base") == 500000.0
    assert kv(r, "deci.context_length") == 4096
    assert kv(r, "deci.vocab_size") == 128256
    assert kv(r, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_F16)
    names = {t.name for t in r.tensors}
    per_layer = {i: {n.split(".")[2] for n in names if n.startswith(f"blk.{i}.")} for i in range(7)}
    attn = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output"}
    ffn = {"ffn_norm", "ffn_gate", "ffn_up", "ffn_down"}
    assert per_layer[0] == attn | ffn
    assert per_layer[2] == ffn                      # no_op attention: no attention weights at all
    assert per_layer[3] == {"attn_norm", "attn_output"} | ffn  # linear attention
    assert per_layer[5] == set()                    # no_op attention + no_op FFN
    assert len(r.tensors) == 50


def test_tokenizer_keys(converted, deci_ckpt):
    r = gguf.GGUFReader(converted("deci-tiny", "q8_0"))
    assert kv(r, "tokenizer.ggml.model") == "gpt2"
    assert kv(r, "tokenizer.ggml.pre") == "smaug-bpe"  # found by the chktxt hash, as llama.cpp
    tokens = kv(r, "tokenizer.ggml.tokens")
    types = kv(r, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 128256
    assert tokens[128000] == "<|begin_of_text|>" and types[128000] == gguf.TokenType.CONTROL
    assert tokens[0] == "!" and types[0] == gguf.TokenType.NORMAL
    assert sum(1 for t in types if t == gguf.TokenType.CONTROL) == 256
    assert len(r.fields["tokenizer.ggml.merges"].data) == 280147
    assert kv(r, "tokenizer.ggml.bos_token_id") == 128000
    assert kv(r, "tokenizer.ggml.eos_token_id") == 128009
    assert kv(r, "tokenizer.ggml.add_bos_token") is False  # ByteLevel post-processor wins (oracle gguf-py)
    template = json.loads((deci_ckpt / "tokenizer_config.json").read_text())["chat_template"]
    assert kv(r, "tokenizer.chat_template") == template


def test_rope_freqs(converted):
    """llama3 scaling factors for head_dim 64, theta 5e5, factor 8, low 1, high 4, original ctx 8192."""
    r = gguf.GGUFReader(converted("deci-tiny", "bf16"))
    t = next(t for t in r.tensors if t.name == "rope_freqs.weight")
    assert t.tensor_type == QT.F32 and r.tensors[0].name == "rope_freqs.weight"
    got = np.asarray(t.data, dtype=np.float64)
    want = []
    for i in range(0, 64, 2):
        wavelen = 2 * math.pi * 500000.0 ** (i / 64)
        if wavelen < 8192 / 4:
            want.append(1.0)
        elif wavelen > 8192 / 1:
            want.append(8.0)
        else:
            s = (8192 / wavelen - 1) / 3
            want.append(1 / ((1 - s) / 8 + s))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("preset", ["deci-tiny", "llama-tiny"])
@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "auto"])
def test_byte_identical_with_llama_cpp(converted, preset, outtype):
    """sha256 of the whole file == llama.cpp convert_hf_to_gguf.py's output for the same checkpoint."""
    golden = json.loads(GOLDEN.read_text())
    h = hashlib.sha256(converted(preset, outtype).read_bytes()).hexdigest()
    assert h == golden[f"{preset}-{outtype}"]


def test_perplexity_runs_in_llama_cpp(converted, tmp_path):
    """llama.cpp loads a converted tiny DeciLM and computes a finite perplexity (skips without the binary)."""
    exe = shutil.which("llama-perplexity") or (LLAMA_BIN / "llama-perplexity")
    if not Path(exe).is_file():
        pytest.skip("llama-perplexity not built")
    out = converted("deci-tiny", "f16")
    text = tmp_path / "text.txt"
    text.write_text(("The quick brown fox jumps over the lazy dog. " * 8 + "\n") * 40)
    res = subprocess.run([str(exe), "-m", str(out), "-f", str(text), "-c", "128", "--chunks", "2", "-t", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    line = next(l for l in (res.stdout + res.stderr).splitlines() if "Final estimate: PPL" in l)
    ppl = float(line.split("=")[1].split()[0])
    assert math.isfinite(ppl) and ppl > 1.0


def test_chunking_does_not_change_bytes(converted, deci_ckpt, tmp_path, monkeypatch):
    """Row chunks that cut through heads (37 rows; head_dim 64) give the same file as big chunks."""
    from ggufkit.convert import base

    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 256 * 37)
    chunked = convert(deci_ckpt, tmp_path / "chunked.gguf", "q8_0")
    assert chunked.read_bytes() == converted("deci-tiny", "q8_0").read_bytes()


def test_single_file_checkpoint_order(tmp_path):
    """model.safetensors without an index: tensors come in sorted-name order (safetensors' own order),
    after rope_freqs, as the oracle writes them; data still exact."""
    from ggufkit.fixtures import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "llama-one", "llama-tiny", seed=1, n_shards=1)
    assert not (ckpt / "model.safetensors.index.json").exists()
    out = convert(ckpt, tmp_path / "one.gguf", "f32")
    r = check_tensors(out, ckpt, "f32")
    names = [t.name for t in r.tensors]
    assert names[0] == "rope_freqs.weight"
    hf_order = [hf_name_of(n) for n in names[1:]]
    assert hf_order == sorted(hf_order)


def test_rope_freqs_match_torch_golden():
    """The factors equal the oracle's torch float32 results bit for bit (golden from the oracle venv,
    including theta 1e4 / head_dim 128 where a plain float32 division would be 1 ulp off)."""
    from ggufkit.convert.base import Layer, Model, rope_freqs

    cases = json.loads((GOLDEN.parent / "rope_freqs.json").read_text())["cases"]
    for c in cases:
        cfg = {"num_attention_heads": 4, "rope_theta": c["rope_theta"], "head_dim": c["head_dim"],
               "rope_scaling": {"rope_type": "llama3", **{k: c[k] for k in (
                   "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}}}
        m = Model("llama", cfg, [Layer(4, 4, 256)], 4 * c["head_dim"], c["head_dim"], 128, None)
        assert rope_freqs(m).tobytes().hex() == c["factors_f32_hex"], c

"""ggufkit info: structured data (gguf_info) and its text (format_info / the CLI)."""
from __future__ import annotations

import pytest

from ggufkit.cli import main
from ggufkit.convert import convert
from ggufkit.info import format_info, gguf_info
from quant.errors import GGUFError


@pytest.fixture(scope="module")
def deci_q8(deci_ckpt, tmp_path_factory):
    return convert(deci_ckpt, tmp_path_factory.mktemp("info") / "deci-q8_0.gguf", "q8_0")


def test_deci_info_data(deci_q8):
    info = gguf_info(deci_q8)
    assert info.arch == "deci"
    assert [(L.attention, L.n_head_kv, L.n_ff) for L in info.layers] == [
        ("gqa", 4, 1024), ("gqa", 2, 512), ("none", 0, 256), ("linear", 0, 768),
        ("gqa", 1, 256), ("none", 0, 0), ("gqa", 2, 1024)]
    assert len(info.tensors) == 50
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert embd.type == "Q8_0" and embd.shape == [256, 128256] and embd.nbytes == 128256 * 256 // 32 * 34
    norm = next(t for t in info.tensors if t.name == "output_norm.weight")
    assert norm.type == "F32" and norm.nbytes == 1024
    assert info.total_bytes == sum(t.nbytes for t in info.tensors)
    # Q8_0 is 8.5 bpw; the few F32 norms/rope factors pull the average up a little
    assert 8.5 <= info.bits_per_weight < 8.51
    assert info.metadata["tokenizer.ggml.pre"] == "smaug-bpe"
    assert info.metadata["tokenizer.ggml.tokens"] == "[128256 items]"
    assert info.total_bytes < info.file_size


def test_format_info(deci_q8):
    text = format_info(gguf_info(deci_q8))
    assert "architecture: deci" in text
    assert "blk.3.attn_output.weight" in text and "Q8_0" in text
    assert "bits per weight" in text
    layer_lines = text.split("layers:")[1].strip().splitlines()[1:]
    assert layer_lines[3].split() == ["3", "linear", "4", "0", "768"]
    assert layer_lines[5].split() == ["5", "none", "0", "0", "none"]


def test_llama_info_has_a_layer_table_too(llama_ckpt, tmp_path):
    info = gguf_info(convert(llama_ckpt, tmp_path / "llama.gguf", "f16"))
    assert info.arch == "llama" and len(info.layers) == info.metadata["llama.block_count"]
    assert {(L.attention, L.n_ff > 0) for L in info.layers} == {("gqa", True)}
    layer_lines = format_info(info).split("layers:")[1].strip().splitlines()[1:]
    assert layer_lines[0].split()[:2] == ["0", "gqa"] and len(layer_lines) == len(info.layers)


def test_info_cli(deci_q8, capsys):
    main(["info", str(deci_q8)])
    out = capsys.readouterr().out
    assert "deci.attention.head_count_kv" in out and "rope_freqs.weight" in out


def test_info_rejects_non_gguf(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        gguf_info(bad)
    with pytest.raises(SystemExit) as e:
        main(["info", str(bad)])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith(f"error: {bad}: not a GGUF file") and err.count("\n") == 1

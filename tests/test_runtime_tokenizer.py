"""Tokenizer ids equal llama.cpp's ``llama-tokenize`` (goldens made by tools/compare_runtime.py tokens).

The Llama-3 (smaug-bpe) vocab is rebuilt from the bundled tokenizer.json exactly as the GGUF
converter writes it (checked equal to llama.cpp's converter output when the goldens were made),
so this runs in CI. The gemma3 (SentencePiece) cases run where the real model is installed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.tokenizer import CONTROL, NORMAL, USER_DEFINED, Tokenizer

GOLDEN = Path(__file__).parent / "golden" / "runtime"
TOKDIR = Path(__file__).resolve().parent.parent / "ggufkit" / "data" / "llama3-tokenizer"


def llama3_metadata(pre: str = "smaug-bpe") -> dict:
    """tokenizer.ggml.* as llama.cpp's convert_hf_to_gguf.py writes them for the bundled tokenizer."""
    tj = json.loads((TOKDIR / "tokenizer.json").read_text(encoding="utf-8"))
    vocab, added = tj["model"]["vocab"], tj["added_tokens"]
    n = len(vocab) + len(added)
    tokens, types = [""] * n, [NORMAL] * n
    for t, i in vocab.items():
        tokens[i] = t
    for a in added:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = CONTROL if a["special"] else USER_DEFINED
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": 128000, "tokenizer.ggml.eos_token_id": 128009,
            "tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": False}


@pytest.fixture(scope="module")
def llama3_tok() -> Tokenizer:
    return Tokenizer.from_metadata(llama3_metadata())


def _check(tok: Tokenizer, golden: str) -> None:
    data = json.loads((GOLDEN / golden).read_text(encoding="utf-8"))
    bad = [(c["text"], c["parse_special"], c["ids"], tok.encode(c["text"], parse_special=c["parse_special"]))
           for c in data["cases"] if tok.encode(c["text"], parse_special=c["parse_special"]) != c["ids"]]
    assert not bad, bad[:3]
    assert len(data["cases"]) >= 20


def test_llama3_smaug_ids_equal_llama_tokenize(llama3_tok):
    _check(llama3_tok, "tokens-llama3-smaug.json")


def test_llama3_special_tokens_and_decode(llama3_tok):
    ids = llama3_tok.encode("<|start_header_id|>user<|end_header_id|>", add_special=False)
    assert ids[0] == 128006 and ids[-1] == 128007
    # not parsed: the text is tokenized as plain characters
    assert 128006 not in llama3_tok.encode("<|start_header_id|>", parse_special=False)
    text = "Grüße, 世界! 123  \n\tx"
    assert llama3_tok.decode(llama3_tok.encode(text)) == text
    assert llama3_tok.is_eog(128009) and llama3_tok.is_eog(128001) and not llama3_tok.is_eog(15339)


def test_llama_bpe_adds_bos_and_ignores_merges():
    """pre = llama-bpe without add_bos_token in the GGUF: llama.cpp's default adds BOS; ids equal
    llama-tokenize on such a file (tokens-llama3-llamabpe.json)."""
    md = llama3_metadata("llama-bpe")
    del md["tokenizer.ggml.add_bos_token"]
    tok = Tokenizer.from_metadata(md)
    assert tok.encode("Hello world") == [128000, 9906, 1917]
    _check(tok, "tokens-llama3-llamabpe.json")


def test_stream_decoder_holds_partial_utf8(llama3_tok):
    ids = llama3_tok.encode("😀é")
    step = llama3_tok.stream_decoder()
    assert "".join(step(i) for i in ids) == "😀é"


def test_missing_tokenizer_is_model_error():
    from runtime.errors import ModelError
    with pytest.raises(ModelError, match="no tokenizer"):
        Tokenizer.from_metadata({})


def test_gemma3_ids_equal_llama_tokenize(gemma3_path):
    from quant.gguf import GGUFReader
    _check(Tokenizer.from_gguf(GGUFReader(gemma3_path)), "tokens-gemma3.json")

"""Tokenizer ids equal llama.cpp's ``llama-tokenize`` (goldens made by tools/conformance/compare_runtime.py tokens).

The Llama-3 (smaug-bpe) vocab is rebuilt from the bundled tokenizer.json exactly as the GGUF
converter writes it (checked equal to llama.cpp's converter output when the goldens were made),
so this runs in CI. The gemma3 (SentencePiece) cases run where the real model is installed.
"""
from __future__ import annotations

import json

import pytest

from runtime.tokenizer import Tokenizer
from tests.helpers import GOLDENS
from tests.helpers.vocab_cases import llama3_metadata

GOLDEN = GOLDENS / "runtime"

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

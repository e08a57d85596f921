"""Vocab builders and hard texts shared by tests/test_tokenizer_*.py and tools/golden/gen_vocab_goldens.py.

llama3_metadata(pre): the bundled Llama-3 tokenizer (ggufkit/data/llama3-tokenizer) as
convert_hf_to_gguf.py writes it, with ``tokenizer.ggml.pre`` set to any name: every BPE pre
type's regexes run on the same vocab. rwkv_metadata(): an RWKV-world vocab made from the same
tokens (byte-decoded and escaped as llama.cpp's rwkv loader expects). ugm_metadata(spm): an
SPM vocab (tokens + scores) reinterpreted as a T5/unigram one.
"""
from __future__ import annotations

import json

from tests.helpers import REPO

TOKDIR = REPO / "ggufkit" / "data" / "llama3-tokenizer"
VOCAB_DIR = REPO / "tests" / "data" / "vocab"          # small llama.cpp vocab GGUFs committed here
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4
LLAMA_HPARAMS = {  # what models/ggml-vocab-llama-bpe.gguf carries; llama-tokenize needs an arch
    "general.architecture": "llama", "llama.block_count": 1, "llama.context_length": 8192,
    "llama.embedding_length": 64, "llama.feed_forward_length": 128, "llama.attention.head_count": 2,
    "llama.attention.head_count_kv": 2, "llama.attention.layer_norm_rms_epsilon": 1e-5,
}

HARD_TEXTS = [
    # code, numbers, CJK, emoji, runs of spaces / newlines / tabs, contractions, special-token texts
    "def f(x):\n    return x**2  # 12345678 3.14159\n\n\n\tif x >= 1_000_000: print(f\"{x:,}\")\r\n"
    "I'm sure we've DONE it, they'll say: 'it's OK'   and \u00a0non-breaking\u3000ideographic space\n"
    "\u4e16\u754c\u4f60\u597d\uff0c\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4 "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940 "
    "\U0001F600\U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 caf\u00e9 na\u0303ive \u00c5ngstr\u00f6m\n"
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|> <s> </s>[CLS] [SEP] <unk>"
    "<|endoftext|><|im_start|>a<|im_end|>       \n\n \n",
    "   leading spaces and 0.5 + 0x1F == 31; 1234567890123 1,234,567 \u00bd \u2163 \uff11\uff12\uff13",
]


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


def pretype_metadata(pre: str) -> dict:
    """llama3 vocab with ``pre`` and no add_bos/add_eos keys, so llama.cpp's per-type defaults apply."""
    md = llama3_metadata(pre)
    del md["tokenizer.ggml.add_bos_token"], md["tokenizer.ggml.add_eos_token"]
    return {**LLAMA_HPARAMS, "general.name": f"pretype-{pre}", **md}


def _rwkv_escape(b: bytes) -> str:
    out = []
    for c in b:
        if c == 0x5C:
            out.append("\\\\")
        elif c == 9:
            out.append("\\t")
        elif c == 10:
            out.append("\\n")
        elif c == 13:
            out.append("\\r")
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


def rwkv_metadata() -> dict:
    from runtime.tokenizer import UNICODE_TO_BYTE
    md = llama3_metadata()
    toks = []
    seen = set()
    for i, t in enumerate(md["tokenizer.ggml.tokens"]):
        if md["tokenizer.ggml.token_type"][i] == NORMAL and all(c in UNICODE_TO_BYTE for c in t):
            e = _rwkv_escape(bytes(UNICODE_TO_BYTE[c] for c in t))
        else:
            e = _rwkv_escape(t.encode())
        if e in seen:
            e = f"<dup{i}>"
        seen.add(e)
        toks.append(e)
    return {**LLAMA_HPARAMS, "general.name": "rwkv-synthetic", "tokenizer.ggml.model": "rwkv",
            "tokenizer.ggml.tokens": toks, "tokenizer.ggml.token_type": [NORMAL] * len(toks)}


def ugm_metadata(spm_fields: dict) -> dict:
    """An SPM vocab (llama-spm) as a T5 unigram vocab: same tokens, scores and types."""
    keep = ("tokens", "scores", "token_type")
    md = {f"tokenizer.ggml.{k}": spm_fields[f"tokenizer.ggml.{k}"] for k in keep}
    md["tokenizer.ggml.token_type"] = [int(x) for x in md["tokenizer.ggml.token_type"]]
    md["tokenizer.ggml.scores"] = [float(x) for x in md["tokenizer.ggml.scores"]]
    return {**LLAMA_HPARAMS, "general.name": "ugm-synthetic", "tokenizer.ggml.model": "t5",
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.eos_token_id": 2, **md}

"""SPM (llm_tokenizer_spm_session): SentencePiece BPE over the whole fragment (spaces already
escaped to U+2581 by the caller).

llama.cpp merges the adjacent pair whose concatenation is a token with the highest score
(leftmost on ties) until none is left; characters that are not tokens fall back to <0xXX> byte
tokens. That is a BPE with merges ranked by the merged token's score, which the ``tokenizers``
library runs fast: every split (a, b) of a token t with a and b in the vocab becomes a merge,
ranked by t's score (highest first).
"""
from __future__ import annotations

import numpy as np

BYTE = 6


class SPM:
    def __init__(self, tokens: list[str], types: np.ndarray, scores: np.ndarray, vocab: dict, attrs=None):
        from tokenizers import Tokenizer as HFTokenizer, models

        self.vocab = vocab
        self.hf = HFTokenizer(models.BPE(vocab, spm_merges(tokens, types, scores, vocab), byte_fallback=True))

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids


def spm_merges(tokens: list[str], types: np.ndarray, scores: np.ndarray, vocab: dict) -> list[tuple[str, str]]:
    cand = []
    for i, t in enumerate(tokens):
        if len(t) < 2 or types[i] == BYTE:
            continue
        if vocab.get(t) != i:
            continue
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            ia, ib = vocab.get(a), vocab.get(b)
            if ia is None or ib is None or types[ia] == BYTE or types[ib] == BYTE:
                continue
            cand.append((-float(scores[i]), i, k, a, b))
    cand.sort()
    return [(a, b) for _, _, _, a, b in cand]

"""WPM (BERT WordPiece, llm_tokenizer_wpm_session): BERT pre-processing, then greedy longest match
of ``\u2581word`` against the vocab; a word with an unmatched rest becomes one [UNK]."""
from __future__ import annotations

from runtime.tokenizer import unicode as U


def _is_chinese(c: int) -> bool:
    return (0x4E00 <= c <= 0x9FFF or 0x3400 <= c <= 0x4DBF or 0x20000 <= c <= 0x2A6DF or 0x2A700 <= c <= 0x2B73F
            or 0x2B740 <= c <= 0x2B81F or 0x2B920 <= c <= 0x2CEAF or 0xF900 <= c <= 0xFAFF or 0x2F800 <= c <= 0x2FA1F)


def preprocess(text: str, lowercase: bool, strip_accents: bool) -> list[str]:
    words = [""]
    for ch in text:
        c = ord(ch)
        if strip_accents:
            c = U.nfd(c)
        f = U.cpt_flags(c)
        if f & U.WHITESPACE:
            if words[-1]:
                words.append("")
            continue
        if c == 0 or c == 0xFFFD or f & U.CONTROL:
            continue
        if strip_accents and f & U.ACCENT_MARK:
            continue
        s = chr(U.tolower(c) if lowercase else c)
        if f & U.PUNCTUATION or (c < 0x7F and f & U.SYMBOL) or _is_chinese(c):
            if words[-1]:
                words.append("")
            words[-1] = s
            words.append("")
        else:
            words[-1] += s
    if not words[-1]:
        words.pop()
    return words


class WPM:
    def __init__(self, vocab: dict[str, int], max_token_len: int, unk: int | None, lowercase: bool, strip_accents: bool):
        self.vocab, self.max_len, self.unk = vocab, max_token_len, unk
        self.lowercase, self.strip_accents = lowercase, strip_accents

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        vocab = self.vocab
        for word in preprocess(text, self.lowercase, self.strip_accents):
            if not word:
                continue
            w = "\u2581" + word
            b = w.encode("utf-8")          # llama.cpp matches on bytes
            n, start, i = len(b), len(out), 0
            while i < n:
                for j in range(min(n, i + self.max_len + 1), i, -1):
                    t = vocab.get(b[i:j].decode("utf-8", errors="surrogateescape"))
                    if t is not None:
                        out.append(t)
                        i = j
                        break
                else:
                    del out[start:]
                    break
            if len(out) == start:
                out.append(self.unk)
        return out

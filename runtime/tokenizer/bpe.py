"""BPE (llm_tokenizer_bpe_session): pre-tokenizer regexes, then per word merges by rank.

Per word, exactly llama.cpp's loop: the word's UTF-8 characters (of the GPT-2 byte-encoded
word, or of the raw text when the pre type has ``byte_encode`` off) are symbols; the adjacent
pair with the lowest merge rank (leftmost on ties) merges until none is left; with
``ignore_merges`` a word that is itself a token is taken whole. A final symbol that is not a
token falls back to its single bytes (tokens for 1-byte strings, or ``<0xXX>`` without byte
encoding); bytes without a token are dropped, as llama.cpp does. Words are cached.
"""
from __future__ import annotations

import heapq

from runtime.tokenizer.pretypes import BYTE_ENCODE_OFF, REGEXES
from runtime.tokenizer.unicode import regex_split


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode char map (unicode_byte_to_utf8 in llama.cpp)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_UNICODE = _bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}
_LATIN1_TO_GPT2 = {b: BYTE_TO_UNICODE[b] for b in range(256)}


def byte_encode(word: str) -> str:
    return word.encode("utf-8", errors="surrogatepass").decode("latin-1").translate(_LATIN1_TO_GPT2)


_LAST_RANKS: list = [None, None]   # (merges object, ranks): one vocab re-used under several pre types


def merge_ranks(merges) -> dict[str, int]:
    """"left right" -> rank, first occurrence wins (std::unordered_map::emplace). llama.cpp splits
    each merge at its first space after position 0, so a pair (a, b) is looked up as a + " " + b
    only when a has no space after its first character (``BPE._word``). Built in one C-level
    pass; the last result is kept for the same ``merges`` object."""
    if _LAST_RANKS[0] is merges:
        return _LAST_RANKS[1]
    ranks = dict(zip(reversed(merges), range(len(merges) - 1, -1, -1)))
    _LAST_RANKS[:] = [merges, ranks]
    return ranks


class BPE:
    def __init__(self, vocab: dict[str, int], merges, pre_enum: str, ignore_merges: bool):
        self.vocab = vocab
        self.ranks = merge_ranks(merges)
        self.exprs = REGEXES[pre_enum]
        self.byte_encode = pre_enum not in BYTE_ENCODE_OFF
        self.ignore_merges = ignore_merges
        self.gemma4 = pre_enum == "GEMMA4"
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for word in regex_split(text, self.exprs):
            if not word:
                continue
            if self.byte_encode:
                word = byte_encode(word)
            ids = self._cache.get(word)
            if ids is None:
                ids = self._word(word)
                if len(self._cache) > 200_000:
                    self._cache.clear()
                self._cache[word] = ids
            out.extend(ids)
        return out

    def _word(self, word: str) -> list[int]:
        vocab = self.vocab
        if self.ignore_merges and word in vocab:
            return [vocab[word]]
        if self.gemma4 and not word.strip("\n") and word in vocab:
            return [vocab[word]]
        sym = list(word)
        n = len(sym)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        ranks = self.ranks
        heap: list = []

        def add(left: int, right: int) -> None:
            if left == -1 or right == -1:
                return
            a = sym[left]
            r = None if " " in a[1:] else ranks.get(a + " " + sym[right])
            if r is not None:
                heapq.heappush(heap, (r, left, right, sym[left] + sym[right]))

        for i in range(n - 1):
            add(i, i + 1)
        while heap:
            _, left, right, text = heapq.heappop(heap)
            if not sym[left] or not sym[right] or sym[left] + sym[right] != text or nxt[left] != right:
                continue
            sym[left] = text
            sym[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            add(prv[left], left)
            add(left, nxt[left])
        out = []
        for s in sym:
            if not s:
                continue
            t = vocab.get(s)
            if t is not None:
                out.append(t)
                continue
            for b in s.encode("utf-8"):
                t = vocab.get(chr(b)) if self.byte_encode and b < 0x80 else (
                    vocab.get(f"<0x{b:02X}>") if not self.byte_encode else None)
                if t is not None:
                    out.append(t)
        return out

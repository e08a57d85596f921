"""RWKV "world" tokenizer (llm_tokenizer_rwkv_session): greedy longest byte match in a trie of the
unescaped token texts; a byte no token starts with becomes the unknown token."""
from __future__ import annotations


def unescape(escaped: str) -> bytes:
    """llama_unescape_rwkv_token: python-repr-like escapes (\\t \\n \\r \\xNN \\\\) -> bytes."""
    out = bytearray()
    escaping, hex_left, acc = False, 0, 0
    for c in escaped.encode("utf-8", errors="surrogateescape"):
        if hex_left:
            acc = (acc << 4) + (c - ord("a") + 10 if c >= ord("a") else c - ord("0"))
            acc &= 0xFF
            hex_left -= 1
            if hex_left == 0:
                out.append(acc)
                acc = 0
            continue
        if escaping:
            if c == ord("t"):
                out.append(9)
            elif c == ord("n"):
                out.append(10)
            elif c == ord("r"):
                out.append(13)
            elif c == ord("x"):
                hex_left = 2
            else:
                out.append(c)
            escaping = False
            continue
        if c == ord("\\"):
            escaping = True
            continue
        out.append(c)
    return bytes(out)


class RWKV:
    def __init__(self, tokens: list[str], unk: int | None):
        self.trie: dict = {}
        for i, t in enumerate(tokens):
            node = self.trie
            for b in unescape(t):
                node = node.setdefault(b, {})
            node[-1] = i
        self.unk = unk

    def encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        out, pos, n = [], 0, len(data)
        while pos < n:
            node = self.trie.get(data[pos])
            if node is None:
                out.append(self.unk)
                pos += 1
                continue
            tid, tlen = 0, 0
            while node is not None:
                if -1 in node:
                    tid, tlen = node[-1], pos + 1
                if pos + 1 >= n:
                    break
                pos += 1
                node = node.get(data[pos])
            out.append(tid)
            if tlen == 0:            # llama.cpp would loop forever here; stop instead
                break
            pos = tlen
        return out

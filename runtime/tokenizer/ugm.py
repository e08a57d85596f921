"""UGM (T5 / SentencePiece unigram, llm_tokenizer_ugm_session): normalization through the
precompiled charsmap (an XOR-compressed double array), whitespace escaping, then Viterbi over
byte offsets with the token scores (user-defined tokens score 0, unknown = min score - 10);
consecutive unknowns collapse into one."""
from __future__ import annotations

import struct

import numpy as np

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _trie_insert(root: dict, key: bytes, value) -> None:
    node = root
    for b in key:
        node = node.setdefault(b, {})
    node[-1] = value


class UGM:
    def __init__(self, tokens, types, scores, charsmap, unk, escape_whitespaces=True, add_space_prefix=True,
                 remove_extra_whitespaces=True, treat_whitespace_as_suffix=False):
        self.tokens, self.types, self.scores, self.unk = tokens, types, scores, unk
        self.escape, self.prefix, self.merge, self.suffix = (escape_whitespaces, add_space_prefix,
                                                             remove_extra_whitespaces, treat_whitespace_as_suffix)
        self.xcda = None
        self.repl = b""
        if charsmap is not None and len(charsmap) > 0:
            blob = bytes(np.asarray(charsmap, dtype=np.uint8))
            (size,) = struct.unpack_from("<I", blob, 0)
            self.xcda = np.frombuffer(blob[4:4 + size], dtype="<u4").astype(np.int64).tolist()
            self.repl = blob[4 + size:]
        self.trie: dict = {}
        self.user: dict = {}
        normal = [s for s, t in zip(scores, types) if t == NORMAL]
        min_score = min(normal) if normal else 3.4028234663852886e38
        for i, t in enumerate(tokens):
            ty = types[i]
            if ty in (NORMAL, USER_DEFINED, UNUSED):
                _trie_insert(self.trie, t.encode("utf-8", errors="surrogateescape"), i)
            if ty == USER_DEFINED:
                _trie_insert(self.user, t.encode("utf-8", errors="surrogateescape"), i)
        self.unk_score = float(np.float32(min_score) - np.float32(10.0))

    # ------------------------------------------------------------ normalization

    def _prefix(self, data: bytes, off: int) -> tuple[bytes, int]:
        # user-defined tokens: naive_trie::get_longest_prefix (deepest path, value or not)
        node, k = self.user, off
        while k < len(data) and data[k] in node:
            node = node[data[k]]
            k += 1
        if k > off:
            return data[off:k], k - off
        best_len = best_off = 0
        if self.xcda:
            x = self.xcda

            def base(i):
                p = x[i]
                return (p >> 10) << ((p & (1 << 9)) >> 6)
            node_index = base(0)
            for p in range(off, len(data)):
                c = data[p]
                if c == 0:
                    break
                node_index ^= c
                if node_index >= len(x):
                    raise ValueError("Index out of array bounds in XCDA array")
                if (x[node_index] & ((1 << 31) | 0xFF)) != c:
                    break
                leaf = (x[node_index] >> 8) & 1
                node_index ^= base(node_index)
                if leaf:
                    best_len = p - off + 1
                    best_off = x[node_index] & ((1 << 31) - 1)
        if best_len:
            end = self.repl.index(b"\0", best_off)
            return self.repl[best_off:end], best_len
        c = data[off]
        n = 1 if c < 0x80 else 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4 if c >> 3 == 30 else 0
        if n == 0 or off + n > len(data):
            return b"\xef\xbf\xbd", 1
        try:
            data[off:off + n].decode("utf-8")
        except UnicodeDecodeError:
            return b"\xef\xbf\xbd", 1
        return data[off:off + n], n

    def normalize(self, text: str) -> bytes:
        data = text.encode("utf-8", errors="surrogateescape")
        space = "\u2581".encode() if self.escape else b" "
        prepend = not self.suffix and self.prefix
        append = self.suffix and self.prefix
        out = bytearray()
        prepended = non_ws = False
        off = 0
        while off < len(data):
            norm, used = self._prefix(data, off)
            for c in norm:
                if c != 0x20:
                    if not non_ws:
                        non_ws = True
                        if (prepend and not prepended) or self.merge:
                            out += space
                            prepended = True
                    out.append(c)
                else:
                    non_ws = False
                    if not self.merge:
                        out += space
            off += used
        if append:
            out += space
        return bytes(out)

    # ------------------------------------------------------------ viterbi

    def encode(self, text: str) -> list[int]:
        s = self.normalize(text)
        n = len(s)
        if n == 0:
            return []
        best = [(self.unk, 0, -1e308)] * (n + 1)
        best[0] = (self.unk, 0, 0.0)
        off = 0
        while off < n:
            c = s[off]
            cl = min(1 if c < 0x80 else 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4, n - off)
            single = False
            cur = best[off][2]
            node = self.trie.get(s[off])
            p = off + 1
            while p <= n and node is not None:
                if -1 in node:
                    tid = node[-1]
                    if p - off == cl:
                        single = True
                    score = cur + (0.0 if self.types[tid] == USER_DEFINED else float(self.scores[tid]))
                    if score > best[p][2]:
                        best[p] = (tid, off, score)
                node = node.get(s[p]) if p < n else None
                p += 1
            if not single:
                score = cur + self.unk_score
                q = off + cl
                if score > best[q][2]:
                    best[q] = (self.unk, off, score)
            off += cl
        out = []
        prev_unk = False
        t = best[n]
        while True:
            is_unk = t[0] == self.unk
            if not (prev_unk and is_unk):
                out.append(t[0])
            if t[1] == 0:
                break
            prev_unk = is_unk
            t = best[t[1]]
        return out[::-1]

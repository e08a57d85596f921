"""``response_format: {"type": "json_object"}``: sampling constrained to one JSON object (RFC 8259).

A byte-level pushdown recognizer (``_step``, Numba) says whether bytes keep the text a prefix of a
JSON object, and when the object is complete. Each token's bytes (``Tokenizer.piece``) are run
through it from the slot's state:

    accepts(tid)   the sampled token keeps the text a valid prefix (one token's bytes)
    mask()         bool [n_vocab]: every such token (the whole vocabulary, one Numba pass)
    advance(tid)   take the token; ``done`` once the top-level object has closed

The engine samples as usual and, as llama.cpp's grammar sampler does, checks the sampled token;
only when it is refused are the refused tokens' logits set to -inf and the token sampled again
(so greedy decoding gives the best-scoring valid token). End-of-generation and control tokens are
never accepted: the reply ends when the object closes. Leading whitespace and whitespace between
tokens are JSON's; bytes >= 0x80 are allowed inside strings without a UTF-8 check (the text is
decoded with replacement, so it stays valid JSON); nesting deeper than MAX_DEPTH is refused.
"""
from __future__ import annotations

import numpy as np
from numba import njit

MAX_DEPTH = 64

# modes
TOP, VALUE, OBJ_FIRST, OBJ_KEY, COLON, AFTER, ARR_FIRST = 0, 1, 2, 3, 4, 5, 6
STR, STR_ESC, STR_U, KSTR, KSTR_ESC, KSTR_U = 7, 8, 9, 10, 11, 12
NUM_MINUS, NUM_ZERO, NUM_INT, NUM_DOT, NUM_FRAC, NUM_E, NUM_ESIGN, NUM_EXP = 20, 21, 22, 23, 24, 25, 26, 27
LIT, DONE = 30, 31
_LITS = np.frombuffer(b"true\0\0\0\0false\0\0\0null\0\0\0\0", dtype=np.uint8).reshape(3, 8)
_LIT_LEN = np.array([4, 5, 4], dtype=np.int64)


@njit(cache=True)
def _is_ws(b):
    return b == 32 or b == 9 or b == 10 or b == 13


@njit(cache=True)
def _is_digit(b):
    return 48 <= b <= 57


@njit(cache=True)
def _is_hex(b):
    return 48 <= b <= 57 or 65 <= b <= 70 or 97 <= b <= 102


@njit(cache=True)
def _value_start(st, stack, b):
    """A value begins with byte b (mode VALUE / ARR_FIRST); False if it cannot."""
    if b == 34:                                   # "
        st[0] = STR
    elif b == 123 or b == 91:                     # { [
        if st[2] >= MAX_DEPTH:
            return False
        stack[st[2]] = b
        st[2] += 1
        st[0] = OBJ_FIRST if b == 123 else ARR_FIRST
    elif b == 45:                                 # -
        st[0] = NUM_MINUS
    elif b == 48:
        st[0] = NUM_ZERO
    elif 49 <= b <= 57:
        st[0] = NUM_INT
    elif b == 116 or b == 102 or b == 110:        # t f n
        st[0] = LIT
        st[1] = (0 if b == 116 else (1 if b == 102 else 2)) * 8 + 1
    else:
        return False
    return True


@njit(cache=True)
def _after(st, stack, b):
    """Byte b after a complete value: whitespace, a comma, or the closer of the open container."""
    if _is_ws(b):
        st[0] = AFTER
        return True
    if st[2] == 0:
        return False
    top = stack[st[2] - 1]
    if b == 44:                                   # ,
        st[0] = OBJ_KEY if top == 123 else VALUE
        return True
    if (b == 125 and top == 123) or (b == 93 and top == 91):
        st[2] -= 1
        st[0] = DONE if st[2] == 0 else AFTER
        return True
    return False


@njit(cache=True)
def _step(st, stack, b):
    """Advance state (st = [mode, aux, depth], stack = open brackets) by byte b; False: refused."""
    m = st[0]
    if m == STR or m == KSTR:
        if b == 34:
            st[0] = AFTER if m == STR else COLON
            return True
        if b == 92:
            st[0] = STR_ESC if m == STR else KSTR_ESC
            return True
        return b >= 32
    if m == STR_ESC or m == KSTR_ESC:
        base = STR if m == STR_ESC else KSTR
        if b == 117:                              # \uXXXX
            st[0] = STR_U if m == STR_ESC else KSTR_U
            st[1] = 4
            return True
        if b == 34 or b == 92 or b == 47 or b == 98 or b == 102 or b == 110 or b == 114 or b == 116:
            st[0] = base
            return True
        return False
    if m == STR_U or m == KSTR_U:
        if not _is_hex(b):
            return False
        st[1] -= 1
        if st[1] == 0:
            st[0] = STR if m == STR_U else KSTR
        return True
    if m == TOP:
        if _is_ws(b):
            return True
        if b == 123:
            stack[0] = 123
            st[2] = 1
            st[0] = OBJ_FIRST
            return True
        return False
    if m == VALUE:
        return True if _is_ws(b) else _value_start(st, stack, b)
    if m == ARR_FIRST:
        if _is_ws(b):
            return True
        if b == 93:
            st[2] -= 1
            st[0] = DONE if st[2] == 0 else AFTER
            return True
        return _value_start(st, stack, b)
    if m == OBJ_FIRST or m == OBJ_KEY:
        if _is_ws(b):
            return True
        if b == 34:
            st[0] = KSTR
            return True
        if b == 125 and m == OBJ_FIRST:
            st[2] -= 1
            st[0] = DONE if st[2] == 0 else AFTER
            return True
        return False
    if m == COLON:
        if _is_ws(b):
            return True
        if b == 58:
            st[0] = VALUE
            return True
        return False
    if m == AFTER:
        return _after(st, stack, b)
    if m == LIT:
        lit, pos = st[1] // 8, st[1] % 8
        if b != _LITS[lit, pos]:
            return False
        if pos + 1 == _LIT_LEN[lit]:
            st[0] = AFTER
        else:
            st[1] += 1
        return True
    if m == NUM_MINUS:
        if b == 48:
            st[0] = NUM_ZERO
        elif _is_digit(b):
            st[0] = NUM_INT
        else:
            return False
        return True
    if m == NUM_ZERO or m == NUM_INT or m == NUM_FRAC:
        if _is_digit(b) and m != NUM_ZERO:
            return True
        if b == 46 and m != NUM_FRAC:             # .
            st[0] = NUM_DOT
            return True
        if b == 101 or b == 69:                   # e E
            st[0] = NUM_E
            return True
        return _after(st, stack, b)
    if m == NUM_DOT:
        if _is_digit(b):
            st[0] = NUM_FRAC
            return True
        return False
    if m == NUM_E:
        if b == 43 or b == 45:
            st[0] = NUM_ESIGN
            return True
        if _is_digit(b):
            st[0] = NUM_EXP
            return True
        return False
    if m == NUM_ESIGN:
        if _is_digit(b):
            st[0] = NUM_EXP
            return True
        return False
    if m == NUM_EXP:
        if _is_digit(b):
            return True
        return _after(st, stack, b)
    return False                                  # DONE takes nothing


@njit(cache=True)
def _run(st, stack, data, lo, hi):
    for i in range(lo, hi):
        if not _step(st, stack, data[i]):
            return False
    return True


@njit(cache=True)
def _mask(st, stack, data, offsets, usable, plain, out):
    """out[t]: token t's bytes keep the text a valid prefix from state (st, stack); inside a string
    a ``plain`` token (no quote, backslash or control byte) always does and is not run."""
    s2 = np.empty(3, np.int64)
    k2 = np.empty(MAX_DEPTH, np.int64)
    depth = st[2]
    in_string = st[0] == STR or st[0] == KSTR
    first_ok = np.zeros(256, np.bool_)                # the bytes the state takes first
    for b in range(256):
        s2[0], s2[1], s2[2] = st[0], st[1], st[2]
        for j in range(depth):
            k2[j] = stack[j]
        first_ok[b] = _step(s2, k2, np.uint8(b))
    for t in range(len(usable)):
        if not usable[t] or not first_ok[data[offsets[t]]]:
            out[t] = False
            continue
        if in_string and plain[t]:
            out[t] = True
            continue
        s2[0], s2[1], s2[2] = st[0], st[1], st[2]
        for j in range(depth):
            k2[j] = stack[j]
        out[t] = _run(s2, k2, data, offsets[t], offsets[t + 1])


class Vocab:
    """The tokenizer's token bytes, flat (one pass of ``Tokenizer.piece``; built once per model)."""

    def __init__(self, tokenizer):
        pieces = [tokenizer.piece(t) for t in range(tokenizer.n_vocab)]
        self.offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(pieces), dtype=np.uint8) if self.offsets[-1] else np.zeros(1, np.uint8)
        # control / unknown tokens (empty pieces) and end-of-generation never extend the text
        self.usable = np.array([len(p) > 0 and not tokenizer.is_eog(t) for t, p in enumerate(pieces)], dtype=np.bool_)
        self.plain = np.array([b'"' not in p and b"\\" not in p and min(p, default=32) >= 32 for p in pieces],
                              dtype=np.bool_)


class JsonState:
    """One reply's recognizer state over a ``Vocab``."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.st = np.array([TOP, 0, 0], dtype=np.int64)
        self.stack = np.zeros(MAX_DEPTH, dtype=np.int64)

    @property
    def done(self) -> bool:
        return int(self.st[0]) == DONE

    def accepts(self, tid: int) -> bool:
        v = self.vocab
        if not (0 <= tid < len(v.usable)) or not v.usable[tid]:
            return False
        return bool(_run(self.st.copy(), self.stack.copy(), v.data, v.offsets[tid], v.offsets[tid + 1]))

    def mask(self) -> np.ndarray:
        out = np.empty(len(self.vocab.usable), dtype=np.bool_)
        v = self.vocab
        _mask(self.st, self.stack, v.data, v.offsets, v.usable, v.plain, out)
        return out

    def advance(self, tid: int) -> None:
        v = self.vocab
        if not _run(self.st, self.stack, v.data, v.offsets[tid], v.offsets[tid + 1]):
            raise ValueError(f"token {tid} does not continue the JSON text")

    def feed(self, data: bytes) -> bool:
        """Advance by raw bytes (tests); False at the first refused byte (the state is then undefined)."""
        buf = np.frombuffer(data, dtype=np.uint8)
        return bool(_run(self.st, self.stack, buf, 0, len(buf)))

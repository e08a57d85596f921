"""llama.cpp's codepoint flags and pre-tokenizer regex split (src/unicode.cpp), in Python.

``regex_split(text, exprs)`` applies each regex in turn to every fragment left by the previous
one, keeping matches and the text between them as separate words (unicode_regex_split).
How a regex runs follows llama.cpp:

* the regexes llama.cpp runs with a hand-written splitter (gpt2, llama3, qwen2, qwen35,
  kimi-k2) are compiled with ``\\p{L}``, ``\\p{N}``, ``\\s``... replaced by explicit classes
  built from llama.cpp's own codepoint table, so they match what those splitters do;
* other regexes with a ``\\p{..}`` run on the "collapsed" text (every codepoint >= 128
  replaced by one byte per category) as std::regex does there;
* regexes without one run on the text with non-ASCII whitespace replaced by \\x0b (std::wregex);
* the afmoe / tiny_aya digit splitter and the newline splitter are ported as code.
"""
from __future__ import annotations

import bisect
import re
from functools import lru_cache

from runtime.tokenizer import unicode_data as D

UNDEFINED, NUMBER, LETTER, SEPARATOR, ACCENT_MARK, PUNCTUATION, SYMBOL, CONTROL = 1, 2, 4, 8, 16, 32, 64, 128
WHITESPACE = 0x100
MAX_CPT = 0x110000


def _rows(s: str) -> list[list[int]]:
    return [[int(x, 16) for x in r.split(",")] for r in s.split()]


_RANGES = _rows(D.RANGES_FLAGS)
_STARTS = [r[0] for r in _RANGES]
_FLAGS = [r[1] for r in _RANGES]
WS_SET = frozenset(r[0] for r in _rows(D.WHITESPACE))
LOWER = {a: b for a, b in _rows(D.LOWERCASE)}
_NFD = _rows(D.NFD)
_NFD_STARTS = [r[0] for r in _NFD]


def cpt_flags(c: int) -> int:
    """unicode_cpt_flags_from_cpt: category bits | WHITESPACE (0 outside the codepoint range)."""
    if c >= MAX_CPT:
        return 0
    f = _FLAGS[bisect.bisect_right(_STARTS, c) - 1]
    return f | WHITESPACE if c in WS_SET else f


def tolower(c: int) -> int:
    return LOWER.get(c, c)


def nfd(c: int) -> int:
    """unicode_cpts_normalize_nfd for one codepoint (llama.cpp maps to a single codepoint)."""
    i = bisect.bisect_right(_NFD_STARTS, c) - 1
    if i >= 0 and _NFD[i][0] <= c <= _NFD[i][1]:
        return _NFD[i][2]
    return c


_HAN = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]

# ---------------------------------------------------------------- explicit classes (exact mode)


def _ranges_where(pred) -> list[tuple[int, int]]:
    out = []
    for i, (s, f) in enumerate(_RANGES[:-1]):
        e = _RANGES[i + 1][0] - 1
        if pred(f):
            if out and out[-1][1] == s - 1:
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
    return out


def _class_body(ranges) -> str:
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _minus(ranges, sub) -> list[tuple[int, int]]:
    out = []
    for a, b in ranges:
        pieces = [(a, b)]
        for x, y in sub:
            nxt = []
            for p, q in pieces:
                if q < x or p > y:
                    nxt.append((p, q))
                    continue
                if p < x:
                    nxt.append((p, x - 1))
                if q > y:
                    nxt.append((y + 1, q))
            pieces = nxt
        out += pieces
    return out


@lru_cache(maxsize=None)
def _cls(name: str) -> str:
    """The body of a character class for a \\p{..} name, \\s, or 'L-Han' (kimi-k2)."""
    cat = {"N": NUMBER, "L": LETTER, "P": PUNCTUATION, "M": ACCENT_MARK, "S": SYMBOL,
           "Lu": LETTER, "Ll": LETTER, "Lt": LETTER, "Lm": LETTER, "Lo": LETTER}
    if name == "s":
        return _class_body(sorted((c, c) for c in WS_SET))
    if name == "Han":
        return _class_body(_HAN)
    if name == "L-Han":
        return _class_body(_minus(_ranges_where(lambda f: f & LETTER), _HAN))
    return _class_body(_ranges_where(lambda f, m=cat[name]: f & m))


def _regex_tokens(expr: str):
    """(token, inside) for a regex: each escape ("\\x", or a whole "\\p{..}") or character, and
    whether it stands inside a [...] class."""
    i, inside = 0, False
    while i < len(expr):
        c = expr[i]
        if c == "\\":
            j = expr.index("}", i) + 1 if expr[i + 1:i + 3] == "p{" else i + 2
            yield expr[i:j], inside
            i = j
            continue
        if c == "[" and not inside:
            inside = True
        elif c == "]" and inside:
            inside = False
        yield c, inside
        i += 1


def translate_exact(expr: str) -> str:
    """Replace \\p{X}, \\s, \\S (inside and outside [...]) by classes from llama.cpp's table."""
    out = []
    for t, inside in _regex_tokens(expr):
        if t.startswith("\\p{") or t == "\\s":
            body = _cls(t[3:-1] if t != "\\s" else "s")
            out.append(body if inside else f"[{body}]")
        elif t == "\\S" and not inside:
            out.append(f"[^{_cls('s')}]")
        else:
            out.append(t)
    return "".join(out)


# the regexes llama.cpp runs with hand-written splitters -> exact-mode regexes
_L3 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_KIMI = (r"\p{Han}+|[^\r\n\p{L}\p{N}]?\p{L-Han}+(?:'[sStTmMdD]|'[rR][eE]|'[vV][eE]|'[lL][lL])?|\p{N}{1,3}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+|.")
CUSTOM = {
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)": None,
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": None,
    _L3 + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": None,
    _L3 + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": None,
    _L3 + "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": None,
    "\\p{Han}+": _KIMI,
}

# ---------------------------------------------------------------- collapsed mode (std::regex)

_UCAT_CPT = {NUMBER: 0xD1, LETTER: 0xD2, PUNCTUATION: 0xD3, ACCENT_MARK: 0xD4, SYMBOL: 0xD5}
_UCAT_ENUM = {"\\p{N}": NUMBER, "\\p{L}": LETTER, "\\p{P}": PUNCTUATION, "\\p{M}": ACCENT_MARK, "\\p{S}": SYMBOL,
              "\\p{Lu}": LETTER, "\\p{Ll}": LETTER, "\\p{Lt}": LETTER, "\\p{Lm}": LETTER, "\\p{Lo}": LETTER}
_UCAT_ASCII = {NUMBER: "0-9", LETTER: "A-Za-z", PUNCTUATION: r"!-#%-*,-/:-;?-@\[-\]_\{\}", ACCENT_MARK: "",
               SYMBOL: r"\$\+<->\^`\|~"}


@lru_cache(maxsize=4096)
def _collapse_cpt(c: int) -> str:
    if c < 128:
        return chr(c)
    f = cpt_flags(c)
    if f & WHITESPACE:
        return "\x0b"
    return chr(_UCAT_CPT.get(f & 0xFF, 0xD0))


def _collapse_regex(expr: str) -> str:
    out, i, inside = [], 0, False
    while i < len(expr):
        c = expr[i]
        if c == "[" and (i == 0 or expr[i - 1] != "\\"):
            out.append("[")
            inside = True
            i += 1
            continue
        if inside and c == "]" and expr[i - 1] != "\\":
            out.append("]")
            inside = False
            i += 1
            continue
        if expr.startswith("\\p{", i):
            j = expr.find("}", i + 3)
            if j != -1 and j <= i + 10 and expr[i:j + 1] in _UCAT_ENUM:
                cat = _UCAT_ENUM[expr[i:j + 1]]
                body = re.escape(chr(_UCAT_CPT[cat])) + _UCAT_ASCII[cat]
                out.append(body if inside else f"[{body}]")
                i = j + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _ecma(expr: str) -> str:
    """ECMAScript -> Python re: '$' only matches at the very end."""
    return "".join("\\Z" if t == "$" and not inside else t for t, inside in _regex_tokens(expr))


@lru_cache(maxsize=None)
def _compiled(expr: str):
    """(mode, compiled regex) for one llama.cpp regex."""
    if expr in ("\\p{AFMoE_digits}", "\\d{1,3}(?=(?:\\d{3})*\\b)"):
        return "afmoe", None
    if expr == "[^\\n]+|[\\n]+":
        return "newlines", None
    if expr in CUSTOM:
        return "exact", re.compile(translate_exact(CUSTOM[expr] or expr), re.DOTALL)
    if any(k in expr for k in _UCAT_ENUM):
        return "collapsed", re.compile(_ecma(_collapse_regex(expr)), re.ASCII)
    return "wide", re.compile(_ecma(expr), re.ASCII)


def _split_re(rx, text: str, frags: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for s, e in frags:
        start = s
        for m in rx.finditer(text, s, e):
            if m.start() > start:
                out.append((start, m.start()))
            out.append((m.start(), m.end()))
            start = m.end()
        if start < e:
            out.append((start, e))
    return out


def _split_afmoe(text: str, frags):
    out = []
    for s, e in frags:
        prev, pos = s, s
        while pos < e:
            if cpt_flags(ord(text[pos])) & NUMBER:
                d0 = pos
                while pos < e and cpt_flags(ord(text[pos])) & NUMBER:
                    pos += 1
                cur, rem = d0, (pos - d0) % 3
                if rem:
                    out.append((prev, cur + rem))
                    prev = cur = cur + rem
                while cur < pos:
                    out.append((prev, cur + 3))
                    prev = cur = cur + 3
                continue
            pos += 1
        if prev < e:
            out.append((prev, e))
    return [(a, b) for a, b in out if b > a]


def _split_newlines(text: str, frags):
    out = []
    for s, e in frags:
        pos = s
        while pos < e:
            nl = text[pos] == "\n"
            r = pos
            while pos < e and (text[pos] == "\n") == nl:
                pos += 1
            out.append((r, pos))
    return out


def regex_split(text: str, exprs: list[str]) -> list[str]:
    """unicode_regex_split without the byte encoding: the words, in order."""
    frags = [(0, len(text))]
    collapsed = wide = None
    for expr in exprs:
        mode, rx = _compiled(expr)
        if mode == "afmoe":
            frags = _split_afmoe(text, frags)
        elif mode == "newlines":
            frags = _split_newlines(text, frags)
        elif mode == "exact":
            frags = _split_re(rx, text, frags)
        elif mode == "collapsed":
            if collapsed is None:
                collapsed = "".join(map(_collapse_cpt, map(ord, text)))
            frags = _split_re(rx, collapsed, frags)
        else:
            if wide is None:
                wide = "".join("\x0b" if ord(ch) > 0x7F and cpt_flags(ord(ch)) & WHITESPACE else ch for ch in text)
            frags = _split_re(rx, wide, frags)
    return [text[a:b] for a, b in frags]

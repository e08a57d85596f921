"""``ggufkit tokenize``: llama-tokenize's behaviour on a GGUF's vocabulary (tensors not needed).

    ids = tokenize_prompt("model.gguf", b"Hello", no_bos=False, parse_special=True)
    sys.stdout.buffer.write(format_tokens(tok, ids, ids_only=False))

As tools/tokenize/tokenize.cpp: escapes in the prompt (-p or -f) are processed unless
``escape=False`` (string_process_escapes); special tokens are added only when the model wants
a BOS and --no-bos is not given (common_tokenize(vocab, prompt, add_bos, parse_special));
pieces are printed with special tokens rendered, as ``%6d -> '%s'``; --ids prints a Python list.
"""
from __future__ import annotations

_ESC = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("'"): b"'", ord('"'): b'"', ord("\\"): b"\\"}
_HEX = set(b"0123456789abcdefABCDEF")


def process_escapes(data: bytes) -> bytes:
    """string_process_escapes (common/common.cpp)."""
    out, i, n = bytearray(), 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x5C and i + 1 < n:
            i += 1
            e = data[i]
            if e in _ESC:
                out += _ESC[e]
            elif e == ord("x") and i + 2 < n and data[i + 1] in _HEX and data[i + 2] in _HEX:
                out.append(int(data[i + 1:i + 3], 16))
                i += 2
            else:
                out += b"\\" + bytes([e])
        else:
            out.append(c)
        i += 1
    return bytes(out)


def open_gguf(path):
    """The GGUF's metadata (quant/gguf.py's reader, header only: tensors are not mapped)."""
    from quant.gguf import GGUFReader

    return GGUFReader(str(path), header_only=True)


def load_vocab(path: str):
    """The Tokenizer of a GGUF (a vocab-only file is fine: no tensors are read)."""
    from runtime.tokenizer import Tokenizer

    return Tokenizer.from_gguf(open_gguf(path))


def tokenize_prompt(tok, prompt: bytes, no_bos: bool = False, parse_special: bool = True,
                    escape: bool = True) -> list[int]:
    if escape:
        prompt = process_escapes(prompt)
    text = prompt.decode("utf-8", errors="replace")
    return tok.encode(text, add_special=tok.add_bos and not no_bos, parse_special=parse_special)


def format_tokens(tok, ids: list[int], ids_only: bool) -> bytes:
    """llama-tokenize's stdout for these ids."""
    if ids_only:
        return ("[" + ", ".join(str(i) for i in ids) + "]\n").encode()
    return b"".join(b"%6d -> '" % i + tok.piece(i, special=True) + b"'\n" for i in ids)

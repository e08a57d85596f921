"""Tokenizer from GGUF metadata, matching llama.cpp's ``llama_tokenize`` (src/llama-vocab.cpp).

Two vocab kinds (``tokenizer.ggml.model``):

    gpt2   byte-level BPE: llama.cpp's pre-tokenizer regex for ``tokenizer.ggml.pre``, merges
           by rank, ``ignore_merges`` for the llama3 family (a whole word in the vocab is one
           token), bytes <-> unicode map for pieces.
    llama  SentencePiece-style BPE (gemma3, llama2): spaces become U+2581, symbols merge by the
           score of the merged token (highest first, leftmost on ties), unknown characters fall
           back to <0xXX> byte tokens, optional leading space (``add_space_prefix``).

Both run on the ``tokenizers`` library. The special-token partition is done here exactly as
llama.cpp's ``tokenizer_st_partition``: control, user-defined and unknown tokens sorted longest
first, each cut out of the remaining raw-text fragments in turn (control/unknown ones only when
``parse_special``); the raw fragments go through the BPE model.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field

import numpy as np

from runtime.errors import ModelError

# llama_token_type in GGUF (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's regex per pre-tokenizer family (llm_tokenizer_bpe in src/llama-vocab.cpp)
_LLAMA3_RE = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
              r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# pre name -> (regex, ignore_merges, add_bos default)
PRE_TYPES = {
    **{name: (_LLAMA3_RE, True, True) for name in (
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
        "jina-v5-nano")},
    "smaug-bpe": (_LLAMA3_RE, False, False),
    "dbrx": (_LLAMA3_RE, False, False),
    "default": (_GPT2_RE, False, False),
    "gpt-2": (_GPT2_RE, False, False),
}


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


@dataclass
class Tokenizer:
    """Token ids <-> text for one GGUF vocab. Build with ``Tokenizer.from_gguf(reader)``."""

    model: str                      # "gpt2" | "llama"
    tokens: list[str]
    types: np.ndarray               # int32 [n_vocab], llama_token_type
    bos: int | None
    eos: int | None
    eot: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = False
    pre: str = "default"
    eog: frozenset = field(default_factory=frozenset)
    _hf: object = None
    _special: list = field(default_factory=list)

    # ------------------------------------------------------------ construction

    @classmethod
    def from_gguf(cls, gguf_file) -> "Tokenizer":
        """From a ``quant.gguf.GGUFReader`` (or anything with a ``fields`` dict)."""
        return cls.from_metadata(gguf_file.fields)

    @classmethod
    def from_metadata(cls, fields: dict) -> "Tokenizer":
        """From GGUF key/values: ``tokenizer.ggml.*`` (tokens, token_type, merges or scores, ids)."""
        model = fields.get("tokenizer.ggml.model")
        if model is None or "tokenizer.ggml.tokens" not in fields:
            raise ModelError("the GGUF has no tokenizer (tokenizer.ggml.model / tokens missing)")
        tokens = list(fields["tokenizer.ggml.tokens"])
        n = len(tokens)
        types = np.asarray(fields.get("tokenizer.ggml.token_type", [NORMAL] * n), dtype=np.int32)
        get = lambda k, d=None: fields.get(f"tokenizer.ggml.{k}", d)  # noqa: E731
        if model == "gpt2":
            pre = get("pre", "default") or "default"
            if pre not in PRE_TYPES:
                raise ModelError(f"unsupported tokenizer pre-type {pre!r} (supported: {', '.join(sorted(PRE_TYPES))})")
            add_bos, add_eos, add_space_prefix = PRE_TYPES[pre][2], False, False
        elif model == "llama":
            pre, add_bos, add_eos, add_space_prefix = "default", True, False, True
        else:
            raise ModelError(f"unsupported tokenizer model {model!r} (supported: gpt2, llama)")
        add_bos = bool(get("add_bos_token", add_bos))
        add_eos = bool(get("add_eos_token", add_eos))
        add_space_prefix = bool(get("add_space_prefix", add_space_prefix))
        bos, eos, eot = get("bos_token_id"), get("eos_token_id"), get("eot_token_id")
        if model == "llama":
            bos = 1 if bos is None else bos
            eos = 2 if eos is None else eos
        tok = cls(model=model, tokens=tokens, types=types,
                  bos=None if bos is None else int(bos), eos=None if eos is None else int(eos),
                  eot=None if eot is None else int(eot), add_bos=add_bos, add_eos=add_eos,
                  add_space_prefix=add_space_prefix, pre=pre)
        tok.types = tok.types.copy()
        tok.eog = tok._eog_ids(get("eom_token_id"))
        merges = get("merges") if model == "gpt2" else None
        scores = np.asarray(get("scores"), dtype=np.float32) if model == "llama" and get("scores") is not None else None
        tok._build(merges, scores)
        return tok

    def _eog_ids(self, eom) -> frozenset:
        """End-of-generation ids: eos, eot, eom, plus control tokens llama.cpp treats as EOG."""
        ids = {i for i in (self.eos, self.eot, eom) if i is not None}
        names = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                 "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                 "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                 "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~["}  # llama-vocab.cpp's EOG names
        named = [i for i, t in enumerate(self.tokens) if t in names]
        ids.update(named)
        for i in named:          # llama.cpp overrides such "control-looking" tokens to CONTROL
            self.types[i] = CONTROL
        return frozenset(int(i) for i in ids)

    def _build(self, merges, scores) -> None:
        from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, normalizers, pre_tokenizers

        vocab = {t: i for i, t in enumerate(self.tokens)}  # later duplicates win, as llama.cpp
        if self.model == "gpt2":
            if merges is None:
                raise ModelError("gpt2 tokenizer without tokenizer.ggml.merges")
            pairs = [tuple(m.split(" ", 1)) for m in merges if " " in m[1:]]
            pairs = [(m[0], m[1]) if len(m) == 2 else m for m in pairs]
            regex, ignore_merges, _ = PRE_TYPES[self.pre]
            hf = HFTokenizer(models.BPE(vocab, pairs, ignore_merges=ignore_merges))
            hf.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            hf.decoder = decoders.ByteLevel()
        else:
            if scores is None:
                raise ModelError("llama (SentencePiece) tokenizer without tokenizer.ggml.scores")
            hf = HFTokenizer(models.BPE(vocab, _spm_merges(self.tokens, self.types, scores, vocab),
                                        byte_fallback=True))
            hf.normalizer = normalizers.Replace(" ", "\u2581")
        self._hf = hf
        special = [i for i, ty in enumerate(self.types) if ty in (CONTROL, USER_DEFINED, UNKNOWN)]
        special.sort(key=lambda i: (-len(self.tokens[i].encode()), i))
        self._special = [(self.tokens[i], i, int(self.types[i]) != USER_DEFINED) for i in special if self.tokens[i]]

    # ------------------------------------------------------------ encode

    def _partition(self, text: str, parse_special: bool) -> list:
        """tokenizer_st_partition: a list of str (raw text) and int (special token id)."""
        frags: list = [text]
        for tok_text, tid, is_ctrl in self._special:
            if is_ctrl and not parse_special:
                continue
            if tok_text not in text:
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or tok_text not in f:
                    out.append(f)
                    continue
                parts = f.split(tok_text)
                for j, p in enumerate(parts):
                    if j:
                        out.append(tid)
                    if p:
                        out.append(p)
            frags = out
        return frags

    def _encode_raw(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """llama_tokenize(text, add_special, parse_special): BOS/EOS by the GGUF's rules."""
        out: list[int] = []
        if add_special and self.add_bos:
            if self.bos is None:
                raise ModelError("tokenizer wants a BOS token but the GGUF has no bos_token_id")
            out.append(self.bos)
        prev_special = True
        for f in self._partition(text, parse_special) if text else []:
            if isinstance(f, int):
                out.append(f)
                prev_special = True
            else:
                if self.model == "llama" and self.add_space_prefix and prev_special:
                    f = " " + f
                out.extend(self._encode_raw(f))
                prev_special = False
        if add_special and self.add_eos and self.eos is not None:
            out.append(self.eos)
        return out

    # ------------------------------------------------------------ decode

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def piece(self, tid: int, special: bool = False) -> bytes:
        """llama_token_to_piece: the bytes of one token (control/unknown text only if ``special``)."""
        ty = int(self.types[tid])
        text = self.tokens[tid]
        if ty in (CONTROL, UNKNOWN):
            return text.encode() if special else b""
        if ty == USER_DEFINED:
            return text.encode()
        if ty == BYTE:
            return bytes([int(text[3:-1], 16)])
        if ty != NORMAL:
            return b""                                   # unused and other types print nothing
        if self.model == "llama":
            return text.replace("\u2581", " ").encode()
        if all(c in UNICODE_TO_BYTE for c in text):
            return bytes(UNICODE_TO_BYTE[c] for c in text)
        return text.encode()

    def decode(self, ids, special: bool = False) -> str:
        return b"".join(self.piece(int(i), special) for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self, special: bool = False):
        """A function token id -> newly complete text (holds back partial UTF-8 sequences)."""
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda tid: dec.decode(self.piece(int(tid), special))

    def is_eog(self, tid: int) -> bool:
        return int(tid) in self.eog

    def token_id(self, text: str) -> int | None:
        try:
            return self.tokens.index(text)
        except ValueError:
            return None


def _spm_merges(tokens: list[str], types: np.ndarray, scores: np.ndarray, vocab: dict) -> list[tuple[str, str]]:
    """SentencePiece scores as BPE merges: every split (a, b) of a token t with a and b in the
    vocab, ranked by t's score (highest first), so the BPE model merges exactly the pair
    llama.cpp's llm_tokenizer_spm would (the best-scoring merged token, leftmost on ties)."""
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

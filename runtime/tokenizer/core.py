"""Tokenizer from GGUF metadata, matching llama.cpp's ``llama_vocab`` (src/llama-vocab.cpp).

Vocab types (``tokenizer.ggml.model``), one file each:

    gpt2, gemma4, whitespace  BPE   bpe.py   pre-tokenizer regexes of ``tokenizer.ggml.pre`` (pretypes.py,
                                             the one table), merges by rank
    llama                     SPM   spm.py   SentencePiece BPE: best-scoring merged token first, byte fallback
    bert                      WPM   wpm.py   BERT normalization, greedy longest WordPiece match
    t5                        UGM   ugm.py   precompiled charsmap normalization, unigram Viterbi
    rwkv                      RWKV  rwkv.py  greedy longest byte match

Shared here, as llama_vocab::impl does it: token attributes from ``token_type`` plus llama.cpp's
text-based overrides (EOT/EOM/FIM tokens forced to control, "unused" control tokens, EOG list,
phi-3 rstrip), the special-token partition (tokenizer_st_partition: control, user-defined and
unknown tokens, longest first, lstrip/rstrip), BOS/EOS/SEP by the per-type defaults and the
``add_*_token`` keys, and token -> piece.
"""
from __future__ import annotations

import codecs
import difflib

import numpy as np

from runtime.errors import ModelError
from runtime.tokenizer.pretypes import NAMES

# llama_token_type in GGUF (tokenizer.ggml.token_type)
UNDEFINED_T, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 0, 1, 2, 3, 4, 5, 6
# llama_token_attr bits
A_UNKNOWN, A_UNUSED, A_NORMAL, A_CONTROL, A_USER, A_BYTE = 1, 2, 4, 8, 16, 32
A_LSTRIP, A_RSTRIP = 1 << 7, 1 << 8
_TYPE_ATTR = {UNKNOWN: A_UNKNOWN, UNUSED: A_UNUSED, NORMAL: A_NORMAL, CONTROL: A_CONTROL, USER_DEFINED: A_USER,
              BYTE: A_BYTE}

# tokenizer.ggml.model -> (kind, bos, eos, unk, sep, pad, add_bos, add_eos, add_sep, add_space_prefix)
MODELS = {
    "llama": ("SPM", 1, 2, 0, None, None, True, False, False, True),
    "bert": ("WPM", 101, None, 100, 102, 0, True, False, True, False),
    "gpt2": ("BPE", 11, 11, None, None, None, False, False, False, False),
    "whitespace": ("BPE", 11, 11, None, None, None, False, False, False, False),
    "gemma4": ("BPE", None, None, None, None, None, False, False, False, False),
    "t5": ("UGM", None, 1, 2, None, 0, False, True, False, False),
    "rwkv": ("RWKV", None, None, None, None, None, False, False, False, False),
}

_EOT = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
        "[EOT]", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>"]
_FIM = {
    "fim_pre": ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<PRE>", "\u2581<PRE>",
                "<|code_prefix|>", "<|prefix|>"],
    "fim_suf": ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>", "\u2581<SUF>",
                "<|code_suffix|>", "<|suffix|>"],
    "fim_mid": ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>", "\u2581<MID>",
                "<|code_middle|>", "<|middle|>"],
    "fim_pad": ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    "fim_rep": ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
    "fim_sep": ["<|file_sep|>"],
}
_EOG = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
        "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~["]
_SPACES = " \t\n\v\f\r"


def supported_pre_types() -> list[str]:
    return sorted(NAMES)


def pre_type_error(pre: str) -> ModelError:
    near = difflib.get_close_matches(pre, NAMES, n=1, cutoff=0.0)
    return ModelError(f"unknown tokenizer pre-type {pre!r} (nearest supported: {near[0]!r}; "
                      f"{len(NAMES)} known, see runtime/tokenizer/pretypes.py)")


class Tokenizer:
    """Token ids <-> text for one GGUF vocab. Build with ``Tokenizer.from_gguf(gguf)``."""

    def __init__(self):
        self.eog: frozenset = frozenset()

    # ------------------------------------------------------------ construction

    @classmethod
    def from_gguf(cls, gguf_file) -> "Tokenizer":
        """From a loaded GGUF (anything with a ``fields`` dict); tensors are not needed."""
        return cls.from_metadata(gguf_file.fields)

    @classmethod
    def from_metadata(cls, fields: dict) -> "Tokenizer":
        get = lambda k, d=None: fields.get(f"tokenizer.ggml.{k}", d)  # noqa: E731
        model = get("model")
        if model is None or get("tokens") is None:
            raise ModelError("the GGUF has no tokenizer (tokenizer.ggml.model / tokens missing)")
        if model in ("no_vocab", "none"):
            raise ModelError("the GGUF has no vocabulary (tokenizer.ggml.model = no_vocab)")
        if model not in MODELS:
            raise ModelError(f"unsupported tokenizer model {model!r} (supported: {', '.join(MODELS)})")
        self = cls()
        kind, bos, eos, unk, sep, pad, add_bos, add_eos, add_sep, add_space_prefix = MODELS[model]
        self.model, self.kind = model, kind
        self.tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(get("tokens"))]
        n = len(self.tokens)
        self.types = np.asarray(get("token_type", [NORMAL] * n), dtype=np.int32)[:n].copy()
        sc = get("scores")
        self.scores = np.zeros(n, np.float32) if sc is None else np.asarray(sc, dtype=np.float32)[:n]
        self.attrs = [_TYPE_ATTR.get(int(t), 0) for t in self.types] if get("token_type") is not None else [A_NORMAL] * n
        self.vocab = {t: i for i, t in enumerate(self.tokens)}           # later duplicates win, as llama.cpp
        self.ignore_merges = self.clean_spaces = False
        self.escape_whitespaces = kind != "BPE"
        self.remove_extra_whitespaces = False
        self.lowercase = True
        pre = "default"
        if kind == "BPE":
            pre = "gemma4" if model == "gemma4" else (get("pre") or "default")
            if pre not in NAMES:
                raise pre_type_error(pre)
            enum, flags = NAMES[pre]
            self.pre_enum = enum
            for k, v in flags.items():
                if k == "special_bos_id":
                    bos = None
                elif k == "normalizer_opts.lowercase":
                    self.lowercase = v == "true"
                else:
                    val = v == "true"
                    if k == "add_bos":
                        add_bos = val
                    elif k == "add_sep":
                        add_sep = val
                    else:
                        setattr(self, k, val)
        self.pre = pre
        add_space_prefix = bool(get("add_space_prefix", add_space_prefix))
        self.remove_extra_whitespaces = bool(get("remove_extra_whitespaces", self.remove_extra_whitespaces))
        ids = {"bos": bos, "eos": eos, "unk": unk, "sep": sep, "pad": pad, "eot": None, "eom": None, "mask": None,
               "fim_pre": None, "fim_suf": None, "fim_mid": None, "fim_pad": None, "fim_rep": None, "fim_sep": None}
        keys = {"bos": "bos_token_id", "eos": "eos_token_id", "eot": "eot_token_id", "eom": "eom_token_id",
                "unk": "unknown_token_id", "sep": "seperator_token_id", "pad": "padding_token_id",
                "mask": "mask_token_id", "fim_pre": "fim_pre_token_id", "fim_suf": "fim_suf_token_id",
                "fim_mid": "fim_mid_token_id", "fim_pad": "fim_pad_token_id", "fim_rep": "fim_rep_token_id",
                "fim_sep": "fim_sep_token_id"}
        for name, key in list(keys.items()) + [("fim_pre", "prefix_token_id"), ("fim_suf", "suffix_token_id"),
                                               ("fim_mid", "middle_token_id")]:
            if ids[name] is not None and ids[name] >= n:
                ids[name] = None
            v = get(key)
            if v is not None and 0 <= int(v) < n:
                ids[name] = int(v)
        add_bos = bool(get("add_bos_token", add_bos))
        add_eos = bool(get("add_eos_token", add_eos))
        add_sep = bool(get("add_sep_token", add_sep))
        if kind == "BPE" and self.pre_enum == "GEMMA4":
            add_bos = True
        self.add_bos, self.add_eos, self.add_sep, self.add_space_prefix = add_bos, add_eos, add_sep, add_space_prefix
        lc = get("normalizer.lowercase")
        if lc is not None:
            self.lowercase = bool(lc)
        self.strip_accents = bool(get("normalizer.strip_accents", self.lowercase))
        self._special_attrs(ids, fields)
        self.ids = ids
        self.bos, self.eos, self.eot, self.unk, self.sep = ids["bos"], ids["eos"], ids["eot"], ids["unk"], ids["sep"]
        self.types = self.types  # raw GGUF types (attrs hold llama.cpp's effective attributes)
        self._build(fields)
        return self

    def _special_attrs(self, ids: dict, fields: dict) -> None:
        """llama.cpp's text-based special-token detection and attribute overrides."""
        attrs, vocab = self.attrs, self.vocab
        found = {t: i for t, i in vocab.items()}

        def force_control(i):
            attrs[i] |= A_CONTROL
        # llama.cpp iterates an unordered_map; the first hit wins. Here: list order (rarely matters).
        for name, texts in [("eot", _EOT), ("eom", ["<|eom_id|>"])] + list(_FIM.items()):
            if ids[name] is None:
                for t in texts:
                    if t in found:
                        ids[name] = found[t]
                        force_control(found[t])
                        break
        for i, t in enumerate(self.tokens):
            if attrs[i] & A_CONTROL and not attrs[i] & A_UNUSED and "unused" in t:
                attrs[i] |= A_UNUSED
        eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids[k] is not None}
        for t in _EOG:
            if t in found:
                eog.add(found[t])
                force_control(found[t])
        for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):
            if t in found:
                attrs[found[t]] = A_USER
        eog |= {ids[k] for k in ("eos", "eot", "eom") if ids[k] is not None}
        texts = {self.tokens[i]: i for i in eog}
        if ("<|end|>" in texts and (("<|return|>" in texts and ("<|call|>" in texts or "<|calls|>" in texts))
                                    or (("<|call|>" in texts or "<|calls|>" in texts) and "<|flush|>" in texts))):
            eog.discard(texts["<|end|>"])
            attrs[texts["<|end|>"]] = A_USER
        if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
            eog.discard(texts["</s>"])
            attrs[texts["</s>"]] = A_NORMAL
        self.eog = frozenset(int(i) for i in eog)
        special = [i for i in range(len(attrs)) if attrs[i] & (A_CONTROL | A_USER | A_UNKNOWN)]
        special.sort(key=lambda i: -len(self.tokens[i].encode("utf-8", errors="surrogateescape")))
        pre = str(fields.get("tokenizer.ggml.pre", ""))
        arch = str(fields.get("general.architecture", ""))
        name = str(fields.get("general.name", "")).lower()
        if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
                any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
            if "<mask>" in vocab:
                attrs[vocab["<mask>"]] |= A_LSTRIP
        elif "phi-3" in name or "phi3" in name:
            for i in special:
                attrs[i] |= A_RSTRIP
            if "</s>" in vocab:
                attrs[vocab["</s>"]] |= A_RSTRIP
            for t in ("<unk>", "<s>", "<|endoftext|>"):
                if t in vocab:
                    attrs[vocab[t]] &= ~A_RSTRIP
        elif "modern-bert" in name and "[MASK]" in vocab:
            attrs[vocab["[MASK]"]] |= A_LSTRIP
        self._special = special

    def _build(self, fields: dict) -> None:
        get = lambda k, d=None: fields.get(f"tokenizer.ggml.{k}", d)  # noqa: E731
        if self.kind == "BPE":
            from runtime.tokenizer.bpe import BPE
            merges = get("merges")
            if merges is None and self.pre != "kimi-k2":
                raise ModelError("BPE tokenizer without tokenizer.ggml.merges")
            self._impl = BPE(self.vocab, merges if merges is not None else [], self.pre_enum, self.ignore_merges)
        elif self.kind == "SPM":
            from runtime.tokenizer.spm import SPM
            self._impl = SPM(self.tokens, self.types, self.scores, self.vocab, self.attrs)
        elif self.kind == "WPM":
            from runtime.tokenizer.wpm import WPM
            max_len = max((len(t.encode("utf-8", errors="surrogateescape")) for t in self.tokens), default=0)
            self._impl = WPM(self.vocab, max_len, self.unk, self.lowercase, self.strip_accents)
        elif self.kind == "UGM":
            from runtime.tokenizer.ugm import UGM
            self._impl = UGM(self.tokens, [self._attr_type(i) for i in range(len(self.tokens))], self.scores,
                             get("precompiled_charsmap"), self.unk, self.escape_whitespaces, self.add_space_prefix,
                             self.remove_extra_whitespaces)
        else:
            from runtime.tokenizer.rwkv import RWKV
            self._impl = RWKV(self.tokens, self.unk)

    def _attr_type(self, i: int) -> int:
        a = self.attrs[i]
        return (USER_DEFINED if a & A_USER else UNUSED if a & A_UNUSED else NORMAL if a & A_NORMAL
                else CONTROL if a & A_CONTROL else 0)

    # ------------------------------------------------------------ encode

    def _partition(self, text: str, parse_special: bool) -> list:
        """tokenizer_st_partition: a list of str (raw text) and int (special token id)."""
        frags: list = [text]
        for tid in self._special:
            a = self.attrs[tid]
            if not parse_special and a & (A_CONTROL | A_UNKNOWN):
                continue
            tok = self.tokens[tid]
            if not any(isinstance(f, str) and tok in f for f in frags):
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or tok not in f:
                    out.append(f)
                    continue
                rest = f
                while True:
                    m = rest.find(tok)
                    if m < 0:
                        if rest:
                            out.append(rest)
                        break
                    left = rest[:m]
                    if a & A_LSTRIP:
                        left = left.rstrip(_SPACES)
                    if left:
                        out.append(left)
                    out.append(tid)
                    rest = rest[m + len(tok):]
                    if a & A_RSTRIP:
                        rest = rest.lstrip(_SPACES)
            frags = out
        return frags

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """llama_tokenize(text, add_special, parse_special)."""
        out: list[int] = []
        frags = self._partition(text, parse_special) if text else []
        kind = self.kind
        if add_special and (kind == "WPM" or (kind != "RWKV" and self.add_bos)):
            if self.bos is None:
                raise ModelError("tokenizer wants a BOS token but the GGUF has no bos_token_id")
            out.append(self.bos)
        prev_special = True
        for f in frags:
            if isinstance(f, int):
                out.append(f)
                prev_special = True
                continue
            if kind == "SPM":
                if self.add_space_prefix and prev_special:
                    f = " " + f
                f = f.replace(" ", "\u2581")
            elif kind == "BPE" and self.escape_whitespaces:
                f = f.replace(" ", "\u2581")
            out.extend(self._impl.encode(f))
            prev_special = False
        if add_special:
            if kind == "WPM":
                if self.sep is None:
                    raise ModelError("BERT tokenizer without a separator token")
                out.append(self.sep)
            elif kind != "RWKV" and self.add_eos:
                if self.eos is None:
                    raise ModelError("tokenizer wants an EOS token but the GGUF has no eos_token_id")
                out.append(self.eos)
        return out

    # ------------------------------------------------------------ decode

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def piece(self, tid: int, special: bool = False) -> bytes:
        """llama_token_to_piece: the bytes of one token (control/unknown text only if ``special``)."""
        a = self.attrs[tid]
        text = self.tokens[tid]
        if not special and a & (A_UNKNOWN | A_CONTROL):
            return b""
        if self.kind == "RWKV":
            from runtime.tokenizer.rwkv import unescape
            return unescape(text)
        raw = text.encode("utf-8", errors="surrogateescape")
        if a & (A_UNKNOWN | A_CONTROL | A_USER):
            return raw
        if a & A_NORMAL:
            if self.kind != "BPE" or self.escape_whitespaces:
                return text.replace("\u2581", " ").encode("utf-8", errors="surrogateescape")
            from runtime.tokenizer.bpe import UNICODE_TO_BYTE
            out = bytearray()
            for c in text:
                b = UNICODE_TO_BYTE.get(c)
                if b is None:           # llama_decode_text: [UNK_BYTE_0x..] marker
                    out += b"[UNK_BYTE_0x" + c.encode().hex().encode() + raw + b"]"
                else:
                    out.append(b)
            return bytes(out)
        if a & A_BYTE:
            return bytes([int(text[3:5], 16)])
        return b""

    def decode(self, ids, special: bool = False) -> str:
        return b"".join(self.piece(int(i), special) for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self, special: bool = False):
        """A function token id -> newly complete text (holds back partial UTF-8 sequences)."""
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda tid: dec.decode(self.piece(int(tid), special))

    def is_eog(self, tid: int) -> bool:
        return int(tid) in self.eog

    def token_id(self, text: str) -> int | None:
        return self.vocab.get(text)

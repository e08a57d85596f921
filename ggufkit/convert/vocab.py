"""The tokenizer part of the GGUF, as convert_hf_to_gguf.py writes it for GPT-2-style BPE (Llama 3).

Keys, in the oracle's order (``_set_vocab_gpt2`` then ``SpecialVocab.add_to_gguf``):

    tokenizer.ggml.model = "gpt2"
    tokenizer.ggml.pre   = name found by hashing how the tokenizer splits CHKTXT (pre_hashes.py)
    tokenizer.ggml.tokens, tokenizer.ggml.token_type  (one per id up to vocab_size; holes -> "[PADi]")
    tokenizer.ggml.merges, tokenizer.ggml.{bos,eos,...}_token_id, tokenizer.ggml.add_{bos,eos}_token,
    tokenizer.chat_template

The oracle reads the tokenizer through transformers' AutoTokenizer; here the ``tokenizers`` library
reads tokenizer.json directly (what PreTrainedTokenizerFast wraps), so no remote code can run.
"""
from __future__ import annotations

import json
import logging
from hashlib import sha256
from pathlib import Path

import gguf
from gguf.vocab import SpecialVocab

from ggufkit.errors import GGUFKitError
from ggufkit.convert.pre_hashes import CHKTXT, PRE_HASHES

log = logger = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # the copied parser warns about config mismatches the oracle also ignores
log.propagate = False

TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = (
    int(gguf.TokenType.NORMAL), int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED), int(gguf.TokenType.UNUSED))


def _load_tokenizer(model_dir: Path):
    from tokenizers import Tokenizer

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise GGUFKitError(f"tokenizer.json not found in {model_dir} (only GPT-2 style BPE tokenizers are supported)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises plain Exceptions on bad files
        raise GGUFKitError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return tok, config


def _encode_with_specials(tok, config: dict, text: str) -> list[int]:
    """``AutoTokenizer.encode(text)``: the tokenizer's own post-processor, plus the BOS/EOS that
    transformers' LlamaTokenizerFast re-installs from add_bos_token/add_eos_token."""
    ids = tok.encode(text).ids
    if config.get("tokenizer_class") == "LlamaTokenizerFast":
        ids = tok.encode(text, add_special_tokens=False).ids
        if config.get("add_bos_token", True) and (bos := _token_id(tok, config.get("bos_token"))) is not None:
            ids = [bos] + ids
        if config.get("add_eos_token", False) and (eos := _token_id(tok, config.get("eos_token"))) is not None:
            ids = ids + [eos]
    return ids


def _token_id(tok, entry) -> int | None:
    content = entry.get("content") if isinstance(entry, dict) else entry
    return tok.token_to_id(content) if isinstance(content, str) else None


def pre_tokenizer_name(tok, config: dict) -> str:
    """tokenizer.ggml.pre: sha256 of str(encode(CHKTXT)) looked up in the oracle's table."""
    chkhsh = sha256(str(_encode_with_specials(tok, config, CHKTXT)).encode()).hexdigest()
    table = dict(PRE_HASHES)  # later entries win, as the oracle's chain of ifs
    if chkhsh not in table:
        raise GGUFKitError(f"BPE pre-tokenizer not recognized (chkhsh {chkhsh}); llama.cpp does not know it either")
    return table[chkhsh]


_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _looks_special(token: str) -> bool:
    """TextModel.does_token_look_special."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def vocab_tokens(tok, config: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and types for ids 0..vocab_size-1 (TextModel.get_vocab_base).

    Added tokens: not-normalized ones are round-tripped through encode/decode (with transformers'
    clean-up when tokenizer_config asks for it); special or special-looking ones are CONTROL, the
    rest USER_DEFINED. Ids the tokenizer lacks become "[PAD<id>]" with type UNUSED.
    """
    vocab = tok.get_vocab(with_added_tokens=True)
    if vocab and max(vocab.values()) >= vocab_size:
        raise GGUFKitError(f"tokenizer has id {max(vocab.values())} but config vocab_size is {vocab_size}")
    reverse = {i: t for t, i in vocab.items()}
    added = tok.get_added_tokens_decoder()  # id -> AddedToken
    added_contents = {a.content for a in added.values()}
    clean_up = bool(config.get("clean_up_tokenization_spaces", False))
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TOKEN_UNUSED)
            continue
        token = reverse[i]
        if token in added_contents:
            if i in added and not added[i].normalized:
                token = tok.decode(tok.encode(token, add_special_tokens=False).ids, skip_special_tokens=False)
                if clean_up:
                    for a, b in _CLEANUP:
                        token = token.replace(a, b)
            if (i in added and added[i].special) or _looks_special(token):
                types.append(TOKEN_CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(TOKEN_USER_DEFINED)
        else:
            types.append(TOKEN_NORMAL)
        tokens.append(token)
    return tokens, types


class OracleSpecialVocab(SpecialVocab):
    """gguf-py's SpecialVocab as in the llama.cpp tree the oracle vendors.

    PyPI gguf 0.19.0 parses tokenizer.json differently in ways that change Llama-3 output: the
    vendored copy lets a ByteLevel post-processor default add_bos/add_eos to False and does not let
    tokenizer_config's add_*_token override the post-processor; it also writes normalizer flags.
    _parse_normalizer and _try_load_from_tokenizer_json below are copied verbatim from
    vendor/llama.cpp/gguf-py/gguf/vocab.py (MIT, llama-cpp-python 0.3.36); the rest is PyPI's.
    """

    normalizer_lowercase: bool | None = None
    normalizer_strip_accents: bool | None = None

    def _parse_normalizer(self, normalizer: dict) -> None:
        # ref: https://huggingface.co/docs/tokenizers/api/normalizers
        #
        # Extracts normalizer flags from three possible formats:
        # 1. Standalone:           {"type": "Lowercase"}
        # 2. BertNormalizer attrs: {"type": "BertNormalizer", ...}
        # 3. Nested in Sequence:   {"type": "Sequence", "normalizers": [...]}

        normalizer_type = normalizer.get('type')
        if normalizer_type == 'Lowercase':
            self.normalizer_lowercase = True
        elif normalizer_type == 'StripAccents':
            self.normalizer_strip_accents = True
        elif normalizer_type == 'BertNormalizer':
            if 'lowercase' in normalizer:
                self.normalizer_lowercase = normalizer['lowercase']
            if 'strip_accents' in normalizer:
                self.normalizer_strip_accents = normalizer['strip_accents']
        elif normalizer_type == 'Sequence':
            for norm in normalizer.get('normalizers', []):
                self._parse_normalizer(norm)


    def _try_load_from_tokenizer_json(self, path: Path) -> bool:
        tokenizer = None
        tokenizer_file = path / 'tokenizer.json'
        if tokenizer_file.is_file():
            with open(tokenizer_file, encoding = 'utf-8') as f:
                tokenizer = json.load(f)
            if self.load_merges:
                merges = tokenizer.get('model', {}).get('merges')
                if isinstance(merges, list) and merges:
                    if isinstance(merges[0], str):
                        self.merges = merges
                    elif isinstance(merges[0], list) and len(merges[0]) == 2 and isinstance(merges[0][0], str):
                        # New format since transformers 4.45 to support spaces in merges
                        # ref: https://github.com/ggml-org/llama.cpp/issues/9692
                        # TODO: internally store as the new format instead of converting to old
                        if any(' ' in s for pair in merges for s in pair):
                            logger.warning(f'Spaces in merges detected, encoding as {chr(ord(" ") + 256)!r}')
                        self.merges = [
                            ' '.join(
                                [
                                    # ensure the spaces are properly encoded
                                    ''.join(
                                        chr(ord(c) + 256) if c == ' ' else c
                                        for c in part
                                    )
                                    for part in pair
                                ]
                            )
                            for pair in merges
                        ]
                    else:
                        raise ValueError("Unknown tokenizer merges format")
            # Parse normalizer configuration (e.g. Lowercase) into metadata
            if normalizer := tokenizer.get('normalizer'):
                self._parse_normalizer(normalizer)
            added_tokens = tokenizer.get('added_tokens', {})
        else:
            added_tokens = {}
        tokenizer_config = None
        tokenizer_config_file = path / 'tokenizer_config.json'
        if tokenizer_config_file.is_file():
            with open(tokenizer_config_file, encoding = 'utf-8') as f:
                tokenizer_config = json.load(f)
        if tokenizer:
            special_bos = (tokenizer_config or {}).get('bos_token')
            special_cls = (tokenizer_config or {}).get('cls_token')
            special_eos = (tokenizer_config or {}).get('eos_token')
            special_sep = (tokenizer_config or {}).get('sep_token')
            if not special_bos and special_cls and tokenizer_config:
                tokenizer_config['bos_token'] = special_bos = special_cls
            if not special_eos and special_sep and tokenizer_config:
                tokenizer_config['eos_token'] = special_eos = special_sep
            if post_processor := tokenizer.get('post_processor'):
                for processor in post_processor.get('processors', [post_processor]):
                    processor_type = processor.get('type')
                    if processor_type == 'ByteLevel':
                        self.add_special_token.setdefault('bos', False)
                        self.add_special_token.setdefault('eos', False)
                    elif processor_type == 'RobertaProcessing':
                        self.add_special_token['bos'] = True
                        self.add_special_token['eos'] = True
                        self.add_special_token['sep'] = True
                        if not special_cls and tokenizer_config:
                            special_cls = processor.get('cls', [special_bos])[0]
                            tokenizer_config['cls_token'] = special_cls
                        if not special_sep and tokenizer_config:
                            special_sep = processor.get('sep', [special_eos])[0]
                            tokenizer_config['sep_token'] = special_sep
                        continue
                    # Crude parsing of TemplateProcessing to determine if BOS/SEP/EOS should be added
                    # Only works with simple templates, **will** get it wrong on unusual sequences
                    elif processor_type == 'TemplateProcessing':
                        tmpl_single = processor.get('single', [])
                        tmpl_pair = processor.get('pair', [])
                        special_first = None
                        special_last = None
                        if len(tmpl_single) > 1:
                            if special_first := tmpl_single[0].get('SpecialToken', {}).get('id'):
                                if not tokenizer_config:
                                    special_bos = special_first
                                elif special_first not in (special_bos, special_cls):
                                    if not special_bos:
                                        tokenizer_config['bos_token'] = special_bos = special_first
                                    if not special_cls:
                                        tokenizer_config['cls_token'] = special_cls = special_first
                                self.add_special_token['bos'] = True if special_first in (special_bos, special_cls) else False
                                if special_first not in (special_bos, special_cls):
                                    logger.warning(f'Unknown leading special token {special_first!r} in TemplateProcessing<single>')
                            if special_last := tmpl_single[-1].get('SpecialToken', {}).get('id'):
                                if not tokenizer_config:
                                    special_eos = special_last
                                elif special_last != special_eos:
                                    if 'eot' not in self.special_token_types:
                                        self.special_token_types = tuple(self.special_token_types) + ('eot', )
                                        tokenizer_config['eot_token'] = special_eos
                                    elif 'eom' not in self.special_token_types:
                                        self.special_token_types = tuple(self.special_token_types) + ('eom', )
                                        tokenizer_config['eom_token'] = special_eos
                                    else:
                                        logger.warning(f'Overriding EOS token {special_eos!r} with {special_last!r} without EOT/EOM fallback!')
                                    tokenizer_config['eos_token'] = special_eos = special_last
                                self.add_special_token['eos'] = True if special_last == special_eos else False
                                if special_last != special_eos:
                                    logger.warning(f'Unknown trailing special token {special_last!r} in TemplateProcessing<single>')
                        if tmpl_pair:
                            seq_start = 1 if special_first and tmpl_pair[0].get('SpecialToken', {}).get('id') == special_first else 0
                            seq_stop = -1 if special_last and tmpl_pair[-1].get('SpecialToken', {}).get('id') == special_last else None
                            if (special_first and seq_start == 0) or (special_last and seq_stop is None):
                                logger.warning('TemplateProcessing<single> leading/trailing special tokens do not match TemplateProcessing<pair>')
                            if tmpl_pair := tmpl_pair[slice(seq_start, seq_stop)]:
                                tmpl_a = tmpl_pair[0].get('Sequence', {}).get('id')
                                tmpl_b = tmpl_pair[-1].get('Sequence', {}).get('id')
                                if tmpl_a != 'A' or tmpl_b != 'B':
                                    logger.warning(f'Unknown sequence {tmpl_a}...{tmpl_b} in TemplateProcessing<pair>')
                                # A [sep] [eos] B
                                if tmpl_a == 'A' and tmpl_b == 'B' and (tmpl_pair := tmpl_pair[1:-1]):
                                    add_sep = False
                                    if special_entry := tmpl_pair[0].get('SpecialToken', {}).get('id'):
                                        if special_entry in (special_sep, special_eos) and not special_last:
                                            add_sep = True
                                        if special_entry not in (special_sep, special_eos):
                                            logger.warning(f'Unknown separator token {special_entry!r} in TemplateProcessing<pair>')
                                    else:
                                        logger.warning(f'Unknown middle sequence {tmpl_pair[0]!r} in TemplateProcessing<pair>')
                                    if len(tmpl_pair) == 2:
                                        if special_entry := tmpl_pair[1].get('SpecialToken', {}).get('id'):
                                            if special_entry in (special_sep, special_eos):
                                                add_sep = True
                                            if special_entry not in (special_sep, special_eos):
                                                logger.warning(f'Unknown second separator token {special_entry!r} in TemplateProcessing<pair>')
                                        else:
                                            logger.warning(f'Unknown second middle sequence {tmpl_pair[1]!r} in TemplateProcessing<pair>')
                                    self.add_special_token['sep'] = add_sep
                                    if add_sep and not special_sep and tokenizer_config:
                                        tokenizer_config['sep_token'] = special_eos
                        continue
        if not tokenizer_config:
            return True
        chat_template_alt = None
        chat_template_json = path / 'chat_template.json'
        chat_template_jinja = path / 'chat_template.jinja'
        if chat_template_jinja.is_file():
            with open(chat_template_jinja, encoding = 'utf-8') as f:
                chat_template_alt = f.read()
            if additional_templates := list((path / 'additional_chat_templates').glob('*.jinja')):
                chat_template_alt = [{'name': 'default', 'template': chat_template_alt}]
                for template_path in additional_templates:
                    with open(template_path, encoding = 'utf-8') as fp:
                        chat_template_alt.append({'name': template_path.stem, 'template': fp.read()})
        elif chat_template_json.is_file():
            with open(chat_template_json, encoding = 'utf-8') as f:
                chat_template_alt = json.load(f).get('chat_template')
        chat_template = tokenizer_config.get('chat_template', chat_template_alt)
        if chat_template is None or isinstance(chat_template, (str, list)):
            self.chat_template = chat_template
        else:
            logger.warning(f'Bad type for chat_template field in {tokenizer_config_file!r} - ignoring')
        for typ in self.special_token_types:
            add_entry = tokenizer_config.get(f'add_{typ}_token')
            if isinstance(add_entry, bool):
                if typ not in self.add_special_token:
                    self.add_special_token[typ] = add_entry
                elif self.add_special_token[typ] != add_entry:
                    logger.warning(f'Mismatch between tokenizer_config add_{typ}_token({add_entry}) and tokenizer post_processor<{typ}>({self.add_special_token[typ]}) - opting for the latter')
            entry = tokenizer_config.get(f'{typ}_token')
            if isinstance(entry, str):
                tc_content = entry
            elif isinstance(entry, dict):
                entry_content = entry.get('content')
                if not isinstance(entry_content, str):
                    continue
                tc_content = entry_content
            else:
                continue
            # We only need the first match here.
            maybe_token_id = next(
                (atok.get('id') for atok in added_tokens if atok.get('content') == tc_content),
                None,
            )
            self._set_special_token(typ, maybe_token_id)
        return True


    def add_to_gguf(self, gw: gguf.GGUFWriter, quiet: bool = True) -> None:
        super().add_to_gguf(gw, quiet=quiet)
        if self.normalizer_lowercase is not None:
            gw.add_bool("tokenizer.ggml.normalizer.lowercase", self.normalizer_lowercase)
        if self.normalizer_strip_accents is not None:
            gw.add_bool("tokenizer.ggml.normalizer.strip_accents", self.normalizer_strip_accents)


def write_gpt2_vocab(w: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    """_set_vocab_gpt2: model, pre, tokens, token types, then the special vocab (merges, ids, flags, template)."""
    tok, config = _load_tokenizer(model_dir)
    if (json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("model") or {}).get("type") != "BPE":
        raise GGUFKitError("only BPE tokenizer.json files are supported")
    pre = pre_tokenizer_name(tok, config)
    tokens, types = vocab_tokens(tok, config, vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    OracleSpecialVocab(model_dir, load_merges=True).add_to_gguf(w)

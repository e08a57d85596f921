"""Tokenizers as llama.cpp's llama-vocab.cpp runs them (see core.py); the pre-type table is pretypes.py."""
from runtime.tokenizer.bpe import BYTE_TO_UNICODE, UNICODE_TO_BYTE
from runtime.tokenizer.core import (BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, Tokenizer,
                                    supported_pre_types)
from runtime.tokenizer.pretypes import NAMES as PRE_TYPES

__all__ = ["Tokenizer", "PRE_TYPES", "supported_pre_types", "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED",
           "UNUSED", "BYTE", "BYTE_TO_UNICODE", "UNICODE_TO_BYTE"]

"""Tiny GGUFs for the emulated CUDA tests (ggufkit.synthetic): every weight row a multiple of
256 (so K-quants and IQ types really are used), the 259-token byte-level tokenizer (so
perplexity runs on text and the output head is small enough for the emulator)."""
from __future__ import annotations

from ggufkit.synthetic import iq_mix, write_model  # noqa: F401

# deci: (n_head, n_head_kv, n_ff) per layer: GQA 4/2, no-op attention + FFN, linear attention,
# GQA 4/1, a whole no-op layer, MHA 4/4
DECI_BLOCKS = [(4, 2, 512), (0, 0, 256), (4, 0, 256), (4, 1, 512), (0, 0, 0), (4, 4, 256)]
LLAMA_BLOCKS = [(4, 2, 512)] * 3
GEMMA3_BLOCKS = [(4, 1, 512)] * 3


def write_tiny(path, arch: str, blocks, types="F16", seed: int = 0):
    return write_model(path, arch, blocks, n_embd=256, head_dim=64, types=types, seed=seed)

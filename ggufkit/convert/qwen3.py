"""Qwen3ForCausalLM -> GGUF arch ``qwen3`` (llama.cpp conversion/qwen.py, Qwen3Model(Qwen2Model)).

As qwen2, without biases and with per-head q_norm / k_norm [head_dim] tensors (attn_q_norm /
attn_k_norm); config.json's head_dim (often != hidden/heads) is written as key/value_length.
"""
from __future__ import annotations

from ggufkit.convert import qwen2
from ggufkit.convert.base import Model

HF_ARCHITECTURES = ("Qwen3ForCausalLM",)


def model_from_config(c: dict) -> Model:
    return qwen2.model_from_config(c, arch="qwen3")

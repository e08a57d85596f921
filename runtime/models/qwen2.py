"""Qwen2 / Qwen2.5 (llama.cpp ``src/models/qwen2.cpp``): Llama with Q/K/V biases and NEOX RoPE.

    per layer:  x = x + W_o attn(rope_neox(W_q n + b_q), rope_neox(W_k n + b_k), W_v n + b_v)
                x = x + W_down(silu(W_gate m) * W_up m)            n, m = rmsnorm(x) * attn/ffn_norm
    logits = output(rmsnorm(x) * output_norm)          output tied to token_embd when absent

Biases attn_q/k/v.bias [n_head*hd | n_head_kv*hd] are used wherever the GGUF has them (the
shared ``BaseModel.attention``); Q/K are not permuted at conversion (NEOX rotation).
"""
from __future__ import annotations

from runtime.models import llama
from runtime.models.base import Hparams


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    return llama.read_hparams(fields, tensors, arch="qwen2", rope_mode="neox")


class Model(llama.Model):
    step_style = None          # not llama's layer (runtime.step runs the per-op path)
    def check_layer(self, il: int) -> None:
        super().check_layer(il)
        for t in ("attn_q", "attn_k", "attn_v"):
            self.w.vec(f"blk.{il}.{t}.bias")

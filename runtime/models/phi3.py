"""Phi-3 / Phi-3.5 / Phi-4-mini (llama.cpp ``src/models/phi3.cpp``): fused QKV, fused gate-up,
NEOX RoPE with longrope factors.

    per layer:  qkv = W_qkv n        W_qkv [(n_head + 2 n_head_kv) hd, n_embd]: rows q | k | v
                x = x + W_o attn(rope(q), rope(k), v)               n = rmsnorm(x) * attn_norm
                g|u = W_up m          W_up [2 n_ff, n_embd]: first half gate, second half up
                x = x + W_down(silu(g) * u)                          m = rmsnorm(x) * ffn_norm

RoPE: ``rope.scaling.type = longrope``: per-pair divisors rope_factors_long / rope_factors_short
(long when the context exceeds rope.scaling.original_context_length) and cos/sin scaled by
rope.scaling.attn_factor (rope.py). Sliding window: llama.cpp disables it for phi3, so do we.
"""
from __future__ import annotations

from runtime.models import llama
from runtime.models.base import BaseModel, Hparams


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    return llama.read_hparams(fields, tensors, arch="phi3", rope_mode="neox")


class Model(BaseModel):
    ffn_up_rows = 2        # gate | up fused

    def check_layer(self, il: int) -> None:
        p = f"blk.{il}."
        for t in ("attn_output", "ffn_up", "ffn_down"):
            self.w.mat(p + t + ".weight")
        if p + "attn_qkv.weight" not in self.w.mats:
            for t in ("attn_q", "attn_k", "attn_v"):
                self.w.mat(p + t + ".weight")
        self.w.vec(p + "attn_norm.weight"), self.w.vec(p + "ffn_norm.weight")

    def block(self, il, x, pos, cache):
        p, eps, w, be = f"blk.{il}.", self.hp.eps, self.w, self.backend(il)
        x = be.add(x, self.attention(il, be.rms_norm(x, w.vec(p + "attn_norm.weight"), eps), pos, cache))
        gu = be.matmul(w.mat(p + "ffn_up.weight"), be.rms_norm(x, w.vec(p + "ffn_norm.weight"), eps))
        n_ff = gu.shape[1] // 2
        return be.add(x, be.matmul(w.mat(p + "ffn_down.weight"), be.swiglu(gu[:, :n_ff], gu[:, n_ff:])))

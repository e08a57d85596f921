"""Qwen3 (llama.cpp ``src/models/qwen3.cpp``): Llama with per-head RMS norms on Q and K (before
RoPE), NEOX RoPE, no biases; head_dim from attention.key_length (may differ from n_embd/n_head).

    per layer:  q = rope_neox(rmsnorm_head(W_q n) * attn_q_norm), k likewise with attn_k_norm
                x = x + W_o attn(q, k, W_v n);  x = x + W_down(silu(W_gate m) * W_up m)
"""
from __future__ import annotations

from runtime.models import llama
from runtime.models.base import Hparams


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    return llama.read_hparams(fields, tensors, arch="qwen3", rope_mode="neox")


class Model(llama.Model):
    step_style = None          # not llama's layer (runtime.step runs the per-op path)
    def check_layer(self, il: int) -> None:
        super().check_layer(il)
        self.w.vec(f"blk.{il}.attn_q_norm.weight"), self.w.vec(f"blk.{il}.attn_k_norm.weight")

    def block(self, il, x, pos, cache):
        p, eps, w, be = f"blk.{il}.", self.hp.eps, self.w, self.backend(il)
        a = self.attention(il, be.rms_norm(x, w.vec(p + "attn_norm.weight"), eps), pos, cache,
                           q_norm=w.vec(p + "attn_q_norm.weight"), k_norm=w.vec(p + "attn_k_norm.weight"))
        x = be.add(x, a)
        return be.add(x, llama.ffn_silu(self, il, be.rms_norm(x, w.vec(p + "ffn_norm.weight"), eps)))

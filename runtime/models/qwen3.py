"""Qwen3 (llama.cpp ``src/models/qwen3.cpp``): Llama with per-head RMS norms on Q and K (before
RoPE), NEOX RoPE, no biases; head_dim from attention.key_length (may differ from n_embd/n_head).

    per layer:  q = rope_neox(rmsnorm_head(W_q n) * attn_q_norm), k likewise with attn_k_norm
                x = x + W_o attn(q, k, W_v n);  x = x + W_down(silu(W_gate m) * W_up m)
"""
from __future__ import annotations

from runtime.models import llama
from runtime.models.base import Hparams, Residual


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    return llama.read_hparams(fields, tensors, arch="qwen3", rope_mode="neox")


class Model(llama.Model):
    step_style = None          # not llama's layer (runtime.step runs the per-op path)
    def check_layer(self, il: int) -> None:
        super().check_layer(il)
        self.w.vec(f"blk.{il}.attn_q_norm.weight"), self.w.vec(f"blk.{il}.attn_k_norm.weight")

    def block(self, il, x, pos, cache):
        """llama.Model.block with the per-head Q/K norms (x or a Residual in, a Residual out)."""
        p, w = f"blk.{il}.", self.w
        x, n = self.norm_in(il, x, p + "attn_norm.weight", [w.mat(p + f"attn_{t}.weight") for t in "qkv"])
        a = self.attention(il, n, pos, cache, q_norm=w.vec(p + "attn_q_norm.weight"),
                           k_norm=w.vec(p + "attn_k_norm.weight"))
        x, m = self.norm_in(il, Residual(x, a), p + "ffn_norm.weight",
                            [w.mat(p + "ffn_gate.weight"), w.mat(p + "ffn_up.weight")])
        return Residual(x, llama.ffn_silu(self, il, m))

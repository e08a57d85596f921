"""DeciLM / Nemotron-NAS (llama.cpp ``src/models/deci.cpp``): Llama with per-layer blocks.

Heterogeneity is data: ``deci.attention.head_count``, ``deci.attention.head_count_kv`` and
``deci.feed_forward_length`` are per-layer arrays (one LayerSpec each):

    n_head == 0                   attention is a no-op (no attn_norm, no weights)
    n_head > 0, n_head_kv == 0    "linear attention":  x + W_o rmsnorm(x)    (attn_output [n_embd, n_embd])
    n_head > 0, n_head_kv > 0     GQA attention as llama, KV cache sized by this layer's n_head_kv
    n_ff == 0                     FFN is a no-op; as in llama.cpp the layer then leaves x unchanged
                                  (Ultra's dummy layers, always paired with a no-op attention)
    n_ff > 0                      x + W_down(silu(W_gate m) * W_up m), m = rmsnorm(x) * ffn_norm
"""
from __future__ import annotations

from runtime.models import llama
from runtime.models.base import BaseModel, Hparams


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    return llama.read_hparams(fields, tensors, arch="deci")


class Model(BaseModel):
    def check_layer(self, il: int) -> None:
        spec, p = self.hp.layers[il], f"blk.{il}."
        names = []
        if spec.n_head > 0:
            names += ["attn_output"] + (["attn_q", "attn_k", "attn_v"] if spec.n_head_kv > 0 else [])
            self.w.vec(p + "attn_norm.weight")
        if spec.n_ff > 0:
            names += ["ffn_gate", "ffn_up", "ffn_down"]
            self.w.vec(p + "ffn_norm.weight")
        for t in names:
            self.w.mat(p + t + ".weight")

    def block(self, il, x, pos, cache):
        spec, p, eps, be = self.hp.layers[il], f"blk.{il}.", self.hp.eps, self.backend(il)
        if spec.n_ff == 0:
            return x          # llama.cpp `continue`s here: the layer's output is dropped
        if spec.n_head > 0:
            h = be.rms_norm(x, self.w.vec(p + "attn_norm.weight"), eps)
            if spec.n_head_kv == 0:
                a = be.matmul(self.w.mat(p + "attn_output.weight"), h)
            else:
                a = self.attention(il, h, pos, cache)
            x = be.add(x, a)
        return be.add(x, llama.ffn_silu(self, il, be.rms_norm(x, self.w.vec(p + "ffn_norm.weight"), eps)))

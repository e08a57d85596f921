"""DeciLM / Nemotron-NAS (llama.cpp ``src/models/deci.cpp``): Llama with per-layer blocks.

Heterogeneity is data: ``deci.attention.head_count``, ``deci.attention.head_count_kv`` and
``deci.feed_forward_length`` are per-layer arrays, and the GGUF spells each layer's kinds as
those counts (``layer_kinds``; one LayerSpec each):

    attn "none"     n_head == 0                 no attention (no attn_norm, no weights)
    attn "linear"   n_head > 0, n_head_kv == 0  x + W_o rmsnorm(x)          attn_output [n_embd, n_embd]
    attn "gqa"      n_head > 0, n_head_kv > 0   attention as llama; KV cache [n_ctx, n_head_kv, hd]
    ffn  "none"     n_ff == 0                   the whole layer leaves x unchanged, as in llama.cpp
                                                (Ultra's dummy layers, always with attn "none")
    ffn  "dense"    n_ff > 0                    x + W_down(silu(W_gate m) * W_up m), m = rmsnorm(x)
                                                ffn_gate/up [n_ff, n_embd], ffn_down [n_embd, n_ff]
"""
from __future__ import annotations

from runtime.models import llama
from runtime.models.base import BaseModel, Hparams


def layer_kinds(n_head: int, n_head_kv: int, n_ff: int) -> tuple[str, str]:
    """(attn, ffn) of a DeciLM layer from its head counts and FFN size (table above)."""
    attn = "none" if n_head == 0 else "linear" if n_head_kv == 0 else "gqa"
    return attn, "none" if n_ff == 0 else "dense"


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    return llama.read_hparams(fields, tensors, arch="deci", kinds=layer_kinds)


ATTN_WEIGHTS = {"none": (), "linear": ("attn_output",), "gqa": ("attn_q", "attn_k", "attn_v", "attn_output")}
FFN_WEIGHTS = {"none": (), "dense": ("ffn_gate", "ffn_up", "ffn_down")}


class Model(BaseModel):
    step_style = "llama"       # runtime.step's decode layer program
    def check_layer(self, il: int) -> None:
        spec, p = self.hp.layers[il], f"blk.{il}."
        for t in ATTN_WEIGHTS[spec.attn] + FFN_WEIGHTS[spec.ffn]:
            self.w.mat(p + t + ".weight")
        if spec.attn != "none":
            self.w.vec(p + "attn_norm.weight")
        if spec.ffn != "none":
            self.w.vec(p + "ffn_norm.weight")

    def block(self, il, x, pos, cache):
        """x f32 [n, n_embd] -> x, as the table in the module docstring."""
        spec, p, eps, be = self.hp.layers[il], f"blk.{il}.", self.hp.eps, self.backend(il)
        if spec.ffn == "none":
            return x          # llama.cpp `continue`s here: the layer's output is dropped
        if spec.attn != "none":
            h = be.rms_norm(x, self.w.vec(p + "attn_norm.weight"), eps)                # [n, n_embd]
            if spec.attn == "linear":
                a = be.matmul(self.w.mat(p + "attn_output.weight"), h)
            else:
                a = self.attention(il, h, pos, cache)
            x = be.add(x, a)
        m = be.rms_norm(x, self.w.vec(p + "ffn_norm.weight"), eps)
        return be.add(x, llama.ffn_silu(self, il, m))

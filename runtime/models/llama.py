"""Llama (llama.cpp ``src/models/llama.cpp``): pre-norm GQA attention with RoPE (norm mode,
Q/K permuted at conversion, llama3 ``rope_freqs``) and a SiLU-gated FFN.

    per layer:  x = x + W_o attn(rope(W_q n), rope(W_k n), W_v n)    n = rmsnorm(x) * attn_norm
                x = x + W_down(silu(W_gate m) * W_up m)                m = rmsnorm(x) * ffn_norm
    logits = output(rmsnorm(x) * output_norm)       output = token_embd when not stored (tied)

Weights (GGUF, math order [n_out, n_in]): attn_q [n_head*hd, n_embd], attn_k/v
[n_head_kv*hd, n_embd], attn_output [n_embd, n_head*hd], ffn_gate/up [n_ff, n_embd],
ffn_down [n_embd, n_ff].
"""
from __future__ import annotations

from runtime.models import rope
from runtime.models.base import BaseModel, Hparams, LayerSpec, Residual, common, default_attn_scale, per_layer


def gqa_dense(n_head: int, n_head_kv: int, n_ff: int) -> tuple[str, str]:
    """Every llama-family layer: GQA attention and a dense FFN."""
    return "gqa", "dense"


def read_hparams(fields: dict, tensors: dict, arch: str = "llama", rope_mode: str = "norm",
                 kinds=gqa_dense, **extra) -> Hparams:
    """Per-layer head counts / FFN sizes (scalars broadcast), RoPE (with yarn / longrope data);
    ``kinds(n_head, n_head_kv, n_ff) -> (attn, ffn)`` names each layer's kinds (deci decodes
    them from the counts); ``extra`` sets further Hparams fields (qwen2, qwen3, phi3, mistral3
    reuse this)."""
    c = common(fields, tensors, arch)
    n = c["n_layer"]
    heads = per_layer(fields, f"{arch}.attention.head_count", n)
    kv = per_layer(fields, f"{arch}.attention.head_count_kv", n, default=fields.get(f"{arch}.attention.head_count"))
    ff = per_layer(fields, f"{arch}.feed_forward_length", n)
    layers = tuple(LayerSpec(*kinds(h, k, f), h, k, f, c["rope_base"], c["rope_scale"])
                   for h, k, f in zip(heads, kv, ff))
    return Hparams(arch=arch, n_embd=c["n_embd"], n_vocab=c["n_vocab"], n_ctx_train=c["n_ctx_train"],
                   head_dim=c["head_dim"], n_rot=c["n_rot"], eps=c["eps"], rope_mode=rope_mode,
                   layers=layers, attn_scale=extra.pop("attn_scale", default_attn_scale(c["head_dim"])),
                   rope_ext=rope.from_gguf(fields, arch, c["n_ctx_train"], tensors), **extra)


def ffn_silu(model: BaseModel, il: int, m):
    """W_down(silu(W_gate m) * W_up m): m [n, n_embd] -> [n, n_embd] (through [n, n_ff])."""
    p, w, be = f"blk.{il}.", model.w, model.backend(il)
    gate, up = be.matmuls([w.mat(p + "ffn_gate.weight"), w.mat(p + "ffn_up.weight")], m)   # [n, n_ff] each
    down = w.mat(p + "ffn_down.weight")
    return be.matmul(down, be.glu("silu", gate, up, consumer=down))


class Model(BaseModel):
    step_style = "llama"       # runtime.step's decode layer program
    def check_layer(self, il: int) -> None:
        p = f"blk.{il}."
        for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            self.w.mat(p + t + ".weight")
        self.w.vec(p + "attn_norm.weight"), self.w.vec(p + "ffn_norm.weight")

    takes_residual = True

    def block(self, il, x, pos, cache):
        """x f32 [n, n_embd] (or the previous layer's Residual) -> Residual: x += attention(rmsnorm(x)),
        then x + ffn(rmsnorm(x)) left for the next norm to add (the module docstring)."""
        p, w = f"blk.{il}.", self.w
        x, n = self.norm_in(il, x, p + "attn_norm.weight", [w.mat(p + f"attn_{t}.weight") for t in "qkv"])
        x, m = self.norm_in(il, Residual(x, self.attention(il, n, pos, cache)), p + "ffn_norm.weight",
                            [w.mat(p + "ffn_gate.weight"), w.mat(p + "ffn_up.weight")])
        return Residual(x, ffn_silu(self, il, m))

"""Gemma 3 (llama.cpp ``src/models/gemma3.cpp``).

    x = token_embd[ids] * sqrt(n_embd)
    per layer:  n  = rmsnorm(x) * attn_norm
                q, k = rmsnorm_per_head(W_q n) * attn_q_norm, rmsnorm_per_head(W_k n) * attn_k_norm
                q, k = rope_neox(q, k, base_l);  q *= attention scale (1/sqrt(head_dim))
                x  = x + rmsnorm(W_o attn(q, k, W_v n)) * post_attention_norm
                x  = x + rmsnorm(W_down(gelu(W_gate m) * W_up m)) * post_ffw_norm     m = rmsnorm(x) * ffn_norm
    logits = output(rmsnorm(x) * output_norm), optionally softcapped c*tanh(y/c)

Sliding window: with ``gemma3.attention.sliding_window`` set, layer il is local (SWA) unless
il % 6 == 5 (``sliding_window_pattern`` may override: a per-layer bool array or a period);
local layers use rope base ``rope.freq_base_swa`` (default 10000) and scale 1, global layers
``rope.freq_base``. Norm weights are used as stored (the converter already added the +1).
"""
from __future__ import annotations

import math

import numpy as np

from runtime.models.base import BaseModel, Hparams, LayerSpec, common

SWA_PERIOD = 6


def swa_layers(fields: dict, n_layer: int) -> list[bool]:
    """llama_model_base::load_swa_pattern + llama_hparams::set_swa_pattern (dense_first false)."""
    pat = fields.get("gemma3.attention.sliding_window_pattern")
    if pat is not None and np.ndim(pat):
        return [bool(v) for v in pat][:n_layer]
    period = SWA_PERIOD if pat is None else int(pat)
    return [period == 0 or (il % period < period - 1) for il in range(n_layer)]


def head_counts(fields: dict, arch: str) -> tuple[int, int, int]:
    """(n_head, n_head_kv, n_ff), the same for every layer (gemma2, gemma3)."""
    n_head = int(fields[f"{arch}.attention.head_count"])
    return n_head, int(fields.get(f"{arch}.attention.head_count_kv", n_head)), int(fields[f"{arch}.feed_forward_length"])


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    c = common(fields, tensors, "gemma3")
    n = c["n_layer"]
    n_head, n_kv, n_ff = head_counts(fields, "gemma3")
    window = int(fields.get("gemma3.attention.sliding_window", 0))
    base_swa = float(fields.get("gemma3.rope.freq_base_swa", 10000.0))
    swa = swa_layers(fields, n) if window > 0 else [False] * n
    layers = tuple(LayerSpec("gqa", "dense", n_head, n_kv, n_ff,
                             base_swa if s else c["rope_base"], 1.0 if s else c["rope_scale"],
                             window if s else None) for s in swa)
    # gemma_pytorch config: 27B (62 layers) scales by n_embd/n_head, the others by head_dim
    scale = 1.0 / math.sqrt(c["n_embd"] / n_head) if n == 62 else 1.0 / math.sqrt(c["head_dim"])
    return Hparams(arch="gemma3", n_embd=c["n_embd"], n_vocab=c["n_vocab"], n_ctx_train=c["n_ctx_train"],
                   head_dim=c["head_dim"], n_rot=c["n_rot"], eps=c["eps"], rope_mode="neox", layers=layers,
                   attn_scale=scale, emb_scale=math.sqrt(c["n_embd"]),
                   final_softcap=float(fields.get("gemma3.final_logit_softcapping", 0.0)))


class Model(BaseModel):
    step_style = "gemma3"      # runtime.step's decode layer program
    qk_norm = True      # per-head RMS norms of Q and K (attn_q_norm, attn_k_norm [head_dim]); gemma2: none

    def check_layer(self, il: int) -> None:
        p = f"blk.{il}."
        for t in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            self.w.mat(p + t + ".weight")
        qk = ("attn_q_norm", "attn_k_norm") if self.qk_norm else ()
        for t in ("attn_norm",) + qk + ("post_attention_norm", "ffn_norm", "post_ffw_norm"):
            self.w.vec(p + t + ".weight")

    def block(self, il, x, pos, cache):
        """x f32 [n, n_embd] -> x, as the module docstring."""
        p, eps, w, be = f"blk.{il}.", self.hp.eps, self.w, self.backend(il)
        qk = dict(q_norm=w.vec(p + "attn_q_norm.weight"), k_norm=w.vec(p + "attn_k_norm.weight")) if self.qk_norm else {}
        a = self.attention(il, be.rms_norm(x, w.vec(p + "attn_norm.weight"), eps), pos, cache, **qk)
        x = be.add(x, be.rms_norm(a, w.vec(p + "post_attention_norm.weight"), eps))
        return be.add(x, ffn_post_normed(self, il, x))


def ffn_post_normed(model: BaseModel, il: int, x):
    """rmsnorm(W_down(gelu(W_gate m) * W_up m)) * post_ffw_norm, m = rmsnorm(x) * ffn_norm (gemma2/3)."""
    p, eps, w, be = f"blk.{il}.", model.hp.eps, model.w, model.backend(il)
    m = be.rms_norm(x, w.vec(p + "ffn_norm.weight"), eps)
    f = be.matmul(w.mat(p + "ffn_down.weight"),
                  be.geglu(be.matmul(w.mat(p + "ffn_gate.weight"), m), be.matmul(w.mat(p + "ffn_up.weight"), m)))
    return be.rms_norm(f, w.vec(p + "post_ffw_norm.weight"), eps)

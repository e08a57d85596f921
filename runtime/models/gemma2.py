"""Gemma 2 (llama.cpp ``src/models/gemma2.cpp``).

    x = token_embd[ids] * sqrt(n_embd)
    per layer:  n = rmsnorm(x) * attn_norm
                x = x + rmsnorm(W_o attn(rope_neox(W_q n), rope_neox(W_k n), W_v n)) * post_attention_norm
                x = x + rmsnorm(W_down(gelu(W_gate m) * W_up m)) * post_ffw_norm     m = rmsnorm(x) * ffn_norm
    logits = c * tanh(output(rmsnorm(x) * output_norm) / c)      c = final_logit_softcapping

Attention: Q scaled by 1/sqrt(head_dim) (27B, 46 layers: 1/sqrt(n_embd/n_head)), KQ softcapped
c_a * tanh(kq / c_a) (attn_logit_softcapping), sliding window (attention.sliding_window,
default 4096) on even layers (llama.cpp's swa pattern 2); SWA layers use rope.freq_base_swa
when present. Norm weights are used as stored (the converter already added gemma's +1).
"""
from __future__ import annotations

import math

from runtime.models import gemma3
from runtime.models.base import Hparams, LayerSpec, common


def read_hparams(fields: dict, tensors: dict) -> Hparams:
    c = common(fields, tensors, "gemma2")
    n = c["n_layer"]
    n_head, n_kv, n_ff = gemma3.head_counts(fields, "gemma2")
    window = int(fields.get("gemma2.attention.sliding_window", 4096))
    base_swa = float(fields.get("gemma2.rope.freq_base_swa", c["rope_base"]))
    swa = [il % 2 < 1 for il in range(n)]
    layers = tuple(LayerSpec("gqa", "dense", n_head, n_kv, n_ff,
                             base_swa if s else c["rope_base"], c["rope_scale"],
                             window if s else None) for s in swa)
    scale = 1.0 / math.sqrt(c["n_embd"] // n_head) if n == 46 else 1.0 / math.sqrt(c["head_dim"])
    return Hparams(arch="gemma2", n_embd=c["n_embd"], n_vocab=c["n_vocab"], n_ctx_train=c["n_ctx_train"],
                   head_dim=c["head_dim"], n_rot=c["n_rot"], eps=c["eps"], rope_mode="neox", layers=layers,
                   attn_scale=scale, emb_scale=math.sqrt(c["n_embd"]),
                   final_softcap=float(fields.get("gemma2.final_logit_softcapping", 0.0)),
                   attn_softcap=float(fields.get("gemma2.attn_logit_softcapping", 0.0)))


class Model(gemma3.Model):
    step_style = None          # not gemma3's layer (runtime.step runs the per-op path)
    qk_norm = False     # the layer of gemma3 without its per-head Q/K norms

"""The numpy reference forward pass of DeciLM (Nemotron-NAS) and Llama, from an HF checkpoint.

This is the semantic truth the runtime is checked against, so it is written to be obviously
correct, not fast. It follows HF transformers semantics (LlamaForCausalLM and NVIDIA's
modeling_decilm.py, which is Llama with per-layer blocks):

    h = embed[token_ids]
    per layer:
        attention kind "gqa":    h = h + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))
        attention kind "linear": h = h + linear_attn(n)                   n = rmsnorm(h, input_layernorm)
        attention kind "none":   nothing (no input_layernorm either)
        FFN present:             h = h + down(silu(gate(m)) * up(m))      m = rmsnorm(h, post_attention_layernorm)
    logits = lm_head(rmsnorm(h, model.norm))

Q/K are in HF order (not permuted for llama.cpp): RoPE rotates the two halves of each head,
``x*cos + rotate_half(x)*sin`` with ``rotate_half(x) = [-x2, x1]``.

Precision: weights are the checkpoint's bf16 widened exactly to float32, and all arithmetic is
float64. RoPE follows transformers: inv_freq (llama3-scaled) and the angles ``pos * inv_freq``
are float32 as transformers computes them; cos/sin and everything after are float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.reference.checkpoint import load_checkpoint


@dataclass(frozen=True)
class LayerSpec:
    attn: str       # "gqa" | "linear" | "none"
    n_kv_head: int  # KV heads of a "gqa" layer, else 0
    n_ff: int       # FFN intermediate size, 0 when the FFN is absent


@dataclass
class Model:
    config: dict
    n_embd: int
    n_head: int
    head_dim: int
    eps: float
    inv_freq: np.ndarray          # (head_dim/2,) float32, as transformers computes it
    layers: list[LayerSpec]
    w: dict[str, np.ndarray]      # HF tensor name -> float32 array, [out, in] for matrices


def ffn_mult_to_intermediate_size(ffn_mult: float, n_embd: int) -> int:
    """DeciLM: int(2*ffn_mult*n_embd/3) rounded up to a multiple of 256."""
    n = int(2 * ffn_mult * n_embd / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


def layer_specs(config: dict) -> list[LayerSpec]:
    """Per-layer block kinds from config.json (block_configs for DeciLM, uniform for Llama)."""
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    if "block_configs" not in config:
        return [LayerSpec("gqa", config.get("num_key_value_heads") or n_head, config["intermediate_size"])] * n_layers
    specs = []
    for b in config["block_configs"]:
        a, f = b["attention"], b["ffn"]
        if a.get("window_length") or a.get("num_sink_tokens") or a.get("sparsify") or f.get("sparsify"):
            raise ValueError("sliding-window / sink / sparsified blocks are not part of the reference")
        if f.get("replace_with_linear"):
            raise ValueError("linear FFN replacement is not part of the reference")
        if a["no_op"]:
            attn, n_kv = "none", 0
        elif a["replace_with_linear"]:
            attn, n_kv = "linear", 0
        else:
            attn, n_kv = "gqa", n_head // a["n_heads_in_group"]
        n_ff = 0 if f["no_op"] else ffn_mult_to_intermediate_size(f["ffn_mult"], config["hidden_size"])
        specs.append(LayerSpec(attn, n_kv, n_ff))
    return specs


def rope_inv_freq(config: dict, head_dim: int) -> np.ndarray:
    """inv_freq (float32), transformers' ``_compute_default/llama3_parameters`` step by step."""
    base = float(config.get("rope_theta", 10000.0))
    inv_freq = (1.0 / (base ** (np.arange(0, head_dim, 2).astype(np.float32) / head_dim))).astype(np.float32)
    rs = config.get("rope_scaling") or {}
    rope_type = rs.get("rope_type", rs.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type != "llama3":
        raise ValueError(f"rope_type {rope_type!r} is not part of the reference")
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_ctx = rs["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_ctx / low, old_ctx / high
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    # long wavelengths are slowed down by `factor`, short ones kept, the middle band blended
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq).astype(np.float32)
    smooth = ((old_ctx / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = ((1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama).astype(np.float32)
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama).astype(np.float32)


def load_hf(ckpt_dir: str | Path) -> Model:
    """Read config.json + safetensors (bf16 widened to float32) of a DeciLM or Llama checkpoint."""
    config, w = load_checkpoint(ckpt_dir)
    arch = config.get("architectures", ["?"])[0]
    if arch not in ("DeciLMForCausalLM", "LlamaForCausalLM"):
        raise ValueError(f"architecture {arch} is not part of the reference")
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or n_embd // n_head
    if "lm_head.weight" not in w:  # tied embeddings
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
    return Model(config, n_embd, n_head, head_dim, float(config["rms_norm_eps"]),
                 rope_inv_freq(config, head_dim), layer_specs(config), w)


# --- the building blocks (x is float64 [n_tokens, n_embd]) ---------------------------------------

def linear(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x @ W^T, W stored [out, in] as in HF."""
    return x @ weight.astype(np.float64).T


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight.astype(np.float64)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def rope_cos_sin(inv_freq: np.ndarray, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [n_tokens, head_dim] for positions 0..n_tokens-1 (angles float32, as transformers)."""
    angles = np.arange(n_tokens, dtype=np.float32)[:, None] * inv_freq[None, :]   # [T, head_dim/2] f32
    emb = np.concatenate([angles, angles], axis=-1).astype(np.float64)            # [T, head_dim]
    return np.cos(emb), np.sin(emb)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [T, heads, head_dim]: x*cos + rotate_half(x)*sin, rotate_half(x) = [-x2, x1]."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def attention(m: Model, x: np.ndarray, p: str, n_kv_head: int, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Causal GQA self-attention of layer prefix p; x is the normed input [T, n_embd]."""
    T, hd = x.shape[0], m.head_dim
    q = apply_rope(linear(x, m.w[p + "self_attn.q_proj.weight"]).reshape(T, m.n_head, hd), cos, sin)
    k = apply_rope(linear(x, m.w[p + "self_attn.k_proj.weight"]).reshape(T, n_kv_head, hd), cos, sin)
    v = linear(x, m.w[p + "self_attn.v_proj.weight"]).reshape(T, n_kv_head, hd)
    group = m.n_head // n_kv_head             # query head h reads KV head h // group (HF repeat_kv)
    causal = np.triu(np.ones((T, T), dtype=bool), k=1)
    out = np.empty((T, m.n_head, hd))
    for h in range(m.n_head):
        scores = q[:, h, :] @ k[:, h // group, :].T / math.sqrt(hd)   # [T, T]
        scores[causal] = -np.inf
        out[:, h, :] = softmax(scores) @ v[:, h // group, :]
    return linear(out.reshape(T, m.n_head * hd), m.w[p + "self_attn.o_proj.weight"])


def ffn(m: Model, x: np.ndarray, p: str) -> np.ndarray:
    """SwiGLU: down(silu(gate(x)) * up(x))."""
    gate = linear(x, m.w[p + "mlp.gate_proj.weight"])
    up = linear(x, m.w[p + "mlp.up_proj.weight"])
    return linear(silu(gate) * up, m.w[p + "mlp.down_proj.weight"])


def forward(m: Model, token_ids, return_hidden: bool = False):
    """Logits [n_tokens, vocab] (float64) for token_ids at positions 0..n-1, causal, no cache.

    With ``return_hidden`` also returns the residual stream after each layer (list of [T, n_embd]).
    """
    ids = np.asarray(token_ids, dtype=np.int64)
    h = m.w["model.embed_tokens.weight"][ids].astype(np.float64)     # [T, n_embd]
    cos, sin = rope_cos_sin(m.inv_freq, len(ids))
    hidden = []
    for i, spec in enumerate(m.layers):
        p = f"model.layers.{i}."
        if spec.attn != "none":
            n = rmsnorm(h, m.w[p + "input_layernorm.weight"], m.eps)
            if spec.attn == "linear":
                h = h + linear(n, m.w[p + "self_attn.linear_attn.weight"])
            else:
                h = h + attention(m, n, p, spec.n_kv_head, cos, sin)
        if spec.n_ff:
            h = h + ffn(m, rmsnorm(h, m.w[p + "post_attention_layernorm.weight"], m.eps), p)
        hidden.append(h)
    logits = linear(rmsnorm(h, m.w["model.norm.weight"], m.eps), m.w["lm_head.weight"])
    return (logits, hidden) if return_hidden else logits

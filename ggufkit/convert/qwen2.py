"""Qwen2ForCausalLM -> GGUF arch ``qwen2`` (llama.cpp conversion/qwen.py, Qwen2Model).

Llama's tensors plus Q/K/V biases; Q/K rows are NOT permuted (llama.cpp runs qwen2 with NEOX
RoPE). Parameters are TextModel.set_gguf_parameters' generic list, in its order (no vocab_size,
no rope.dimension_count; key/value_length only when config.json has head_dim; yarn/linear rope
scaling keys from rope_scaling).
"""
from __future__ import annotations

import gguf

from ggufkit.convert.base import Layer, Model, rope_parameters
from ggufkit.errors import GGUFKitError

HF_ARCHITECTURES = ("Qwen2ForCausalLM",)
ARCH = "qwen2"


def model_from_config(c: dict, arch: str = ARCH) -> Model:
    try:
        n_head = int(c["num_attention_heads"])
        n_kv = int(c.get("num_key_value_heads") or n_head)
        n_embd, n_layer = int(c["hidden_size"]), int(c["num_hidden_layers"])
        layers = [Layer(n_head, n_kv, int(c["intermediate_size"]))] * n_layer
        vocab = int(c["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise GGUFKitError(f"config.json: missing or bad {arch} field {e}") from None
    head_dim = int(c.get("head_dim") or n_embd // n_head)
    return Model(arch, c, layers, n_embd, head_dim, vocab, write_params, permute_qk=False)


def write_params(w: gguf.GGUFWriter, m: Model, ftype: gguf.LlamaFileType) -> None:
    """TextModel.set_gguf_parameters for a dense model, in its order."""
    c = m.config
    w.add_block_count(len(m.layers))
    for k in ("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
              "model_max_length"):
        if c.get(k) is not None:
            w.add_context_length(c[k])
            break
    w.add_embedding_length(m.n_embd)
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    if c.get("num_key_value_heads") is not None:
        w.add_head_count_kv(c["num_key_value_heads"])
    rope = rope_parameters(c)
    rope_type = rope.get("rope_type")
    if rope_type is not None:
        factor = rope.get("factor")
        if rope_type == "linear" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rope_type == "yarn" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
            if rope.get("extrapolation_factor") is not None:
                w.add_rope_scaling_yarn_ext_factor(rope["extrapolation_factor"])
            if (af := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
                w.add_rope_scaling_yarn_attn_factor(af)
            if rope.get("beta_fast") is not None:
                w.add_rope_scaling_yarn_beta_fast(rope["beta_fast"])
            if rope.get("beta_slow") is not None:
                w.add_rope_scaling_yarn_beta_slow(rope["beta_slow"])
        elif str(rope_type).lower() not in ("default", "llama3"):
            raise GGUFKitError(f"rope_scaling type {rope_type!r} is not supported (yarn, linear or none)")
    if rope.get("rope_theta") is not None:
        w.add_rope_freq_base(rope["rope_theta"])
    if c.get("rms_norm_eps") is not None:
        w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if c.get("head_dim") is not None:
        w.add_key_length(c["head_dim"])
        w.add_value_length(c["head_dim"])
    w.add_file_type(ftype)

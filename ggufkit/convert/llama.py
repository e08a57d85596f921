"""LlamaForCausalLM -> GGUF arch ``llama`` (llama.cpp conversion/llama.py, LlamaModel).

Every layer is GQA: n_head = num_attention_heads, n_head_kv = num_key_value_heads, n_ff =
intermediate_size. Q rows are permuted with n_head, K rows with n_head_kv.
"""
from __future__ import annotations

import gguf

from ggufkit.convert.base import Layer, Model, rope_parameters
from ggufkit.errors import GGUFKitError

HF_ARCHITECTURES = ("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM")


def model_from_config(c: dict) -> Model:
    try:
        n_head = int(c["num_attention_heads"])
        n_kv = int(c.get("num_key_value_heads") or n_head)  # transformers' LlamaConfig default
        n_embd, n_layer = int(c["hidden_size"]), int(c["num_hidden_layers"])
        layers = [Layer(n_head, n_kv, int(c["intermediate_size"]))] * n_layer
        vocab = int(c["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise GGUFKitError(f"config.json: missing or bad llama field {e}") from None
    head_dim = int(c.get("head_dim") or n_embd // n_head)
    return Model("llama", c, layers, n_embd, head_dim, vocab, write_params)


def write_params(w: gguf.GGUFWriter, m: Model, ftype: gguf.LlamaFileType) -> None:
    """TextModel.set_gguf_parameters + LlamaModel.set_gguf_parameters, in their order.

    The oracle reads hparams through transformers' LlamaConfig, which always has head_dim, so
    key_length/value_length are always written.
    """
    c = m.config
    w.add_block_count(len(m.layers))
    if c.get("max_position_embeddings") is not None:
        w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(m.n_embd)
    w.add_feed_forward_length(m.layers[0].n_ff)
    w.add_head_count(m.layers[0].n_head)
    w.add_head_count_kv(m.layers[0].n_head_kv)
    rope = rope_parameters(c)
    rope_type = rope.get("rope_type")
    if rope_type is not None:
        if rope_type == "linear" and rope.get("factor") is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(rope["factor"])
        elif str(rope_type).lower() not in ("llama3", "default"):
            raise GGUFKitError(f"rope_scaling type {rope_type!r} is not supported (llama3, linear or none)")
    if rope.get("rope_theta") is not None:
        w.add_rope_freq_base(rope["rope_theta"])
    if c.get("rms_norm_eps") is not None:
        w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_key_length(m.head_dim)
    w.add_value_length(m.head_dim)
    w.add_file_type(ftype)
    w.add_vocab_size(m.vocab_size)
    w.add_rope_dimension_count(m.head_dim)

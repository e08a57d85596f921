"""DeciLMForCausalLM (Llama-3.x-Nemotron Super/Ultra) -> GGUF arch ``deci`` (conversion/deci.py).

config.json has one ``block_configs`` entry per layer; heterogeneity becomes per-layer arrays:

    attention.n_heads_in_group = g    -> n_head = H, n_head_kv = H // g      (GQA)
    attention.replace_with_linear     -> n_head = H, n_head_kv = 0           (x + W·rmsnorm(x))
    attention.no_op                   -> n_head = 0, n_head_kv = 0           (no attention weights)
    ffn.ffn_mult = m                  -> n_ff = ceil256(int(2*m*hidden/3))
    ffn.ffn_mult = None (no_op FFN)   -> n_ff = 0
"""
from __future__ import annotations

import gguf

from ggufkit.convert.base import Layer, Model, rope_parameters
from ggufkit.errors import GGUFKitError

HF_ARCHITECTURES = ("DeciLMForCausalLM",)


def ffn_mult_to_intermediate_size(ffn_mult: float, n_embd: int) -> int:
    """int(2*ffn_mult*n_embd/3) rounded up to a multiple of 256 (DeciLM's rule)."""
    n = int(2 * ffn_mult * n_embd / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


def block_layer(block: dict, n_head: int, n_embd: int) -> Layer:
    attn, ffn = block["attention"], block["ffn"]
    if attn.get("n_heads_in_group") is not None:
        g = int(attn["n_heads_in_group"])
        if g <= 0 or n_head % g:
            raise GGUFKitError(f"n_heads_in_group {g} does not divide num_attention_heads {n_head}")
        heads, kv = n_head, n_head // g
    elif attn.get("replace_with_linear") is True:
        heads, kv = n_head, 0
    else:
        heads, kv = 0, 0
    mult = ffn.get("ffn_mult")
    n_ff = ffn_mult_to_intermediate_size(float(mult) if mult is not None else 0.0, n_embd)
    return Layer(heads, kv, n_ff)


def model_from_config(c: dict) -> Model:
    if "block_configs" not in c:
        raise GGUFKitError("DeciLM config.json without block_configs (DeciLM-7B style) is not supported")
    try:
        n_head, n_embd = int(c["num_attention_heads"]), int(c["hidden_size"])
        blocks = c["block_configs"]
        if len(blocks) != int(c["num_hidden_layers"]):
            raise GGUFKitError(f"config.json: {len(blocks)} block_configs for num_hidden_layers {c['num_hidden_layers']}")
        layers = [block_layer(b, n_head, n_embd) for b in blocks]
        vocab = int(c["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise GGUFKitError(f"config.json: missing or bad DeciLM field {e}") from None
    if vocab != 128256:
        raise GGUFKitError(f"DeciLM with vocab_size {vocab} (DeciLM-7B style, SentencePiece) is not supported")
    head_dim = int(c.get("head_dim") or n_embd // n_head)
    return Model("deci", c, layers, n_embd, head_dim, vocab, write_params)


def write_params(w: gguf.GGUFWriter, m: Model, ftype: gguf.LlamaFileType) -> None:
    """DeciModel.set_gguf_parameters (block_configs branch), in its order."""
    c = m.config
    if (theta := rope_parameters(c).get("rope_theta")) is not None:
        w.add_rope_freq_base(theta)
    w.add_head_count_kv([L.n_head_kv for L in m.layers])
    w.add_head_count([L.n_head for L in m.layers])
    w.add_feed_forward_length([L.n_ff for L in m.layers])
    w.add_block_count(len(m.layers))
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(m.n_embd)
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_key_length(m.n_embd // c["num_attention_heads"])
    w.add_value_length(m.n_embd // c["num_attention_heads"])
    w.add_file_type(ftype)
    w.add_vocab_size(m.vocab_size)
    w.add_rope_dimension_count(c.get("head_dim") or m.n_embd // c["num_attention_heads"])

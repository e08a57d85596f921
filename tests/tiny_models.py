"""Tiny GGUFs for the emulated CUDA tests: every weight row a multiple of 256 (so K-quants and IQ
types really are used), a 259-token byte-level tokenizer (so perplexity runs on text, and the
output head is small enough for the emulator), written with gguf-py.

    write_tiny(path, "deci", DECI_BLOCKS, types=iq_mix)     # types: tensor name -> ggml type

Shapes (math order [n_out, n_in]): token_embd/output [259, 256], attn_q [n_head*64, 256],
attn_k/v [n_head_kv*64, 256], attn_output [256, n_head*64] (linear layers [256, 256]),
ffn_gate/up [n_ff, 256], ffn_down [256, n_ff]; norms f32 [256] (gemma3 q/k norms [64]).
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

N_EMBD, HD = 256, 64
OUT_STD = 0.04                # logits of a few units: a perplexity near the vocabulary size
# deci: (n_head, n_head_kv, n_ff) per layer: GQA 4/2, no-op attention + FFN, linear attention,
# GQA 4/1, a whole no-op layer, MHA 4/4
DECI_BLOCKS = [(4, 2, 512), (0, 0, 256), (4, 0, 256), (4, 1, 512), (0, 0, 0), (4, 4, 256)]
LLAMA_BLOCKS = [(4, 2, 512)] * 3
GEMMA3_BLOCKS = [(4, 1, 512)] * 3


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    m = dict(zip(bs, cs))
    return [chr(m[b]) for b in range(256)]


TOKENS = _bytes_to_unicode() + ["\u0120t", "<s>", "</s>"]      # bytes, one merge, BOS, EOS
N_VOCAB = len(TOKENS)


def f16(name: str) -> str:
    return "F16"


def iq_mix(name: str) -> str:
    """An IQ2_XXS / IQ3_S / IQ4_XS mixture (dynamic-gate style): gates and ups at 2 bits,
    attention at 3, down projections and the output at 4."""
    if "ffn_gate" in name or "ffn_up" in name:
        return "IQ2_XXS"
    if "attn_" in name:
        return "IQ3_S"
    return "IQ4_XS"


def write_tiny(path, arch: str, blocks, types=f16, seed: int = 0, window: int = 8):
    """A random-weight GGUF of ``arch`` with per-layer (n_head, n_head_kv, n_ff) ``blocks``."""
    from quant.api import quantize

    rng = np.random.default_rng(seed)

    def mat(n_out, n_in, std):
        return (rng.standard_normal((n_out, n_in)) * std).astype(np.float32)

    def norm(n):
        return (1 + rng.standard_normal(n) * 0.05).astype(np.float32)

    w = GGUFWriter(str(path), arch)
    w.add_block_count(len(blocks))
    w.add_embedding_length(N_EMBD)
    w.add_context_length(512)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(10000.0)
    if arch == "deci":
        w.add_head_count([h for h, _, _ in blocks])
        w.add_head_count_kv([k for _, k, _ in blocks])
        w.add_feed_forward_length([f for _, _, f in blocks])
    else:
        w.add_head_count(blocks[0][0])
        w.add_head_count_kv(blocks[0][1])
        w.add_feed_forward_length(blocks[0][2])
    if arch == "gemma3":
        w.add_uint32("gemma3.attention.sliding_window", window)
        w.add_float32("gemma3.final_logit_softcapping", 30.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(TOKENS)
    w.add_token_types([1] * 257 + [3, 3])
    w.add_token_merges(["\u0120 t"])
    w.add_bos_token_id(N_VOCAB - 2)
    w.add_eos_token_id(N_VOCAB - 1)
    w.add_add_bos_token(True)

    def add(name, x):
        if x.ndim == 1:
            w.add_tensor(name, x)
            return
        t = types(name)
        if t == "F32":
            w.add_tensor(name, x)
        elif t == "F16":
            w.add_tensor(name, x.astype(np.float16))
        else:
            imat = np.ones(x.shape[1], np.float32) if t.startswith("IQ") else None
            q = quantize(x, t, imat)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType[t])

    add("token_embd.weight", mat(N_VOCAB, N_EMBD, 1.0))
    add("output_norm.weight", norm(N_EMBD))
    add("output.weight", mat(N_VOCAB, N_EMBD, OUT_STD))
    for il, (nh, nkv, nff) in enumerate(blocks):
        p = f"blk.{il}."
        if nh:
            add(p + "attn_norm.weight", norm(N_EMBD))
            if nkv:
                add(p + "attn_q.weight", mat(nh * HD, N_EMBD, 0.12))
                add(p + "attn_k.weight", mat(nkv * HD, N_EMBD, 0.12))
                add(p + "attn_v.weight", mat(nkv * HD, N_EMBD, 0.1))
                add(p + "attn_output.weight", mat(N_EMBD, nh * HD, 0.05))
            else:
                add(p + "attn_output.weight", mat(N_EMBD, N_EMBD, 0.05))
        if nff:
            add(p + "ffn_norm.weight", norm(N_EMBD))
            add(p + "ffn_gate.weight", mat(nff, N_EMBD, 0.1))
            add(p + "ffn_up.weight", mat(nff, N_EMBD, 0.1))
            add(p + "ffn_down.weight", mat(N_EMBD, nff, 0.05))
        if arch == "gemma3":
            add(p + "attn_q_norm.weight", norm(HD))
            add(p + "attn_k_norm.weight", norm(HD))
            add(p + "post_attention_norm.weight", norm(N_EMBD))
            add(p + "post_ffw_norm.weight", norm(N_EMBD))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path

"""A header-only GGUF with Llama-3.3-Nemotron-Super-49B-v1's real block configuration.

The 80 per-layer entries below are shared/docs/REFERENCE.md's table (NVIDIA's config.json as
copied into NeMo): ``G`` = GQA with 8 KV heads, ``N`` = no-op attention, then ``ffn_mult``.
Tensor types come from llama-quantize's IQ3_M mixture (quant.recipes.plan_types, the port of
llama_tensor_get_type), so the sizes are an IQ3-class file's. Only the header is written: the
tensor infos point into a data section that is absent (``sparse=True`` extends the file to its
full length as a sparse file, for readers that map the data).
"""
from __future__ import annotations

import os

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from quant.recipes import TensorIn, model_info, parse_ftype, plan_types, tensor_order
from quant.types import get_type

BLOCKS = """
G2.625 G5.25 G5.25 G5.25 G5.25 G5.25 N2.625 N2.625 G5.25 G5.25
G5.25 N3.28125 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25
G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25
G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25
G5.25 G5.25 N1.3125 N2.625 N2.625 N1.3125 N5.25 N1.3125 N2.625 N1.3125
N1.3125 N1.3125 G5.25 N1.3125 N1 N1 N1.3125 N1 N1 N1
N1.3125 N1.3125 N0.5 N0.5 N1 N1 N0.5 N0.5 N1 N0.5
N0.5 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25 G5.25
""".split()

N_EMBD, N_HEAD, N_KV, HD, N_VOCAB = 8192, 64, 8, 128, 128256


def ffn_size(mult: float, n_embd: int = N_EMBD) -> int:
    """DeciLM's _ffn_mult_to_intermediate_size: int(2*mult*n_embd/3) rounded up to 256."""
    n = int(2 * mult * n_embd / 3)
    return n + (-n) % 256


def layers() -> list[tuple[int, int, int]]:
    """(n_head, n_head_kv, n_ff) per layer."""
    return [(N_HEAD, N_KV, ffn_size(float(b[1:]))) if b[0] == "G" else (0, 0, ffn_size(float(b[1:])))
            for b in BLOCKS]


def tensor_shapes() -> dict[str, tuple[int, ...]]:
    """name -> ne (ggml order, ne[0] = row length), in the converter's order."""
    t = {"token_embd.weight": (N_EMBD, N_VOCAB), "output_norm.weight": (N_EMBD,),
         "output.weight": (N_EMBD, N_VOCAB), "rope_freqs.weight": (HD // 2,)}
    for il, (nh, nkv, nff) in enumerate(layers()):
        p = f"blk.{il}."
        if nh:
            t[p + "attn_norm.weight"] = (N_EMBD,)
            t[p + "attn_q.weight"] = (N_EMBD, nh * HD)
            t[p + "attn_k.weight"] = (N_EMBD, nkv * HD)
            t[p + "attn_v.weight"] = (N_EMBD, nkv * HD)
            t[p + "attn_output.weight"] = (nh * HD, N_EMBD)
        if nff:
            t[p + "ffn_norm.weight"] = (N_EMBD,)
            t[p + "ffn_gate.weight"] = (N_EMBD, nff)
            t[p + "ffn_up.weight"] = (N_EMBD, nff)
            t[p + "ffn_down.weight"] = (nff, N_EMBD)
    return t


def write(path, ftype: str = "IQ3_M", sparse: bool = False) -> dict[str, tuple[tuple[int, ...], str]]:
    """Write the header-only GGUF; returns name -> (ne, type)."""
    shapes = tensor_shapes()
    names = list(shapes)
    kv = {"general.architecture": "deci", "deci.block_count": 80, "deci.attention.head_count":
          [h for h, _, _ in layers()], "deci.attention.head_count_kv": [k for _, k, _ in layers()]}
    src = [TensorIn(n, shapes[n], "F32" if len(shapes[n]) == 1 else "BF16") for n in names]
    order = tensor_order(names)
    plans = {}
    for i, tp in zip(order, plan_types([src[i] for i in order], model_info(kv), parse_ftype(ftype))):
        plans[names[i]] = tp.dst_type
    n_layer = len(BLOCKS)
    w = GGUFWriter(str(path), "deci")
    w.add_name("Llama-3.3-Nemotron-Super-49B-v1 (header only)")
    w.add_block_count(n_layer)
    w.add_context_length(131072)
    w.add_embedding_length(N_EMBD)
    w.add_head_count([h for h, _, _ in layers()])
    w.add_head_count_kv([k for _, k, _ in layers()])
    w.add_feed_forward_length([f for _, _, f in layers()])
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_rope_dimension_count(HD)
    w.add_vocab_size(N_VOCAB)
    w.add_file_type(parse_ftype(ftype).ftype)
    total = 0
    for n in names:
        ne, typ = shapes[n], plans[n]
        qt = get_type(typ)
        nbytes = qt.row_size(ne[0]) * int(np.prod(ne[1:], dtype=np.int64))
        w.add_tensor_info(n, tuple(reversed(ne)), np.dtype(np.float32), nbytes,
                          raw_dtype=GGMLQuantizationType[typ])
        total += GGUFWriter.ggml_pad(nbytes, w.data_alignment)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    if sparse:
        size = os.path.getsize(path)
        os.truncate(path, GGUFWriter.ggml_pad(size, 32) + total)
    return {n: (shapes[n], plans[n]) for n in names}

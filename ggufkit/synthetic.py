"""Random-weight GGUFs of any size, with a 259-token byte-level tokenizer (for GPU checks and the
emulated CUDA tests): every weight already in its target type, no conversion step.

    write_model(path, "llama", [(32, 8, 14336)] * 16, n_embd=4096, head_dim=128, types=q4_k_m)

``blocks`` gives (n_head, n_head_kv, n_ff) per layer (deci: 0 heads = no-op attention, 0 kv
heads = linear attention, 0 n_ff = no FFN; llama/qwen2/gemma3 take the first entry for all
layers; qwen2 adds Q/K/V biases).
``types`` maps a tensor name to a ggml type ("F16", "Q4_K", "IQ2_XXS", ...) or is a llama.cpp
file type name ("Q4_K_M": its mixture, quant.recipes.plan_types). With ``tile_rows`` only that
many rows of each tensor are drawn and quantized, then repeated to the full height: valid
blocks at any size in seconds (for speed checks; the weights then repeat).

Shapes (math order [n_out, n_in]): token_embd/output [259, n_embd], attn_q [n_head*hd, n_embd],
attn_k/v [n_head_kv*hd, n_embd], attn_output [n_embd, n_head*hd] (linear layers [n_embd,
n_embd]), ffn_gate/up [n_ff, n_embd], ffn_down [n_embd, n_ff]; norms f32.
"""
from __future__ import annotations

import numpy as np

TOKENS: list[str] = []          # byte-level pieces of the 256 bytes, one merge, BOS, EOS


def _tokens() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    m = dict(zip(bs, cs))
    return [chr(m[b]) for b in range(256)] + ["\u0120t", "<s>", "</s>"]


TOKENS[:] = _tokens()
N_VOCAB = len(TOKENS)
BOS, EOS = N_VOCAB - 2, N_VOCAB - 1


def iq_mix(name: str) -> str:
    """An IQ2_XXS / IQ3_S / IQ4_XS mixture (dynamic-gate style): gates and ups at 2 bits,
    attention at 3, down projections, embeddings and the output at 4."""
    if "ffn_gate" in name or "ffn_up" in name:
        return "IQ2_XXS"
    if "attn_" in name:
        return "IQ3_S"
    return "IQ4_XS"


def _shapes(arch: str, blocks, n_embd: int, hd: int) -> dict[str, tuple[int, ...]]:
    """name -> math shape ([n_out, n_in], or [n] for vectors), in file order."""
    t = {"token_embd.weight": (N_VOCAB, n_embd), "output_norm.weight": (n_embd,), "output.weight": (N_VOCAB, n_embd)}
    for il, (nh, nkv, nff) in enumerate(blocks):
        p = f"blk.{il}."
        if nh:
            t[p + "attn_norm.weight"] = (n_embd,)
            if nkv:
                t[p + "attn_q.weight"] = (nh * hd, n_embd)
                t[p + "attn_k.weight"] = (nkv * hd, n_embd)
                t[p + "attn_v.weight"] = (nkv * hd, n_embd)
                if arch == "qwen2":                         # Q/K/V biases
                    t[p + "attn_q.bias"], t[p + "attn_k.bias"], t[p + "attn_v.bias"] = (nh * hd,), (nkv * hd,), (nkv * hd,)
                t[p + "attn_output.weight"] = (n_embd, nh * hd)
            else:
                t[p + "attn_output.weight"] = (n_embd, n_embd)
        if nff:
            t[p + "ffn_norm.weight"] = (n_embd,)
            t[p + "ffn_gate.weight"] = (nff, n_embd)
            t[p + "ffn_up.weight"] = (nff, n_embd)
            t[p + "ffn_down.weight"] = (n_embd, nff)
        if arch == "gemma3":
            t[p + "attn_q_norm.weight"] = (hd,)
            t[p + "attn_k_norm.weight"] = (hd,)
            t[p + "post_attention_norm.weight"] = (n_embd,)
            t[p + "post_ffw_norm.weight"] = (n_embd,)
    return t


def _file_type_mix(ftype: str, arch: str, blocks, shapes: dict) -> dict[str, str]:
    from quant.recipes import TensorIn, model_info, parse_ftype, plan_types, tensor_order
    names = list(shapes)
    kv = {"general.architecture": arch, f"{arch}.block_count": len(blocks),
          f"{arch}.attention.head_count": [b[0] for b in blocks],
          f"{arch}.attention.head_count_kv": [b[1] for b in blocks]}
    src = [TensorIn(n, tuple(reversed(shapes[n])), "F32" if len(shapes[n]) == 1 else "F16") for n in names]
    order = tensor_order(names)
    plans = plan_types([src[i] for i in order], model_info(kv), parse_ftype(ftype))
    return {names[i]: tp.dst_type for i, tp in zip(order, plans)}


def add_hparams(w, arch: str, blocks, n_embd: int, head_dim: int, n_ctx_train: int) -> None:
    """The hyperparameters on GGUFWriter ``w``: blocks are (n_head, n_head_kv, n_ff) per layer (deci
    keeps them per layer, the other architectures take the first), RMS eps 1e-6, rope base 10000."""
    w.add_block_count(len(blocks))
    w.add_embedding_length(n_embd)
    w.add_context_length(n_ctx_train)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    if arch == "deci":
        w.add_head_count([h for h, _, _ in blocks])
        w.add_head_count_kv([k for _, k, _ in blocks])
        w.add_feed_forward_length([f for _, _, f in blocks])
    else:
        w.add_head_count(blocks[0][0])
        w.add_head_count_kv(blocks[0][1])
        w.add_feed_forward_length(blocks[0][2])


def write_model(path, arch: str, blocks, n_embd: int = 256, head_dim: int = 64, types="F16", seed: int = 0,
                tile_rows: int | None = None, out_std: float = 0.04, window: int = 8, n_ctx_train: int = 4096):
    """Write the GGUF (see the module docstring); returns path."""
    from gguf import GGMLQuantizationType, GGUFWriter

    from quant.api import quantize
    from quant.types import get_type

    rng = np.random.default_rng(seed)
    shapes = _shapes(arch, blocks, n_embd, head_dim)
    if isinstance(types, str):
        kind = types
        mix = _file_type_mix(kind, arch, blocks, shapes) if kind not in ("F16", "F32") else {}
        types = lambda name: mix.get(name, kind)   # noqa: E731
    w = GGUFWriter(str(path), arch)
    add_hparams(w, arch, blocks, n_embd, head_dim, n_ctx_train)
    if arch == "gemma3":
        w.add_uint32("gemma3.attention.sliding_window", window)
        w.add_float32("gemma3.final_logit_softcapping", 30.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(TOKENS)
    w.add_token_types([1] * (N_VOCAB - 2) + [3, 3])
    w.add_token_merges(["\u0120 t"])
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(True)
    stds = {"token_embd": 1.0, "output": out_std, "attn_q": 0.12, "attn_k": 0.12, "attn_v": 0.1,
            "ffn_gate": 0.1, "ffn_up": 0.1}
    cache = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            w.add_tensor(name, (1 + rng.standard_normal(shape) * 0.05).astype(np.float32))
            continue
        n_out, n_in = shape
        base = name.split(".")[-2]
        std = stds.get(base, 0.05 if n_in <= 4096 else 0.05 * (4096 / n_in) ** 0.5)
        typ = types(name)
        rows = n_out if tile_rows is None else min(n_out, tile_rows)
        key = (typ, rows, n_in, base)
        if tile_rows is not None and key in cache:
            q = cache[key]
        else:
            x = (rng.standard_normal((rows, n_in)) * std).astype(np.float32)
            if typ == "F32":
                q = x
            elif typ == "F16":
                q = x.astype(np.float16)
            else:
                imat = np.ones(n_in, np.float32) if get_type(typ).refuses_without_imatrix or typ.startswith("IQ") else None
                q = quantize(x, typ, imat)
            cache[key] = q
        if rows < n_out:
            q = np.tile(q, (-(-n_out // rows), 1))[:n_out]
        if typ in ("F32", "F16"):
            w.add_tensor(name, np.ascontiguousarray(q))
        else:
            w.add_tensor(name, np.ascontiguousarray(q), raw_shape=q.shape, raw_dtype=GGMLQuantizationType[typ])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path

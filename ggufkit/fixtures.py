"""Tiny random-weight HF checkpoints (bf16, sharded safetensors) for tests and scale runs.

``make_checkpoint(out_dir, preset)`` writes what a real HF checkpoint directory holds:

    config.json                      architecture + hyperparameters (DeciLM: per-layer block_configs)
    generation_config.json
    model-0000K-of-0000N.safetensors BF16 tensors, HF names, streamed tensor by tensor
    model.safetensors.index.json     {"metadata": {"total_size": bytes}, "weight_map": {name: file}}
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (bundled Llama-3 tokenizer)

With ``n_shards=1`` a single ``model.safetensors`` is written and no index (as HF does).

Weights are deterministic from ``seed``: each tensor draws from its own generator seeded with
``(seed, crc32(name))``, in fixed row chunks, so a preset and seed always give the same bytes.
Matrices are normal(0, 0.02), except q_proj/k_proj with normal(0, 0.06) so attention scores
(std ~1) are far from uniform and RoPE/GQA mistakes show in the logits; norm weights are
1 + normal(0, 0.05).

Presets:
    deci-tiny        DeciLMForCausalLM, hidden 256, 4 heads, 7 layers covering every block kind
    llama-tiny       LlamaForCausalLM, hidden 256, 4 layers, 4 heads / 2 KV heads, FFN 768
    super49b-4layer  Super-49B shapes (hidden 8192, FFN 28672), 4 GQA layers, ~10 GB; by hand only
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

import quant
from ggufkit.atomic import atomic_path
from ggufkit.errors import GGUFKitError

TOKENIZER_DIR = Path(__file__).parent / "data" / "llama3-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

VOCAB = 128256
BOS_ID = 128000
EOS_IDS = [128001, 128008, 128009]  # as the real Super-49B config
LLAMA3_ROPE_SCALING = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
MATRIX_STD = 0.02
QK_STD = 0.06  # q_proj/k_proj: sharper attention, so position handling matters for the logits
NORM_STD = 0.05
CHUNK_ELEMENTS = 1 << 24  # rows are generated in chunks of at most this many elements


# --- DeciLM block_configs (exact key sets of the real Nemotron configs) -----------------------

def attention_entry(kind: str, n_heads_in_group: int | None = None) -> dict:
    """One ``block_configs[i]["attention"]`` dict; kind is "gqa", "no_op" or "linear"."""
    return {
        "n_heads_in_group": n_heads_in_group if kind == "gqa" else None,
        "no_op": kind == "no_op",
        "num_sink_tokens": None,
        "replace_with_linear": kind == "linear",
        "sparsify": None,
        "unshifted_sink": False,
        "use_prefill_window_in_sink_attention": False,
        "window_length": None,
    }


def ffn_entry(ffn_mult: float | None) -> dict:
    """One ``block_configs[i]["ffn"]`` dict; ``None`` is a no-op FFN (Ultra's dummy layers)."""
    return {
        "ffn_mult": None if ffn_mult is None else float(ffn_mult),
        "no_op": ffn_mult is None,
        "replace_with_linear": False,
        "sparsify": None,
    }


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden: int) -> int:
    """DeciLM's rule: int(2*ffn_mult*hidden/3) rounded up to a multiple of 256."""
    n = int(2 * ffn_mult * hidden / 3)
    return -(-n // 256) * 256


# deci-tiny layers: (attention kind, n_heads_in_group, ffn_mult) -> intermediate size at hidden 256
DECI_TINY_BLOCKS = [
    ("gqa", 1, 5.25),        # 4 KV heads, FFN 1024
    ("gqa", 2, 2.5),         # 2 KV heads, FFN 512
    ("no_op", None, 1.3125),  # attention-free, FFN 256 (224 rounded up)
    ("linear", None, 3.28125),  # x + linear_attn(rmsnorm(x)), FFN 768 (560 rounded up)
    ("gqa", 4, 1.0),         # 1 KV head, FFN 256
    ("no_op", None, None),   # Ultra-style dummy layer: no attention, no FFN
    ("gqa", 2, 5.25),        # 2 KV heads, FFN 1024
]


# config.json keys every llama-family fixture shares, as transformers 4.45 saves a LlamaConfig
_LLAMA_KEYS = {
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": BOS_ID, "hidden_act": "silu",
    "initializer_range": 0.02, "mlp_bias": False, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.1", "use_cache": True, "vocab_size": VOCAB,
}


def _hf_config(**keys) -> dict:
    """A llama-family config.json: the shared keys and ``keys``, sorted as save_pretrained writes them."""
    c = {**_LLAMA_KEYS, "eos_token_id": list(EOS_IDS), "rope_scaling": dict(LLAMA3_ROPE_SCALING), **keys}
    return dict(sorted(c.items()))


def _deci_config(hidden: int, n_heads: int, blocks: list, max_pos: int) -> dict:
    return _hf_config(
        _name_or_path="ggufkit-fixture",
        architectures=["DeciLMForCausalLM"],
        auto_map={  # real checkpoints point at remote code; ggufkit must never run it
            "AutoConfig": "configuration_decilm.DeciLMConfig",
            "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
        },
        block_configs=[{"attention": attention_entry(kind, g), "ffn": ffn_entry(mult)} for kind, g, mult in blocks],
        hidden_size=hidden, intermediate_size=None, max_position_embeddings=max_pos, model_type="nemotron-nas",
        num_attention_heads=n_heads, num_hidden_layers=len(blocks), num_key_value_heads=None,
    )


def _llama_config(hidden: int, n_layers: int, n_heads: int, n_kv: int, ffn: int) -> dict:
    return _hf_config(
        architectures=["LlamaForCausalLM"], head_dim=hidden // n_heads, hidden_size=hidden, intermediate_size=ffn,
        max_position_embeddings=4096, model_type="llama", num_attention_heads=n_heads, num_hidden_layers=n_layers,
        num_key_value_heads=n_kv,
    )


def _qwen_config(arch: str) -> dict:
    """Qwen2ForCausalLM (Q/K/V biases, yarn rope scaling) or Qwen3ForCausalLM (head_dim 64 with
    hidden 256 / 8 heads, q_norm / k_norm), on the llama-tiny shape and the bundled tokenizer."""
    c = _llama_config(256, 2, 8 if arch == "qwen3" else 4, 2, 512)
    c.update(architectures=["Qwen2ForCausalLM" if arch == "qwen2" else "Qwen3ForCausalLM"], model_type=arch,
             rope_theta=1000000.0, max_position_embeddings=32768, use_sliding_window=False, sliding_window=None)
    for k in ("mlp_bias", "pretraining_tp", "head_dim"):
        c.pop(k)
    if arch == "qwen2":
        c["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}
    else:
        c.update(rope_scaling=None, head_dim=64)
    return c


PRESETS = {
    "deci-tiny": lambda: _deci_config(256, 4, DECI_TINY_BLOCKS, 4096),
    "llama-tiny": lambda: _llama_config(256, 4, 4, 2, 768),
    "qwen2-tiny": lambda: _qwen_config("qwen2"),
    "qwen3-tiny": lambda: _qwen_config("qwen3"),
    "super49b-4layer": lambda: _deci_config(8192, 64, [("gqa", 8, 5.25)] * 4, 131072),
}


def make_config(preset: str) -> dict:
    """The config.json dict of a preset."""
    if preset not in PRESETS:
        raise GGUFKitError(f"unknown fixture preset {preset!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[preset]()


# --- the tensor list ----------------------------------------------------------------------------

def tensor_plan(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """HF tensor names and shapes ([out, in] for matrices) in file order, from a config dict.

    DeciLM per layer: attention no_op → no input_layernorm and no attention weights;
    replace_with_linear → input_layernorm + self_attn.linear_attn [hidden, hidden];
    ffn no_op → no post_attention_layernorm and no mlp weights.
    """
    d = config["hidden_size"]
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or d // n_head
    n_layers = config["num_hidden_layers"]
    plan: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (config["vocab_size"], d))]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        if "block_configs" in config:
            attn, ffn = config["block_configs"][i]["attention"], config["block_configs"][i]["ffn"]
            n_kv = None if attn["n_heads_in_group"] is None else n_head // attn["n_heads_in_group"]
            attn_kind = "no_op" if attn["no_op"] else "linear" if attn["replace_with_linear"] else "gqa"
            n_ff = None if ffn["no_op"] else ffn_mult_to_intermediate_size(ffn["ffn_mult"], d)
        else:
            n_kv = config["num_key_value_heads"]
            attn_kind, n_ff = "gqa", config["intermediate_size"]
        if attn_kind != "no_op":
            plan.append((p + "input_layernorm.weight", (d,)))
        if attn_kind == "linear":
            plan.append((p + "self_attn.linear_attn.weight", (d, d)))
        elif attn_kind == "gqa":
            plan += [
                (p + "self_attn.q_proj.weight", (n_head * head_dim, d)),
                (p + "self_attn.k_proj.weight", (n_kv * head_dim, d)),
                (p + "self_attn.v_proj.weight", (n_kv * head_dim, d)),
                (p + "self_attn.o_proj.weight", (d, n_head * head_dim)),
            ]
            if config.get("model_type") == "qwen2":          # Q/K/V biases
                plan += [(p + "self_attn.q_proj.bias", (n_head * head_dim,)),
                         (p + "self_attn.k_proj.bias", (n_kv * head_dim,)),
                         (p + "self_attn.v_proj.bias", (n_kv * head_dim,))]
            if config.get("model_type") == "qwen3":          # per-head RMS norms on Q and K
                plan += [(p + "self_attn.q_norm.weight", (head_dim,)), (p + "self_attn.k_norm.weight", (head_dim,))]
        if n_ff is not None:
            plan += [
                (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (n_ff, d)),
                (p + "mlp.up_proj.weight", (n_ff, d)),
                (p + "mlp.down_proj.weight", (d, n_ff)),
            ]
    plan.append(("model.norm.weight", (d,)))
    if not config.get("tie_word_embeddings", False):
        plan.append(("lm_head.weight", (config["vocab_size"], d)))
    return plan


# --- bf16 + safetensors writing -----------------------------------------------------------------

def _tensor_chunks(name: str, shape: tuple[int, ...], seed: int):
    """Yield float32 row chunks of one tensor's values, deterministic from (seed, name)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    is_norm = len(shape) == 1
    std = QK_STD if name.endswith(("q_proj.weight", "k_proj.weight")) else MATRIX_STD
    rows = shape[0] if len(shape) > 1 else 1
    cols = int(np.prod(shape)) // rows
    step = max(1, CHUNK_ELEMENTS // cols)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        v = rng.standard_normal((n, cols), dtype=np.float32)
        if is_norm:
            v = 1.0 + NORM_STD * v
        else:
            v *= std
        yield v


def _safetensors_header(entries: list[tuple[str, tuple[int, ...]]]) -> bytes:
    """Header bytes: u64 little-endian JSON length, then JSON padded with spaces to 8 bytes."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _split_shards(plan, n_shards: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Cut the tensor list, in order, into n_shards runs of roughly equal byte size."""
    sizes = [2 * int(np.prod(s)) for _, s in plan]
    total = sum(sizes)
    shards: list[list] = [[] for _ in range(n_shards)]
    acc, k = 0, 0
    for i, (entry, size) in enumerate(zip(plan, sizes)):
        if acc * n_shards // total > k and shards[k]:
            k += 1  # move on one shard at a time, so none is left empty
        k = max(k, n_shards - (len(plan) - i))  # keep one tensor for each later shard
        shards[k].append(entry)
        acc += size
    return shards


def make_checkpoint(out_dir: str | os.PathLike, preset: str = "deci-tiny", seed: int = 0,
                    n_shards: int = 2, progress: bool | None = None) -> Path:
    """Write a random-weight bf16 HF checkpoint of ``preset`` into ``out_dir``; return its path.

    Streams tensor by tensor (row chunks for big ones), so memory stays bounded for any preset.
    ``progress`` shows a tqdm bar (default: only for presets over 1 GB).
    """
    config = make_config(preset)
    plan = tensor_plan(config)
    if not 1 <= n_shards <= len(plan):
        raise GGUFKitError(f"n_shards must be between 1 and {len(plan)}, got {n_shards}")
    if seed < 0:
        raise GGUFKitError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(2 * int(np.prod(s)) for _, s in plan)
    if progress is None:
        progress = total > (1 << 30)

    shards = _split_shards(plan, n_shards)
    names = (["model.safetensors"] if n_shards == 1 else
             [f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors" for k in range(n_shards)])
    weight_map = {}
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"fixture {preset}", disable=not progress) as bar:
        for fname, entries in zip(names, shards):
            with atomic_path(out / fname) as tmp, open(tmp, "wb") as f:
                f.write(_safetensors_header(entries))
                for name, shape in entries:
                    for chunk in _tensor_chunks(name, shape, seed):
                        f.write(quant.quantize(chunk, "BF16").tobytes())     # bf16, ggml's rounding
                        bar.update(2 * chunk.size)
                    weight_map[name] = fname

    def write_json(name: str, obj: dict) -> None:
        with atomic_path(out / name) as tmp:
            tmp.write_text(json.dumps(obj, indent=2) + "\n")

    if n_shards > 1:
        write_json("model.safetensors.index.json",
                   {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
    write_json("config.json", config)
    write_json("generation_config.json", {
        "_from_model_config": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": list(EOS_IDS),
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.45.1",
    })
    for fname in TOKENIZER_FILES:
        with atomic_path(out / fname) as tmp:
            shutil.copyfile(TOKENIZER_DIR / fname, tmp)
    return out

"""HF checkpoint -> GGUF, the way llama.cpp's convert_hf_to_gguf.py does it, streamed tensor by tensor.

What the oracle does (conversion/base.py, TextModel/ModelBase.write), and so what this does:

1. Tensors come in checkpoint order (shards sorted by name, names sorted inside a shard), after
   generated ones (``rope_freqs``). Each is widened to float32 (BF16 exactly), Q/K rows are
   permuted for RoPE, then cast to the tensor's type:
       1-D tensors, ``*_norm.weight`` and anything not ending in ``.weight`` -> F32
       everything else -> the outtype (q8_0 falls back to F16 when a row is not a multiple of 32)
   ``auto`` picks BF16 if the first 2-D tensor is bf16, F16 otherwise.
2. KV order: general.architecture, general.type, the general.* metadata gguf.Metadata derives
   (name, size_label, sampling.* from generation_config.json, ...), the architecture's
   parameters (one small file per architecture), general.quantization_version, the tokenizer.
3. The file: header, KV, tensor infos, then each tensor's data, 32-byte aligned (gguf.GGUFWriter).

Streaming: all tensor infos are known from shapes, so the header is written first and every tensor
is then produced in row chunks from a memmap and written straight out. Peak memory is one chunk
(CHUNK_ELEMENTS float32 values plus its converted copy), whatever the model size.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np
from tqdm import tqdm

from ggufkit.convert.checkpoint import Checkpoint, TensorRef
from ggufkit.errors import GGUFKitError
from quant.types import get_type

QT = gguf.GGMLQuantizationType
OUTTYPES = {  # --outtype -> (general.file_type, ggml type of the 2-D weights)
    "f32": (gguf.LlamaFileType.ALL_F32, QT.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, QT.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, QT.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, QT.Q8_0),
}
CHUNK_ELEMENTS = 1 << 22  # rows are converted in chunks of about this many values (16 MB as f32)

# HF tensor name (without .weight/.bias) -> GGUF name; {bid} is the layer index. Data, not code.
TENSOR_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "model.layers.{bid}.input_layernorm": "blk.{bid}.attn_norm",
    "model.layers.{bid}.self_attn.q_proj": "blk.{bid}.attn_q",
    "model.layers.{bid}.self_attn.k_proj": "blk.{bid}.attn_k",
    "model.layers.{bid}.self_attn.v_proj": "blk.{bid}.attn_v",
    "model.layers.{bid}.self_attn.o_proj": "blk.{bid}.attn_output",
    "model.layers.{bid}.self_attn.q_norm": "blk.{bid}.attn_q_norm",          # qwen3
    "model.layers.{bid}.self_attn.k_norm": "blk.{bid}.attn_k_norm",
    "model.layers.{bid}.self_attn.linear_attn": "blk.{bid}.attn_output",  # DeciLM replace_with_linear
    "model.layers.{bid}.post_attention_layernorm": "blk.{bid}.ffn_norm",
    "model.layers.{bid}.mlp.gate_proj": "blk.{bid}.ffn_gate",
    "model.layers.{bid}.mlp.up_proj": "blk.{bid}.ffn_up",
    "model.layers.{bid}.mlp.down_proj": "blk.{bid}.ffn_down",
}
SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


@dataclass(frozen=True)
class Layer:
    """One transformer block as data: head counts 0 mean "absent" (llama.cpp's per-layer arrays)."""

    n_head: int      # query heads; 0 = no attention (DeciLM no_op)
    n_head_kv: int   # KV heads; 0 = no attention or a linear (replace_with_linear) block
    n_ff: int        # FFN width; 0 = no FFN (DeciLM no_op FFN)

    @property
    def kind(self) -> str:
        return "none" if self.n_head == 0 else "linear" if self.n_head_kv == 0 else "gqa"


@dataclass
class Model:
    """What an architecture file derives from config.json: everything the writer needs."""

    arch: str                 # GGUF architecture name: "llama" | "deci"
    config: dict
    layers: list[Layer]
    n_embd: int
    head_dim: int
    vocab_size: int
    write_params: Callable[[gguf.GGUFWriter, "Model", gguf.LlamaFileType], None]
    permute_qk: bool = True   # llama/deci: Q/K rows permuted for ggml's NORM RoPE; qwen: NEOX, as stored

    def expected_shape(self, hf_name: str) -> tuple[int, ...] | None:
        """The HF shape ([out, in]) config.json implies for a tensor, None if it has no place."""
        d, hd = self.n_embd, self.head_dim
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", hf_name)
        if m is None:
            return {"model.embed_tokens.weight": (self.vocab_size, d), "model.norm.weight": (d,),
                    "lm_head.weight": (self.vocab_size, d)}.get(hf_name)
        bid, part, suffix = int(m.group(1)), m.group(2), m.group(3)
        if bid >= len(self.layers):
            return None
        L = self.layers[bid]
        attn = L.kind == "gqa"
        shapes = {
            "input_layernorm": (d,) if L.n_head else None,
            "self_attn.q_proj": (L.n_head * hd, d) if attn else None,
            "self_attn.k_proj": (L.n_head_kv * hd, d) if attn else None,
            "self_attn.v_proj": (L.n_head_kv * hd, d) if attn else None,
            "self_attn.o_proj": (d, L.n_head * hd) if attn else None,
            "self_attn.q_norm": (hd,) if attn and self.arch == "qwen3" else None,
            "self_attn.k_norm": (hd,) if attn and self.arch == "qwen3" else None,
            "self_attn.linear_attn": (d, d) if L.kind == "linear" else None,
            "post_attention_layernorm": (d,) if L.n_ff else None,
            "mlp.gate_proj": (L.n_ff, d) if L.n_ff else None,
            "mlp.up_proj": (L.n_ff, d) if L.n_ff else None,
            "mlp.down_proj": (d, L.n_ff) if L.n_ff else None,
        }
        shape = shapes.get(part)
        if shape is not None and suffix == "bias":
            shape = shape[:1]
        return shape

    def required(self) -> list[str]:
        """HF weights that must be present (lm_head unless tied)."""
        names = ["model.embed_tokens.weight", "model.norm.weight"]
        if not self.config.get("tie_word_embeddings", False):
            names.append("lm_head.weight")
        for i in range(len(self.layers)):
            for part in ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "self_attn.o_proj", "self_attn.linear_attn", "post_attention_layernorm",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
                name = f"model.layers.{i}.{part}.weight"
                if self.expected_shape(name) is not None:
                    names.append(name)
        return names

    def qk_heads(self, hf_name: str, bid: int | None) -> int | None:
        """Heads to permute a q_proj/k_proj by (llama.cpp's permute(w, n_head, n_head_kv)), else None."""
        if bid is None or not self.permute_qk:
            return None
        L = self.layers[bid]
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return L.n_head
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return L.n_head_kv
        return None


def gguf_name(hf_name: str) -> str:
    """Map an HF tensor name through TENSOR_NAMES (suffix .weight/.bias kept)."""
    base, dot, suffix = hf_name.rpartition(".")
    template = re.sub(r"^model\.layers\.\d+\.", "model.layers.{bid}.", base)
    if template not in TENSOR_NAMES or suffix not in ("weight", "bias"):
        raise GGUFKitError(f"cannot map tensor {hf_name!r} to a GGUF name")
    m = re.match(r"^model\.layers\.(\d+)\.", base)
    return TENSOR_NAMES[template].format(bid=m.group(1) if m else "") + dot + suffix


def layer_of(hf_name: str) -> int | None:
    """The oracle's block id: the first all-digit part of the name."""
    return next((int(p) for p in hf_name.split(".") if p.isdecimal()), None)


def qk_permutation(n_rows: int, n_head: int) -> np.ndarray:
    """Row order of llama.cpp's permute: (n_head, 2, rows/n_head/2) -> swap the last two axes.

    out[h, j, s] = in[h, s, j]: each head's first and second halves (rotate_half pairs) become
    interleaved pairs, as ggml's RoPE expects.
    """
    if n_head <= 0 or n_rows % (2 * n_head):
        raise GGUFKitError(f"cannot permute {n_rows} rows into {n_head} heads")
    return np.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2).swapaxes(1, 2).reshape(-1)


# --- tensor plan ------------------------------------------------------------------------------------

@dataclass
class Planned:
    """One output tensor: its name, ggml type, numpy shape and how to produce its float32 rows."""

    name: str
    qtype: QT
    shape: tuple[int, ...]
    source: TensorRef | None      # None for generated tensors
    perm: np.ndarray | None = None  # row permutation (Q/K)
    data: np.ndarray | None = None  # generated tensors (small)

    @property
    def nbytes(self) -> int:
        t = get_type(int(self.qtype))
        return int(np.prod(self.shape[:-1], dtype=np.int64)) * t.row_size(self.shape[-1])

    def storage(self) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype to announce to GGUFWriter.add_tensor_info (bytes for block types)."""
        if self.qtype == QT.F32:
            return self.shape, np.dtype(np.float32)
        if self.qtype == QT.F16:
            return self.shape, np.dtype(np.float16)
        return (*self.shape[:-1], get_type(int(self.qtype)).row_size(self.shape[-1])), np.dtype(np.uint8)


def tensor_type(name: str, n_dims: int, weight_type: QT, n_cols: int) -> QT:
    """The oracle's type rule for these architectures (conversion/base.py prepare_tensors)."""
    if n_dims <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return QT.F32
    if weight_type == QT.Q8_0 and n_cols % get_type("Q8_0").block_size:
        return QT.F16  # gguf.QuantError -> "falling back to F16"
    return weight_type


def resolve_outtype(outtype: str, ckpt: Checkpoint) -> str:
    """``auto``: bf16 if the first 2-D tensor is bf16, else f16 (the oracle's heuristic)."""
    if outtype != "auto":
        return outtype
    for ref in ckpt.tensors.values():
        if len(ref.shape) >= 2:
            return {"BF16": "bf16", "F16": "f16"}.get(ref.dtype, "f16")
    return "f16"


def plan_tensors(model: Model, ckpt: Checkpoint, weight_type: QT) -> list[Planned]:
    """Every output tensor in the oracle's order, with shapes checked against config.json."""
    plan: list[Planned] = []
    rope = rope_freqs(model)
    if rope is not None:
        plan.append(Planned("rope_freqs.weight", QT.F32, rope.shape, None, data=rope))
    missing = [n for n in model.required() if n not in ckpt.tensors]
    if missing:
        raise GGUFKitError(f"tensor {missing[0]} is missing from the checkpoint"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for hf_name, ref in ckpt.tensors.items():
        if hf_name.endswith(SKIPPED_SUFFIXES):
            continue
        expected = model.expected_shape(hf_name)
        if expected is None:
            raise GGUFKitError(f"unexpected tensor {hf_name} for this config.json (cannot map it)")
        if tuple(ref.shape) != expected:
            raise GGUFKitError(f"tensor {hf_name} has shape {list(ref.shape)} but config.json implies {list(expected)}")
        name = gguf_name(hf_name)
        heads = model.qk_heads(hf_name, layer_of(hf_name))
        perm = qk_permutation(ref.shape[0], heads) if heads else None
        qtype = tensor_type(name, len(ref.shape), weight_type, ref.shape[-1])
        plan.append(Planned(name, qtype, tuple(ref.shape), ref, perm=perm))
    return plan


# --- rope_freqs (llama3 rope scaling) ----------------------------------------------------------------

def rope_parameters(config: dict) -> dict:
    """TextModel.rope_parameters: rope_scaling with rope_theta / rope_type mirrored in."""
    params = dict(config.get("rope_parameters", config.get("rope_scaling")) or {})
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    if "rope_type" not in params and params.get("type") is not None:
        params["rope_type"] = params["type"]
    return params


def rope_freqs(model: Model) -> np.ndarray | None:
    """llama3 rope scaling factors, float32 [head_dim/2] (generate_extra_tensors), or None.

    Float32 arithmetic as the oracle's torch code, roundings included; base**(i/dim) is computed in
    float64 and rounded (torch uses SLEEF's powf, within 1 ulp): the factors come out identical for
    head_dim 64 and 128, rarely 1 ulp apart for other head dims (docs/CONVERT.md, "Known limits").
    """
    p = rope_parameters(model.config)
    if str(p.get("rope_type", "")).lower() != "llama3":
        return None
    base = p.get("rope_theta", 10000.0)
    dim = model.config.get("head_dim") or model.n_embd // model.config["num_attention_heads"]
    expo = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = np.float32(1.0) / np.power(np.float64(base), expo.astype(np.float64)).astype(np.float32)
    factor = p.get("factor", 8.0)
    low, high = p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
    old_ctx = p.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    one = np.float32(1)
    out = []
    for freq in freqs:
        # torch computes `scalar / tensor` as reciprocal(tensor) * scalar: two float32 roundings
        wavelen = (one / freq) * np.float32(2 * math.pi)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = ((one / wavelen) * np.float32(old_ctx) - np.float32(low)) / np.float32(high - low)
            out.append(one / ((one - smooth) / np.float32(factor) + smooth))
    return np.array(out, dtype=np.float32)


# --- producing and writing the data ------------------------------------------------------------------

def _bf16_bits_quieted(bits: np.ndarray) -> np.ndarray:
    """BF16 source -> BF16 output without a float32 round trip: same bits, NaNs made quiet (as ggml)."""
    nan = (bits & 0x7FFF) > 0x7F80
    return np.where(nan, bits | 0x0040, bits).astype(np.uint16) if nan.any() else bits


def tensor_chunks(t: Planned) -> Iterator[np.ndarray]:
    """The tensor's output bytes, in row chunks (memory: about one chunk, whatever the tensor size).

    A Q/K permutation only moves rows inside a head, so a chunk's source rows lie in one window.
    """
    if t.data is not None:
        yield gguf.quants.quantize(t.data, t.qtype)
        return
    ref = t.source
    step = max(1, CHUNK_ELEMENTS // max(1, ref.n_cols))
    for r0 in range(0, ref.n_rows, step):
        r1 = min(r0 + step, ref.n_rows)
        if t.perm is None:
            raw = ref.read_rows(r0, r1)
        else:
            rows = t.perm[r0:r1]
            lo, hi = int(rows.min()), int(rows.max()) + 1
            raw = ref.read_rows(lo, hi)[rows - lo]
        if t.qtype == QT.BF16 and ref.dtype == "BF16":
            yield _bf16_bits_quieted(raw)
            continue
        x = ref.to_f32(raw)
        if len(t.shape) == 1:
            x = x.reshape(-1)
        yield gguf.quants.quantize(x, t.qtype)


def _write_stream(w: gguf.GGUFWriter, plan: list[Planned], progress: bool) -> None:
    """Write every tensor's data after the header, chunk by chunk, with GGUFWriter's alignment."""
    fout = w.fout[0]
    with tqdm(total=sum(t.nbytes for t in plan), unit="B", unit_scale=True, desc="convert",
              disable=not progress) as bar:
        for t in plan:
            w.write_padding(fout, fout.tell())
            written = 0
            for chunk in tensor_chunks(t):
                arr = np.ascontiguousarray(chunk)
                fout.write(arr.data)
                written += arr.nbytes
                bar.update(arr.nbytes)
            if written != t.nbytes:
                raise GGUFKitError(f"internal error: {t.name} produced {written} bytes, expected {t.nbytes}")
            w.write_padding(fout, written)
    w.state = gguf.gguf_writer.WriterState.WEIGHTS


def _general_metadata(w: gguf.GGUFWriter, model_dir: Path, ftype: gguf.LlamaFileType) -> None:
    """general.type and the naming/sampling keys gguf.Metadata derives from the model directory."""
    total, shared, expert, n_expert = w.get_total_parameter_count()
    meta = gguf.Metadata.load(None, model_dir, None, total)
    gen = gguf.Metadata.load_generation_config(model_dir)
    if meta.sampling_penalty_repeat is None and "repetition_penalty" in gen:
        meta.sampling_penalty_repeat = gen["repetition_penalty"]  # the oracle's gguf-py reads this too
    if meta.name is None:
        meta.name = model_dir.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    w.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(w)

"""``ggufkit info``: what a GGUF file holds, as data (``gguf_info``) and as text (``format_info``).

Reads only the header, KV and tensor infos through ``quant.gguf.GGUFReader`` (memory-mapped; no
tensor data is touched; a bad file raises its one-line ``GGUFError``). Bits per weight = 8 * tensor bytes / weights, over all tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ggufkit.errors import GGUFKitError
from quant.gguf import GGUFReader
from quant.units import fmt_bytes

LONG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
               "tokenizer.ggml.scores")


@dataclass
class TensorRow:
    name: str
    type: str
    shape: list[int]  # ggml order (ne0 first), as llama.cpp prints it
    nbytes: int
    n_weights: int


@dataclass
class LayerRow:
    layer: int
    attention: str   # "gqa" | "linear" | "none"
    n_head: int
    n_head_kv: int
    n_ff: int        # 0 = no FFN


@dataclass
class GGUFInfo:
    path: Path
    file_size: int
    arch: str
    metadata: dict          # key -> value (long arrays summarised as "[n items]")
    tensors: list[TensorRow]
    layers: list[LayerRow] = field(default_factory=list)  # every arch the runtime knows

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_weights(self) -> int:
        return sum(t.n_weights for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.total_bytes / self.n_weights if self.n_weights else 0.0


def _value(name: str, v):
    if isinstance(v, str) or not hasattr(v, "__len__"):
        return v
    if name in LONG_ARRAYS or len(v) > 64:
        return f"[{len(v)} items]"
    return v.tolist() if hasattr(v, "tolist") else list(v)


def gguf_info(path: str | os.PathLike) -> GGUFInfo:
    """Parse a GGUF file's metadata, tensor table and per-layer table (runtime.models' LayerSpecs)."""
    path = Path(path)
    if not path.is_file():
        raise GGUFKitError(f"file not found: {path}")
    r = GGUFReader(path)
    md = {name: _value(name, v) for name, v in r.fields.items()}
    arch = str(md.get("general.architecture", "?"))
    tensors = [TensorRow(t.name, t.qtype, list(t.shape), t.n_bytes, t.n_elements) for t in r.tensors.values()]
    info = GGUFInfo(path, path.stat().st_size, arch, md, tensors)
    info.layers = [LayerRow(i, s.attn, s.n_head, s.n_head_kv, s.n_ff) for i, s in enumerate(_layer_specs(r, arch))]
    return info


def _layer_specs(r: GGUFReader, arch: str) -> list:
    """The runtime's LayerSpecs of the file (its read_hparams), [] for an architecture the runtime
    does not know or hyperparameters it refuses (info still shows the rest)."""
    from runtime.errors import ModelError
    from runtime.models import ARCHS
    if arch not in ARCHS:
        return []
    try:
        return list(ARCHS[arch].read_hparams(r.fields, r.tensors).layers)
    except (ModelError, KeyError, ValueError, TypeError):
        return []


def _short(v) -> str:
    s = repr(v) if not isinstance(v, str) else v
    s = s.replace("\n", "\\n")
    return s if len(s) <= 100 else s[:97] + "..."


def format_info(info: GGUFInfo) -> str:
    """The text ``ggufkit info`` prints: metadata, tensor table, totals, per-layer table."""
    out = [f"file: {info.path} ({fmt_bytes(info.file_size)})", f"architecture: {info.arch}", "", "metadata:"]
    width = max((len(k) for k in info.metadata), default=0)
    for k, v in info.metadata.items():
        out.append(f"  {k:<{width}}  {_short(v)}")
    out += ["", f"tensors: {len(info.tensors)}"]
    nw = max((len(t.name) for t in info.tensors), default=4)
    out.append(f"  {'name':<{nw}}  {'type':<7} {'shape':<22} {'bytes':>14}")
    for t in info.tensors:
        out.append(f"  {t.name:<{nw}}  {t.type:<7} {str(t.shape):<22} {t.nbytes:>14,}")
    out += ["", f"total: {info.total_bytes:,} bytes of tensor data ({fmt_bytes(info.total_bytes)}), "
                f"{info.n_weights:,} weights, {info.bits_per_weight:.2f} bits per weight"]
    if info.layers:
        out += ["", "layers:", f"  {'layer':>5}  {'attention':<9} {'heads':>5} {'kv_heads':>8} {'ffn':>7}"]
        for L in info.layers:
            out.append(f"  {L.layer:>5}  {L.attention:<9} {L.n_head:>5} {L.n_head_kv:>8} "
                       f"{L.n_ff if L.n_ff else 'none':>7}")
    return "\n".join(out)

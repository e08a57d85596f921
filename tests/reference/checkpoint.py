"""A tiny torch-free reader for HF safetensors checkpoints (BF16/F16/F32), for the reference.

safetensors layout: u64 little-endian header length N, N bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the raw little-endian tensor bytes; offsets are relative to the end of the header.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def read_header(path: str | Path) -> tuple[dict, int]:
    """Return (header dict without __metadata__, byte offset where tensor data starts)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 is the top 16 bits of a float32: widen exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as float32 arrays (exact widening)."""
    header, start = read_header(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        buf = raw[start + b:start + e]
        dtype = info["dtype"]
        if dtype == "BF16":
            x = bf16_bits_to_f32(buf.view("<u2"))
        elif dtype == "F16":
            x = buf.view("<f2").astype(np.float32)
        elif dtype == "F32":
            x = np.array(buf.view("<f4"))
        else:
            raise ValueError(f"{path}: unsupported dtype {dtype} for {name}")
        out[name] = x.reshape(info["shape"])
    return out


def shard_files(ckpt_dir: str | Path) -> list[Path]:
    """The .safetensors files of a checkpoint: from the index if there is one, else model.safetensors."""
    d = Path(ckpt_dir)
    index = d / "model.safetensors.index.json"
    if index.exists():
        return [d / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [d / "model.safetensors"]


def load_checkpoint(ckpt_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json dict, {HF tensor name: float32 array}) of a checkpoint directory."""
    d = Path(ckpt_dir)
    config = json.loads((d / "config.json").read_text())
    tensors: dict[str, np.ndarray] = {}
    for f in shard_files(d):
        tensors.update(read_tensors(f))
    return config, tensors

"""Read a Hugging Face checkpoint directory without torch: config.json and memory-mapped safetensors.

A safetensors file is:

    u64 little-endian N | N bytes of JSON header | tensor data
    header: {"__metadata__": {...}, name: {"dtype": "BF16", "shape": [rows, cols],
                                           "data_offsets": [begin, end]}, ...}
    offsets are relative to the first byte after the header.

Tensors are read in row chunks through ``np.memmap``, so nothing is ever loaded whole. numpy has
no bfloat16: BF16 is mapped as uint16 and widened to float32 by a 16-bit shift (exact).

Pickle checkpoints (``pytorch_model.bin``, ``*.pt``, ``*.pth``) are refused and never opened.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ggufkit.errors import GGUFKitError

# safetensors dtype -> (numpy storage dtype, bytes per element); BF16 is stored as uint16 bits
DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorRef:
    """One tensor inside a safetensors file: where its bytes are and how to read them."""

    name: str
    dtype: str  # "F32" | "F16" | "BF16"
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute byte offset in the file

    @property
    def n_rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def n_cols(self) -> int:
        return int(np.prod(self.shape[1:])) if len(self.shape) > 1 else int(np.prod(self.shape))

    def read_rows(self, lo: int, hi: int) -> np.ndarray:
        """Stored values of rows lo..hi-1, [hi-lo, n_cols] (BF16 as uint16 bits).

        Maps just this window (np.memmap) and copies it out, so the mapping is dropped at once:
        file pages never pile up in the process's resident set, however big the tensor.
        """
        np_dtype, size = DTYPES[self.dtype]
        mm = np.memmap(self.path, dtype=np_dtype, mode="r", offset=self.offset + lo * self.n_cols * size,
                       shape=(hi - lo, self.n_cols))
        out = np.array(mm)
        del mm
        return out

    def to_f32(self, raw: np.ndarray) -> np.ndarray:
        """Stored values as float32 (exact for F16 and BF16)."""
        if self.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32, copy=False)


def json_object(text: str | bytes, bad: str, not_object: str) -> dict:
    """The JSON object in text; GGUFKitError "<bad> (<why>)" if it is not JSON, not_object if it is
    JSON but not an object."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GGUFKitError(f"{bad} ({e})") from None
    if not isinstance(obj, dict):
        raise GGUFKitError(not_object)
    return obj


def read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise GGUFKitError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as e:
        raise GGUFKitError(f"{what} is not valid JSON: {path} ({e})") from None
    return json_object(text, f"{what} is not valid JSON: {path}", f"{what} is not a JSON object: {path}")


def read_safetensors_header(path: Path) -> dict[str, TensorRef]:
    """Parse one shard's header into TensorRefs, checking every offset against the file size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise GGUFKitError(f"corrupt shard {path.name}: file too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                raise GGUFKitError(f"corrupt shard {path.name}: header length {n} exceeds the file ({size} bytes)")
            raw = f.read(n)
    except FileNotFoundError:
        raise GGUFKitError(f"missing shard {path.name} in {path.parent}") from None
    header = json_object(raw, f"corrupt shard {path.name}: header is not valid JSON",
                         f"corrupt shard {path.name}: header is not a JSON object")
    data_start = 8 + n
    refs: dict[str, TensorRef] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise GGUFKitError(f"corrupt shard {path.name}: bad header entry for {name}") from None
        if dtype not in DTYPES:
            raise GGUFKitError(f"unsupported dtype {dtype} for tensor {name} in {path.name} "
                               f"(supported: {', '.join(DTYPES)})")
        nbytes = int(np.prod(shape)) * DTYPES[dtype][1]
        if end - begin != nbytes or begin < 0 or data_start + end > size:
            raise GGUFKitError(f"corrupt shard {path.name}: tensor {name} lies outside the file "
                               f"(truncated or damaged; file is {size} bytes)")
        refs[name] = TensorRef(name, dtype, shape, path, data_start + begin)
    return refs


@dataclass
class Checkpoint:
    """A checkpoint directory: parsed config.json and every tensor, in the oracle's order.

    Order (as convert_hf_to_gguf.py): shard files sorted by name, and inside each shard the
    tensor names sorted (safetensors' own order), not the order of the data in the file.
    """

    dir: Path
    config: dict
    tensors: dict[str, TensorRef]


def shard_names(model_dir: Path) -> list[str]:
    """Shard file names: from the index's weight_map when there is one, else model*.safetensors."""
    index_path = model_dir / INDEX_NAME
    if index_path.is_file():
        weight_map = read_json(index_path, INDEX_NAME).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise GGUFKitError(f"{INDEX_NAME} has no weight_map")
        return sorted(set(weight_map.values()))
    names = sorted(f for f in os.listdir(model_dir) if f.startswith("model") and f.endswith(".safetensors"))
    if not names:
        pickles = sorted(f for f in os.listdir(model_dir) if f.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise GGUFKitError(f"refusing pickle checkpoint {pickles[0]} (it could run arbitrary code); "
                               "convert it to safetensors first")
        raise GGUFKitError(f"no model*.safetensors files in {model_dir}")
    return names


def open_checkpoint(model_dir: str | os.PathLike) -> Checkpoint:
    """Read config.json and index every tensor of a checkpoint directory (no tensor data is read)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise GGUFKitError(f"model directory not found: {model_dir}")
    config = read_json(model_dir / "config.json", "config.json")
    names = shard_names(model_dir)
    tensors: dict[str, TensorRef] = {}
    for fname in names:
        if fname.endswith(PICKLE_SUFFIXES):
            raise GGUFKitError(f"refusing pickle checkpoint {fname} (it could run arbitrary code)")
        refs = read_safetensors_header(model_dir / fname)
        for name in sorted(refs):
            tensors[name] = refs[name]
    index_path = model_dir / INDEX_NAME
    if index_path.is_file():
        weight_map = read_json(index_path, INDEX_NAME)["weight_map"]
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise GGUFKitError(f"tensor {missing[0]} listed in {INDEX_NAME} is missing from "
                               f"{weight_map[missing[0]]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        extra = sorted(set(tensors) - set(weight_map))
        if extra:
            raise GGUFKitError(f"tensor {extra[0]} is in a shard but not in {INDEX_NAME}")
    return Checkpoint(model_dir, config, tensors)

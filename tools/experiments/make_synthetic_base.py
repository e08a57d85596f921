#!/usr/bin/env python3
"""A random-weight model with a real model's metadata and tokenizer, scaled to another shape: the
input for timing the allocator's measurement on a model size that is not available here (no
quality claim: the weights are noise). Gemma-3-1B's shape by default.

    python tools/experiments/make_synthetic_base.py gemma-3-270m-q4_k_m.gguf gemma3-1b-synthetic-f16.gguf \\
        [--n-embd 1152] [--n-ff 6912] [--n-layer 26] [--type f16] [--seed 0]

Copies every key of the template (tokenizer included), replaces the architecture's embedding
length, feed-forward length and block count, and writes block 0's tensor set for every block with
the template's row lengths mapped (n_embd -> --n-embd, n_ff -> --n-ff; head sizes kept). Weights
are N(0, 0.02) (norm vectors 1), in --type (f16 or f32). Deterministic for a given seed.
"""
from __future__ import annotations

import argparse
import re

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("template")
    ap.add_argument("out")
    ap.add_argument("--n-embd", type=int, default=1152)
    ap.add_argument("--n-ff", type=int, default=6912)
    ap.add_argument("--n-layer", type=int, default=26)
    ap.add_argument("--type", choices=("f16", "f32"), default="f16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(a.template)
    arch = r.fields["general.architecture"].contents()
    e0 = int(r.fields[f"{arch}.embedding_length"].contents())
    f0 = int(r.fields[f"{arch}.feed_forward_length"].contents())
    override = {f"{arch}.embedding_length": a.n_embd, f"{arch}.feed_forward_length": a.n_ff,
                f"{arch}.block_count": a.n_layer}
    w = GGUFWriter(a.out, arch)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k in ("general.architecture", "general.file_type",
                                          "general.quantization_version"):
            continue
        vt = f.types[0]
        val = override.get(k, f.contents())
        sub = f.types[1] if vt == GGUFValueType.ARRAY and len(f.types) > 1 else None
        w.add_key_value(k, val, vt, sub)
    w.add_key_value("general.file_type", 1 if a.type == "f16" else 0, GGUFValueType.UINT32)

    def dim(d: int) -> int:
        return a.n_embd if d == e0 else a.n_ff if d == f0 else d

    blk0 = [t for t in r.tensors if t.name.startswith("blk.0.")]
    other = [t for t in r.tensors if not t.name.startswith("blk.")]
    specs = []
    for t in other:
        specs.append((t.name, [dim(int(d)) for d in t.shape]))
    for il in range(a.n_layer):
        for t in blk0:
            specs.append((re.sub(r"^blk\.0\.", f"blk.{il}.", t.name), [dim(int(d)) for d in t.shape]))
    dt = np.float16 if a.type == "f16" else np.float32
    rng = np.random.default_rng(a.seed)
    arrays = []
    for name, ne in specs:
        shape = tuple(reversed(ne))                       # numpy order
        if len(ne) == 1:
            arr = np.ones(shape, np.float32)              # norms stay f32
        else:
            arr = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(dt)
        arrays.append((name, arr))
        w.add_tensor_info(name, arr.shape, arr.dtype, arr.nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _, arr in arrays:
        w.write_tensor_data(arr)
    w.close()
    n = sum(int(np.prod(ne)) for _, ne in specs)
    print(f"{a.out}: {len(specs)} tensors, {n / 1e9:.3f} B parameters")


if __name__ == "__main__":
    main()

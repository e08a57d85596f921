#!/usr/bin/env python3
"""The allocation benchmark's base model: a quantized GGUF dequantized to F32, moved off its old
quantization grid by adding Gaussian noise of ``--sigma`` (0.1) x each row's standard deviation to
every matrix (2-D+ weights; norms and 1-D tensors untouched).

    python tools/experiments/make_noisy_base.py gemma-3-270m-q4_k_m.gguf base-f32-noisy.gguf [--sigma 0.1] [--seed 0]

Deterministic for a given seed (one numpy Generator, tensors in file order).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from gguf import GGUFReader, GGMLQuantizationType

    from ggufkit.quantize import dequantize_file

    tmp = Path(tempfile.mkdtemp(dir=Path(a.out).resolve().parent)) / "f32.gguf"
    try:
        dequantize_file(a.inp, tmp, "f32", progress=True)
        r = GGUFReader(tmp, "r+")
        rng = np.random.default_rng(a.seed)
        n = 0
        for t in r.tensors:
            if len(t.shape) < 2 or t.tensor_type != GGMLQuantizationType.F32:
                continue
            w = t.data.reshape(-1, int(t.shape[0]))
            for r0 in range(0, w.shape[0], 4096):
                blk = w[r0:r0 + 4096]
                std = blk.std(axis=1, dtype=np.float64).astype(np.float32)
                blk += (rng.standard_normal(blk.shape, dtype=np.float32) * (np.float32(a.sigma) * std)[:, None])
            n += 1
        r.data.flush()
        del r
        os.replace(tmp, a.out)
        print(f"{a.out}: noise {a.sigma} x row std added to {n} matrices")
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


if __name__ == "__main__":
    main()

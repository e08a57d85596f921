#!/usr/bin/env python3
"""Extra golden vectors for the IQ quantizers from libggml (ggml_quantize_chunk, the path
llama-quantize uses): tests/golden/quant/IQ_extra.npz.

The main IQ goldens come from tools/golden/gen_quant_golden.py (--types IQ4_NL,...), like every other
type. This file adds cases that one shared imatrix and 512-wide rows do not reach: 256-wide
rows, several constants, a zero stretch at the start of a row, a per-case imatrix with exact
zeros, heavy tails.

Layout: per case NAME ``NAME/x`` f32[nrows, n_per_row] and ``NAME/w`` f32[n_per_row]
(absent: no weights); per type T ``T/NAME/q`` u8[nrows, row_bytes] and, where the case has no
weights but T needs an imatrix (IQ2_XXS, IQ2_XS, IQ1_S), the weights used in ``T/NAME/w``.

Usage: python -m tools.golden.gen_iq_golden [--lib /work/oracle/build/bin/libggml-base.so] [--types IQ4_NL,...]
"""
from __future__ import annotations

import argparse
import ctypes
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# name: (ggml id, block size, bytes per block, needs imatrix)
IQ_TYPES = {
    "IQ2_XXS": (16, 256, 66, True),
    "IQ2_XS": (17, 256, 74, True),
    "IQ3_XXS": (18, 256, 98, False),
    "IQ1_S": (19, 256, 50, True),
    "IQ4_NL": (20, 32, 18, False),
    "IQ3_S": (21, 256, 110, False),
    "IQ2_S": (22, 256, 82, False),
    "IQ4_XS": (23, 256, 136, False),
    "IQ1_M": (29, 256, 56, False),
}


def cases(seed: int = 1234) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, x f32[nrows, n_per_row], weights f32[n_per_row] or None)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    out = []
    out.append(("zeros", np.zeros((2, 256), f32), None))
    const = np.empty((3, 256), f32)
    const[0], const[1], const[2] = 0.5, -3.0, 1e-3
    out.append(("const", const, None))
    x = (rng.standard_normal((2, 512)) * 0.02).astype(f32)
    x[0, 77] = 50.0
    x[1, 300] = -20.0
    out.append(("outlier", x, None))
    tiny = np.empty((3, 256), f32)
    tiny[0] = rng.standard_normal(256) * 1e-39      # subnormal
    tiny[1] = rng.standard_normal(256) * 1e-20
    tiny[2] = rng.standard_normal(256) * 1e-9
    out.append(("tiny", tiny.astype(f32), None))
    out.append(("negative", (-np.abs(rng.standard_normal((2, 256)))).astype(f32), None))
    x = rng.standard_normal((4, 512)).astype(f32)
    x[2] *= 0.01
    x[3, :128] = 0.0                                 # a zero stretch inside a non-zero row
    out.append(("random", x, None))
    w = (rng.exponential(1.0, 512) ** 2).astype(f32)
    out.append(("random_w", x, w))
    x2 = (rng.standard_t(4, (3, 256)) * 0.1).astype(f32)
    w2 = rng.uniform(0.0, 2.0, 256).astype(f32)
    w2[:7] = 0.0
    out.append(("heavy_w", x2, w2))
    return out


def quantize(lib, qid: int, x: np.ndarray, w: np.ndarray | None, row_bytes: int) -> np.ndarray:
    nrows, n = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    dst = np.zeros((nrows, row_bytes), np.uint8)
    wp = None if w is None else np.ascontiguousarray(w, np.float32).ctypes.data_as(ctypes.c_void_p)
    got = lib.ggml_quantize_chunk(qid, x.ctypes.data_as(ctypes.c_void_p), dst.ctypes.data_as(ctypes.c_void_p),
                                  0, nrows, n, wp)
    assert got == dst.nbytes, (got, dst.nbytes)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", default="/work/oracle/build/bin/libggml-base.so")
    ap.add_argument("--types", default=",".join(IQ_TYPES))
    ap.add_argument("--outdir", default=str(REPO / "tests/golden/quant"))
    args = ap.parse_args()
    lib = ctypes.CDLL(args.lib)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    rng = np.random.default_rng(99)
    arrays = {}
    all_cases = cases()
    for cname, x, w in all_cases:
        arrays[f"{cname}/x"] = x
        if w is not None:
            arrays[f"{cname}/w"] = w
    for name in args.types.split(","):
        qid, bs, ts, needs_w = IQ_TYPES[name]
        for cname, x, w in all_cases:
            if w is None and needs_w:
                w = rng.uniform(0.1, 3.0, x.shape[1]).astype(np.float32)
                arrays[f"{name}/{cname}/w"] = w
            arrays[f"{name}/{cname}/q"] = quantize(lib, qid, x, w, x.shape[1] // bs * ts)
    path = Path(args.outdir) / "IQ_extra.npz"
    np.savez_compressed(path, **arrays)
    print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()

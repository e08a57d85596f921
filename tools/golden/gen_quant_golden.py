#!/usr/bin/env python3
"""Generate the quantization golden vectors in tests/golden/quant/<TYPE>.npz from libggml.

Each file holds, for the fixed input cases below (rows of ``n_per_row`` floats):
  x          f32[R, n]   input rows (case names in ``cases``, one per row)
  imatrix    f32[n]      importance weights used for the *_im arrays
  q          u8[R, row]  ggml_quantize_chunk(type, x, ..., imatrix=NULL)   (absent if the type
                         requires an imatrix)
  q_im       u8[R, row]  ggml_quantize_chunk(type, x, ..., imatrix)
  dq, dq_im  f32[R, n]   the type's to_float applied to q / q_im (absent if ggml has none)
Q8_1 and Q8_K are not handled by ggml_quantize_chunk; for them q/q_im come from
quantize_row_q8_1_ref / quantize_row_q8_K_ref (which ignore weights).

The library is llama.cpp's ggml from the llama-cpp-python 0.3.36 sdist (vendor/llama.cpp),
built as in shared/docs/REFERENCE.md:

    cmake -S vendor/llama.cpp -B build -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \\
          -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DCMAKE_BUILD_TYPE=Release
    cmake --build build --target ggml-base -j2      # -> build/bin/libggml-base.so

Usage:
    python -m tools.golden.gen_quant_golden [--lib build/bin/libggml-base.so] [--types Q4_K,Q6_K]
                                      [--out tests/golden/quant]
IQ types need ggml_quantize_init (done by ggml_quantize_chunk); pass them with --types.
"""

from __future__ import annotations

import argparse
import ctypes
import os

import numpy as np

from quant.types import TYPES

DEFAULT_LIB = "/work/oracle/build/bin/libggml-base.so"
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden", "quant")
N_PER_ROW = 512

# types whose golden vectors this tool writes by default (the IQ types are added with --types)
DEFAULT_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                 "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
                 "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]

_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class TypeTraits(ctypes.Structure):           # struct ggml_type_traits (ggml.h)
    _fields_ = [("type_name", ctypes.c_char_p),
                ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64),
                ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool),
                ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


def make_cases(n: int = N_PER_ROW, seed: int = 1234):
    """-> (names, x f32[R, n], imatrix f32[n]): the fixed input rows."""
    rng = np.random.default_rng(seed)
    rows, names = [], []

    def add(name, v):
        names.append(name)
        rows.append(np.asarray(v, np.float32))

    add("zeros", np.zeros(n))
    add("constant", np.full(n, 0.37))
    add("constant_neg", np.full(n, -2.5))
    o = rng.standard_normal(n) * 0.02
    o[77] = 1.0e4
    add("outlier", o)
    add("tiny", rng.standard_normal(n) * 1e-20)
    d = rng.standard_normal(n) * 1e-39                 # float32 denormals
    d[::7] = 0.0
    add("denormal", d)
    add("negative", -np.abs(rng.standard_normal(n)) * 0.5)
    add("mixed_zero_blocks", np.where(np.arange(n) // 32 % 2 == 0, 0.0, rng.standard_normal(n)))
    for s in (0.01, 1.0, 30.0):
        add(f"random_{s}", rng.standard_normal(n) * s)
    add("uniform", rng.uniform(-1, 1, n))
    add("heavy_tail", rng.standard_t(2.0, n) * 0.1)
    imatrix = (rng.uniform(0.05, 3.0, n) ** 2).astype(np.float32)
    return names, np.stack(rows).astype(np.float32), imatrix


class GGML:
    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        L = self.lib
        L.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
        L.ggml_get_type_traits.argtypes = [ctypes.c_int]
        L.ggml_quantize_chunk.restype = ctypes.c_size_t
        L.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                          ctypes.c_void_p]
        L.ggml_quantize_init.argtypes = [ctypes.c_int]
        L.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        L.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        L.ggml_row_size.restype = ctypes.c_size_t
        L.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]

    def row_size(self, tid, n):
        return self.lib.ggml_row_size(tid, n)

    def quantize(self, name, x, imatrix):
        t = TYPES[name]
        nrows, n = x.shape
        rs = self.row_size(t.id, n)
        dst = np.zeros((nrows, rs), np.uint8)          # zeroed: Q8_K leaves bsums unset for zero blocks
        x = np.ascontiguousarray(x, np.float32)
        if name in ("Q8_1", "Q8_K"):                   # not in ggml_quantize_chunk: the _ref row quantizer
            sym = "quantize_row_q8_K_ref" if name == "Q8_K" else "quantize_row_q8_1_ref"
            fn = _FROM_FLOAT(ctypes.cast(getattr(self.lib, sym), ctypes.c_void_p).value)
            for r in range(nrows):
                fn(x[r].ctypes.data, dst[r].ctypes.data, n)
            return dst
        im = imatrix.ctypes.data if imatrix is not None else None
        got = self.lib.ggml_quantize_chunk(t.id, x.ctypes.data, dst.ctypes.data, 0, nrows, n, im)
        assert got == nrows * rs, (name, got, nrows * rs)
        return dst

    def to_float(self, name, q, n):
        t = TYPES[name]
        ptr = self.lib.ggml_get_type_traits(t.id).contents.to_float
        if name == "Q8_K":
            ptr = ctypes.cast(self.lib.dequantize_row_q8_K, ctypes.c_void_p).value
        if not ptr:
            return None
        fn = _TO_FLOAT(ptr)
        out = np.zeros((q.shape[0], n), np.float32)
        for r in range(q.shape[0]):
            fn(q[r].ctypes.data, out[r].ctypes.data, n)
        return out

    def requires_imatrix(self, name):
        return bool(self.lib.ggml_quantize_requires_imatrix(TYPES[name].id))


def generate(lib: str, types, out_dir: str, n: int = N_PER_ROW) -> None:
    g = GGML(lib)
    names, x, imatrix = make_cases(n)
    os.makedirs(out_dir, exist_ok=True)
    for name in types:
        t = TYPES[name]
        assert g.row_size(t.id, n) == t.row_size(n), (name, "row size disagrees with quant/types.py")
        arrays = {"x": x, "imatrix": imatrix, "cases": np.array(names)}
        if not g.requires_imatrix(name):
            q = g.quantize(name, x, None)
            arrays["q"] = q
            dq = g.to_float(name, q, n)
            if dq is not None:
                arrays["dq"] = dq
        q_im = g.quantize(name, x, imatrix)
        arrays["q_im"] = q_im
        dq_im = g.to_float(name, q_im, n)
        if dq_im is not None:
            arrays["dq_im"] = dq_im
        path = os.path.join(out_dir, f"{name}.npz")
        np.savez_compressed(path, **arrays)
        print(f"{name:8s} {os.path.getsize(path):7d} bytes  {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=DEFAULT_LIB, help="path to libggml-base.so")
    ap.add_argument("--types", default=",".join(DEFAULT_TYPES), help="comma-separated type names")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory")
    a = ap.parse_args(argv)
    types = [s.strip().upper() for s in a.types.split(",") if s.strip()]
    for s in types:
        if s not in TYPES:
            ap.error(f"unknown type {s}")
    generate(a.lib, types, a.out)


if __name__ == "__main__":
    main()

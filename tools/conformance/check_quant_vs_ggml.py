#!/usr/bin/env python3
"""Compare quant (numpy and Numba) with libggml's ggml_quantize_chunk on fresh random rows.

A wider net than the committed goldens: many rows, any row length, any seed, and an
--extreme mode whose blocks span 1e-44 .. 1e30 (denormals, overflowing squares) with zeros,
-0.0 and a 3e37 outlier. Prints the rows that differ; exit status 1 if any do.

    python -m tools.conformance.check_quant_vs_ggml [--types Q4_K,Q6_K] [--rows 200 --cols 1024]
                                        [--seed 7] [--extreme] [--lib .../libggml-base.so]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import quant
from tools.golden.gen_quant_golden import DEFAULT_LIB, DEFAULT_TYPES, GGML


def make_rows(rows, cols, seed, extreme):
    rng = np.random.default_rng(seed)
    if extreme:
        scale = 10.0 ** rng.uniform(-44, 30, (rows, cols // 32)).repeat(32, axis=1)
        x = rng.standard_normal((rows, cols)) * scale
        x[rng.random((rows, cols)) < 0.2] = 0
        x[::3, 5] = 3e37
        x[1::4] = np.abs(x[1::4])
        x[1::4, ::16] = -0.0
    else:
        x = rng.standard_normal((rows, cols)) * rng.choice([1e-3, 0.05, 1, 100], (rows, 1))
        x[::5] = rng.standard_t(1.5, (len(x[::5]), cols)) * 0.02
        x[1::7] = np.abs(x[1::7])
        x[2::9, ::3] = 0
    im = (rng.uniform(0, 2, cols) ** 3).astype(np.float32)
    im[::17] = 0
    return x.astype(np.float32), im


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=DEFAULT_LIB)
    ap.add_argument("--types", default=",".join(DEFAULT_TYPES))
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--extreme", action="store_true")
    a = ap.parse_args(argv)
    g = GGML(a.lib)
    x, im = make_rows(a.rows, a.cols, a.seed, a.extreme)
    bad = 0
    with np.errstate(all="ignore"):
        for name in [s.strip().upper() for s in a.types.split(",") if s.strip()]:
            for imx in (None, im):
                if imx is None and g.requires_imatrix(name):
                    continue
                exp = g.quantize(name, x, imx)
                for backend in ("numpy", "numba"):
                    got = quant.quantize(x, name, imx, backend=backend)
                    rows = np.nonzero((exp != got).any(axis=1))[0]
                    status = "ok" if len(rows) == 0 else f"DIFFERENT rows {rows[:10].tolist()}"
                    bad += len(rows) > 0
                    print(f"{name:7s} imatrix={'yes' if imx is not None else 'no ':3s} {backend:5s} {status}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

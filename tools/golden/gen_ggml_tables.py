#!/usr/bin/env python3
"""Extract the IQ lookup tables from a vendored llama.cpp tree into quant/data/iq_tables.npz.

The tables are data, so they are parsed out of the C sources rather than retyped:

- ggml/src/ggml-common.h (dequantization side, what the file format means):
  kmask_iq2xs[8], ksigns_iq2xs[128], kvalues_iq4nl[16],
  iq2xxs_grid[256] u64, iq2xs_grid[512] u64, iq2s_grid[1024] u64,
  iq3xxs_grid[256] u32, iq3s_grid[512] u32, iq1s_grid[2048] u64.
- ggml/src/ggml-quants.c (search side, the compact grids inside iq2xs_init_impl/iq3xs_init_impl):
  kgrid_2bit_256, kgrid_2bit_512, kgrid_2bit_1024, kgrid_1bit_2048 (8 x 2-bit fields),
  kgrid_256, kgrid_512 (4 x 3-bit fields).

The neighbour lists the quantizers search are derived from the compact grids at run time
(quant/ref/iq_tables.py), exactly as ggml derives them.

Usage: python -m tools.golden.gen_ggml_tables [LLAMA_CPP_DIR] [-o quant/data/iq_tables.npz]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

DEFAULT_SRC = "/work/oracle/llama_cpp_python-0.3.36/vendor/llama.cpp"
REPO = Path(__file__).resolve().parents[2]

# name -> numpy dtype, expected length
COMMON_TABLES = {
    "kmask_iq2xs": (np.uint8, 8),
    "ksigns_iq2xs": (np.uint8, 128),
    "kvalues_iq4nl": (np.int8, 16),
    "iq2xxs_grid": (np.uint64, 256),
    "iq2xs_grid": (np.uint64, 512),
    "iq2s_grid": (np.uint64, 1024),
    "iq3xxs_grid": (np.uint32, 256),
    "iq3s_grid": (np.uint32, 512),
    "iq1s_grid": (np.uint64, 2048),
}
QUANTS_TABLES = {
    "kgrid_2bit_256": 256,
    "kgrid_2bit_512": 512,
    "kgrid_2bit_1024": 1024,
    "kgrid_1bit_2048": 2048,
    "kgrid_256": 256,
    "kgrid_512": 512,
}


def _numbers(body: str) -> list[int]:
    body = re.sub(r"//[^\n]*", "", body)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return [int(tok, 0) for tok in re.findall(r"-?(?:0x[0-9a-fA-F]+|\d+)", body)]


def _table(text: str, pattern: str, name: str, n: int, where: str) -> list[int]:
    """The n numbers of table ``name``, found in ``text`` by ``pattern`` (its body is group 1)."""
    m = re.search(pattern % name, text, re.S)
    if m is None:
        raise SystemExit(f"table {name} not found in {where}")
    vals = _numbers(m.group(1))
    if len(vals) != n:
        raise SystemExit(f"{name}: expected {n} values, got {len(vals)}")
    return vals


def extract(src: Path) -> dict[str, np.ndarray]:
    common = (src / "ggml/src/ggml-common.h").read_text()
    quants = (src / "ggml/src/ggml-quants.c").read_text()
    out: dict[str, np.ndarray] = {}
    for name, (dtype, n) in COMMON_TABLES.items():
        vals = _table(common, r"GGML_TABLE_BEGIN\(\s*\w+\s*,\s*%s\s*,[^)]*\)(.*?)GGML_TABLE_END\(\)", name, n,
                      "ggml-common.h")
        if np.dtype(dtype).kind == "u":
            out[name] = np.array(vals, dtype=np.uint64).astype(dtype)
        else:
            out[name] = np.array(vals, dtype=dtype)
    for name, n in QUANTS_TABLES.items():
        vals = _table(quants, r"static const uint16_t %s\[[^\]]*\]\s*=\s*\{(.*?)\};", name, n, "ggml-quants.c")
        out[name] = np.array(vals, dtype=np.uint16)
    _check(out)
    return out


def _check(t: dict[str, np.ndarray]) -> None:
    """The compact search grids must decode to the dequantization grids (same point order)."""
    def unpack(kgrid, nfield, bits, values):
        f = (kgrid[:, None].astype(np.int64) >> (bits * np.arange(nfield))) & ((1 << bits) - 1)
        return np.asarray(values)[f]

    pairs = [("kgrid_2bit_256", "iq2xxs_grid", 8, 2, [0x08, 0x19, 0x2B]),
             ("kgrid_2bit_512", "iq2xs_grid", 8, 2, [0x08, 0x19, 0x2B]),
             ("kgrid_2bit_1024", "iq2s_grid", 8, 2, [0x08, 0x19, 0x2B]),
             ("kgrid_1bit_2048", "iq1s_grid", 8, 2, [0xFF, 0x00, 0x01]),
             ("kgrid_256", "iq3xxs_grid", 4, 3, [0x04, 0x0C, 0x14, 0x1C, 0x24, 0x2C, 0x34, 0x3E]),
             ("kgrid_512", "iq3s_grid", 4, 3, [1, 3, 5, 7, 9, 11, 13, 15])]
    for kname, gname, nfield, bits, values in pairs:
        want = unpack(t[kname], nfield, bits, values).astype(np.uint8)
        got = t[gname].view(np.uint8).reshape(-1, nfield)
        if not np.array_equal(want, got):
            raise SystemExit(f"{kname} does not decode to {gname}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default=DEFAULT_SRC, help="llama.cpp source tree")
    ap.add_argument("-o", "--output", default=str(REPO / "quant/data/iq_tables.npz"))
    args = ap.parse_args()
    tables = extract(Path(args.src))
    np.savez_compressed(args.output, **tables)
    print(f"wrote {args.output}: " + ", ".join(f"{k}[{v.size}]" for k, v in tables.items()))


if __name__ == "__main__":
    main()

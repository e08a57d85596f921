"""IQ lookup tables: the grids from ggml (quant/data/iq_tables.npz, written by
tools/golden/gen_ggml_tables.py) and the search structures ggml derives from them at run time.

Search structures (ggml-quants.c: iq2xs_init_impl / iq3xs_init_impl), built once per grid:
- ``grid``: (G, n) int8, the search grid; coordinate = 2*l + 1 (l = the packed field).
- ``kmap``: (kmap_size,) int32 indexed by the packed code u = sum(l_i << bits*i):
  ``kmap[u] >= 0`` is the grid index of an on-grid code; otherwise ``-(off+1)`` with
  ``neighbours[off]`` = count and ``neighbours[off+1 : off+1+count]`` the grid indices whose
  squared distance is among the ``nwant`` smallest distinct values, sorted by (distance, index)
  (ggml's qsort comparator is a total order on (d2, index), so this order is unique).
  Only codes whose fields are all <= kmax are built (the quantizers clamp to that range);
  other codes point at offset 0, which holds an empty list.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

_DATA = Path(__file__).resolve().parent.parent / "data" / "iq_tables.npz"


@lru_cache(maxsize=None)
def tables() -> dict[str, np.ndarray]:
    with np.load(_DATA) as z:
        return {k: z[k] for k in z.files}


def table(name: str) -> np.ndarray:
    return tables()[name]


class SearchGrid(NamedTuple):
    grid: np.ndarray        # (G, nfield) int8, values 2*l+1
    kmap: np.ndarray        # (kmap_size,) int32
    neighbours: np.ndarray  # (N,) uint16, [count, idx...] lists


# name -> (compact table, fields per point, bits per field, kmap_size, nwant, largest field searched)
_SPECS = {
    "iq2xxs": ("kgrid_2bit_256", 8, 2, 43692, 2, 2),
    "iq2xs": ("kgrid_2bit_512", 8, 2, 43692, 2, 2),
    "iq2s": ("kgrid_2bit_1024", 8, 2, 43692, 1, 2),
    "iq1s": ("kgrid_1bit_2048", 8, 2, 43692, 3, 2),   # shared by IQ1_S and IQ1_M
    "iq3xxs": ("kgrid_256", 4, 3, 4096, 2, 7),
    "iq3s": ("kgrid_512", 4, 3, 4096, 3, 7),
}


@lru_cache(maxsize=None)
def search_grid(name: str) -> SearchGrid:
    kname, nfield, bits, kmap_size, nwant, kmax = _SPECS[name]
    kgrid = table(kname).astype(np.int64)
    shifts = bits * np.arange(nfield)
    fmask = (1 << bits) - 1
    lgrid = (kgrid[:, None] >> shifts) & fmask                       # (G, nfield) fields
    grid = (2 * lgrid + 1).astype(np.int8)
    G = grid.shape[0]

    kmap = np.full(kmap_size, -1, dtype=np.int64)
    kmap[(lgrid << shifts).sum(axis=1)] = np.arange(G)

    # every code with all fields <= kmax that is not on the grid
    digits = np.stack(np.meshgrid(*([np.arange(kmax + 1)] * nfield), indexing="ij"), -1).reshape(-1, nfield)
    codes = (digits << shifts).sum(axis=1)
    off = kmap[codes] < 0
    codes, digits = codes[off], digits[off]
    order = np.argsort(codes)
    codes, digits = codes[order], digits[order]

    pos = 2 * digits + 1                                             # (M, nfield)
    gi = grid.astype(np.int32)
    lists: list[np.ndarray] = []
    for c0 in range(0, len(codes), 512):
        p = pos[c0:c0 + 512, None, :]
        d2 = ((gi[None, :, :] - p) ** 2).sum(axis=2)                 # (m, G)
        # threshold = the nwant-th smallest distinct distance of each row
        thr = d2.min(axis=1)
        for _ in range(nwant - 1):
            nxt = np.where(d2 > thr[:, None], d2, np.iinfo(np.int32).max).min(axis=1)
            thr = np.where(nxt == np.iinfo(np.int32).max, thr, nxt)
        key = np.where(d2 <= thr[:, None], d2 * G + np.arange(G), np.iinfo(np.int64).max)
        key = np.sort(key, axis=1)
        for row in key:
            sel = row[row != np.iinfo(np.int64).max] % G
            lists.append(sel)

    neighbours = [np.zeros(1, dtype=np.int64)]                       # offset 0: empty list
    o = 1
    for code, sel in zip(codes, lists):
        kmap[code] = -(o + 1)
        neighbours.append(np.concatenate([[len(sel)], sel]))
        o += 1 + len(sel)
    nb = np.concatenate(neighbours).astype(np.uint16)
    return SearchGrid(grid, kmap.astype(np.int32), nb)


def kvalues_iq4nl() -> np.ndarray:
    return table("kvalues_iq4nl")

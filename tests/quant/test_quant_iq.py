"""IQ quantizers: bit-exact against libggml golden vectors, numpy reference == Numba fast path,
dequantize == ggml's to_float and gguf-py's dequantize byte for byte.

Goldens: tests/golden/quant/<TYPE>.npz (tools/golden/gen_quant_golden.py --types IQ...: shared cases,
one imatrix) and tests/golden/quant/IQ_extra.npz (tools/golden/gen_iq_golden.py: 256-wide rows,
per-case imatrices with zeros, a zero stretch at the start of a row)."""

import gguf
import numpy as np
import pytest

import quant
from quant.errors import QuantError
from quant.ref.iq_tables import search_grid, table
from tests.helpers import GOLDENS
from tests.helpers.quant_backends import numba_equals_numpy

GOLDEN = GOLDENS / "quant"
IQ_TYPES = ["IQ4_NL", "IQ4_XS", "IQ3_S", "IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M"]
NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S"}


def _cases(qtype):
    """[(name, x, weights or None, ggml bytes, ggml to_float or None)] from both golden files."""
    out = []
    with np.load(GOLDEN / f"{qtype}.npz") as z:
        if "q" in z.files:
            out.append(("main", z["x"], None, z["q"], z["dq"]))
        out.append(("main_im", z["x"], z["imatrix"], z["q_im"], z["dq_im"]))
    with np.load(GOLDEN / "IQ_extra.npz") as z:
        names = sorted({k.split("/")[0] for k in z.files if not k.startswith("IQ")})
        for n in names:
            w = z.get(f"{n}/w", z.get(f"{qtype}/{n}/w"))
            out.append((n, z[f"{n}/x"], w, z[f"{qtype}/{n}/q"], None))
    return out


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("qtype", IQ_TYPES)
def test_golden_quantize(qtype, backend):
    cases = _cases(qtype)
    assert len(cases) >= 9
    for name, x, w, q, _ in cases:
        got = quant.quantize(x, qtype, w, backend=backend, nthreads=2)
        assert got.shape == q.shape, name
        bad = np.nonzero((got != q).any(axis=1))[0]
        assert bad.size == 0, f"{qtype}/{backend}/{name}: rows {bad} differ from ggml"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("qtype", IQ_TYPES)
def test_dequantize_matches_ggml_and_gguf_py(qtype, backend):
    for name, _x, _w, q, dq in _cases(qtype):
        y = quant.dequantize(q, qtype, backend=backend)
        assert y.dtype == np.float32
        if dq is not None:
            assert np.array_equal(y.view(np.uint32), dq.view(np.uint32)), name
        want = gguf.quants.dequantize(q, gguf.GGMLQuantizationType[qtype])
        assert np.array_equal(y.view(np.uint32), want.reshape(y.shape).view(np.uint32)), name


@pytest.mark.parametrize("qtype", IQ_TYPES)
def test_numba_equals_numpy_random(qtype):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 512)) * rng.uniform(0.001, 3.0, (6, 1))).astype(np.float32)
    x[1, ::3] = 0.0
    x[4, 10] = 40.0
    w = (rng.exponential(1.0, 512) ** 2).astype(np.float32)
    for imatrix in ([w] if qtype in NEEDS_IMATRIX else [None, w]):
        y1 = numba_equals_numpy(x, qtype, imatrix)
        # a real quantizer: the reconstruction is close to the input (all zeros would give 1.0)
        err = np.sqrt(np.mean((y1[0] - x[0]) ** 2)) / np.sqrt(np.mean(x[0] ** 2))
        assert err < (0.75 if qtype.startswith("IQ1") else 0.6)


def test_imatrix_required():
    from quant.fast import iq1 as fast1, iq2 as fast2
    from quant.types import FORMATS
    x = np.ones((1, 256), np.float32)
    for qtype in sorted(NEEDS_IMATRIX):
        for backend in ("numpy", "numba"):
            with pytest.raises(QuantError):
                quant.quantize(x, qtype, backend=backend)
        with pytest.raises(QuantError):                      # the layers below the API too
            FORMATS[qtype].quantize_blocks(x.reshape(1, 1, 256), None)
        fast = getattr(fast1 if qtype == "IQ1_S" else fast2, f"quantize_{qtype.lower()}")
        with pytest.raises(QuantError):
            fast(x, np.zeros(0, np.float32), np.zeros((1, quant.row_size(qtype, 256)), np.uint8))


def test_tables_decode_to_ggml_grids():
    # the compact search grids (ggml-quants.c) and the dequantization grids (ggml-common.h)
    # list the same points in the same order
    g = search_grid("iq2xxs").grid                    # coordinates 1, 3, 5
    want = table("iq2xxs_grid").view(np.uint8).reshape(-1, 8)
    assert np.array_equal(np.array([0x08, 0x19, 0x2B])[(g - 1) // 2], want)
    g = search_grid("iq3s").grid
    assert np.array_equal(g, table("iq3s_grid").view(np.uint8).reshape(-1, 4))


@pytest.mark.parametrize("name", ["iq2xxs", "iq2xs", "iq2s", "iq1s", "iq3xxs", "iq3s"])
def test_neighbour_lists(name):
    sg = search_grid(name)
    nfield = sg.grid.shape[1]
    bits = 2 if nfield == 8 else 3
    nwant = {"iq2xxs": 2, "iq2xs": 2, "iq2s": 1, "iq1s": 3, "iq3xxs": 2, "iq3s": 3}[name]
    rng = np.random.default_rng(0)
    kmax = 2 if bits == 2 else 7
    for _ in range(50):
        l = rng.integers(0, kmax + 1, nfield)
        u = int((l << (bits * np.arange(nfield))).sum())
        if sg.kmap[u] >= 0:
            assert np.array_equal(sg.grid[sg.kmap[u]], 2 * l + 1)
            continue
        off = -sg.kmap[u] - 1
        n = int(sg.neighbours[off])
        idx = sg.neighbours[off + 1:off + 1 + n].astype(np.int64)
        d2 = ((sg.grid.astype(np.int64) - (2 * l + 1)) ** 2).sum(axis=1)
        # sorted by (distance, index); all points of the nwant smallest distances, nothing else
        key = d2[idx] * 4096 + idx
        assert np.all(np.diff(key) > 0)
        levels = np.unique(d2)[:nwant]
        assert set(idx.tolist()) == set(np.nonzero(np.isin(d2, levels))[0].tolist())

"""Bit-exactness of quant/ against libggml's output (tests/golden/quant/*.npz, made by
tools/golden/gen_quant_golden.py), for the numpy reference and the Numba fast path."""

import os

import numpy as np
import pytest

import quant
from tests.helpers import GOLDENS

GOLDEN = os.path.join(GOLDENS, "quant")
TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
         "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
         "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]


def load(name):
    with np.load(os.path.join(GOLDEN, f"{name}.npz")) as z:
        return {k: z[k] for k in z.files}


def first_diff(a, b, cases):
    bad = np.nonzero((a != b).reshape(a.shape[0], -1).any(axis=1))[0]
    return [str(cases[i]) for i in bad]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", TYPES)
def test_quantize_matches_ggml(name, backend):
    g = load(name)
    if "q" in g:
        got = quant.quantize(g["x"], name, backend=backend)
        assert got.dtype == np.uint8 and got.shape == g["q"].shape
        assert np.array_equal(got, g["q"]), f"rows differ: {first_diff(got, g['q'], g['cases'])}"
    got = quant.quantize(g["x"], name, g["imatrix"], backend=backend)
    assert np.array_equal(got, g["q_im"]), f"rows differ (imatrix): {first_diff(got, g['q_im'], g['cases'])}"


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", TYPES)
def test_dequantize_matches_ggml(name, backend):
    g = load(name)
    for qk, dk in (("q", "dq"), ("q_im", "dq_im")):
        if qk not in g:
            continue
        got = quant.dequantize(g[qk], name, backend=backend)
        assert got.dtype == np.float32 and got.shape == g["x"].shape
        if dk in g:
            assert np.array_equal(bits(got), bits(g[dk])), name
        elif name == "F32":   # ggml has no to_float for F32: the bytes are the floats
            assert np.array_equal(bits(got), g[qk].view(np.uint32))
        else:   # ggml has no to_float (Q8_1): d * q
            b = g[qk].reshape(-1, 36)
            d = b[:, :2].copy().view(np.float16).astype(np.float32)
            exp = b[:, 4:].copy().view(np.int8).astype(np.float32) * d
            assert np.array_equal(bits(got), bits(exp.reshape(got.shape)))


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_matches_gguf_py(name):
    gguf = pytest.importorskip("gguf")
    from gguf import quants as gq
    qt = getattr(gguf.GGMLQuantizationType, name, None)
    g = load(name)
    if qt is None or name in ("Q8_1", "Q8_K"):
        pytest.skip(f"gguf-py has no dequantizer for {name}")
    if name in ("F32", "F16", "BF16"):
        pytest.skip("gguf-py takes typed arrays for float types; covered by the ggml golden")
    for qk in ("q", "q_im"):
        if qk in g:
            try:
                exp = gq.dequantize(g[qk], qt)
            except NotImplementedError:
                pytest.skip(f"gguf-py {gguf.__version__ if hasattr(gguf, '__version__') else ''} "
                            f"does not dequantize {name}")
            got = quant.dequantize(g[qk], name, backend="numpy")
            assert np.array_equal(bits(got), bits(exp))

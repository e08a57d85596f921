"""quant's public API: the type table, shapes, errors, and Numba == numpy on fresh data."""

import numpy as np
import pytest

import quant
from quant import QuantError
from tests.helpers.quant_backends import numba_equals_numpy

MY_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
            "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
            "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"]


def test_table_matches_gguf_py():
    gguf = pytest.importorskip("gguf")
    for name, t in quant.TYPES.items():
        qt = getattr(gguf.GGMLQuantizationType, name, None)
        if qt is None:          # gguf 0.19 has no Q2_0 yet
            continue
        assert int(qt) == t.id
        if name != "Q8_1" and qt in gguf.GGML_QUANT_SIZES:     # gguf-py lists Q8_1 as 40 bytes
            assert gguf.GGML_QUANT_SIZES[qt] == (t.block_size, t.type_size), name


def test_lookup():
    assert quant.get_type("q4_k") is quant.TYPES["Q4_K"]
    assert quant.get_type(12) is quant.TYPES["Q4_K"]
    assert quant.row_size("Q4_K", 512) == 288
    assert quant.row_size("Q8_0", 64) == 68
    with pytest.raises(QuantError):
        quant.get_type("Q9_9")
    with pytest.raises(QuantError):
        quant.get_type(4)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_errors(backend):
    x = np.ones((2, 256), np.float32)
    with pytest.raises(QuantError, match="not a multiple"):
        quant.quantize(x[:, :100], "Q4_K", backend=backend)
    with pytest.raises(QuantError, match="unknown quantization type"):
        quant.quantize(x, "Q7_K", backend=backend)
    with pytest.raises(QuantError, match="imatrix"):
        quant.quantize(x, "Q4_K", np.ones(100, np.float32), backend=backend)
    with pytest.raises(QuantError, match="requires an importance matrix"):
        quant.quantize(x, "IQ2_XXS", backend=backend)
    with pytest.raises(QuantError):
        quant.dequantize(np.zeros((2, 100), np.uint8), "Q4_K", backend=backend)
    with pytest.raises(QuantError, match="backend"):
        quant.quantize(x, "Q8_0", backend="cuda")


def test_shapes_and_dtypes():
    x = np.random.default_rng(0).standard_normal((2, 3, 512))
    q = quant.quantize(x, "Q4_K")                         # float64 input is cast to float32
    assert q.shape == (2, 3, 288) and q.dtype == np.uint8
    assert np.array_equal(q.reshape(6, 288), quant.quantize(x.reshape(6, 512).astype(np.float32), "Q4_K"))
    y = quant.dequantize(q, "Q4_K")
    assert y.shape == (2, 3, 512) and y.dtype == np.float32
    assert np.abs(y - x).max() < 0.5
    assert quant.quantize(np.zeros((0, 256), np.float32), "Q6_K").shape == (0, 210)
    v = quant.quantize(np.ones(64, np.float32), "Q8_0")   # a single row
    assert v.shape == (68,)


@pytest.mark.parametrize("name", MY_TYPES)
def test_numba_equals_numpy(name):
    rng = np.random.default_rng(42)
    n = 1024
    x = (rng.standard_normal((24, n)) * rng.choice([1e-4, 0.02, 3.0], (24, 1))).astype(np.float32)
    x[3] = 0
    x[5, ::2] = 0
    x[7] = np.abs(x[7])
    x[7, ::16] = -0.0          # a block starting with -0.0: C keeps the sign of its min
    im = (rng.uniform(0, 2, n) ** 2).astype(np.float32)
    for imx in (None, im):
        numba_equals_numpy(x, name, imx)


@pytest.mark.parametrize("name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "Q3_K", "Q2_K", "BF16"])
def test_roundtrip_error_is_small(name):
    x = np.random.default_rng(1).standard_normal((8, 512)).astype(np.float32)
    y = quant.dequantize(quant.quantize(x, name), name)
    rel = np.sqrt(np.mean((x - y) ** 2) / np.mean(x ** 2))
    assert rel < {"Q2_K": 0.4, "Q3_K": 0.2}.get(name, 0.12), rel


def test_imatrix_changes_k_quants():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    im = rng.uniform(0.01, 10, 256).astype(np.float32)
    assert not np.array_equal(quant.quantize(x, "Q4_K"), quant.quantize(x, "Q4_K", im))
    assert np.array_equal(quant.quantize(x, "Q8_0"), quant.quantize(x, "Q8_0", im))   # ignored by ggml


SPECIAL_BITS = [0xFFFFFFFF, 0x7FFFFFFF, 0xFF800001, 0x7F800001, 0x7FC00000, 0xFFC00000,
                0x7F800000, 0xFF800000, 0x477FF000, 0x477FEFFF, 0x33000000, 0x33000001]
# ggml_fp32_to_fp16_row / ggml_fp32_to_bf16_row_ref on SPECIAL_BITS (libggml 0.3.36)
GGML_F16 = [0xFE00, 0x7E00, 0xFE00, 0x7E00, 0x7E00, 0xFE00, 0x7C00, 0xFC00, 0x7C00, 0x7BFF, 0x0, 0x1]
GGML_BF16 = [0xFFFF, 0x7FFF, 0xFFC0, 0x7FC0, 0x7FC0, 0xFFC0, 0x7F80, 0xFF80, 0x4780, 0x4780,
             0x3300, 0x3300]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float_conversions_of_nan_inf_and_ties(backend):
    x = np.array(SPECIAL_BITS, np.uint32).view(np.float32)
    assert quant.quantize(x, "F16", backend=backend).view(np.uint16).tolist() == GGML_F16
    assert quant.quantize(x, "BF16", backend=backend).view(np.uint16).tolist() == GGML_BF16


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16", "TQ1_0", "TQ2_0", "MXFP4"])
def test_quantize_matches_gguf_py(name):
    """gguf-py's own quantizers (the types it has) agree with ours (no imatrix)."""
    gguf = pytest.importorskip("gguf")
    from gguf import quants as gq
    x = (np.random.default_rng(5).standard_normal((6, 512)) * 0.1).astype(np.float32)
    exp = np.asarray(gq.quantize(x, gguf.GGMLQuantizationType[name]))
    got = quant.quantize(x, name, backend="numpy")
    assert np.array_equal(got, exp.view(np.uint8).reshape(got.shape))

"""Numba dequantization and fused matmul kernels against the numpy references.

Quantized weights are random packed bytes with their fp16 scale fields set to
sane values, so every bit of every block layout is exercised; the reference
dequantizer is quant/ref's (through runtime.reference.dequantize_rows).
"""

import importlib

import numpy as np
import pytest
from quant.types import get_type

from runtime import backend, reference
from runtime.backend import CPU, CPUBackend
from runtime.qtensor import QTensor
from tests.helpers.qtensors import random_qtensor


def _block(qtype):
    return get_type(qtype).block_size


KERNEL_TYPES = sorted(backend.KERNEL_TYPES)


def test_priority_types_have_kernels():
    for t in ["F32", "F16", "BF16", "Q8_0", "Q4_K", "Q6_K", "Q5_K", "Q4_0", "Q5_0", "Q5_1", "Q4_1",
              "Q2_K", "Q3_K", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0"]:
        assert t in backend.KERNEL_TYPES


def test_every_table_kernel_type_has_a_kernel():
    """quant.types marks the types the runtime runs; runtime.kernels has a dequantizer for each
    (its list comes from the block dequantizers, not from the table's column), and each one's
    rows equal quant's numpy reference."""
    import quant
    from quant.types import TYPES
    from runtime import kernels
    marked = {n for n, t in TYPES.items() if t.kernel}
    assert {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
            "Q2_0"} <= marked
    assert set(kernels.MATMUL_TYPES) == marked
    for qtype in sorted(marked):
        n_in = 2 * max(_block(qtype), 32)
        w = random_qtensor(qtype, 3, n_in)
        got = CPU.get_rows(w, np.array([2, 0]))
        want = quant.dequantize(w.data, qtype, backend="numpy").reshape(3, n_in)[[2, 0]]
        np.testing.assert_array_equal(got, want, err_msg=qtype)


@pytest.mark.parametrize("qtype", KERNEL_TYPES)
def test_get_rows_matches_reference_dequant(qtype):
    n_in = 3 * max(_block(qtype), 32)
    w = random_qtensor(qtype, 21, n_in)
    ids = np.array([20, 0, 7, 7, 13], np.int32)
    got = CPU.get_rows(w, ids)
    want = reference.dequantize_rows(w.data, qtype, n_in)[ids]
    # same float ops as ggml's dequantize_row_*; allow one rounding of reordering
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def _check_matmul(w: QTensor, x: np.ndarray, numerics: str = "exact", tol: float = 1e-5):
    """Kernel vs reference.matmul, error relative to sum |w| |x| of each dot product."""
    got = CPUBackend(numerics).matmul(w, x)
    wd = w.dequantize().astype(np.float64)
    want = reference.matmul(w.data, w.qtype, w.shape[1], x, numerics)
    bound = np.abs(x.astype(np.float64)) @ np.abs(wd).T          # scale of each dot product
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.all(np.abs(got - want) <= tol * bound + 1e-30), \
        f"{w.qtype}: max err {np.max(np.abs(got - want) / bound)}"
    return got


def _n_in(qtype):
    return 3 * max(_block(qtype), 32) if _block(qtype) > 1 else 97


@pytest.mark.parametrize("n_tok", [1, 3, 11])
@pytest.mark.parametrize("qtype", KERNEL_TYPES)
def test_matmul_matches_reference(qtype, n_tok):
    """ggml activations (int8 blocks / fp16 / bf16): same numbers as reference within 1e-5."""
    n_in = _n_in(qtype)
    w = random_qtensor(qtype, 37, n_in, seed=n_tok)
    x = np.random.default_rng(5).standard_normal((n_tok, n_in)).astype(np.float32)
    got = _check_matmul(w, x)
    # and the activation rounding itself costs at most ~1% of the dot product scale
    exact = reference.matmul(w.data, qtype, n_in, x, "float")
    bound = np.abs(x.astype(np.float64)) @ np.abs(w.dequantize().astype(np.float64)).T
    assert np.all(np.abs(got - exact) <= 1e-2 * bound)


@pytest.mark.parametrize("n_tok", [1, 11])
@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_K", "Q6_K", "Q5_0", "Q3_K", "IQ4_XS"])
def test_matmul_float_activations_match_reference(qtype, n_tok):
    """numerics "float": dequantize-then-matmul in float, within 1e-4."""
    n_in = _n_in(qtype)
    w = random_qtensor(qtype, 37, n_in, seed=n_tok)
    x = np.random.default_rng(6).standard_normal((n_tok, n_in)).astype(np.float32)
    _check_matmul(w, x, "float", tol=1e-4)


@pytest.mark.parametrize("vtype", ["Q8_0", "Q8_K"])
def test_activation_quantizers_bit_exact(vtype):
    from runtime.kernels.matmul import quantize_act
    x = np.random.default_rng(3).standard_normal((3, 512)).astype(np.float32) * 3
    x[1, :256] = 0.0                                  # all-zero block
    x[2, 5] = -40.0                                   # negative max
    q, d, s = quantize_act(x, vtype)
    rq, rd = reference.quantize_activations(x, vtype)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(d, rd)
    np.testing.assert_array_equal(s, rq.reshape(3, -1, 16).sum(axis=-1, dtype=np.int32))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q4_K"])          # Q8_0, Q8_1, Q8_K activations
def test_prefill_activation_roundtrip_bit_exact(monkeypatch, qtype):
    """act_float (the prefill's x as the int8 dots see it, in one Numba pass) is q * d of the reference."""
    mm = importlib.import_module("runtime.kernels.matmul")
    from quant.types import vec_dot_type
    x = np.random.default_rng(3).standard_normal((3, 512)).astype(np.float32) * 3
    x[1, :256] = 0.0
    x[2, 5] = -40.0
    rq, rd = reference.quantize_activations(x, vec_dot_type(qtype))
    want = (rq.reshape(3, rd.shape[1], -1) * rd[..., None]).reshape(3, 512)
    got = mm.act_float(x, get_type(qtype).id)
    np.testing.assert_array_equal(got, want)
    import numba
    before = numba.get_num_threads()
    monkeypatch.setattr(mm, "ACT_PARALLEL_MIN", 0)
    try:                                              # token ranges on two threads
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        np.testing.assert_array_equal(mm.act_float(x, get_type(qtype).id), want)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ3_S", "IQ1_M", "TQ1_0"])
def test_integer_and_float_decode_types_match_reference(qtype):
    """IQ2_XXS/IQ3_S: integer decode kernels; IQ1_M/TQ1_0: the float decode kernel (no integer
    one), both against the reference dequantizer times the activations as ggml sees them."""
    w = random_qtensor(qtype, 5, 256)
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
    got = CPU.matmul(w, x)
    want = reference.activations_as_seen(x, qtype) @ reference.dequantize_rows(w.data, qtype, 256).astype(np.float64).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_prefill_tiles_cover_all_rows(monkeypatch):
    mm = importlib.import_module("runtime.kernels.matmul")
    monkeypatch.setattr(mm, "TILE_BYTES", 4 * 256 * 64)   # 64-row tiles
    monkeypatch.setattr(mm, "TILE_MIN_ROWS", 16)
    w = random_qtensor("Q4_K", 200, 256)
    x = np.random.default_rng(2).standard_normal((9, 256)).astype(np.float32)
    _check_matmul(w, x)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q8_0", "F16", "BF16", "F32", "IQ2_XXS"])
def test_prefill_threads_split_rows_and_tiles(monkeypatch, qtype):
    """Two worker threads, each dequantizing its own 16-row tiles of an odd row count."""
    mm = importlib.import_module("runtime.kernels.matmul")
    monkeypatch.setattr(mm, "TILE_BYTES", 4 * 256 * 16)
    monkeypatch.setattr(mm, "TILE_MIN_ROWS", 16)
    monkeypatch.setattr(mm, "PARALLEL_GEMM_FLOPS", 0)
    import numba
    before = numba.get_num_threads()
    backend.set_num_threads(2)
    try:
        w = random_qtensor(qtype, 203, 256)
        x = np.random.default_rng(4).standard_normal((mm.PREFILL_MIN_TOKENS + 3, 256)).astype(np.float32)
        _check_matmul(w, x)
    finally:
        backend.set_num_threads(before)


def test_block_dequantizer_table_matches_the_type_table():
    """BLOCK_DEQ (what the per-type kernels inline) covers every block type, and each entry decodes
    a block (at the type table's byte offset) as the numpy reference does."""
    from quant.fast import blocks
    from quant.types import BY_ID, TYPES
    assert set(blocks.BLOCK_DEQ) == {TYPES[n].id for n in blocks.BLOCK_TYPES}
    for qt, f in blocks.BLOCK_DEQ.items():
        t = BY_ID[qt]
        nbytes = t.type_size
        w = random_qtensor(t.name, 1, 2 * t.block_size)
        row = np.ascontiguousarray(w.data[0])
        got = np.empty(t.block_size, np.float32)
        f(row, nbytes, got, blocks.F16_LUT)                # the second block
        want = reference.dequantize_rows(w.data, t.name, 2 * t.block_size)[0, t.block_size:]
        np.testing.assert_array_equal(got, want, err_msg=t.name)

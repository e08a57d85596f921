"""Quantized-weight CUDA kernels (runtime/cuda/quants.cu) under CPU emulation, against numpy.

- q8_1 activation blocks: bit-equal to quant's Q8_1 reference quantizer.
- dequantization (get_rows f32, prefill tiles f16): bit-equal to quant's numpy dequantizer
  (f16 tiles: that value rounded to nearest even).
- decode matvec (numerics="fast", ggml-cuda's activations): within 1e-5 of sum|w*x| per
  output (float32 summation; the exact value is the float64 product of the dequantized weight
  and the q8_1 activations as the kernel sees them, or x itself for F32/F16/BF16), for 1, 3
  and 8 tokens, 9 tokens split in two launches.
- prefill (tiles + GEMM, numerics="fast"): within 1e-5 of sum|w*x| of the product of the
  f16-rounded operands (x as the CPU converts it, then rounded to f16; F32/BF16: not rounded).
- numerics="exact" (the CPU's; "fast" is the default): the int8 activation blocks are bit-equal to
  runtime.reference.quantize_activations, and matvec / prefill are within 1e-5 of sum|w*x| of
  the CPU backend's math (activations_as_seen times the dequantized weight).

Each test runs on numpy arrays (the emulated kernels) and, where a GPU and CuPy are there
(tools/conformance/gpu_check.py), again on CuPy arrays (the real kernels). Every kernel runs in the three emulation thread orders (forward, reverse, random) and with
guarded buffers (writes outside an argument fail); every emulated launch with the race check. Shapes are odd: n_out = 5 or 7 rows (not a
multiple of the 4 rows per CTA the launcher picks for rows of 16 chunks), two 256-blocks per
row; test_matvec_rows_per_cta covers 2 and 1 rows per CTA. Random blocks are random bytes with sane fp16
scales (tests/helpers/qtensors.py), so every bit of every layout is exercised.
"""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest

import quant
from quant.types import KERNEL_TYPES, TYPES
from runtime import reference
from runtime.cuda import module
from runtime.cuda import qmatmul as qm
from runtime.cuda.module import emu_options
from tests.helpers.qtensors import random_rows

ORDERS = [dict(order="forward"), dict(order="reverse"), dict(order="random", seed=7)]
TOL = 1e-5


@pytest.fixture(autouse=True)
def _race_check():
    """Every emulated launch here runs with the race check (emu/cuda_emu.h)."""
    with emu_options(race=True):
        yield


def _gpu_skip_reason():
    try:
        module.require_gpu()
        return None
    except module.CudaError as e:
        return str(e)


class Side:
    """Where the kernels run: "emu" (numpy arrays: emulated) or "gpu" (CuPy arrays)."""

    def __init__(self, name):
        self.name = name
        self.xp = np
        if name == "gpu":
            import cupy
            self.xp = cupy

    def put(self, a):
        return a if self.xp is np else self.xp.asarray(a)

    def get(self, a):
        return a if self.xp is np else self.xp.asnumpy(a)


_GPU = _gpu_skip_reason()   # a GPU is needed for the gpu side whether or not emulation is on


@pytest.fixture(params=["emu", pytest.param("gpu", marks=pytest.mark.skipif(
    _GPU is not None, reason=f"no GPU: {_GPU}"))])
def dev(request):
    return Side(request.param)


def ref_dequant(w: np.ndarray, qtype: str, n_in: int) -> np.ndarray:
    return np.asarray(quant.dequantize(w, qtype, backend="numpy"), np.float32).reshape(-1, n_in)


def q8_1_seen(x: np.ndarray) -> np.ndarray:
    """f64[n_tok, n_in]: x as the kernels see it after q8_1 quantization (quant's reference)."""
    b = quant.quantize(x, "Q8_1", backend="numpy")
    return quant.dequantize(b, "Q8_1", backend="numpy").astype(np.float64).reshape(x.shape)


def assert_close(y, exact, scale, what):
    err = np.abs(y.astype(np.float64) - exact)
    bad = err > TOL * scale + 1e-30
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} outputs off; worst error "
                           f"{float((err / (scale + 1e-30)).max()):.3g} of sum|w*x|")


def _xmacro(src: str, name: str) -> list[str]:
    """The entries of quants.cu's X-macro list ``#define NAME(X) X(a) X(b) ...``, upper-cased."""
    body = re.search(rf"#define {name}\(X\)((?:[^\n]*\\\n)*[^\n]*)", src)[1]
    return [e.upper() for e in re.findall(r"X\((\w+)\)", body)]


def test_cuda_type_lists_are_the_table():
    """quants.cu's X-macro lists are quant/types.py's kernel column, in its order; every listed
    type has its layout struct with the table's QK/TS, and its kernels; the activation block
    size is Q8_1's."""
    src = (module.CUDA_DIR / "quants.cu").read_text()
    blocks, floats = _xmacro(src, "QK_BLOCK_TYPES"), _xmacro(src, "QK_FLOAT_TYPES")
    assert floats == [n for n in KERNEL_TYPES if not TYPES[n].is_quantized]
    assert blocks == [n for n in KERNEL_TYPES if TYPES[n].is_quantized]
    assert (tuple(floats), tuple(blocks)) == (qm.FLOAT_TYPES, qm.BLOCK_TYPES)
    found = {m[0]: (int(m[1]), int(m[2]))
             for m in re.findall(r"struct (t\w+) \{[^\n]*\n\s*enum \{ QK = (\d+), TS = (\d+)", src)}
    kernels = set(module.parse_kernels(src))
    for name in blocks:
        t = TYPES[name]
        assert found["t" + name.lower()] == (t.block_size, t.type_size), name
        assert {"mmvq_" + name.lower(), "dequant_" + name.lower()} <= kernels, name
    for name in floats:
        assert {"mmv_" + name.lower(), "dequant_" + name.lower()} <= kernels, name
    common = module.COMMON_HEADER.read_text()          # the block quantizers live in common.cuh
    assert int(re.search(r"#define QK_ACT_BYTES (\d+)", common)[1]) == TYPES["Q8_1"].type_size == qm.Q8_1_BYTES


def test_iq_tables_header_is_generated(tmp_path, monkeypatch):
    """runtime/cuda/iq_tables.cuh is what tools/golden/gen_iq_tables.py writes from
    quant/data/iq_tables.npz, and its --check notices a header that differs."""
    tool = next((module.CUDA_DIR.parents[1] / "tools").rglob("gen_iq_tables.py"))
    spec = importlib.util.spec_from_file_location("gen_iq_tables", tool)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.OUT == module.CUDA_DIR / "iq_tables.cuh"
    monkeypatch.setattr(sys, "argv", [str(tool), "--check"])
    assert gen.main() == 0, "rerun tools/golden/gen_iq_tables.py"
    stale = tmp_path / "iq_tables.cuh"
    stale.write_text(gen.OUT.read_text().replace("0x", "0X", 1))
    monkeypatch.setattr(gen, "OUT", stale)
    assert gen.main() == 1


@pytest.mark.parametrize("opts", ORDERS, ids=lambda o: o["order"])
def test_quantize_q8_1_bit_exact(opts, dev):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 160)).astype(np.float32)
    x[1, 32:64] = 0.0                                   # an all-zero block: d = 0, q = 0
    x[2, 5] = 1e4                                       # one large value
    with emu_options(guard=True, **opts):
        got = dev.get(qm.quantize_q8_1(dev.put(x)))
    want = quant.quantize(x, "Q8_1", backend="numpy")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("qtype", qm.TYPES_SUPPORTED)
def test_dequantize_bit_exact(qtype, dev):
    rng = np.random.default_rng(abs(hash(qtype)) % 2**32)
    n_in = 512 if TYPES[qtype].block_size > 1 else 75
    w = random_rows(qtype, 7, n_in, rng)
    want = ref_dequant(w, qtype, n_in)
    ids = np.array([6, 0, 3, 3], np.int32)
    for opts in ORDERS:
        with emu_options(guard=True, **opts):
            rows = dev.get(qm.get_rows(dev.put(w), qtype, n_in, dev.put(ids)))
            tile = dev.get(qm.dequantize(dev.put(w), qtype, n_in, row0=2, n_rows=5, dtype=np.float16))
        np.testing.assert_array_equal(rows.view(np.uint32), want[ids].view(np.uint32), err_msg=f"{qtype} get_rows")
        np.testing.assert_array_equal(tile.view(np.uint16), want[2:7].astype(np.float16).view(np.uint16),
                                      err_msg=f"{qtype} f16 tile")


@pytest.mark.parametrize("qtype", qm.TYPES_SUPPORTED)
def test_matvec_against_reference(qtype, dev):
    rng = np.random.default_rng(abs(hash(qtype)) % 2**32 + 1)
    n_out, n_in = 5, 512 if TYPES[qtype].block_size > 1 else 75
    w = random_rows(qtype, n_out, n_in, rng)
    wf = ref_dequant(w, qtype, n_in).astype(np.float64)
    for n_tok, opts in zip((1, 3, 8), ORDERS):
        x = rng.standard_normal((n_tok, n_in)).astype(np.float32)
        xs = x.astype(np.float64) if qtype in qm.FLOAT_TYPES else q8_1_seen(x)
        with emu_options(guard=True, **opts):
            y = dev.get(qm.matvec(dev.put(w), qtype, n_out, n_in, dev.put(x), numerics="fast"))
        assert y.shape == (n_tok, n_out)
        assert_close(y, xs @ wf.T, np.abs(xs) @ np.abs(wf).T, f"{qtype} n_tok={n_tok} {opts['order']}")


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_K", "IQ4_XS"])
@pytest.mark.parametrize("n_in", [1536, 2304])
def test_matvec_rows_per_cta(qtype, n_in, dev):
    """2 rows per CTA (48 chunks) and 1 (72 chunks); the tests above use 4 (16 chunks); n_out odd."""
    rng = np.random.default_rng(n_in)
    n_out = 3
    assert qm.rows_per_cta(n_in) == (2 if n_in == 1536 else 1)
    w = random_rows(qtype, n_out, n_in, rng)
    wf = ref_dequant(w, qtype, n_in).astype(np.float64)
    x = rng.standard_normal((2, n_in)).astype(np.float32)
    xs = x.astype(np.float64) if qtype in qm.FLOAT_TYPES else q8_1_seen(x)
    with emu_options(guard=True, order="random", seed=n_in):
        y = dev.get(qm.matvec(dev.put(w), qtype, n_out, n_in, dev.put(x), numerics="fast"))
    assert_close(y, xs @ wf.T, np.abs(xs) @ np.abs(wf).T, f"{qtype} n_in={n_in}")


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_K", "IQ2_XXS"])
def test_matvec_splits_more_than_8_tokens(qtype, dev):
    rng = np.random.default_rng(5)
    n_out, n_in = 3, 256
    w = dev.put(random_rows(qtype, n_out, n_in, rng))
    x = rng.standard_normal((9, n_in)).astype(np.float32)
    y = dev.get(qm.matvec(w, qtype, n_out, n_in, dev.put(x)))
    for t0 in (0, 8):
        np.testing.assert_array_equal(y[t0:t0 + 8], dev.get(qm.matvec(w, qtype, n_out, n_in, dev.put(x[t0:t0 + 8]))))


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q4_0", "Q4_K", "Q6_K", "IQ3_S", "IQ4_XS"])
def test_matmul_prefill_tiles(qtype, monkeypatch, dev):
    rng = np.random.default_rng(11)
    n_out, n_in, n_tok = 7, 256, 12
    w = random_rows(qtype, n_out, n_in, rng)
    x = rng.standard_normal((n_tok, n_in)).astype(np.float32)
    monkeypatch.setattr(qm, "TILE_BYTES", 3 * 2 * n_in)          # 64-row minimum tile: one tile
    wf = ref_dequant(w, qtype, n_in).astype(np.float64)
    xs = np.asarray(reference.activations_as_seen(x, qtype), np.float64)   # x as the CPU converts it
    if qtype in ("F32", "BF16"):
        wr = wf
    else:
        xs = xs.astype(np.float32).astype(np.float16).astype(np.float64)
        wr = wf.astype(np.float16).astype(np.float64)
    y = dev.get(qm.matmul(dev.put(w), qtype, n_out, n_in, dev.put(x), numerics="fast"))
    assert y.shape == (n_tok, n_out) and y.dtype == np.float32
    assert_close(y, xs @ wr.T, np.abs(xs) @ np.abs(wr).T, f"{qtype} prefill")


def test_matmul_small_batch_is_matvec(dev):
    rng = np.random.default_rng(3)
    w = dev.put(random_rows("Q5_K", 4, 256, rng))
    x = dev.put(rng.standard_normal((2, 256)).astype(np.float32))
    np.testing.assert_array_equal(dev.get(qm.matmul(w, "Q5_K", 4, 256, x)), dev.get(qm.matvec(w, "Q5_K", 4, 256, x)))


def test_out_and_reused_workspace(dev):
    """out= is written in place; a second call with other activations reuses the workspace."""
    rng = np.random.default_rng(4)
    w = dev.put(random_rows("Q6_K", 3, 256, rng))
    x1 = dev.put(rng.standard_normal((2, 256)).astype(np.float32))
    x2 = dev.put(rng.standard_normal((2, 256)).astype(np.float32))
    out = dev.xp.zeros((2, 3), np.float32)
    assert qm.matmul(w, "Q6_K", 3, 256, x1, out=out) is out
    first = dev.get(out).copy()
    np.testing.assert_array_equal(dev.get(qm.matvec(w, "Q6_K", 3, 256, x2)),
                                  dev.get(qm.matvec(w, "Q6_K", 3, 256, x2)))
    np.testing.assert_array_equal(first, dev.get(qm.matvec(w, "Q6_K", 3, 256, x1)))
    with pytest.raises(module.CudaError, match="out is"):
        qm.matvec(w, "Q6_K", 3, 256, x1, out=dev.xp.zeros((3, 2), np.float32))


def test_errors_name_the_problem():
    w = np.zeros((2, 18), np.uint8)
    with pytest.raises(module.CudaError, match="multiple of the block size"):
        qm.matvec(w, "Q4_0", 2, 48, np.zeros((1, 48), np.float32))
    with pytest.raises(module.CudaError, match="no CUDA kernel for weight type Q8_K"):
        qm.matvec(w, "Q8_K", 1, 256, np.zeros((1, 256), np.float32))


# ---------------------------------------------------------------- "exact" numerics: the CPU backend's activations

@pytest.mark.parametrize("vtype", ["Q8_0", "Q8_K"])
def test_quantize_act_cpu_bit_exact(vtype, dev):
    """quantize_q8_cpu == runtime.reference.quantize_activations (q and d), ties included."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    x[0, 10], x[0, 200] = -4.5, 4.5                     # Q8_K: the first of equal |x| sets the sign
    x[1, 256:] = 0.0                                    # an all-zero super-block
    x[2, 0:32] = 0.0                                    # an all-zero block
    x[2, 40] = 0.5 / 127 * 3                            # values on .5 after scaling
    with emu_options(guard=True, order="reverse"):
        blocks = dev.get(qm.quantize_act_cpu(dev.put(x), vtype))
    q, d = reference.quantize_activations(x, vtype)
    b = blocks.reshape(3, 16, qm.Q8_1_BYTES)
    np.testing.assert_array_equal(b[..., 4:].view(np.int8).reshape(3, 512), q)
    per = 8 if vtype == "Q8_K" else 1
    np.testing.assert_array_equal(b[..., 0:4].copy().view(np.float32).reshape(3, 16), np.repeat(d, per, axis=1))


@pytest.mark.parametrize("qtype", qm.TYPES_SUPPORTED)
def test_matvec_exact_numerics_matches_cpu_reference(qtype, dev):
    """The "exact" numerics: the CPU backend's product (runtime.reference.matmul's math: x as ggml-cpu
    converts it for the weight type, times the dequantized weight), up to summation order."""
    rng = np.random.default_rng(abs(hash(qtype)) % 2**32 + 2)
    n_out, n_in = 5, 512 if TYPES[qtype].block_size > 1 else 75
    w = random_rows(qtype, n_out, n_in, rng)
    wf = ref_dequant(w, qtype, n_in).astype(np.float64)
    for n_tok, opts in zip((1, 8), ORDERS):
        x = rng.standard_normal((n_tok, n_in)).astype(np.float32)
        xs = reference.activations_as_seen(x, qtype)
        with emu_options(guard=True, **opts):
            y = dev.get(qm.matvec(dev.put(w), qtype, n_out, n_in, dev.put(x), numerics="exact"))
        assert_close(y, xs @ wf.T, np.abs(xs) @ np.abs(wf).T, f"{qtype} exact numerics n_tok={n_tok}")


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q5_1", "Q4_K", "IQ2_S", "Q2_0"])
def test_matmul_prefill_exact_numerics(qtype, dev):
    rng = np.random.default_rng(13)
    n_out, n_in, n_tok = 7, 256, 10
    w = random_rows(qtype, n_out, n_in, rng)
    x = rng.standard_normal((n_tok, n_in)).astype(np.float32)
    wf = ref_dequant(w, qtype, n_in).astype(np.float64)
    xs = reference.activations_as_seen(x, qtype)
    y = dev.get(qm.matmul(dev.put(w), qtype, n_out, n_in, dev.put(x), numerics="exact"))
    assert_close(y, xs @ wf.T, np.abs(xs) @ np.abs(wf).T, f"{qtype} exact numerics prefill")

"""The fused decode kernels (runtime.cuda.ops: add_rms_norm, glu, rope_kv, attention with its
output quantized, attention past its keys' splits) against the chains of kernels they replace,
bit for bit, and those against runtime/reference.py; emulated in forward, reverse and random
thread order with the guard on (and on CuPy when a GPU is present: the ``side`` fixture)."""
import numpy as np
import pytest

from runtime import reference as ref
from runtime.cuda import ops
from runtime.cuda import qmatmul as qm
from runtime.cuda.module import CudaError
from tests.runtime.cuda.test_cuda_kernels import rnd, side  # noqa: F401 - the fixture

MODES = (qm.ACT_NONE, qm.ACT_Q8_1, qm.ACT_Q8_0_CPU, qm.ACT_Q8_K_CPU)


def _quant(side, y, mode):
    return side.h(qm.quantize_act(side.d(np.ascontiguousarray(y.reshape(y.shape[0], -1))), mode))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("with_b,with_w", [(True, True), (False, True), (True, False)])
def test_add_rms_norm(side, mode, with_b, with_w):
    n = 512
    a, b = rnd(3, n, seed=1, scale=3.0), rnd(3, n, seed=2)
    w = rnd(n, seed=3) if with_w else None
    s, y, yq = ops.add_rms_norm(side.d(a), side.d(b) if with_b else None, None if w is None else side.d(w),
                                1e-5, mode)
    want_s = a + b if with_b else a
    np.testing.assert_array_equal(side.h(s), want_s)
    want_y = ref.rms_norm(want_s, w, 1e-5)
    np.testing.assert_array_equal(side.h(y), want_y)
    np.testing.assert_array_equal(side.h(y), side.h(ops.rms_norm(side.d(want_s), None if w is None else side.d(w),
                                                                 1e-5)))
    if mode == qm.ACT_NONE:
        assert yq is None
    else:
        np.testing.assert_array_equal(side.h(yq), _quant(side, want_y, mode))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["silu", "silu_f64", "gelu"])
def test_glu(side, mode, kind):
    n = 768 if mode != qm.ACT_Q8_K_CPU else 512
    g, u = rnd(2, n, seed=4, scale=4.0), rnd(2, n, seed=5)
    g[0, :4] = [-12.0, 12.0, -10.0, 10.0]
    y, yq = ops.glu(side.d(g), side.d(u), kind, mode)
    chain = ops.geglu(side.d(g), side.d(u)) if kind == "gelu" else \
        ops.swiglu(side.d(g), side.d(u), f64=kind == "silu_f64")
    np.testing.assert_array_equal(side.h(y), side.h(chain))
    if kind != "silu":      # the f64 silu and the table gelu are the reference's floats
        np.testing.assert_array_equal(side.h(y), ref.geglu(g, u) if kind == "gelu" else ref.swiglu(g, u))
    if mode == qm.ACT_NONE:
        assert yq is None
    else:
        np.testing.assert_array_equal(side.h(yq), _quant(side, side.h(y), mode))


def test_glu_odd_length_unquantized(side):
    g, u = rnd(1, 37, seed=6), rnd(1, 37, seed=7)
    y, _ = ops.glu(side.d(g), side.d(u), "silu")
    np.testing.assert_array_equal(side.h(y), side.h(ops.swiglu(side.d(g), side.d(u))))


@pytest.mark.parametrize("mode", ["norm", "neox"])
@pytest.mark.parametrize("hd,n_rot,ff,qs", [(64, 64, False, 0.125), (80, 64, True, 1.0), (6, 4, True, 0.5)])
def test_rope_kv(side, mode, hd, n_rot, ff, qs):
    n_tok, n_head, n_kv, n_ctx = 2, 6, 2, 9
    q, k, v = rnd(n_tok, n_head, hd, seed=8), rnd(n_tok, n_kv, hd, seed=9), rnd(n_tok, n_kv, hd, seed=10)
    pos = np.array([3, 7], np.int32)
    factors = (1.0 + np.random.default_rng(2).random(n_rot // 2) * 8).astype(np.float32) if ff else None
    fs = 0.5 if ff else 1.0
    dfac = None if factors is None else side.d(factors)
    kc, vc = side.d(np.zeros((n_ctx, n_kv, hd), np.float16)), side.d(np.zeros((n_ctx, n_kv, hd), np.float16))
    qo = ops.rope_kv(side.d(q), side.d(k), side.d(v), kc, vc, side.d(pos), n_rot, 10000.0, fs, dfac, mode, qs)
    # the chain it replaces
    dpos = side.d(pos)
    want_q = ops.scale(ops.rope(side.d(q), dpos, n_rot, 10000.0, fs, dfac, mode), qs)
    kc2, vc2 = side.d(np.zeros((n_ctx, n_kv, hd), np.float16)), side.d(np.zeros((n_ctx, n_kv, hd), np.float16))
    ops.kv_write(ops.rope(side.d(k), dpos, n_rot, 10000.0, fs, dfac, mode), kc2, dpos)
    ops.kv_write(side.d(v), vc2, dpos)
    np.testing.assert_array_equal(side.h(qo), side.h(want_q))
    np.testing.assert_array_equal(side.h(kc), side.h(kc2))
    np.testing.assert_array_equal(side.h(vc), side.h(vc2))
    np.testing.assert_allclose(side.h(qo), ref.rope(q, pos, n_rot, 10000.0, fs, factors, mode) * np.float32(qs),
                               rtol=0, atol=2e-6)
    untouched = np.setdiff1d(np.arange(n_ctx), pos)
    assert not side.h(kc)[untouched].any() and not side.h(vc)[untouched].any()


@pytest.mark.parametrize("f64", [False, True])
@pytest.mark.parametrize("qmode", MODES)
def test_attention_fixed_grid_and_fused_output(side, f64, qmode):
    """pos read from device memory, a grid sized for the whole context (the splits past the
    keys exit), and the output quantized in the combine kernel: the same floats as the
    launch sized for n_past, and the same blocks as quantizing afterwards."""
    n_ctx, n_kv, n_head, hd, n_past = 700, 2, 4, 64, 300
    kc = rnd(n_ctx, n_kv, hd, seed=11).astype(np.float16)
    vc = rnd(n_ctx, n_kv, hd, seed=12).astype(np.float16)
    q = rnd(1, n_head, hd, seed=13)
    want = side.h(ops.attention(side.d(q), side.d(kc), side.d(vc), n_past, 0.125, f64=f64))
    np.testing.assert_allclose(want, ref.attention(q, kc, vc, n_past, 0.125), rtol=1e-5, atol=1e-6)
    pos = side.d(np.array([n_past], np.int32))
    yq = side.d(np.zeros((1, qm.act_row_bytes(n_head * hd)), np.uint8)) if qmode else None
    got = ops.attention(side.d(q), side.d(kc), side.d(vc), n_past, 0.125, f64=f64, pos=pos,
                        n_split=ops.decode_splits(n_ctx), qmode=qmode, yq=yq)
    np.testing.assert_array_equal(side.h(got), want)
    if qmode:
        np.testing.assert_array_equal(side.h(yq), _quant(side, want, qmode))


def test_fused_errors():
    a = np.zeros((2, 48), np.float32)
    with pytest.raises(CudaError, match="multiple of 32"):
        ops.add_rms_norm(a, None, None, 1e-5, qm.ACT_Q8_1)
    with pytest.raises(CudaError, match="multiple of 256"):
        ops.glu(np.zeros((1, 64), np.float32), np.zeros((1, 64), np.float32), "silu", qm.ACT_Q8_K_CPU)
    with pytest.raises(CudaError, match="unknown kind"):
        ops.glu(a, a, "relu")
    q, kc = np.zeros((1, 2, 48), np.float32), np.zeros((8, 1, 48), np.float16)
    with pytest.raises(CudaError, match="no fused output format"):
        ops.attention(q, kc, kc, 3, 1.0, qmode=qm.ACT_Q8_1, yq=np.zeros(1, np.uint8))
    with pytest.raises(CudaError, match="no fused output format"):     # 2 heads of 64: half a Q8_K unit
        ops.attention(np.zeros((1, 2, 64), np.float32), np.zeros((8, 1, 64), np.float16),
                      np.zeros((8, 1, 64), np.float16), 3, 1.0, qmode=qm.ACT_Q8_K_CPU, yq=np.zeros(1, np.uint8))
    with pytest.raises(CudaError, match="splits for"):
        ops.attention(np.zeros((1, 2, 64), np.float32), np.zeros((600, 1, 64), np.float16),
                      np.zeros((600, 1, 64), np.float16), 590, 1.0, n_split=1)

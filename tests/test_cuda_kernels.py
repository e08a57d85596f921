"""Every non-quantized CUDA kernel (runtime/cuda/*.cu via runtime.cuda.ops) against the numpy
references in runtime/reference.py, emulated on the CPU in forward, reverse and random thread
order, on random data with odd shapes. Needs only g++ (the kernels are compiled once per source
hash and cached under ~/.cache/ggufkit/cuda-emu)."""
import shutil

import numpy as np
import pytest

from runtime import reference as ref
from runtime.cuda import ops
from runtime.cuda.module import CudaError, emu_options

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")

ORDERS = ("forward", "reverse", "random")


@pytest.fixture(params=ORDERS)
def order(request):
    with emu_options(order=request.param, seed=7, guard=True):
        yield request.param


def rnd(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("n,with_w", [(1, True), (37, False), (1000, True), (4097, True)])
def test_rms_norm(order, n, with_w):
    x = rnd(3, n, seed=n)
    w = rnd(n, seed=n + 1) if with_w else None
    y = ops.rms_norm(x, w, 1e-6)
    np.testing.assert_allclose(y, ref.rms_norm(x, w, 1e-6), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["norm", "neox"])
@pytest.mark.parametrize("hd,n_rot,ff", [(64, 64, False), (80, 64, True), (256, 256, False), (6, 4, True)])
def test_rope(order, mode, hd, n_rot, ff):
    n_tok, n_head = 3, 5
    x = rnd(n_tok, n_head, hd, seed=hd)
    pos = np.array([0, 17, 4093], np.int32)
    factors = (1.0 + np.random.default_rng(2).random(n_rot // 2) * 8).astype(np.float32) if ff else None
    y = ops.rope(x, pos, n_rot, 10000.0, 0.5 if ff else 1.0, factors, mode)
    want = ref.rope(x, pos, n_rot, 10000.0, 0.5 if ff else 1.0, factors, mode)
    # theta as the same float32 running product, cos/sin in double: equal up to libm's last bit
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)
    z = x.copy()
    ops.rope(z, pos, n_rot, 10000.0, 0.5 if ff else 1.0, factors, mode, out=z)   # in place
    np.testing.assert_array_equal(z, y)


@pytest.mark.parametrize("n", [1, 255, 1000])
def test_swiglu_geglu(order, n):
    g, u = rnd(2, n, seed=1, scale=4.0), rnd(2, n, seed=2)
    g[0, :4] = [-12.0, 12.0, -10.0, 10.0][: min(4, n)] if n >= 4 else g[0, :n]
    np.testing.assert_allclose(ops.swiglu(g, u), ref.swiglu(g, u), rtol=3e-6, atol=1e-7)
    got, want = ops.geglu(g, u), ref.geglu(g, u)
    # fp16 table value: identical except where float tanh and double tanh round to different halves
    assert (got == want).mean() > 0.99
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)


def test_add_scale_softcap(order):
    a, b = rnd(7, 131, seed=3), rnd(7, 131, seed=4)
    np.testing.assert_array_equal(ops.add(a, b), a + b)
    np.testing.assert_array_equal(ops.scale(a, 0.37), a * np.float32(0.37))
    x = rnd(3, 333, seed=5, scale=60.0)
    np.testing.assert_allclose(ops.softcap(x, 30.0), 30.0 * np.tanh(x.astype(np.float64) / 30.0), rtol=2e-6, atol=1e-6)
    c = a.copy()
    ops.add(c, b, out=c)
    np.testing.assert_array_equal(c, a + b)


def test_kv_write(order):
    n_ctx, n_kv, hd = 11, 3, 40
    cache = np.zeros((n_ctx, n_kv, hd), np.float16)
    src = rnd(4, n_kv, hd, seed=6, scale=100.0)
    pos = np.array([7, 0, 10, 3], np.int32)
    ops.kv_write(src, cache, pos)
    want = np.zeros_like(cache)
    want[pos] = src.astype(np.float16)
    np.testing.assert_array_equal(cache.view(np.uint16), want.view(np.uint16))


def test_launcher_errors():
    with pytest.raises(CudaError, match="expected float32"):
        ops.rms_norm(np.zeros((2, 4)), None, 1e-5)
    with pytest.raises(CudaError, match="pos must be int32"):
        ops.rope(rnd(2, 1, 8), np.array([0, 1]), 8, 1e4)
    with pytest.raises(CudaError, match="shapes"):
        ops.add(rnd(3), rnd(4))


def _cache(n_ctx, n_kv, hd, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_ctx, n_kv, hd)).astype(np.float16),
            rng.standard_normal((n_ctx, n_kv, hd)).astype(np.float16))


ATT_CASES = [
    # n_tok, n_head, n_kv, hd, n_past, window, softcap
    (1, 4, 2, 64, 40, None, None),
    (1, 6, 2, 80, 700, None, 50.0),     # several decode chunks, GQA 3
    (3, 2, 1, 256, 300, 128, None),     # sliding window, head_dim 256
    (1, 3, 3, 32, 0, None, None),       # first token
]


@pytest.mark.parametrize("case", ATT_CASES)
def test_attention_decode(order, case):
    n_tok, n_head, n_kv, hd, n_past, window, cap = case
    k, v = _cache(n_past + n_tok + 5, n_kv, hd, seed=hd)
    q = rnd(n_tok, n_head, hd, seed=n_past)
    scale = 1.0 / np.sqrt(hd)
    got = ops.attention_decode(q, k, v, n_past, scale, window, cap, split_keys=128)
    np.testing.assert_allclose(got, ref.attention(q, k, v, n_past, scale, window, cap), rtol=1e-4, atol=2e-5)


PREFILL_CASES = [
    (9, 4, 2, 64, 0, None, None),
    (6, 2, 2, 96, 37, None, 30.0),
    (13, 3, 1, 40, 5, 7, None),         # window smaller than the batch
]


@pytest.mark.parametrize("case", PREFILL_CASES)
def test_attention_prefill(order, case):
    n_tok, n_head, n_kv, hd, n_past, window, cap = case
    k, v = _cache(n_past + n_tok, n_kv, hd, seed=hd + 1)
    q = rnd(n_tok, n_head, hd, seed=n_tok)
    scale = 1.0 / np.sqrt(hd)
    want = ref.attention(q, k, v, n_past, scale, window, cap)
    np.testing.assert_allclose(ops.attention_prefill(q, k, v, n_past, scale, window, cap), want, rtol=1e-4, atol=2e-5)
    if order == "forward":   # the decode kernels handle several query rows too
        np.testing.assert_allclose(ops.attention_decode(q, k, v, n_past, scale, window, cap, split_keys=16),
                                   want, rtol=1e-4, atol=2e-5)


def test_attention_errors():
    k, v = _cache(8, 2, 16, 0)
    with pytest.raises(CudaError, match="context overflow"):
        ops.attention(rnd(2, 4, 16), k, v, 7, 0.25)
    with pytest.raises(CudaError, match="do not group"):
        ops.attention(rnd(1, 3, 16), k, v, 0, 0.25)

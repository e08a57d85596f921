"""Every non-quantized CUDA kernel (runtime/cuda/*.cu via runtime.cuda.ops) against the numpy
references in runtime/reference.py, emulated on the CPU in forward, reverse and random thread
order (random block order), with the out-of-bounds guard and the race check, on random data with
odd shapes. Needs only g++ (the kernels are compiled once per source
hash and cached under ~/.cache/ggufkit/cuda-emu)."""
import shutil

import numpy as np
import pytest

from runtime import backend as B
from runtime import reference as ref
from runtime.cuda import ops
from runtime.cuda.module import CudaError, emu_options

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")

ORDERS = ("forward", "reverse", "random")


def _gpu_present() -> bool:
    try:
        from runtime.cuda.module import require_gpu
        require_gpu()
        return True
    except Exception:  # noqa: BLE001 - no CuPy / driver / device
        return False


SIDES = [("emu", o) for o in ORDERS] + ([("gpu", None)] if _gpu_present() else [])


class Side:
    """Where a test's kernels run: emulated (numpy arrays, one thread order) or on the GPU."""

    def __init__(self, kind, order):
        self.kind, self.order = kind, order
        if kind == "gpu":
            import cupy
            self.cp = cupy

    def d(self, a):
        """host array -> device array"""
        return a if self.kind == "emu" else self.cp.asarray(a)

    def h(self, a):
        """device array -> host array"""
        return a if self.kind == "emu" else self.cp.asnumpy(a)


@pytest.fixture(params=SIDES, ids=lambda s: s[1] or s[0])
def side(request):
    kind, order = request.param
    if kind == "emu":
        with emu_options(order=order, seed=7, guard=True, race=True):
            yield Side(kind, order)
    else:
        yield Side(kind, order)


def rnd(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("n,with_w", [(1, True), (37, False), (1000, True), (4097, True)])
def test_rms_norm(side, n, with_w):
    x = rnd(3, n, seed=n)
    w = rnd(n, seed=n + 1) if with_w else None
    y = side.h(ops.rms_norm(side.d(x), None if w is None else side.d(w), 1e-6))
    # the double sum of float squares makes it the CPU's (and ggml-cpu's) result bit for bit
    np.testing.assert_array_equal(y, ref.rms_norm(x, w, 1e-6))
    np.testing.assert_array_equal(y, B.CPU.rms_norm(x, w, 1e-6))


@pytest.mark.parametrize("mode", ["norm", "neox"])
@pytest.mark.parametrize("hd,n_rot,ff", [(64, 64, False), (80, 64, True), (256, 256, False), (6, 4, True)])
def test_rope(side, mode, hd, n_rot, ff):
    n_tok, n_head = 3, 5
    x = rnd(n_tok, n_head, hd, seed=hd)
    pos = np.array([0, 17, 4093], np.int32)
    factors = (1.0 + np.random.default_rng(2).random(n_rot // 2) * 8).astype(np.float32) if ff else None
    fs = 0.5 if ff else 1.0
    dfac = None if factors is None else side.d(factors)
    y = side.h(ops.rope(side.d(x), side.d(pos), n_rot, 10000.0, fs, dfac, mode))
    want = ref.rope(x, pos, n_rot, 10000.0, fs, factors, mode)
    # theta as the same float32 running product, cos/sin in double: equal up to libm's last bit
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)
    z = side.d(x.copy())
    ops.rope(z, side.d(pos), n_rot, 10000.0, fs, dfac, mode, out=z)   # in place
    np.testing.assert_array_equal(side.h(z), y)


@pytest.mark.parametrize("n", [1, 255, 1000])
def test_swiglu_geglu(side, n):
    g, u = rnd(2, n, seed=1, scale=4.0), rnd(2, n, seed=2)
    if n >= 4:
        g[0, :4] = [-12.0, 12.0, -10.0, 10.0]
    np.testing.assert_allclose(side.h(ops.swiglu(side.d(g), side.d(u))), ref.swiglu(g, u), rtol=3e-6, atol=1e-7)
    # silu in double, rounded once: the reference's and the CPU backend's floats
    np.testing.assert_array_equal(side.h(ops.swiglu(side.d(g), side.d(u), f64=True)), ref.swiglu(g, u))
    np.testing.assert_array_equal(B.CPU.swiglu(g, u), ref.swiglu(g, u))
    got, want = side.h(ops.geglu(side.d(g), side.d(u))), ref.geglu(g, u)
    # the fp16 table value, tanh in double rounded to float as the CPU's table: identical
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(B.CPU.geglu(g, u), want)


def test_add_scale_softcap(side):
    a, b = rnd(7, 131, seed=3), rnd(7, 131, seed=4)
    np.testing.assert_array_equal(side.h(ops.add(side.d(a), side.d(b))), a + b)
    np.testing.assert_array_equal(side.h(ops.scale(side.d(a), 0.37)), a * np.float32(0.37))
    x = rnd(3, 333, seed=5, scale=60.0)
    got = side.h(ops.softcap(side.d(x), 30.0))
    np.testing.assert_allclose(got, 30.0 * np.tanh(x.astype(np.float64) / 30.0), rtol=2e-6, atol=1e-6)
    from runtime.backend import CPU
    np.testing.assert_array_equal(got, CPU.softcap(x, 30.0))   # the CPU backend's floats
    c = side.d(a.copy())
    ops.add(c, side.d(b), out=c)
    np.testing.assert_array_equal(side.h(c), a + b)


def test_kv_write(side):
    n_ctx, n_kv, hd = 11, 3, 40
    cache = side.d(np.zeros((n_ctx, n_kv, hd), np.float16))
    src = rnd(4, n_kv, hd, seed=6, scale=100.0)
    pos = np.array([7, 0, 10, 3], np.int32)
    ops.kv_write(side.d(src), cache, side.d(pos))
    want = np.zeros((n_ctx, n_kv, hd), np.float16)
    want[pos] = src.astype(np.float16)
    np.testing.assert_array_equal(side.h(cache).view(np.uint16), want.view(np.uint16))


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


def _assert_rounded_exact(got, want):
    """got is the float64 attention rounded to float: bit-equal to want (the float64 reference
    rounded once) but for rare 1-ulp ties (an error of ~2^-45 either side of a rounding
    boundary). The float kernels miss this in most elements (by a few ulps)."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1 and (ulps == 0).mean() >= 0.999, (ulps.max(), (ulps == 0).mean())


@pytest.mark.parametrize("case", ATT_CASES)
def test_attention_decode(side, case):
    n_tok, n_head, n_kv, hd, n_past, window, cap = case
    k, v = _cache(n_past + n_tok + 5, n_kv, hd, seed=hd)
    q = rnd(n_tok, n_head, hd, seed=n_past)
    scale = 1.0 / np.sqrt(hd)
    got = side.h(ops.attention_decode(side.d(q), side.d(k), side.d(v), n_past, scale, window, cap, split_keys=128))
    want = ref.attention(q, k, v, n_past, scale, window, cap)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    got = side.h(ops.attention_decode(side.d(q), side.d(k), side.d(v), n_past, scale, window, cap, split_keys=128,
                                      f64=True))
    _assert_rounded_exact(got, want)
    _assert_rounded_exact(B.CPU.attention(q, k, v, n_past, scale, window, cap), want)   # the CPU backend


PREFILL_CASES = [
    (9, 4, 2, 64, 0, None, None),
    (6, 2, 2, 96, 37, None, 30.0),
    (13, 3, 1, 40, 5, 7, None),         # window smaller than the batch
    (5, 2, 1, 256, 3, None, None),      # the head_dim 256 variant
    (7, 4, 4, 128, 0, 4, 20.0),         # the 128 variant, MHA, window and softcap
]


@pytest.mark.parametrize("case", PREFILL_CASES)
def test_attention_prefill(side, case):
    n_tok, n_head, n_kv, hd, n_past, window, cap = case
    k, v = _cache(n_past + n_tok, n_kv, hd, seed=hd + 1)
    q = rnd(n_tok, n_head, hd, seed=n_tok)
    scale = 1.0 / np.sqrt(hd)
    want = ref.attention(q, k, v, n_past, scale, window, cap)
    dq, dk, dv = side.d(q), side.d(k), side.d(v)
    np.testing.assert_allclose(side.h(ops.attention_prefill(dq, dk, dv, n_past, scale, window, cap)), want,
                               rtol=1e-4, atol=2e-5)
    _assert_rounded_exact(side.h(ops.attention_prefill(dq, dk, dv, n_past, scale, window, cap, f64=True)), want)
    _assert_rounded_exact(B.CPU.attention(q, k, v, n_past, scale, window, cap), want)   # the CPU backend
    if side.order in ("forward", None):   # the decode kernels handle several query rows too
        got = side.h(ops.attention_decode(dq, dk, dv, n_past, scale, window, cap, split_keys=16))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
        got = side.h(ops.attention_decode(dq, dk, dv, n_past, scale, window, cap, split_keys=16, f64=True))
        _assert_rounded_exact(got, want)


def test_attention_errors():
    k, v = _cache(8, 2, 16, 0)
    with pytest.raises(CudaError, match="context overflow"):
        ops.attention(rnd(2, 4, 16), k, v, 7, 0.25)
    with pytest.raises(CudaError, match="do not group"):
        ops.attention(rnd(1, 3, 16), k, v, 0, 0.25)


def _logits(n, seed, ties=True):
    x = rnd(n, seed=seed, scale=3.0)
    if ties:   # equal values: the lower token id ranks first, as a stable argsort
        x[np.random.default_rng(seed).integers(0, n, n // 10)] = x.max()
        x[:3] = -np.inf
    return x


@pytest.mark.parametrize("n", [1, 31, 1000, 5003])
def test_argmax(side, n):
    for seed in range(3):
        x = _logits(n, seed, ties=n > 3) if n > 1 else np.array([2.0], np.float32)
        assert int(side.h(ops.argmax(side.d(x)))[0]) == int(np.argmax(x))


def test_repeat_penalty(side):
    from runtime.generate import SamplingParams, sample
    x = _logits(300, 1)
    hist = [5, 7, 5, 100, 7, 7, 299, 0]
    got = side.h(ops.repeat_penalty(side.d(x.copy()), side.d(np.array(hist, np.int32)), 1.3))
    want = x.copy()
    last = np.unique(hist)
    v = want[last]
    want[last] = np.where(v <= 0, v * 1.3, v / 1.3)
    np.testing.assert_array_equal(got, want)
    p = SamplingParams(temp=0.0, repeat_penalty=1.3, repeat_last_n=64)
    assert ops.sample(side.d(x.copy()), p, None, hist) == sample(x, p, None, hist)


@pytest.mark.parametrize("n,top_k,top_p,min_p,temp", [
    (1000, 40, 0.95, 0.05, 0.8),      # llama.cpp's defaults
    (3000, 7, 1.0, 0.0, 1.5),         # several candidate chunks; no top-p / min-p
    (300, 60, 0.5, 0.0, 0.3),
    (50, 256, 0.99, 0.2, 1.0),        # top_k beyond the vocabulary
])
def test_sample_top_k_matches_generate(side, n, top_k, top_p, min_p, temp):
    from runtime.generate import SamplingParams, sample
    p = SamplingParams(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=1.1)
    hist = list(range(0, min(n, 60), 3))
    picks = set()
    for seed in range(2 if side.kind == "emu" else 6):
        x = _logits(n, seed + 10, ties=seed % 2 == 0)
        got = ops.sample(side.d(x.copy()), p, np.random.default_rng(seed), hist)
        assert got == sample(x, p, np.random.default_rng(seed), hist), (seed, got)
        picks.add(got)


def test_sample_top_k_distribution():
    # 6 tokens, top_k 4, no top-p/min-p: draws follow softmax(x[top4] / temp)
    x = np.array([0.1, 2.0, 1.5, -1.0, 1.9, 0.3], np.float32)
    counts = np.zeros(6)
    us = (np.arange(200) + 0.5) / 200
    for u in us:
        counts[int(ops.sample_top_k(x, 4, 1.0, 0.0, 0.7, u)[0])] += 1
    keep = [1, 4, 2, 5]
    p = np.exp(x[keep] / 0.7 - (x[keep] / 0.7).max())
    p /= p.sum()
    np.testing.assert_allclose(counts[keep] / 200, p, atol=1.5 / 200)   # u on a grid: quantile error only
    assert counts[[0, 3]].sum() == 0


def test_sample_errors():
    with pytest.raises(CudaError, match="top_k 1..256"):
        ops.sample_top_k(rnd(100), 0, 1.0, 0.0, 1.0, 0.5)
    with pytest.raises(CudaError, match="temp > 0"):
        ops.sample_top_k(rnd(100), 5, 1.0, 0.0, 0.0, 0.5)

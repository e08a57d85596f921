"""Numba / float32 kernels for rope, attention and the gated activations against
their numpy references in runtime.reference."""

import numpy as np
import pytest

from runtime import reference
from runtime.backend import CPU

rng = np.random.default_rng(7)


@pytest.mark.parametrize("mode", ["norm", "neox"])
@pytest.mark.parametrize("with_ff", [False, True])
def test_rope_kernel_matches_reference(mode, with_ff):
    n_tok, n_head, hd, n_rot = 5, 3, 24, 16
    x = rng.standard_normal((n_tok, n_head, hd)).astype(np.float32)
    pos = np.array([0, 3, 99, 4097, 131000], np.int32)
    ff = (1.0 + 7 * rng.random(n_rot // 2)).astype(np.float32) if with_ff else None
    got = CPU.rope(x, pos, n_rot, 500000.0, 1.0, ff, mode)
    want = reference.rope(x, pos, n_rot, 500000.0, 1.0, ff, mode)
    # same float32 ops in the same order; cos/sin of the same float64 argument
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[..., n_rot:], x[..., n_rot:])


@pytest.mark.parametrize("cache_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("n_tok,n_past,window,softcap", [(1, 9, None, None), (6, 0, None, None),
                                                         (4, 7, 5, None), (3, 2, None, 30.0)])
def test_attention_kernel_matches_reference(cache_dtype, n_tok, n_past, window, softcap):
    n_head, n_kv, hd = 6, 2, 16
    q = rng.standard_normal((n_tok, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((20, n_kv, hd)).astype(cache_dtype)
    v = rng.standard_normal((20, n_kv, hd)).astype(cache_dtype)
    got = CPU.attention(q, k, v, n_past, 0.25, window, softcap)
    want = reference.attention(q, k, v, n_past, 0.25, window, softcap)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_tok,n_past,window,softcap", [(150, 0, None, None), (130, 11, 40, None),
                                                         (129, 3, None, 30.0), (70, 200, 64, None)])
def test_attention_tiles_and_threads_give_the_same_floats(monkeypatch, n_tok, n_past, window, softcap):
    """Query tiles that skip the keys they cannot see, run as (kv head, tile) jobs on two
    threads: the reference's numbers, and bit for bit those of one thread and one tile."""
    import importlib
    import numba
    att = importlib.import_module("runtime.kernels.attention")
    n_head, n_kv, hd = 6, 3, 16
    q = rng.standard_normal((n_tok, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((n_past + n_tok + 5, n_kv, hd)).astype(np.float16)
    v = rng.standard_normal((n_past + n_tok + 5, n_kv, hd)).astype(np.float16)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        monkeypatch.setattr(att, "Q_TILE", 1 << 20)
        whole = CPU.attention(q, k, v, n_past, 0.25, window, softcap)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        monkeypatch.setattr(att, "Q_TILE", 32)
        monkeypatch.setattr(att, "PARALLEL_MIN_WORK", 0)
        tiled = CPU.attention(q, k, v, n_past, 0.25, window, softcap)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_allclose(tiled, reference.attention(q, k, v, n_past, 0.25, window, softcap), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tiled, whole)


def test_geglu_kernel_matches_reference():
    gate = np.concatenate([rng.standard_normal(999) * 4, [-10.0, -10.5, 10.0, 11.0, 0.0]]).astype(np.float32)
    up = rng.standard_normal(gate.shape).astype(np.float32)
    np.testing.assert_array_equal(CPU.geglu(gate, up), reference.geglu(gate, up))


def test_swiglu_kernel_matches_reference():
    gate = (rng.standard_normal((3, 77)) * 5).astype(np.float32)
    up = rng.standard_normal((3, 77)).astype(np.float32)
    np.testing.assert_allclose(CPU.swiglu(gate, up), reference.swiglu(gate, up), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("with_w", [True, False])
def test_rms_norm_kernel_matches_reference(with_w):
    x = (rng.standard_normal((5, 641)) * 3).astype(np.float32)
    w = rng.standard_normal(641).astype(np.float32) if with_w else None
    got = CPU.rms_norm(x, w, 1e-6)
    want = reference.rms_norm(x, w, 1e-6)
    # same float32 ops; the double sum may differ in order (numpy pairwise): 1 ulp
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=0)
    assert CPU.rms_norm(x[:1].reshape(1, 641), w, 1e-6).shape == (1, 641)


def test_set_num_threads_sets_numba_threads():
    import numba
    from runtime import backend
    n0 = numba.get_num_threads()
    try:
        assert backend.set_num_threads(1) == 1 and numba.get_num_threads() == 1
        assert backend.set_num_threads(10 ** 6) == numba.config.NUMBA_NUM_THREADS
    finally:
        backend.set_num_threads(n0)


@pytest.mark.parametrize("cache_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("n_tok,n_past,window,softcap", [(1, 0, None, None), (1, 40, None, None), (3, 17, 6, None),
                                                         (2, 30, None, 30.0)])
@pytest.mark.parametrize("hd", [32, 20])          # 20: the fp16 -> float64 tail (not a multiple of 8)
def test_decode_attention_rows_kernel(monkeypatch, cache_dtype, n_tok, n_past, window, softcap, hd):
    """A few queries run attn_rows (Numba, float64): the reference's floats, and the same floats
    as the BLAS tiles almost always (float64 then one rounding)."""
    import importlib
    att = importlib.import_module("runtime.kernels.attention")
    n_head, n_kv = 8, 2
    q = rng.standard_normal((n_tok, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((n_past + n_tok + 3, n_kv, hd)).astype(cache_dtype)
    v = rng.standard_normal((n_past + n_tok + 3, n_kv, hd)).astype(cache_dtype)
    calls = []
    rows = att.attn_rows
    monkeypatch.setattr(att, "attn_rows", lambda *a: calls.append(1) or rows(*a))
    serial = CPU.attention(q, k, v, n_past, 0.25, window, softcap)
    assert calls, "attn_rows did not run"
    want = reference.attention(q, k, v, n_past, 0.25, window, softcap)
    np.testing.assert_allclose(serial, want, rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(att, "ROWS_MAX_TOKENS", 0)                   # the BLAS tiles
    blas = CPU.attention(q, k, v, n_past, 0.25, window, softcap)
    assert np.mean(blas == serial) > 0.99


def test_rope_serial_and_parallel_agree(monkeypatch):
    import importlib
    rope = importlib.import_module("runtime.kernels.rope")
    x = rng.standard_normal((7, 4, 32)).astype(np.float32)
    pos = np.arange(100, 107, dtype=np.int32)
    monkeypatch.setattr(rope, "PARALLEL_MIN", 1 << 30)
    a = CPU.rope(x, pos, 32, 1e4, 1.0, None, "norm")
    monkeypatch.setattr(rope, "PARALLEL_MIN", 0)
    b = CPU.rope(x, pos, 32, 1e4, 1.0, None, "norm")
    np.testing.assert_array_equal(a, b)


def test_swiglu_threads_match_reference(monkeypatch):
    import importlib
    import numba
    K = importlib.import_module("runtime.kernels.glu")
    gate = np.concatenate([rng.standard_normal(70001) * 6, [-100.0, 100.0, 0.0, -0.0]]).astype(np.float32)
    up = rng.standard_normal(gate.shape).astype(np.float32)
    want = reference.swiglu(gate, up)
    monkeypatch.setattr(K, "SILU_PARALLEL_MIN", 0)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        got = CPU.swiglu(gate, up)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(CPU.swiglu(gate[:5], up[:5]), want[:5])

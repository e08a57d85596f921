"""The backend object chosen per layer (runtime.device) on the CPU.

A "fake device" backend keeps its activations as a marked ndarray subclass and refuses host
arrays, so a test fails if model code hands a layer an activation from the wrong device or if
``move`` is skipped (or done where two layers share a device). Any placement, contiguous or not,
gives the all-CPU logits exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime.backend import CPU, CPUBackend
from runtime.device import move, parse_device
from runtime.errors import ModelError
from runtime.loader import load
from tests.helpers.tiny_models import DECI_LAYERS, IDS, write_gguf


class Dev(np.ndarray):
    """An array of the fake device."""


class FakeDevice(CPUBackend):
    name, device = "FAKE", "fake:0"

    def __init__(self):
        super().__init__()
        self.crossings = 0
        self.loaded = set()

    def _in(self, *xs):
        for x in xs:
            assert isinstance(x, Dev), f"host array {type(x)} passed to the fake device"

    def _out(self, y):
        return np.asarray(y).view(Dev)

    def from_host(self, x):
        assert not isinstance(x, Dev)
        self.crossings += 1
        return np.array(x, dtype=np.float32).view(Dev)

    def to_host(self, x):
        self._in(x)
        return np.array(x).view(np.ndarray)

    def load_weights(self, mats, vecs, groups=()):
        self.loaded |= set(mats) | set(vecs)
        return 0

    def new_kv(self, n_ctx, n_head_kv, head_dim, dtype=np.float16):
        return tuple(a.view(Dev) for a in super().new_kv(n_ctx, n_head_kv, head_dim, dtype))

    def take_rows(self, x, rows):
        self._in(x)
        return self._out(super().take_rows(np.asarray(x), rows))

    def kv_write(self, kc, vc, pos, k, v):
        self._in(kc, vc, k, v)
        super().kv_write(kc, vc, pos, k, v)

    def attention(self, q, kc, vc, n_past, scale, window=None, softcap=None):
        self._in(q, kc, vc)
        return self._out(super().attention(np.asarray(q), np.asarray(kc), np.asarray(vc), n_past, scale,
                                           window, softcap))


def _wrap(op):
    def f(self, *a, **kw):
        arrs = [x for x in a if isinstance(x, np.ndarray) and x.ndim >= 2]
        self._in(*arrs)
        return self._out(getattr(CPUBackend, op)(self, *[np.asarray(x) if isinstance(x, Dev) else x for x in a], **kw))
    return f


for _op in ("matmul", "rms_norm", "rope", "swiglu", "geglu", "add", "scale", "softcap"):
    setattr(FakeDevice, _op, _wrap(_op))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dev")
    return {"deci": write_gguf(d / "deci.gguf", "deci", DECI_LAYERS),
            "llama": write_gguf(d / "llama.gguf", "llama", [(4, 2, 128)] * 3),
            "gemma3": write_gguf(d / "gemma3.gguf", "gemma3", [(4, 1, 128)] * 3,
                                 extra={"gemma3.attention.sliding_window": 4, "gemma3.final_logit_softcapping": 3.0})}


def _logits(m):
    cache = m.new_cache(16, np.float32)
    a = m.logits(m.forward(IDS[:6], cache))
    b = m.logits(m.forward(IDS[6:], cache, out_rows=-1))
    return np.concatenate([a, b])


@pytest.mark.parametrize("name", ["deci", "llama", "gemma3"])
def test_any_placement_gives_cpu_logits(files, name):
    m = load(str(files[name]), with_tokenizer=False)
    ref = _logits(m)
    n = m.hp.n_layer
    for mask, out_dev in (([True] * n, True), ([il % 2 == 1 for il in range(n)], False),
                          ([il >= n // 2 for il in range(n)], True), ([False] * n, True)):
        fake = FakeDevice()
        m.place([fake if g else CPU for g in mask], fake if out_dev else CPU)
        got = _logits(m)
        assert np.array_equal(got, ref), (name, mask, np.abs(got - ref).max())
        # crossings per forward: into each run of device layers (and into the head if on it)
        runs = sum(1 for il, g in enumerate(mask) if g and (il == 0 or not mask[il - 1]))
        head_in = 1 if out_dev and not mask[-1] else 0
        assert fake.crossings == 2 * (runs + head_in), (mask, fake.crossings)
        placed = {k for il, g in enumerate(mask) if g for k in (*m.layer_weights(il)[0], *m.layer_weights(il)[1])}
        assert placed <= fake.loaded
        if out_dev:
            assert "output" in fake.loaded
    m.place([CPU] * n, CPU)


def test_kv_cache_lives_on_the_layer_device(files):
    m = load(str(files["deci"]), with_tokenizer=False)
    fake = FakeDevice()
    m.place([fake if il in (0, 3) else CPU for il in range(m.hp.n_layer)], CPU)
    c = m.new_cache(8)
    assert isinstance(c.k[0], Dev) and isinstance(c.v[3], Dev) and not isinstance(c.k[5], Dev)
    assert c.k[1] is None and c.k[3].shape == (8, 1, 16)


def test_place_checks_length_and_devices(files):
    m = load(str(files["llama"]), with_tokenizer=False)
    with pytest.raises(ModelError, match="3 layers"):
        m.place([CPU], CPU)
    assert parse_device("cuda:1") == ("cuda", 1) and parse_device(None) == ("cpu", 0)
    with pytest.raises(ModelError, match="unknown device"):
        parse_device("tpu")
    x = np.ones((2, 3), np.float32)
    assert move(x, CPU, CPUBackend()) is x

"""The numpy references in runtime.reference against independent textbook formulas."""

import numpy as np
import pytest
import gguf
from quant.gguf import GGUFReader

from runtime import reference as ref
from runtime.qtensor import QTensor
from runtime.errors import ModelError

rng = np.random.default_rng(1234)


def test_rms_norm_matches_float64_formula():
    x = rng.standard_normal((3, 37)).astype(np.float32)
    w = rng.standard_normal(37).astype(np.float32)
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(ref.rms_norm(x, w, 1e-6), want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["norm", "neox"])
def test_rope_matches_textbook(mode):
    n_tok, n_head, hd, n_rot = 4, 3, 16, 12
    x = rng.standard_normal((n_tok, n_head, hd)).astype(np.float32)
    pos = np.array([0, 1, 7, 30], np.int32)
    ff = (1.0 + rng.random(n_rot // 2)).astype(np.float32)
    y = ref.rope(x, pos, n_rot, 10000.0, 0.5, ff, mode)
    inv = 10000.0 ** (-np.arange(0, n_rot, 2) / n_rot) / ff * 0.5
    th = pos[:, None] * inv[None, :]
    c, s = np.cos(th)[:, None, :], np.sin(th)[:, None, :]
    want = x.astype(np.float64).copy()
    if mode == "norm":
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        want[..., 0:n_rot:2] = a * c - b * s
        want[..., 1:n_rot:2] = a * s + b * c
    else:
        a, b = x[..., :n_rot // 2], x[..., n_rot // 2:n_rot]
        want[..., :n_rot // 2] = a * c - b * s
        want[..., n_rot // 2:n_rot] = a * s + b * c
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=2e-5)
    np.testing.assert_array_equal(y[..., n_rot:], x[..., n_rot:])


def test_gelu_uses_fp16_table():
    x = np.array([-11.0, -1.2345, 0.1, 0.5, 3.3333, 12.0], np.float32)
    exact = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    g = ref.gelu(x)
    assert g[0] == 0.0 and g[-1] == 12.0
    np.testing.assert_allclose(g, exact, rtol=2e-3, atol=1e-3)
    # the result is an fp16 value inside the table range
    assert np.all(g[1:-1].astype(np.float16).astype(np.float32) == g[1:-1])


def test_attention_matches_loop():
    n_tok, n_head, n_kv, hd, n_past = 3, 4, 2, 8, 5
    q = rng.standard_normal((n_tok, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((16, n_kv, hd)).astype(np.float16)
    v = rng.standard_normal((16, n_kv, hd)).astype(np.float16)
    for window, cap in [(None, None), (3, None), (None, 5.0)]:
        out = ref.attention(q, k, v, n_past, 0.35, window, cap)
        for i in range(n_tok):
            p = n_past + i
            for h in range(n_head):
                keys = [j for j in range(p + 1) if window is None or p - j < window]
                s = np.array([q[i, h] @ k[j, h // 2].astype(np.float64) * 0.35 for j in keys])
                if cap:
                    s = cap * np.tanh(s / cap)
                e = np.exp(s - s.max())
                want = (e / e.sum()) @ v[keys, h // 2].astype(np.float64)
                np.testing.assert_allclose(out[i, h], want, rtol=1e-5, atol=1e-6)


def test_qtensor_checks_shape():
    with pytest.raises(ModelError):
        QTensor(np.zeros((2, 10), np.uint8), "Q8_0", (2, 32))
    with pytest.raises(ModelError):
        QTensor(np.zeros((2, 34), np.uint8), "Q8_0", (2, 33))


def test_qtensor_from_reader_is_a_view(tmp_path):
    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    a = rng.standard_normal((5, 32)).astype(np.float32)
    q = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("a", a)
    w.add_tensor("q", q, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    r = GGUFReader(path)
    ta, tq = (QTensor.from_reader_tensor(t) for t in r.tensors.values())
    assert ta.qtype == "F32" and ta.shape == (5, 32) and np.shares_memory(ta.data, r._mm)
    np.testing.assert_array_equal(ta.dequantize(), a)
    assert tq.qtype == "Q4_0" and tq.shape == (4, 64) and tq.data.shape == (4, 36)
    assert np.shares_memory(tq.data, r._mm)

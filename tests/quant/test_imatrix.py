"""quant/imatrix.py: llama-imatrix's GGUF and legacy .dat files, read as llama-quantize reads them.

The two committed files come from one llama-imatrix run on the llama-tiny fixture (GGUF, and
``--output-format dat``). That the quantized bytes then match llama-quantize is checked in
tests/ggufkit/test_quantize_file.py (imatrix and imatrix-dat cases).
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from quant.errors import QuantError
from quant.imatrix import load_imatrix, save_imatrix_gguf, select_weights
from tests.helpers.quantize_cases import GOLDEN_DIR, IMATRIX_DAT, IMATRIX_GGUF


def test_gguf_and_dat_from_the_same_run_agree():
    g = load_imatrix(GOLDEN_DIR / IMATRIX_GGUF)
    d = load_imatrix(GOLDEN_DIR / IMATRIX_DAT)
    assert not g.is_legacy and d.is_legacy
    assert len(g.entries) == 28 and set(g.entries) == set(d.entries)
    assert "blk.3.ffn_down.weight" in g.entries and "output.weight" not in g.entries
    assert g.entries["blk.0.ffn_down.weight"].shape == (768,)
    assert g.entries["blk.0.attn_q.weight"].dtype == np.float32
    for k in g.entries:
        np.testing.assert_allclose(g.entries[k], d.entries[k], rtol=1e-6)
        assert (g.entries[k] > 0).all()
    assert g.datasets == d.datasets == ["calib.txt"]
    assert g.chunk_count == d.chunk_count == 8
    assert g.chunk_size == 128


def test_gguf_normalisation_per_expert_and_zero_counts(tmp_path):
    p = tmp_path / "m.gguf"
    sums = {"blk.0.ffn_up_exps.weight": np.array([[2, 4, 6], [1, 1, 1]], np.float32)}
    counts = {"blk.0.ffn_up_exps.weight": np.array([2.4, 0.0], np.float32)}   # lround(2.4) = 2
    save_imatrix_gguf(p, sums, counts, datasets=["a.txt"], chunk_count=3)
    im = load_imatrix(p)
    np.testing.assert_array_equal(im.entries["blk.0.ffn_up_exps.weight"], [1, 2, 3, 1, 1, 1])
    assert im.chunk_count == 3 and im.datasets == ["a.txt"]


def _dat(entries, trailer=True) -> bytes:
    b = struct.pack("<i", len(entries))
    for name, ncall, vals in entries:
        n = name.encode()
        b += struct.pack("<i", len(n)) + n + struct.pack("<ii", ncall, len(vals))
        b += np.asarray(vals, np.float32).tobytes()
    if trailer:
        b += struct.pack("<i", 5) + struct.pack("<i", 4) + b"data"
    return b


def test_legacy_dat_divides_by_ncall(tmp_path):
    p = tmp_path / "m.dat"
    p.write_bytes(_dat([("a.weight", 4, [4, 8]), ("b.weight", 0, [3, 5])]))
    im = load_imatrix(p)
    np.testing.assert_array_equal(im.entries["a.weight"], [1, 2])
    np.testing.assert_array_equal(im.entries["b.weight"], [3, 5])     # ncall 0: kept as stored
    assert im.chunk_count == 5 and im.datasets == ["data"]
    p.write_bytes(_dat([("a.weight", 1, [1])], trailer=False))        # the trailer is optional
    assert load_imatrix(p).chunk_count == 0


def test_bad_files(tmp_path):
    p = tmp_path / "bad.dat"
    p.write_bytes(struct.pack("<i", 0))
    with pytest.raises(QuantError, match="no data"):
        load_imatrix(p)
    p.write_bytes(_dat([("a.weight", 1, [1, np.inf])]))
    with pytest.raises(QuantError, match="non-finite"):
        load_imatrix(p)
    with pytest.raises(QuantError, match="not found"):
        load_imatrix(tmp_path / "nope.dat")
    g = tmp_path / "nometa.gguf"
    import gguf
    w = gguf.GGUFWriter(str(g), arch="")
    w.add_tensor("x.weight.in_sum2", np.ones((1, 4), np.float32))
    w.add_tensor("x.weight.counts", np.ones((1, 1), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(QuantError, match="missing imatrix metadata"):
        load_imatrix(g)


def test_include_exclude():
    im = load_imatrix(GOLDEN_DIR / IMATRIX_GGUF)
    assert set(select_weights(im, include=["ffn_down"]).entries) == {f"blk.{i}.ffn_down.weight" for i in range(4)}
    assert len(select_weights(im, exclude=["attn_", "ffn_up"]).entries) == 8   # gate + down
    with pytest.raises(QuantError):
        select_weights(im, include=["a"], exclude=["b"])

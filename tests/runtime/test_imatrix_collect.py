"""``ggufkit imatrix`` against llama-imatrix goldens (tests/golden/imatrix/README.md says how they were made).

The llama-tiny fixture is converted to F16 by ggufkit (byte-identical to llama.cpp's converter) and
run on the same text: sums of squared activations must match llama-imatrix's within float tolerance
(the two engines differ in summation order and f16 rounding), counts and chunk counts exactly.
Merging (GGUF + legacy .dat) and the .dat writer are checked exactly.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from quant.imatrix import RawImatrix, load_imatrix, read_raw
from tests.helpers import GOLDENS

GOLD = GOLDENS / "imatrix"
TEXT = GOLDENS / "runtime" / "fixture-text.txt"


@pytest.fixture(scope="module")
def llama_f16(llama_ckpt, tmp_path_factory):
    from ggufkit.convert import convert
    return convert(llama_ckpt, tmp_path_factory.mktemp("imx") / "llama-tiny-f16.gguf", "f16")


def _close(a: dict, b: dict, rtol: float):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=1e-3, err_msg=k)


def test_collect_matches_llama_imatrix(llama_f16, tmp_path):
    from click.testing import CliRunner
    from ggufkit.cli import cli

    out = tmp_path / "gk.gguf"
    r = CliRunner().invoke(cli, ["imatrix", str(llama_f16), "-f", str(TEXT), "-c", "128", "--chunks", "4",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "PPL = 1353" in r.output           # llama-imatrix: 135398.7565
    gs, gc, gd, _ = read_raw(GOLD / "llama-tiny-c128x4.gguf")
    ms, mc, md, _ = read_raw(out)
    _close(gs, ms, 5e-3)
    assert all((gc[k] == mc[k]).all() for k in gc)
    assert md == [str(TEXT)]
    im = load_imatrix(out)
    assert im.chunk_count == 4 and im.chunk_size == 128
    # the normalised vectors quantize uses
    ref = load_imatrix(GOLD / "llama-tiny-c128x4.gguf")
    for k, v in ref.entries.items():
        np.testing.assert_allclose(im.entries[k], v, rtol=5e-3, atol=1e-4)


def test_dat_with_output_matches_llama_imatrix(llama_f16, tmp_path):
    from ggufkit.imatrix import make_imatrix

    out = tmp_path / "gk.dat"
    make_imatrix(str(llama_f16), str(TEXT), str(out), 128, 4, "dat", process_output=True, compute_ppl=False,
                 progress=False)
    gs, gc, _, legacy = read_raw(GOLD / "llama-tiny-c128x4-output.dat")
    ms, mc, _, _ = read_raw(out)
    assert legacy and "output.weight" in ms
    _close(gs, ms, 5e-3)
    assert all((gc[k] == mc[k]).all() for k in gc)
    assert _dat_chunk_count(out.read_bytes()) == _dat_chunk_count(
        (GOLD / "llama-tiny-c128x4-output.dat").read_bytes()) == 4


def _dat_chunk_count(data: bytes) -> int:
    """The trailer's chunk count of a legacy .dat: after the entries, i32 n_chunk, i32 len, dataset name
    (the name is the path llama-imatrix was given, so it differs between machines)."""
    (n,), pos = struct.unpack_from("<i", data, 0), 4
    for _ in range(n):
        (ln,) = struct.unpack_from("<i", data, pos)
        pos += 4 + ln
        _, nval = struct.unpack_from("<ii", data, pos)
        pos += 8 + 4 * nval
    return struct.unpack_from("<i", data, pos)[0]


def test_merge_gguf_and_dat_exactly(tmp_path):
    from ggufkit.imatrix import make_imatrix

    out = tmp_path / "m.gguf"
    make_imatrix(None, None, str(out), 128, in_files=[str(GOLD / "llama-tiny-c128x4.gguf"),
                                                      str(GOLD / "llama-tiny-c128x4-output.dat")])
    gs, gc, gd, _ = read_raw(GOLD / "llama-tiny-merged.gguf")
    ms, mc, md, _ = read_raw(out)
    assert set(gs) == set(ms) and md == gd
    for k in gs:
        assert np.array_equal(gs[k], ms[k]) and np.array_equal(gc[k], mc[k]), k
    assert load_imatrix(out).chunk_count == load_imatrix(GOLD / "llama-tiny-merged.gguf").chunk_count == 8


def test_dat_writer_roundtrip_and_statistics(tmp_path):
    from ggufkit.imatrix import format_statistics, tensor_statistics

    raw = RawImatrix(chunk_size=128)
    raw.merge_file(GOLD / "llama-tiny-c128x4.gguf")
    raw.save(tmp_path / "x.dat", "dat", prompt_file="t.txt")
    a = load_imatrix(GOLD / "llama-tiny-c128x4.gguf")
    b = load_imatrix(tmp_path / "x.dat")
    for k in a.entries:
        np.testing.assert_allclose(b.entries[k], a.entries[k], rtol=1e-6)
    st = tensor_statistics(raw)
    assert len(st) == 28
    s0 = next(s for s in st if s.tensor == "blk.1.ffn_down.weight")
    v = a.entries["blk.1.ffn_down.weight"]
    assert s0.elements == v.size and abs(s0.total_sqract - v.sum()) < 1e-3 * v.sum()
    assert abs(s0.max_sqract - v.max()) < 1e-6 * v.max()
    assert 0 < s0.cossim <= 1.0001
    assert "Computing weighted average statistics per layer (4 layers)" in format_statistics(st, "x")


def test_refusals(tmp_path):
    from ggufkit.errors import GGUFKitError
    from ggufkit.imatrix import make_imatrix, show_statistics

    with pytest.raises(GGUFKitError):
        make_imatrix(None, None, str(tmp_path / "o.gguf"))
    with pytest.raises(GGUFKitError):
        show_statistics([])
    assert not (tmp_path / "o.gguf").exists()

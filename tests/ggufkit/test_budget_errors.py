"""Budgeted allocation's bad input, each one line before any measuring: a budget below the smallest
file the candidate types can make, an imatrix made on another model. (A non-writable cache directory:
test_measure_cache.py; an unreachable Ray address: test_fanout_ray.py.)"""
from __future__ import annotations

from tests.ggufkit.test_cli_defects import assert_one_line_error, run_main
from tests.helpers import GOLDENS
from tests.helpers.tiny_models import write_gguf

IMX = str(GOLDENS / "imatrix" / "llama-tiny-c128x4.gguf")
TEXT = str(GOLDENS / "runtime" / "fixture-text.txt")


def _no_measuring(monkeypatch):
    import ggufkit.budget as B

    def boom(*a, **k):
        raise AssertionError("measuring started")
    monkeypatch.setattr(B, "measure", boom)


def test_budget_below_the_smallest_file(llama_ckpt, tmp_path, capsys, monkeypatch):
    from ggufkit.convert import convert
    base = convert(llama_ckpt, tmp_path / "llama-tiny-f16.gguf", "f16")
    _no_measuring(monkeypatch)
    code, _, err = run_main(["quantize", base, tmp_path / "o.gguf", "--target-bpw", "1", "--imatrix", IMX,
                             "--calib-file", TEXT, "--cache-dir", tmp_path / "c"], capsys)
    assert_one_line_error(code, err, "below the smallest file the candidate types can make")
    assert not (tmp_path / "o.gguf").exists()


def test_imatrix_of_another_model(tmp_path, capsys, monkeypatch):
    other = write_gguf(tmp_path / "other.gguf", "llama", [(2, 1, 96)] * 2)    # rows of 64, not 256
    _no_measuring(monkeypatch)
    code, _, err = run_main(["quantize", other, tmp_path / "o.gguf", "--target-bpw", "6", "--imatrix", IMX,
                             "--calib-file", TEXT, "--cache-dir", tmp_path / "c"], capsys)
    assert_one_line_error(code, err, "does not fit this model", "another model")


def test_no_candidate_fits_a_tensor(tmp_path, capsys, monkeypatch):
    small = write_gguf(tmp_path / "small.gguf", "llama", [(2, 1, 96)] * 2)     # rows of 64: no 256-blocks
    _no_measuring(monkeypatch)
    code, _, err = run_main(["quantize", small, tmp_path / "o.gguf", "--target-bpw", "4", "--calib-file", TEXT,
                             "--candidates", "IQ4_XS,Q4_K", "--cache-dir", tmp_path / "c"], capsys)
    assert_one_line_error(code, err, "no candidate type fits")

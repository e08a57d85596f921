"""Budgeted allocation: the knapsack solver (against brute force), sizes, candidates, and the
``--tensor-type-file`` round trip against llama-quantize (tests/golden/alloc, tools/golden/gen_alloc_golden.py)."""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from quant.allocate import Choice, TensorOptions, allocate, relative_error
from quant.errors import QuantError
from tests.helpers import GOLDENS

GOLD = GOLDENS / "alloc"


def _random_problem(rng, n_t=5, n_c=4):
    opts = []
    for t in range(n_t):
        sizes = np.sort(rng.integers(10, 200, n_c))
        errs = np.sort(rng.random(n_c))[::-1] * rng.random() * 10
        opts.append(TensorOptions(f"t{t}", [Choice(f"c{i}", int(s), float(e)) for i, (s, e) in enumerate(zip(sizes, errs))]))
    return opts


def test_allocate_near_brute_force():
    rng = np.random.default_rng(1)
    worse = 0
    for _ in range(40):
        opts = _random_problem(rng)
        lo = sum(min(c.nbytes for c in o.choices) for o in opts)
        hi = sum(max(c.nbytes for c in o.choices) for o in opts)
        budget = int(rng.integers(lo, hi + 1))
        a = allocate(opts, budget)
        assert a.nbytes <= budget
        assert a.nbytes == sum(next(c.nbytes for c in o.choices if c.type == a.types[o.name]) for o in opts)
        best = min(sum(c.error for c in combo) for combo in itertools.product(*[o.choices for o in opts])
                   if sum(c.nbytes for c in combo) <= budget)
        assert a.error >= best - 1e-12
        worse += a.error > best * 1.05 + 1e-12
    assert worse <= 4          # the heuristic is exact or within 5% on (almost) every instance


def test_allocate_refuses_impossible_budget():
    opts = [TensorOptions("a", [Choice("x", 100, 1.0)])]
    with pytest.raises(QuantError, match="below the smallest"):
        allocate(opts, 99)
    assert allocate(opts, 100).types == {"a": "x"}


def _requantized(path: str, types: dict, im) -> dict:
    """Each named tensor of ``path`` quantized to its type through quant's API, f32 [n_rows, ne0]."""
    import quant
    from quant.gguf import GGUFReader
    g, out = GGUFReader(path), {}
    for name, typ in types.items():
        t = g.tensors[name]
        ne0 = t.shape[0]
        w = quant.dequantize(t.data.reshape(-1, quant.row_size(t.qtype, ne0)), t.qtype)
        v = im.entries.get(name)
        imrow = v[:ne0] if v is not None and v.size >= ne0 else None
        out[name] = np.asarray(quant.dequantize(quant.quantize(w, typ, imrow), typ), np.float32).reshape(-1, ne0)
    return out


def test_relative_error_weighting():
    w = np.array([[1.0, 1.0]])
    q = np.array([[0.0, 1.0]])
    assert relative_error(w, q, None) == pytest.approx(0.5)
    assert relative_error(w, q, np.array([3.0, 1.0])) == pytest.approx(0.75)


def test_candidates_respect_block_size_and_imatrix():
    from ggufkit.measure import DEFAULT_CANDIDATES, candidate_types
    c640 = candidate_types(640, True, DEFAULT_CANDIDATES)
    assert c640 and all(not t.startswith("IQ") or t == "IQ4_NL" for t in c640)
    assert not any(t.endswith("_K") for t in c640) and "Q4_0" in c640 and "Q8_0" in c640
    c256 = candidate_types(2048, False, DEFAULT_CANDIDATES)
    assert "Q2_K" in c256 and "IQ2_XXS" not in c256 and "IQ3_S" in c256
    assert "IQ2_XXS" in candidate_types(2048, True, DEFAULT_CANDIDATES)


def test_tensor_type_file_rebuilds_llama_quantize_bytes(tmp_path, monkeypatch):
    """The allocation's --tensor-type-file export (FixedRecipe.tensor_type_lines) makes ggufkit write
    llama-quantize's bytes, and so does writing the recipe itself (no regex round trip)."""
    from tests.helpers.quantize_cases import GOLDEN_DIR, IMATRIX_GGUF, tiny_mix, write_tiny_gguf

    from ggufkit.quantize import quantize_file, read_tensor_type_file
    from quant.recipes import fixed

    src = write_tiny_gguf(tmp_path / "tiny-f16.gguf")
    mix = tiny_mix(src)
    assert len(set(mix.values())) >= 10
    lines = fixed(mix).tensor_type_lines()
    assert (GOLD / "mix.txt").read_text().split() == lines
    gold = json.loads((GOLD / "hashes.json").read_text())
    monkeypatch.chdir(GOLDEN_DIR)                  # the imatrix path as given lands in the header
    for ft, h in gold.items():
        out = tmp_path / f"{ft}.gguf"
        quantize_file(src, out, ft, imatrix=IMATRIX_GGUF, tensor_types=read_tensor_type_file(GOLD / "mix.txt"))
        assert hashlib.sha256(out.read_bytes()).hexdigest() == h["sha256"], ft
        direct = tmp_path / f"{ft}-recipe.gguf"
        quantize_file(src, direct, ft, imatrix=IMATRIX_GGUF, recipe=fixed(mix))
        assert hashlib.sha256(direct.read_bytes()).hexdigest() == h["sha256"], ft


def test_header_size_is_exact(tmp_path, monkeypatch):
    """The planned file size (header + padded tensors) equals the written file's size."""
    from tests.helpers.quantize_cases import GOLDEN_DIR, IMATRIX_GGUF, tiny_mix, write_tiny_gguf

    from ggufkit.quantize import open_source, pad, quantize_file
    from quant.recipes import fixed
    from quant.imatrix import load_imatrix

    monkeypatch.chdir(GOLDEN_DIR)
    src = write_tiny_gguf(tmp_path / "tiny-f16.gguf")
    mix = tiny_mix(src)
    s = open_source(src)
    im = load_imatrix(IMATRIX_GGUF)
    rep = quantize_file(src, tmp_path / "o.gguf", "Q4_K_M", imatrix=IMATRIX_GGUF, recipe=fixed(mix))
    planned = len(s.header(s.plans(), "Q4_K_M", im, IMATRIX_GGUF)) + sum(pad(t.dst_bytes) for t in rep.tensors)
    assert planned == (tmp_path / "o.gguf").stat().st_size


def test_budget_end_to_end_llama_tiny(llama_ckpt, tmp_path, monkeypatch):
    """Measure (errors + sensitivities), allocate under an exact budget, check against the standard
    mix, write file + tensor-type file + report; the type file rebuilds the same bytes."""
    from ggufkit.budget import quantize_budget
    from ggufkit.convert import convert
    from ggufkit.quantize import quantize_file, read_tensor_type_file

    base = convert(llama_ckpt, tmp_path / "llama-tiny-f16.gguf", "f16")
    imx = str(GOLDENS / "imatrix" / "llama-tiny-c128x4.gguf")
    text = str(GOLDENS / "runtime" / "fixture-text.txt")
    std = quantize_file(base, tmp_path / "q4km.gguf", "Q4_K_M", imatrix=imx)
    budget = (tmp_path / "q4km.gguf").stat().st_size
    out = tmp_path / "alloc.gguf"
    res = quantize_budget(str(base), str(out), target_size=str(budget), imatrix=imx, calib_text=text,
                          n_seq=1, seq_len=64, sample_rows=32, workers=1, progress=False,
                          cache_dir=tmp_path / "cache")
    assert std.tensors
    assert out.stat().st_size == res.file_bytes <= budget
    assert res.standard is not None and res.probe_kld is not None and res.standard_probe_kld is not None
    assert res.fell_back == (res.standard_probe_kld < res.probe_kld)
    rep = json.loads(Path(f"{out}.alloc.json").read_text())
    assert {r["name"] for r in rep["report"]} == set(res.types) and len(res.types) == 30
    again = tmp_path / "again.gguf"
    quantize_file(base, again, res.standard or "Q4_K_M", imatrix=imx,
                  tensor_types=read_tensor_type_file(f"{out}.tensor-types.txt"))
    assert again.read_bytes() == out.read_bytes()
    # the cached measurement makes a second budget cheap and consistent
    res2 = quantize_budget(str(base), str(tmp_path / "b.gguf"), target_bpw=5.0, imatrix=imx, calib_text=text,
                           n_seq=1, seq_len=64, sample_rows=32, workers=1, progress=False, check=False,
                           cache_dir=tmp_path / "cache")
    assert res2.units["computed"] == 0 and res2.units["reused"] > 0      # every unit from the cache
    assert (tmp_path / "b.gguf").stat().st_size <= res2.budget


def test_budget_check_reads_written_files_and_falls_back(llama_ckpt, tmp_path, monkeypatch):
    """The never-worse check probes the dequantized tensors of the files it wrote (one quantization
    per candidate file): they equal quantizing the weights again; a mix that measures worse than
    the standard one is replaced by the standard file itself, byte for byte."""
    import ggufkit.budget as A
    from ggufkit.measure import probe_tokens
    from ggufkit.convert import convert
    from ggufkit.quantize import quantize_file
    from quant.imatrix import load_imatrix
    from runtime.loader import load
    from runtime.perplexity import read_text_file
    from runtime.sensitivity import Probe

    base = str(convert(llama_ckpt, tmp_path / "llama-tiny-f16.gguf", "f16"))
    imx = str(GOLDENS / "imatrix" / "llama-tiny-c128x4.gguf")
    text = str(GOLDENS / "runtime" / "fixture-text.txt")
    std = tmp_path / "q4km.gguf"
    quantize_file(base, std, "Q4_K_M", imatrix=imx)
    kw = dict(target_size=str(std.stat().st_size), imatrix=imx, calib_text=text, n_seq=1, seq_len=64,
              sample_rows=32, workers=1, progress=False, cache_dir=tmp_path / "cache")
    out = tmp_path / "alloc.gguf"
    res = A.quantize_budget(base, str(out), **kw)
    im = load_imatrix(imx)
    fresh = _requantized(base, res.types, im)
    written = A.file_weights(str(out), res.types)
    assert set(fresh) == set(written) == set(res.types)
    assert all(np.array_equal(fresh[n], written[n]()) for n in fresh)
    model = load(base)
    probe = Probe(model, probe_tokens(model, read_text_file(text), 1, 64))
    mine = res.standard_probe_kld if res.fell_back else res.probe_kld
    assert probe.kld(fresh) == pytest.approx(mine, rel=1e-12, abs=1e-15)

    real_choose = A.choose

    def smallest(meas, budget):          # a deliberately bad mix: every tensor at its smallest type
        types, _, _ = real_choose(meas, budget)
        by = {t.name: t for t in meas.tensors}
        types = {n: min(by[n].nbytes, key=lambda k: (by[n].nbytes[k], by[n].errors[k])) for n in types}
        nb = meas.header_bytes + meas.fixed_bytes + sum(by[n].nbytes[t] for n, t in types.items())
        return types, nb, 1.0
    monkeypatch.setattr(A, "choose", smallest)
    bad = tmp_path / "bad.gguf"
    res = A.quantize_budget(base, str(bad), **kw)
    assert res.fell_back and res.standard == "Q4_K_M" and res.standard_probe_kld < res.probe_kld
    assert bad.read_bytes() == std.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.gguf")]   # no temp files left

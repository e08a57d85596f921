"""Placement and auto-fit (runtime.plan) from the GGUF header alone, and ``ggufkit plan``.

The big case is a header-only GGUF of Nemotron-Super-49B's real 80-layer block configuration at
an IQ3_M mixture (tests/helpers/super49b_header.py), planned for 8, 12, 16 and 24 GiB cards.
"""
from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from ggufkit.cli import cli
from quant.units import GIB, MIB
from runtime.errors import ModelError
from runtime.plan import LayerCost, _best, _time, plan_file, plan_header, read_header
from tests.helpers import super49b_header as s49
from tests.helpers.tiny_models import DECI_LAYERS, write_gguf


@pytest.fixture(scope="module")
def super49b(tmp_path_factory):
    p = tmp_path_factory.mktemp("s49") / "super49b-iq3_m.gguf"
    info = s49.write(p, "IQ3_M")          # header only: quant.gguf's header-only mode reads it
    return p, info


def test_super49b_header_is_the_real_model(super49b):
    p, info = super49b
    fields, tensors = read_header(str(p))
    assert len(tensors) == 569
    ff = [int(v) for v in fields["deci.feed_forward_length"]]
    assert sorted(set(ff)) == [2816, 5632, 7168, 14336, 17920, 28672]
    assert [ff.count(v) for v in (28672, 14336, 17920, 7168, 5632, 2816)] == [49, 6, 1, 10, 8, 6]
    kv = [int(v) for v in fields["deci.attention.head_count_kv"]]
    assert kv.count(8) == 49 and kv.count(0) == 31
    total = sum(t.n_bytes for t in tensors.values())
    assert os.path.getsize(p) < 1 << 20                 # no data section
    assert 20 * GIB < total < 23 * GIB          # an IQ3-class 49B (bartowski IQ3_M: 22.6 GB)


@pytest.mark.parametrize("ctx", [8192])
def test_super49b_plans_8_12_16_24_gib(super49b, ctx):
    p, info = super49b
    fields, tensors = read_header(str(p))
    file_bytes = sum(t.n_bytes for t in tensors.values())
    prev = None
    for gib in (8, 12, 16, 24):
        pl = plan_header(fields, tensors, ctx, gib * GIB)
        tot = pl.totals()
        gpu = tot["cuda:0"]
        # fits, and every file tensor is on exactly one device
        assert gpu["total"] <= gib * GIB
        assert tot["cpu"]["tensors"] + gpu["tensors"] == file_bytes
        assert tot["cpu"]["kv"] + gpu["kv"] == sum(lc.kv_bytes for lc in pl.layers)
        # KV only for the 49 GQA layers: 2 * ctx * 8 heads * 128 * 2 bytes; no-op attention: no
        # attention weights (so its bytes are its FFN's alone), no cache
        for lc, (nh, nkv, nff) in zip(pl.layers, s49.layers()):
            assert lc.kv_bytes == (2 * ctx * 8 * 128 * 2 if nh else 0)
            blk = [n for n in tensors if n.startswith(f"blk.{lc.il}.")]
            assert lc.weight_bytes == sum(tensors[n].n_bytes for n in blk)
            assert (not nh) == (not any("attn" in n for n in blk))
        if prev is not None:     # monotone in the budget
            assert pl.n_gpu_layers >= prev.n_gpu_layers
            assert gpu["tensors"] + gpu["kv"] > prev.totals()["cuda:0"]["tensors"] + prev.totals()["cuda:0"]["kv"]
            assert pl.tok_s > prev.tok_s
        # not much of the budget is left unused (the DP packs to within a layer's bytes)
        free = gib * GIB - gpu["total"]
        cpu_items = [lc.gpu_bytes for lc, g in zip(pl.layers, pl.on_gpu) if not g and lc.gpu_bytes]
        assert not cpu_items or free < min(cpu_items)
        prev = pl
    assert prev.n_gpu_layers == 81 and all(prev.on_gpu)          # 24 GiB holds all of it at 8k
    assert plan_header(fields, tensors, ctx, 8 * GIB).n_gpu_layers < 60


def test_budget_too_small_and_explicit_layers(super49b):
    p, _ = super49b
    with pytest.raises(ModelError, match="too small for even one layer"):
        plan_file(str(p), 8192, "700MiB")
    pl = plan_file(str(p), 8192, "16GiB", gpu_layers=10)
    assert pl.on_gpu == [False] * 70 + [True] * 10 and not pl.output_on_gpu and pl.n_gpu_layers == 10
    pl = plan_file(str(p), 2048, "64GiB", gpu_layers="all")
    assert all(pl.on_gpu) and pl.output_on_gpu and pl.n_gpu_layers == 81
    with pytest.raises(ModelError, match="more than the budget"):
        plan_file(str(p), 8192, "8GiB", gpu_layers="all")
    with pytest.raises(ModelError, match="number, 'all' or 'auto'"):
        plan_file(str(p), 8192, "8GiB", gpu_layers="many")


def test_dp_is_optimal_against_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(6):
        n = 7
        layers = [LayerCost(i, "x", int(w), int(k)) for i, (w, k) in
                  enumerate(zip(rng.integers(0, 900, n) * MIB, rng.integers(0, 200, n) * MIB))]
        layers[2] = LayerCost(2, "no-op", 0, 0)
        out_mem = out_read = int(rng.integers(100, 600)) * MIB
        avail = int(rng.integers(500, 3000)) * MIB
        args = (100e9, 1000e9, float(rng.choice([30e-6, 5e-3])))
        on, out = _best(layers, out_mem, out_read, avail, *args)
        used = sum(lc.gpu_bytes for lc, g in zip(layers, on) if g) + (out_mem if out else 0)
        assert used <= avail
        t = _time(layers, on, out, out_read, *args)
        best = min(_time(layers, list(c[:-1]), c[-1], out_read, *args)
                   for c in itertools.product([False, True], repeat=n + 1)
                   if sum(lc.gpu_bytes for lc, g in zip(layers, c) if g) + (out_mem if c[-1] else 0) <= avail)
        assert t <= best * (1 + 1e-3) + 1e-9, (trial, t, best)


def test_tiny_deci_plan_zero_byte_noop_layer(tmp_path):
    p = write_gguf(tmp_path / "d.gguf", "deci", DECI_LAYERS)
    fields, tensors = read_header(str(p))
    pl = plan_header(fields, tensors, 64, 64 * GIB, "all")
    assert [lc.kind for lc in pl.layers] == ["attn kv2 + ffn 128", "ffn 64", "linear + ffn 96",
                                             "attn kv1 + ffn 128", "no-op", "attn kv4 + ffn 64"]
    assert pl.layers[4].weight_bytes == 0 and pl.layers[4].kv_bytes == 0
    assert pl.layers[2].kv_bytes == 0 and pl.layers[0].kv_bytes == 2 * 64 * 2 * 16 * 2
    assert sum(v["tensors"] for v in pl.totals().values()) == sum(t.n_bytes for t in tensors.values())
    assert os.path.getsize(p) > sum(t.n_bytes for t in tensors.values())


def test_cli_plan_text_and_json(super49b):
    p, _ = super49b
    r = CliRunner().invoke(cli, ["plan", str(p), "--gpu-memory", "12GiB", "-c", "8192", "-o", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert len(d["layers"]) == 80 and d["totals"]["cuda:0"]["total"] <= 12 * GIB
    assert d["predicted_tok_s"] > d["cpu_only_tok_s"] > 0
    assert {x["device"] for x in d["layers"]} == {"cpu", "cuda:0"}
    r = CliRunner().invoke(cli, ["plan", str(p), "--card", "RTX 3060", "-c", "8192", "--cpu-bw", "60"])
    assert r.exit_code == 0, r.output
    assert "predicted decode" in r.output and "360 GB/s" in r.output and "11.00 GiB" not in r.output
    assert r.output.count("\n") > 85


def test_plan_two_gpus_without_a_gpu(super49b):
    """``ggufkit plan --gpu-memory 16GiB,16GiB``: two cards (cuda:0, cuda:1) planned from the header
    alone; each within its budget, every tensor on exactly one device. --tensor-split is
    llama.cpp's: item j of n (layers, then the head) on the first GPU whose cumulative share
    exceeds j / n; a split that overfills a card is a one-line error."""
    p, _ = super49b
    r = CliRunner().invoke(cli, ["plan", str(p), "--gpu-memory", "16GiB,16GiB", "-c", "8192", "-o", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["devices"] == ["cuda:0", "cuda:1"] and d["n_gpu_layers"] == 81
    assert all(d["totals"][g]["total"] <= 16 * GIB for g in d["devices"])
    devs = [lc["device"] for lc in d["layers"]]
    assert devs == sorted(devs) and set(devs) == {"cuda:0", "cuda:1"}      # contiguous, in order
    fields, tensors = read_header(str(p))
    assert sum(v["tensors"] for v in d["totals"].values()) == sum(t.n_bytes for t in tensors.values())
    pl = plan_file(str(p), 8192, "64GiB,64GiB", "all", device="cuda:0,cuda:1", tensor_split="3,1")
    assert [pl.layer_device(il) for il in range(80)] == ["cuda:0"] * 61 + ["cuda:1"] * 19
    assert pl.output_device == "cuda:1" and pl.crossings() == 2
    r = CliRunner().invoke(cli, ["plan", str(p), "--gpu-memory", "16GiB,16GiB", "-ngl", "all", "-ts", "3,1"])
    assert isinstance(r.exception, ModelError) and "tensor split 3,1 puts" in str(r.exception)
    assert "on cuda:0" in str(r.exception) and "\n" not in str(r.exception)    # the CLI prints it as one line

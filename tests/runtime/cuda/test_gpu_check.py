"""tools/gpu_check.sh / tools/conformance/gpu_check.py, tested before a GPU ever sees them: the whole run
under emulation (tiny models, every step on the CPU), and the verdict's exit statuses, the
JSON written after every step and the global deadline, without running anything."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO as ROOT
from tools.conformance import gpu_check as G


@pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")
def test_emulated_run_gives_a_verdict(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    env.pop("GGUFKIT_CUDA_GRAPHS", None)
    r = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--emulate", "--dir", str(tmp_path / "m")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert res["exit_status"] == 0 and res["emulated"]
    steps = res["steps"]
    assert set(steps) == set(G.STEPS)
    assert all(s["ok"] is True for n, s in steps.items() if n != "sanitizer"), steps
    d = steps["decode"]
    assert d["last_position"] > 600 and d["graphs"]["graph_replays"] > 0 and d["graphs"]["argmax_flips"] == 0
    assert {"host_us_per_token", "tg_tok_s"} <= set(steps["speed"]["eager"])
    assert (tmp_path / "out" / "kernels.xml").exists() and (tmp_path / "out" / "gpu_check.log").exists()


def test_verdict_exit_statuses(tmp_path):
    c = G.Check(tmp_path / "r.json", 100.0, True)
    assert json.loads((tmp_path / "r.json").read_text())["steps"] == {}     # written before any step
    c.step("preflight", lambda: {"x": 1})
    assert json.loads((tmp_path / "r.json").read_text())["steps"]["preflight"]["x"] == 1
    assert G.verdict(c) == G.EXIT_OK
    c.target("decode GB/s", 0.3, 0.6)
    assert G.verdict(c) == G.EXIT_SLOW
    c.step("large", lambda: (_ for _ in ()).throw(AssertionError("wrong")))
    assert c.results["steps"]["large"]["ok"] is False and "wrong" in c.results["steps"]["large"]["error"]
    assert G.verdict(c) == G.EXIT_WRONG
    c.step("preflight", lambda: (_ for _ in ()).throw(G.SetupError("missing: gguf")))
    assert G.verdict(c) == G.EXIT_SETUP


def test_steps_past_the_deadline_are_skipped(tmp_path):
    c = G.Check(tmp_path / "r.json", 5.0, False)
    r = c.step("speed", lambda: {"ran": True})
    assert r["ok"] is None and "deadline" in r["skipped"]


@pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")
def test_preflight_without_gguf_still_runs(tmp_path, monkeypatch):
    """The lent image lacks gguf unless its wheel is carried: only the model steps need it, so
    preflight warns instead of ending the run (the kernel tests, the large tensor and mmvq still run)."""
    from runtime.cuda.module import set_emulation
    monkeypatch.setitem(sys.modules, "gguf", None)
    set_emulation(True)
    try:
        c = G.Check(tmp_path / "r.json", 100.0, True)
        r = c.step("preflight", G.preflight, c)
    finally:
        set_emulation(None)
    assert r["ok"] is True and "gguf" in r["warning"]

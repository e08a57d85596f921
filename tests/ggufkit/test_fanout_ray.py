"""Measurement units as Ray tasks (ggufkit.fanout.RayRunner) on a local 2-CPU Ray: the same bytes as
the local run, a worker killed mid-task is retried and changes nothing, a bad address is one line."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.helpers import GOLDENS, REPO

ray = pytest.importorskip("ray")

IMX = str(GOLDENS / "imatrix" / "llama-tiny-c128x4.gguf")
TEXT = str(GOLDENS / "runtime" / "fixture-text.txt")
KW = dict(n_seq=1, seq_len=64, sample_rows=32, progress=False, candidates=("Q3_K", "Q4_0", "Q4_K", "Q6_K", "Q8_0"))


@pytest.fixture(scope="module")
def runner():
    from ggufkit.fanout import RayRunner
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])  # tests.helpers in workers
    r = RayRunner(num_cpus=2)
    yield r
    r.close()


@pytest.fixture(scope="module")
def base(llama_ckpt, tmp_path_factory):
    from ggufkit.convert import convert
    return str(convert(llama_ckpt, tmp_path_factory.mktemp("ray") / "llama-tiny-f16.gguf", "f16"))


def test_ray_gives_the_local_bytes_and_moves_between_ray_and_local(runner, base, tmp_path):
    from ggufkit.budget import quantize_budget

    outs = {}
    for name, kw in (("local", dict(workers=1)), ("ray", dict(ray=runner))):
        out = tmp_path / f"{name}.gguf"
        res = quantize_budget(base, str(out), target_bpw=5.0, imatrix=IMX, calib_text=TEXT, check=False,
                              cache_dir=tmp_path / name, **kw, **KW)
        assert res.units["reused"] == 0 and res.units["computed"] > 0
        outs[name] = out.read_bytes()
    assert outs["ray"] == outs["local"]
    # the Ray run's cache serves a local run: nothing measured again
    res = quantize_budget(base, str(tmp_path / "again.gguf"), target_bpw=5.0, imatrix=IMX, calib_text=TEXT,
                          check=False, cache_dir=tmp_path / "ray", workers=1, **KW)
    assert res.units["computed"] == 0 and (tmp_path / "again.gguf").read_bytes() == outs["local"]


def _running(task: str) -> list[int]:
    """Ray workers executing ``task`` (Ray titles such a process ``ray::<task>``)."""
    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if f"ray::{task}".encode() in f.read():
                    out.append(int(d))
        except (OSError, ValueError):
            continue
    return out


def test_a_worker_killed_mid_task_is_retried(runner, base, tmp_path):
    from ggufkit.fanout import run_units
    from tests.helpers.slow_units import jobs_for, slow_error_unit

    jobs = jobs_for(base, IMX, str(tmp_path / "cache"))
    want = dict(run_units(slow_error_unit, [(0.0, *j) for j in jobs], workers=1, progress=False))
    got, killed = {}, []

    def drive():
        got.update(run_units(slow_error_unit, [(0.3, *j) for j in jobs], ray=runner, progress=False))
    t = threading.Thread(target=drive)
    t.start()
    t0 = time.time()
    while not killed and t.is_alive() and time.time() - t0 < 60:
        for pid in _running("slow_error_unit"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            break
        time.sleep(0.05)
    t.join(120)
    assert killed, "no worker was seen running a unit"
    assert not t.is_alive() and got == want


def test_unreachable_ray_address_is_one_line(base, tmp_path, capsys):
    from tests.ggufkit.test_cli_defects import assert_one_line_error, run_main
    code, _, err = run_main(["quantize", base, tmp_path / "o.gguf", "--target-bpw", "5", "--imatrix", IMX,
                             "--calib-file", TEXT, "--ray=127.0.0.1:1"], capsys)
    assert_one_line_error(code, err, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "o.gguf").exists()

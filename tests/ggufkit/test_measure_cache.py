"""The measurement cache (ggufkit.measure.Cache): content-addressed units, written atomically, so a
run killed by SIGKILL mid-measurement and started again loses only the units in flight and writes
the same bytes; a non-writable cache directory is one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import GOLDENS, REPO

IMX = str(GOLDENS / "imatrix" / "llama-tiny-c128x4.gguf")
TEXT = str(GOLDENS / "runtime" / "fixture-text.txt")
CANDS = ("Q2_K", "Q3_K", "Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0")      # fewer units: a shorter test
KW = dict(n_seq=1, seq_len=64, sample_rows=32, progress=False, candidates=CANDS)

# a measurement in a child process; argv[5] > 0 slows every quantization down so it can be killed mid-run
CHILD = r"""
import json, sys, time
import ggufkit.measure as M
slow = float(sys.argv[5])
if slow:
    real = M.quant_dequant
    def quant_dequant(*a):
        time.sleep(slow)
        return real(*a)
    M.quant_dequant = quant_dequant
m = M.measure(sys.argv[1], sys.argv[2], sys.argv[3], cache_dir=sys.argv[4], n_seq=1, seq_len=64, sample_rows=32,
              workers=1, progress=False, candidates=sys.argv[6].split(","))
print(json.dumps(m.units))
"""


def _units(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.json"))


def _result(m) -> dict:
    d = m.to_json()
    d.pop("seconds"), d.pop("units")
    return d


@pytest.fixture(scope="module")
def base(llama_ckpt, tmp_path_factory):
    from ggufkit.convert import convert
    return str(convert(llama_ckpt, tmp_path_factory.mktemp("cache") / "llama-tiny-f16.gguf", "f16"))


def test_sigkill_mid_run_then_rerun_resumes_with_the_same_bytes(base, tmp_path):
    from ggufkit.budget import quantize_budget
    from ggufkit.measure import measure

    ref = measure(base, IMX, TEXT, cache_dir=tmp_path / "ref", workers=1, **KW)
    assert ref.units["reused"] == 0
    total = ref.units["computed"]

    cache = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-c", CHILD, base, IMX, TEXT, str(cache), "0.1", ",".join(CANDS)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from quant.gguf import GGUFReader
    n_tensors = len(GGUFReader(base).tensors)    # digests are cached too: wait for 40 units beyond them
    t0 = time.time()
    while _units(cache) < n_tensors + 40 and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    assert p.poll() is None, "the measurement finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = _units(cache)

    r = subprocess.run([sys.executable, "-c", CHILD, base, IMX, TEXT, str(cache), "0", ",".join(CANDS)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    units = json.loads(r.stdout.strip().splitlines()[-1])
    assert units["computed"] + units["reused"] == total
    assert units["reused"] >= 40 and units["computed"] < total        # resumed: only what was missing
    assert _units(cache) > before

    again = measure(base, IMX, TEXT, cache_dir=cache, workers=1, **KW)
    assert again.units == {"computed": 0, "reused": total}            # a second run reuses every unit
    assert _result(again) == _result(ref)
    outs = []
    for name, c in (("a", tmp_path / "ref"), ("b", cache)):
        out = tmp_path / f"{name}.gguf"
        quantize_budget(base, str(out), target_bpw=5.0, imatrix=IMX, calib_text=TEXT, cache_dir=c, check=False,
                        workers=1, **KW)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    for f in cache.rglob("*.json"):      # a killed writer may leave a stray .tmp file, never half a unit
        json.loads(f.read_text())


def test_cache_dir_not_writable_is_one_line(base, tmp_path, capsys):
    from ggufkit.errors import GGUFKitError
    from ggufkit.measure import Cache
    from tests.ggufkit.test_cli_defects import assert_one_line_error, run_main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(GGUFKitError, match="not writable"):
        Cache(blocker / "cache")
    code, _, err = run_main(["quantize", base, tmp_path / "o.gguf", "--target-bpw", "5", "--imatrix", IMX,
                             "--calib-file", TEXT, "--cache-dir", blocker / "cache"], capsys)
    assert_one_line_error(code, err, "cache directory", "not writable")
    assert not (tmp_path / "o.gguf").exists()

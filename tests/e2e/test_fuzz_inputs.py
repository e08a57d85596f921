"""A fixed-seed subset of the input fuzzing campaign (tools/fuzz_inputs.py, docs/FUZZ.md).

500 mutated GGUF files and safetensors headers go through `ggufkit info / run / quantize /
dequantize / convert` in a worker process: every case must end in success or a one-line
`error:`, within 10 s, within the memory limit, leaving nothing in the output directory.

Named to run last: the worker loads every type's Numba kernels before the first case, and by then
the kernel tests have filled Numba's on-disk cache, so this test pays only for its cases."""
from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
N_CASES, SEED = 500, 2026


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_inputs", REPO / "tools" / "fuzz_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fuzz_subset_has_no_tracebacks_hangs_allocs_or_leftovers(tmp_path, monkeypatch):
    fz = _fuzz()
    monkeypatch.setattr(fz, "GGUF_SEEDS", [s for s in fz.GGUF_SEEDS if s[0] != "pipeline-q8_0"])
    monkeypatch.setenv("FUZZ_NO_PIPELINE", "1")      # the worker process reads it too
    args = argparse.Namespace(seed=SEED, timeout=10.0, workdir=str(tmp_path), mem_limit=True)
    results = fz.campaign(args, list(range(N_CASES)))
    s = fz.summarize(results)
    bad = {k: v for k, v in s["findings"].items()}
    assert s["cases"] == N_CASES
    assert all(s["verdicts"][v] == 0 for v in fz.BAD), bad
    # the mutations reach both outcomes, and every command ran
    assert s["verdicts"]["ok"] > 20 and s["verdicts"]["reject"] > N_CASES // 2
    assert set(s["by_command"]) == {"info", "run", "quantize", "dequantize", "convert"}
    assert os.listdir(tmp_path) == ["seeds"]

"""A fixed-seed subset of the input fuzzing campaign (tools/conformance/fuzz_inputs.py, docs/FUZZ.md).

500 mutated GGUF files and safetensors headers go through `ggufkit info / run / quantize /
dequantize / convert` in a worker process: every case must end in success or a one-line
`error:`, within 10 s, within the memory limit, leaving nothing in the output directory.

Any order will do: the worker loads (or, on a cold Numba cache, first compiles) every type's kernels
before the first case and outside the per-case limits, so a cold cache costs time, never a verdict."""
from __future__ import annotations

import argparse
import os

N_CASES, SEED = 500, 2026


def _fuzz():
    from tools.conformance import fuzz_inputs
    return fuzz_inputs


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

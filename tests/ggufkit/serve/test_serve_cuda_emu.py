"""The serving engine on the CUDA backend under emulation (tests/runtime/cuda/test_cuda_model.py's setup): a
tiny deci model fully offloaded, 2 slots with chunked prefill, logits and sampling on the device
(the decode-step graph bound to one cache at a time), each continuation equal to its solo greedy run
on the same placed model."""
from __future__ import annotations

import shutil

import pytest

from runtime.device import DeviceOptions
from runtime.generate import generate_ids
from tests.helpers import tiny_models as T
from tests.helpers.serve import run_jobs

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")


@pytest.fixture(scope="module", autouse=True)
def emulate(cuda_emulation):
    pass


def test_engine_on_emulated_cuda_equals_solo(tmp_path):
    from ggufkit.serve.engine import Engine
    from runtime.loader import load
    from runtime.plan import place_model

    path = T.write_tiny(tmp_path / "deci.gguf", "deci", T.DECI_BLOCKS)
    model = load(str(path))
    plan = place_model(model, DeviceOptions(device="cuda", gpu_layers="all"), 64)
    assert plan is not None and all(plan.on_gpu)
    prompts = [[1, 5, 9, 200, 17, 3, 44], [7, 8, 9, 10], [100, 101, 102, 103, 104, 105, 106, 107, 108]]
    n = 5
    solo = [generate_ids(model, p, n) for p in prompts]
    eng = Engine(model, 2 * 32, parallel=2, prefill_chunk=3)
    eng.start()
    try:
        got = run_jobs(eng, prompts, n, timeout=300)
    finally:
        eng.stop()
    tok = model.tokenizer
    for s, ids in zip(got, solo):
        assert s.error is None and "".join(s.text) == tok.decode([t for t in ids if not tok.is_eog(t)])

"""The serving engine on the CUDA backend under emulation (tests/test_cuda_model.py's setup): a
tiny deci model fully offloaded, 2 slots with chunked prefill, logits and sampling on the device
(the decode-step graph bound to one cache at a time), each continuation equal to its solo greedy run
on the same placed model."""
from __future__ import annotations

import shutil
import threading

import pytest

from runtime.device import DeviceOptions
from runtime.generate import GREEDY, generate_ids
from tests.helpers import tiny_models as T

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")


@pytest.fixture(scope="module", autouse=True)
def emulate():
    from runtime.cuda.module import set_emulation
    set_emulation(True)
    yield
    set_emulation(None)


def test_engine_on_emulated_cuda_equals_solo(tmp_path):
    from ggufkit.serve.engine import Engine, Job
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
    got, done = [[] for _ in prompts], [threading.Event() for _ in prompts]

    def emit(i):
        return lambda ev: done[i].set() if ev[0] != "text" else got[i].append(ev[1])

    eng.start()
    try:
        for i, p in enumerate(prompts):
            eng.submit(Job(p, GREEDY, n, [], emit(i)))
        for d in done:
            assert d.wait(300)
    finally:
        eng.stop()
    tok = model.tokenizer
    for i in range(len(prompts)):
        assert "".join(got[i]) == tok.decode([t for t in solo[i] if not tok.is_eog(t)])

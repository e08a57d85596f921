"""ggufkit serve's engine on the real gemma-3-270m (Q4_K_M, $GGUFKIT_GEMMA3; skipped when absent,
except in CI): 4 slots with chunked prefill give each prompt's solo greedy continuation, and the
built-in gemma chat template (the GGUF carries none) serves a chat request."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("starlette")

from ggufkit.serve.engine import Engine, Job  # noqa: E402
from runtime.generate import GREEDY, generate_ids  # noqa: E402

PROMPTS = ["The capital of France is", "Water boils at a temperature of",
           "Once upon a time, in a small village by the sea, there lived an old fisherman who",
           "1, 2, 3, 4, 5,"]


@pytest.fixture(scope="module")
def gemma(gemma3_path):
    from runtime.loader import load
    return load(str(gemma3_path), n_threads=2)


def test_gemma3_batched_chunked_equals_solo(gemma):
    enc, n = gemma.tokenizer.encode, 8
    solo = [generate_ids(gemma, enc(p), n) for p in PROMPTS]
    eng = Engine(gemma, 4 * 256, parallel=4, prefill_chunk=7)
    done = [threading.Event() for _ in PROMPTS]
    got = [[] for _ in PROMPTS]
    res = [None] * len(PROMPTS)

    def sink(i):
        def emit(ev):
            if ev[0] == "text":
                got[i].append(ev[1])
            else:
                res[i] = ev[1]
                done[i].set()
        return emit

    eng.start()
    try:
        for i, p in enumerate(PROMPTS):
            eng.submit(Job(enc(p), GREEDY, n, [], sink(i)))
        for d in done:
            assert d.wait(120)
    finally:
        eng.stop()
    tok = gemma.tokenizer
    for i in range(len(PROMPTS)):
        assert "".join(got[i]) == tok.decode([t for t in solo[i] if not tok.is_eog(t)]), PROMPTS[i]
        assert res[i].n_gen == len(solo[i])


def test_gemma3_chat_with_builtin_template(gemma):
    from starlette.testclient import TestClient

    from ggufkit.serve.app import create_app
    eng = Engine(gemma, 512, parallel=1)
    eng.start()
    try:
        http = TestClient(create_app(eng, "gemma"))
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "Be brief."},
                                                                 {"role": "user", "content": "Hi"}],
                                                    "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200, r.text
        u = r.json()["usage"]
        ids = gemma.tokenizer.encode("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
                                     add_special=False)
        assert u["prompt_tokens"] == len(ids) and 1 <= u["completion_tokens"] <= 4
    finally:
        eng.stop()

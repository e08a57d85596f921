"""ggufkit serve's engine on the real gemma-3-270m (Q4_K_M, $GGUFKIT_GEMMA3; skipped when absent,
except in CI): 4 slots with chunked prefill give each prompt's solo greedy continuation, and the
built-in gemma chat template (the GGUF carries none) serves a chat request."""
from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from ggufkit.serve.engine import Engine  # noqa: E402
from runtime.generate import generate_ids  # noqa: E402
from tests.helpers.serve import run_jobs  # noqa: E402

PROMPTS = ["The capital of France is", "Water boils at a temperature of",
           "Once upon a time, in a small village by the sea, there lived an old fisherman who",
           "1, 2, 3, 4, 5,"]


@pytest.fixture(scope="module")
def gemma(gemma3_path):
    from runtime.loader import load
    return load(str(gemma3_path), n_threads=2)


def engine_texts(gemma, prompts, n, parallel, chunk):
    eng = Engine(gemma, 4 * 256, parallel=parallel, prefill_chunk=chunk)
    eng.start()
    try:
        if parallel == 1:
            return [run_jobs(eng, [gemma.tokenizer.encode(p)], n, timeout=120)[0] for p in prompts]
        return run_jobs(eng, [gemma.tokenizer.encode(p) for p in prompts], n, timeout=120)
    finally:
        eng.stop()


def test_gemma3_batched_equals_solo(gemma):
    """4 slots decoding in one forward pass per step: each prompt's greedy tokens equal its solo
    run, with whole-prompt prefill (against runtime.generate) and with 7-token prefill chunks
    (against the same request alone on the engine). A chunk of under 9 tokens runs on the decode
    kernels (activations quantized as ggml's vec_dot does) and a whole prompt on the prefill
    tiles, so chunked and whole prefill differ by float noise that can flip gemma's near-ties
    ("He was a very" / "a good": logits 0.1 apart); batching itself changes no bit."""
    tok, n = gemma.tokenizer, 8
    solo = [generate_ids(gemma, tok.encode(p), n) for p in PROMPTS]
    got = engine_texts(gemma, PROMPTS, n, 4, 256)
    for s, ids, p in zip(got, solo, PROMPTS):
        assert "".join(s.text) == tok.decode([t for t in ids if not tok.is_eog(t)]), p
        assert s.result.n_gen == len(ids)
    alone = engine_texts(gemma, PROMPTS, n, 1, 7)
    together = engine_texts(gemma, PROMPTS, n, 4, 7)
    assert ["".join(s.text) for s in together] == ["".join(s.text) for s in alone]


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

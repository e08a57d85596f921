"""ggufkit.serve.engine and the app in-process: slots give their solo greedy outputs whether run
alone, together, with chunked prefill or from the prefix cache; cancellation frees a slot; the
queue bound gives 429; a scripted model's <TOOLCALL> / <think> output reaches the openai client
as tool_calls and reasoning_content, streamed and not."""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("openai")
pytestmark = pytest.mark.timeout(120)

from ggufkit.serve.engine import ContextTooSmall, Engine, Job, QueueFull  # noqa: E402
from runtime.generate import GREEDY, generate_ids  # noqa: E402
from runtime.models.base import SeqBatch  # noqa: E402
from tests.helpers.serve import Sink, run_jobs  # noqa: E402
from tests.helpers.tiny_models import write_chat_gguf  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from runtime.loader import load
    return load(str(write_chat_gguf(tmp_path_factory.mktemp("serve") / "chat.gguf")))


def solo_ids(model, ids, n):
    return [t for t in generate_ids(model, ids, n)]


def prompts_of(model):
    enc = model.tokenizer.encode
    return [enc("Hello there, how are you"), enc("The capital of France is"),
            enc("Hello there, how is the weather"), enc("One two three four five six seven eight nine ten eleven")]


def test_batched_slots_equal_solo_runs_and_prefix_cache(model, monkeypatch):
    ps = prompts_of(model)
    want = [model.tokenizer.decode([t for t in solo_ids(model, p, 6) if not model.tokenizer.is_eog(t)]) for p in ps]
    batches, forward = [], model.forward

    def spy(tokens, cache, out_rows=None):
        if isinstance(cache, SeqBatch):
            batches.append(len(cache))
        return forward(tokens, cache, out_rows)
    monkeypatch.setattr(model, "forward", spy)
    eng = Engine(model, 4 * 128, parallel=4, prefill_chunk=3)      # tiny chunks: prefill spans many steps
    eng.start()
    try:
        got = run_jobs(eng, ps)
        assert max(batches) >= 3              # the slots decoded together, one forward pass per step
        assert ["".join(s.text) for s in got] == want
        assert all(s.result.text == w for s, w in zip(got, want))
        # the same prompts again: each finds its slot's cached prefix and evaluates 1 token
        again = run_jobs(eng, ps)
        assert ["".join(s.text) for s in again] == want
        assert [s.result.n_cached for s in again] == [len(p) - 1 for p in ps]
        assert eng.metrics.cached_tokens == sum(len(p) - 1 for p in ps)
        assert eng.metrics.steps > 0 and eng.busy_slots() == 0
    finally:
        eng.stop()


def test_more_jobs_than_slots_queue_and_cancel(model):
    ps = prompts_of(model)
    eng = Engine(model, 2 * 128, parallel=2, max_queue=2)
    with pytest.raises(ContextTooSmall):
        eng.submit(Job(list(range(200)), GREEDY, 1, [], Sink()))
    eng.submit(Job(ps[0], GREEDY, 4, [], Sink()))
    eng.submit(Job(ps[1], GREEDY, 4, [], Sink()))
    with pytest.raises(QueueFull):                  # not started: nothing leaves the queue
        eng.submit(Job(ps[2], GREEDY, 4, [], Sink()))
    eng.waiting.clear()
    eng.start()
    try:
        long = Sink()
        job = Job(ps[3], GREEDY, None, [], long)     # until the context is full, unless cancelled
        eng.submit(job)
        while not long.text:
            long.done.wait(0.01)
        job.cancel()
        assert long.wait(10).result.finish_reason == "cancelled"
        assert eng.busy_slots() == 0
        (short,) = run_jobs(eng, [ps[0]], n=3)
        assert short.result.finish_reason == "length" and short.result.n_gen == 3
    finally:
        eng.stop()


def test_stop_strings_cut_and_hold_back(model):
    p = prompts_of(model)[1]
    full = model.tokenizer.decode(solo_ids(model, p, 8))
    stop = full[3:6]
    eng = Engine(model, 128, parallel=1)
    eng.start()
    try:
        s = Sink()
        eng.submit(Job(p, GREEDY, 8, [stop], s))
        s.wait()
        assert s.result.finish_reason == "stop" and "".join(s.text) == full[:full.find(stop)]
    finally:
        eng.stop()


# ---------------------------------------------------------------- the app in-process, scripted model

class Scripted:
    """The chat model with its logits replaced: it 'generates' ``script`` (token ids) then EOS."""

    def __init__(self, real, script):
        self.real, self.script = real, list(script)
        self.hp, self.tokenizer, self.gguf, self.out_backend = real.hp, real.tokenizer, real.gguf, real.out_backend
        self.decode_graph = None

    def new_cache(self, n_ctx):
        c = self.real.new_cache(n_ctx)
        c.seen = []
        return c

    def forward(self, tokens, cache, out_rows=None):
        cache.seen = cache.seen[:cache.n_past] + [int(t) for t in tokens]
        cache.n_past += len(tokens)
        return cache

    def logits(self, cache, host=True):
        k = next((n for n in range(min(len(self.script), len(cache.seen)), 0, -1)
                  if cache.seen[-n:] == self.script[:n]), 0)
        x = np.zeros((1, self.hp.n_vocab), np.float32)
        x[0, self.script[k] if k < len(self.script) else self.tokenizer.eos] = 10.0
        return x


def client_for(model, text, api_key=None, parallel=1, max_queue=64, start=True):
    import openai
    from starlette.testclient import TestClient

    from ggufkit.serve.app import create_app
    eng = Engine(Scripted(model, model.tokenizer.encode(text, add_special=False)), 512 * parallel, parallel, max_queue)
    if start:
        eng.start()
    http = TestClient(create_app(eng, "chat.gguf", api_key))
    return eng, http, openai.OpenAI(base_url="http://testserver/v1", api_key=api_key or "none", http_client=http,
                                    max_retries=0)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
REPLY = '<think>\nneed the weather\n</think>\n\n<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</TOOLCALL>'


def test_tool_call_and_reasoning_reach_the_client(model):
    eng, http, client = client_for(model, REPLY)
    try:
        msgs = [{"role": "user", "content": "Weather in Paris?"}]
        r = client.chat.completions.create(model="chat.gguf", messages=msgs, tools=TOOLS, temperature=0)
        m = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls"
        assert m.model_extra["reasoning_content"] == "need the weather"
        (call,) = m.tool_calls
        assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Paris"}'
        assert call.id.startswith("call_") and r.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="chat.gguf", messages=msgs, tools=TOOLS, stream=True,
                                                     temperature=0))
        reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert reasoning.strip() == "need the weather"
        assert [tc.function.name for tc in calls] == ["get_weather"] and calls[0].id.startswith("call_")
        assert chunks[-1].choices[0].finish_reason == "tool_calls" and chunks[-1].usage.prompt_tokens > 0
        # and back: the call and the tool's answer in the next request render through the template
        msgs += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
        r2 = client.chat.completions.create(model="chat.gguf", messages=msgs, tools=TOOLS, temperature=0)
        assert r2.usage.prompt_tokens > r.usage.prompt_tokens
        assert r2.usage.prompt_tokens_details.cached_tokens > 0        # the shared prefix came from the cache
    finally:
        eng.stop()


def test_api_key_and_queue_full(model):
    import openai
    eng, http, client = client_for(model, "ok", api_key="s3cret")
    try:
        assert client.models.list().data[0].id == "chat.gguf"
        assert http.get("/health").status_code == 200                       # public
        r = http.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert http.get("/metrics").status_code == 401
        bad = openai.OpenAI(base_url="http://testserver/v1", api_key="nope", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="chat.gguf", messages=[{"role": "user", "content": "x"}])
    finally:
        eng.stop()
    eng, http, client = client_for(model, "ok", max_queue=0, start=False)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="chat.gguf", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 429 and e.value.body["code"] == "queue_full"


class Endless(Scripted):
    """Never ends: the same token every step, a little slowly (a request outlives its client)."""

    def logits(self, cache, host=True):
        import time
        time.sleep(0.005)
        x = np.zeros((1, self.hp.n_vocab), np.float32)
        x[0, self.script[0]] = 10.0
        return x


def test_client_disconnect_frees_the_slot(model):
    """A real uvicorn in a thread: a non-streaming client that times out and a stream that is
    dropped both free their slot within a step or two."""
    import socket
    import time

    import httpx
    import uvicorn

    from ggufkit.serve.app import create_app
    eng = Engine(Endless(model, model.tokenizer.encode(" a", add_special=False)), 512, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(eng, "m"), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    eng.start()
    th.start()
    try:
        base = f"http://127.0.0.1:{port}"
        while not server.started:
            time.sleep(0.05)

        def wait_free(n_cancelled):
            deadline = time.time() + 5
            while (eng.busy_slots() or eng.metrics.finished["cancelled"] < n_cancelled) and time.time() < deadline:
                time.sleep(0.02)
            assert eng.busy_slots() == 0 and eng.metrics.finished["cancelled"] == n_cancelled, eng.metrics.finished

        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base + "/v1/completions", json={"prompt": "hi", "temperature": 0}, timeout=0.5)
        wait_free(1)
        with httpx.stream("POST", base + "/v1/completions", json={"prompt": "hi", "stream": True}, timeout=5) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 3:
                    break
        wait_free(2)
        assert httpx.get(base + "/health").json()["status"] == "ok"
    finally:
        server.should_exit = True
        th.join(5)
        eng.stop()


def test_mutated_requests_never_500(model):
    """Every field of a valid request swapped for values of other types: a 200, or a 4xx in OpenAI's
    error shape, never a 500."""
    eng, http, _ = client_for(model, "ok")
    weird = [None, 0, -1, 10 ** 12, 1.5, float("nan"), "x", "", True, [], [1], ["a"], {}, {"a": 1}, [{"type": "x"}]]
    chat = {"model": "chat.gguf", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0,
            "top_p": 0.9, "top_k": 5, "seed": 1, "stop": ["x"], "stream": False, "tools": TOOLS, "tool_choice": "auto",
            "reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": True}, "stream_options": {},
            "response_format": {"type": "text"}, "n": 1, "min_p": 0.1, "repeat_penalty": 1.1, "ignore_eos": False}
    comp = {"prompt": "hi", "max_tokens": 2, "temperature": 0}
    try:
        for path, base in (("/v1/chat/completions", chat), ("/v1/completions", comp),
                           ("/tokenize", {"content": "hi"}), ("/detokenize", {"tokens": [1, 2]})):
            for key in base:
                for v in weird:
                    body = dict(base, **{key: v})
                    r = http.post(path, content=__import__("json").dumps(body).encode())
                    assert r.status_code < 500, (path, key, v, r.text)
                    if r.status_code >= 400:
                        assert set(r.json()["error"]) == {"message", "type", "param", "code"}, (path, key, v)
            for m in weird:                       # a message itself of a wrong shape
                r = http.post("/v1/chat/completions", json=dict(chat, messages=[m]) if m == m else dict(chat))
                assert r.status_code < 500, (m, r.text)
    finally:
        eng.stop()


class Exploding(Scripted):
    """Fails on any prompt holding token 13 (a model error mid-step)."""

    def forward(self, tokens, cache, out_rows=None):
        if 13 in [int(t) for t in tokens]:
            raise RuntimeError("boom")
        return super().forward(tokens, cache, out_rows)


def test_a_failing_step_fails_its_request_and_the_server_goes_on(model):
    from starlette.testclient import TestClient

    from ggufkit.serve.app import create_app
    eng = Engine(Exploding(model, model.tokenizer.encode("ok", add_special=False)), 512, 1)
    logged = []
    eng.log = logged.append
    eng.start()
    try:
        http = TestClient(create_app(eng, "m"))
        r = http.post("/v1/completions", json={"prompt": [1, 13, 2], "max_tokens": 2})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "boom" not in r.text and logged == ["engine step failed: RuntimeError: boom"]
        r = http.post("/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 2})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "ok"
    finally:
        eng.stop()

"""A live ``ggufkit serve`` (subprocess on a free 127.0.0.1 port, API key set, 4 slots) driven by
the real ``openai`` client and httpx: chat streamed and not, reasoning off, a tool-call round trip,
/v1/completions equal to ``ggufkit run --temp 0``, every error case (status + OpenAI's shape),
the API key, tokenize / detokenize / models / metrics, and a bounded load test with cancelled
streams. The server's log must hold no traceback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from tests.helpers.tiny_models import write_chat_gguf  # noqa: E402

KEY = "test-key-123"
pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    def __init__(self, path, port, log, pid):
        self.path, self.port, self.log, self.pid = path, port, log, pid
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-live")
    path = write_chat_gguf(d / "chat.gguf")
    port, log = free_port(), d / "server.log"
    env = dict(os.environ, GGUFKIT_API_KEY=KEY)
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "ggufkit", "serve", str(path), "--port", str(port),
                                 "-np", "4", "-c", "2048", "-t", "1", "--queue-size", "32"],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, f"server exited: {log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, f"server did not come up: {log.read_text()}"
            time.sleep(0.3)
        yield Live(path, port, log, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    text = log.read_text()
    assert "Traceback" not in text, text


USER = [{"role": "user", "content": "Hello, who are you?"}]


def test_chat_streamed_and_not(live):
    r = live.client.chat.completions.create(model="chat.gguf", messages=USER, max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(live.client.chat.completions.create(model="chat.gguf", messages=USER, max_tokens=8, temperature=0,
                                                      stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == r.usage.prompt_tokens - 1   # prefix cache
    with live.http.stream("POST", "/v1/chat/completions", json={"messages": USER, "max_tokens": 2, "stream": True}) as s:
        lines = [ln for ln in s.iter_lines() if ln]
    assert s.headers["content-type"].startswith("text/event-stream") and lines[-1] == "data: [DONE]"


def test_reasoning_off(live):
    on = live.client.chat.completions.create(model="chat.gguf", messages=USER, max_tokens=2, temperature=0)
    off = live.client.chat.completions.create(model="chat.gguf", messages=USER, max_tokens=2, temperature=0,
                                              reasoning_effort="none")
    off2 = live.client.chat.completions.create(model="chat.gguf", messages=USER, max_tokens=2, temperature=0,
                                               extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    tok = live.http.post("/tokenize", json={"content": "<think>\n\n</think>\n\n"}).json()["tokens"]
    assert off.usage.prompt_tokens == on.usage.prompt_tokens + len(tok) == off2.usage.prompt_tokens
    assert off.choices[0].message.content == off2.choices[0].message.content
    assert "reasoning_content" not in (off.choices[0].message.model_extra or {})


def test_tool_call_round_trip_renders(live):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}]
    r = live.client.chat.completions.create(model="chat.gguf", messages=msgs, tools=tools, tool_choice="auto",
                                            max_tokens=3, temperature=0)
    plain = live.client.chat.completions.create(model="chat.gguf", messages=msgs[:1], max_tokens=1, temperature=0)
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 20


def test_completions_equal_ggufkit_run(live):
    prompt = "The quick brown fox"
    r = live.client.completions.create(model="chat.gguf", prompt=prompt, max_tokens=10, temperature=0)
    out = subprocess.run([sys.executable, "-m", "ggufkit", "run", str(live.path), "-p", prompt, "-n", "10",
                          "--temp", "0", "-t", "1"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out == prompt + r.choices[0].text + "\n"
    assert r.object == "text_completion" and r.usage.completion_tokens == 10
    chunks = list(live.client.completions.create(model="chat.gguf", prompt=prompt, max_tokens=10, temperature=0,
                                                 stream=True))
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    ids = live.http.post("/tokenize", json={"content": prompt, "add_special": True}).json()["tokens"]
    r2 = live.client.completions.create(model="chat.gguf", prompt=ids, max_tokens=10, temperature=0)
    assert r2.choices[0].text == r.choices[0].text


def test_tokenize_detokenize_models_metrics(live):
    t = live.http.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert [p["piece"] for p in t] == ["Hello", " world"]
    assert live.http.post("/detokenize", json={"tokens": [p["id"] for p in t]}).json() == {"content": "Hello world"}
    (m,) = live.client.models.list().data
    assert m.id == "chat.gguf"
    text = live.http.get("/metrics").text
    for name in ("requests_total", "tokens_predicted_total", "queue_depth", "step_seconds_total", "batch_size_last"):
        assert f"# TYPE ggufkit_{name}" in text


ERRORS = [  # (method, path, body (dict, or raw bytes), status, param or None)
    ("POST", "/v1/chat/completions", b"{not json", 400, None),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400, None),
    ("POST", "/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
    ("POST", "/v1/chat/completions", {"messages": USER, "max_tokens": "ten"}, 400, "max_tokens"),
    ("POST", "/v1/chat/completions", {"messages": USER, "temperature": 3}, 400, "temperature"),
    ("POST", "/v1/chat/completions", {"messages": USER, "top_p": -0.5}, 400, "top_p"),
    ("POST", "/v1/chat/completions", {"messages": USER, "model": "gpt-4o"}, 404, "model"),
    ("POST", "/v1/chat/completions", {"messages": USER, "tools": [{"type": "function", "function": {"name": 7}}]},
     400, "tools"),
    ("POST", "/v1/chat/completions", {"messages": USER, "response_format": {"type": "json_schema"}}, 400,
     "response_format"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 600}]}, 400, "messages"),
    ("POST", "/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": "word " * 600, "stream": True}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": [1, 10 ** 9]}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": "x", "stream": True, "seed": "s"}, 400, "seed"),
    ("POST", "/tokenize", {"content": 3}, 400, "content"),
    ("POST", "/detokenize", {"tokens": [-1]}, 400, "tokens"),
    ("GET", "/v1/nothing", None, 404, None),
    ("GET", "/v1/chat/completions", None, 405, None),
]


@pytest.mark.parametrize("method,path,body,status,param", ERRORS)
def test_errors_have_openai_shape(live, method, path, body, status, param):
    kw = {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
    r = live.http.request(method, path, **kw)
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"] and e["param"] == param


def test_context_overflow_and_body_cap(live):
    with pytest.raises(openai.BadRequestError) as ei:
        live.client.chat.completions.create(model="chat.gguf", messages=[{"role": "user", "content": "word " * 600}])
    assert ei.value.body["code"] == "context_length_exceeded" and "512" in ei.value.body["message"]
    r = live.http.post("/v1/completions", content=b'{"prompt": "' + b"x" * (9 * 1024 * 1024) + b'"}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert live.http.get("/health").json()["status"] == "ok"


def test_api_key_required(live):
    assert httpx.get(live.base + "/health").status_code == 200
    r = httpx.get(live.base + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=live.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="chat.gguf", messages=USER, max_tokens=1)


@pytest.mark.timeout(240)
def test_load_concurrent_clients_with_cancellations(live):
    """32 clients x 4 requests on 4 slots (28 wait in the queue), 8 prompts of mixed lengths, 6 or
    12 tokens; every fourth client's first request is a stream it drops after two chunks. Every
    other request must equal its solo greedy run; the server stays healthy, every slot comes free
    and its resident memory grows by at most 10%."""
    prompts = [f"Story number {i}: once upon a time" + " there" * (i * 7) for i in range(8)]
    lengths = (6, 12)
    solo = {(j, n): live.client.completions.create(prompt=prompts[j], model="chat.gguf", max_tokens=n,
                                                   temperature=0).choices[0].text
            for j in range(len(prompts)) for n in lengths}
    got, errors = {}, []
    rss_before = rss(live.pid)

    def client(i):
        j, n = i % len(prompts), lengths[(i // len(prompts)) % 2]
        try:
            c = openai.OpenAI(base_url=live.base + "/v1", api_key=KEY, max_retries=0, timeout=180)
            for k in range(4):
                if k == 0 and i % 4 == 0:
                    stream = c.completions.create(prompt=prompts[j], model="chat.gguf", max_tokens=200, temperature=0,
                                                  stream=True)
                    for m, _ in enumerate(stream):
                        if m == 1:
                            break
                    stream.close()
                    continue
                r = c.completions.create(prompt=prompts[j], model="chat.gguf", max_tokens=n, temperature=0)
                got[(i, k)] = (r.choices[0].text, solo[(j, n)])
        except Exception as e:                           # surfaced below
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(200)
    assert not errors, errors[:5]
    assert len(got) == 32 * 4 - 8
    for key, (text, want) in got.items():
        assert text == want, key
    assert live.http.get("/health").json()["status"] == "ok"
    deadline = time.time() + 20
    while live.http.get("/health").json()["slots_processing"] and time.time() < deadline:
        time.sleep(0.2)
    assert live.http.get("/health").json()["slots_processing"] == 0
    m = live.http.get("/metrics").text
    assert 'ggufkit_requests_finished_total{reason="cancelled"}' in m, m
    if rss_before:
        assert rss(live.pid) <= 1.10 * rss_before, (rss_before, rss(live.pid))


def rss(pid) -> int:
    """Resident memory of a process in bytes (Linux; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def test_loadgen_and_ignore_eos(live):
    from ggufkit.serve.loadgen import format_rows, measure
    rows = measure(live.base, (1, 2), n=6, api_key=KEY)
    assert [r["streams"] for r in rows] == [1, 2] and not any(r["errors"] for r in rows)
    assert [r["tokens"] for r in rows] == [6, 12]                  # ignore_eos: every stream gives all 6
    assert all(r["agg_tok_s"] > 0 and r["ttft_mean_s"] > 0 for r in rows)
    assert format_rows(rows).count("\n") == 4

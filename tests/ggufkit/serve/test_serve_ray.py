"""``ggufkit serve --ray --replicas 2``: a subprocess that starts a local Ray cluster and deploys
two replicas behind one endpoint on a free 127.0.0.1 port; the real ``openai`` client is answered
through Ray's proxy, both replicas answer, the API key holds, and SIGTERM tears everything down."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("ray.serve")
pytest.importorskip("starlette")

from tests.ggufkit.serve.test_serve_live import free_port  # noqa: E402
from tests.helpers.tiny_models import write_chat_gguf  # noqa: E402

KEY = "ray-key-7"
pytestmark = pytest.mark.timeout(240)


def test_ray_two_replicas_behind_one_endpoint(tmp_path):
    path = write_chat_gguf(tmp_path / "chat.gguf")
    port, log = free_port(), tmp_path / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "ggufkit", "serve", str(path), "--ray", "--replicas", "2",
                                 "--port", str(port), "-np", "2", "-c", "1024", "-t", "1", "--api-key", KEY],
                                stdout=f, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 150
        while True:
            assert proc.poll() is None, f"server exited: {log.read_text()}"
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200 and b"through Ray Serve" in log.read_bytes():
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, f"server did not come up: {log.read_text()}"
            time.sleep(0.5)
        client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=60)
        msgs = [{"role": "user", "content": "Hello there"}]
        r = client.chat.completions.create(model="chat.gguf", messages=msgs, max_tokens=6, temperature=0)
        assert r.object == "chat.completion" and 0 < r.usage.completion_tokens <= 6
        chunks = list(client.chat.completions.create(model="chat.gguf", messages=msgs, max_tokens=6, temperature=0,
                                                     stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
        c = client.completions.create(model="chat.gguf", prompt="The quick brown fox", max_tokens=5, temperature=0)
        assert c.usage.completion_tokens == 5
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
        replicas = {httpx.get(base + "/health", timeout=10).json()["replica"] for _ in range(40)}
        assert len(replicas) == 2, replicas                       # both replicas serve the one endpoint
    finally:
        proc.terminate()
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            rc = None
    assert rc == 0, log.read_text()[-3000:]
    with pytest.raises(httpx.HTTPError):
        httpx.get(base + "/health", timeout=2)                   # Ray's proxy went down with the process


def test_ray_bad_input_is_one_line_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 12)
    path = write_chat_gguf(tmp_path / "chat.gguf")
    for args in ([str(bad)], [str(path), "--chat-template", str(tmp_path / "missing.jinja")]):
        r = subprocess.run([sys.executable, "-m", "ggufkit", "serve", *args, "--ray", "--port", str(free_port())],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr and "ray" not in r.stdout.lower()

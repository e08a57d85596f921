"""The HTTP side of ``ggufkit serve``: Starlette routes over an ``Engine``, run by uvicorn.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /health
    GET /metrics (Prometheus text)   POST /tokenize   POST /detokenize   (llama-server's shapes)

Every handler answers a client error as OpenAI's ``{"error": {...}}`` with a 4xx and never lets
an exception (or its traceback) out: unexpected ones become a 500 and one log line.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import logging.config
import os
import time

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ggufkit.serve import protocol as P
from ggufkit.serve.engine import ContextTooSmall, Engine, Job, QueueFull
from ggufkit.serve.templates import chat_template

log = logging.getLogger("ggufkit.serve")
MAX_BODY = 8 * 1024 * 1024           # request bodies above this are refused (413)
DISCONNECT_POLL = 0.25               # seconds between checks that a non-streaming client is still there
PUBLIC = {"/health", "/v1/health"}    # answered without the API key (as llama-server does)


def error_response(e: P.APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def read_json(request: Request, cap: int = MAX_BODY):
    """The request body parsed as JSON; 413 past ``cap`` bytes, 400 if it is not JSON."""
    n = request.headers.get("content-length")
    if n is not None and n.isdigit() and int(n) > cap:
        raise P.APIError(413, f"request body of {n} bytes is over the limit of {cap}", "invalid_request_error",
                         None, "request_too_large")
    chunks, size = [], 0
    async for c in request.stream():
        size += len(c)
        if size > cap:
            raise P.APIError(413, f"request body is over the limit of {cap} bytes", "invalid_request_error",
                             None, "request_too_large")
        chunks.append(c)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as e:
        raise P.bad(f"the request body is not valid JSON: {e}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise P.bad("the request body must be a JSON object", None, "invalid_type")
    return body


class Server:
    """The routes, bound to one engine and its model."""

    def __init__(self, engine: Engine, model_id: str, api_key: str | None = None, template: str | None = None,
                 replica: str | None = None):
        self.engine, self.model, self.model_id, self.replica = engine, engine.model, model_id, replica
        self.api_key = api_key
        self.tok = self.model.tokenizer
        self.template = template or chat_template(getattr(self.model, "gguf", None), self.model.hp.arch)[0]
        self.bos = self.tok.tokens[self.tok.bos] if self.tok.bos is not None else ""
        self.eos = self.tok.tokens[self.tok.eos] if self.tok.eos is not None else ""
        self.created = int(time.time())

    # -------------------------------------------------------------- plumbing

    def wrap(self, name: str, fn):
        """Authentication, request counting, errors as OpenAI's shape, one log line per failure."""
        async def handler(request: Request) -> Response:
            try:
                if self.api_key is not None and request.url.path not in PUBLIC:
                    got = request.headers.get("authorization", "").encode()
                    if not hmac.compare_digest(got, f"Bearer {self.api_key}".encode()):
                        raise P.APIError(401, "invalid or missing API key (Authorization: Bearer ...)",
                                         "authentication_error", None, "invalid_api_key")
                self.engine.metrics.requests[name] += 1
                return await fn(request)
            except P.APIError as e:
                log.info("%s %s -> %d: %s", request.method, request.url.path, e.status, e.message)
                self.engine.metrics.rejected[str(e.status)] += 1
                return error_response(e)
            except ClientDisconnect:
                return Response(status_code=499)
            except Exception as e:                   # no traceback to the client or the log
                log.error("%s %s -> 500: %s: %s", request.method, request.url.path, type(e).__name__, e)
                return error_response(P.APIError(500, "internal server error", "server_error", None, None))
        return handler

    def routes(self) -> list[Route]:
        r = [("/health", self.health, ["GET"]), ("/v1/health", self.health, ["GET"]),
             ("/v1/models", self.models, ["GET"]), ("/models", self.models, ["GET"]),
             ("/metrics", self.metrics, ["GET"]),
             ("/v1/chat/completions", self.chat, ["POST"]), ("/chat/completions", self.chat, ["POST"]),
             ("/v1/completions", self.completions, ["POST"]), ("/completions", self.completions, ["POST"]),
             ("/tokenize", self.tokenize, ["POST"]), ("/detokenize", self.detokenize, ["POST"])]
        return [Route(p, self.wrap(p.replace("/v1/", "/").strip("/").replace("/", "_"), f), methods=m)
                for p, f, m in r]

    # -------------------------------------------------------------- simple endpoints

    async def health(self, request):
        body = {"status": "ok", "slots_idle": self.engine.parallel - self.engine.busy_slots(),
                "slots_processing": self.engine.busy_slots()}
        if self.replica is not None:
            body["replica"] = self.replica
        return JSONResponse(body)

    async def models(self, request):
        hp = self.model.hp
        return JSONResponse({"object": "list", "data": [{
            "id": self.model_id, "object": "model", "created": self.created, "owned_by": "ggufkit",
            "meta": {"n_vocab": hp.n_vocab, "n_ctx_train": hp.n_ctx_train, "n_embd": hp.n_embd,
                     "n_ctx_slot": self.engine.n_ctx, "n_parallel": self.engine.parallel}}]})

    async def metrics(self, request):
        e, m = self.engine, self.engine.metrics
        lines = []

        def add(name, kind, help_, samples):
            lines.append(f"# HELP ggufkit_{name} {help_}")
            lines.append(f"# TYPE ggufkit_{name} {kind}")
            for labels, v in samples:
                lab = "{" + ",".join(f'{k}="{val}"' for k, val in labels.items()) + "}" if labels else ""
                lines.append(f"ggufkit_{name}{lab} {v}")

        add("requests_total", "counter", "HTTP requests by endpoint.",
            [({"endpoint": k}, v) for k, v in sorted(m.requests.items())] or [({}, 0)])
        add("requests_rejected_total", "counter", "Requests refused, by HTTP status or reason.",
            [({"reason": k}, v) for k, v in sorted(m.rejected.items())] or [({}, 0)])
        add("requests_finished_total", "counter", "Generations finished, by finish reason.",
            [({"reason": k}, v) for k, v in sorted(m.finished.items())] or [({}, 0)])
        add("prompt_tokens_total", "counter", "Prompt tokens received.", [({}, m.prompt_tokens)])
        add("prompt_tokens_cached_total", "counter", "Prompt tokens served from the prefix cache.",
            [({}, m.cached_tokens)])
        add("tokens_predicted_total", "counter", "Tokens generated.", [({}, m.gen_tokens)])
        add("queue_depth", "gauge", "Requests waiting for a slot.", [({}, e.queue_depth())])
        add("slots_busy", "gauge", "Slots running a request.", [({}, e.busy_slots())])
        add("slots_total", "gauge", "Slots (--parallel).", [({}, e.parallel)])
        add("step_seconds_total", "counter", "Time spent in scheduler steps.", [({}, f"{m.step_seconds:.6f}")])
        add("steps_total", "counter", "Scheduler steps run.", [({}, m.steps)])
        add("step_seconds_last", "gauge", "Duration of the last scheduler step.", [({}, f"{m.last_step_seconds:.6f}")])
        add("batch_size_last", "gauge", "Sequences decoded in the last step.", [({}, m.last_batch)])
        add("batch_size_total", "counter", "Sequences decoded, summed over steps (divide by steps_total).",
            [({}, m.batch_tokens)])
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def tokenize(self, request):
        body = await read_json(request)
        content = P.field_of(body, "content", str, required=True)
        add_special = P.field_of(body, "add_special", bool, False)
        parse_special = P.field_of(body, "parse_special", bool, True)
        with_pieces = P.field_of(body, "with_pieces", bool, False)
        ids = await run_in_threadpool(self.tok.encode, content, add_special, parse_special)
        if not with_pieces:
            return JSONResponse({"tokens": ids})
        pieces = []
        for t in ids:
            b = self.tok.piece(t, special=True)
            try:
                pieces.append({"id": t, "piece": b.decode("utf-8")})
            except UnicodeDecodeError:
                pieces.append({"id": t, "piece": list(b)})
        return JSONResponse({"tokens": pieces})

    async def detokenize(self, request):
        body = await read_json(request)
        ids = P.field_of(body, "tokens", list, [])
        self.check_ids(ids, "tokens")
        return JSONResponse({"content": self.tok.decode(ids)})

    def check_ids(self, ids, param: str) -> None:
        n = self.model.hp.n_vocab
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n for t in ids):
            raise P.bad(f"'{param}' must be token ids in [0, {n})", param, "invalid_value")

    # -------------------------------------------------------------- generation

    def encode_prompt(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special=not (self.bos and text.startswith(self.bos)), parse_special=True)

    async def chat(self, request):
        body = await read_json(request)
        P.check_model(body, self.model_id)
        opts = P.parse_gen_options(body, chat=True)
        split = P.field_of(body, "reasoning_format", str, "auto") != "none"
        prompt = P.chat_prompt(body, self.template, self.bos, self.eos)
        ids = await run_in_threadpool(self.encode_prompt, prompt.text)
        rid = P.new_id("chatcmpl")
        if opts.stream:
            return await self.stream(request, ids, opts, rid, chat=True, think_open=prompt.think_open, split=split)
        res, text = await self.collect(request, ids, opts, "messages")
        msg = P.split_reply(text, prompt.think_open, split)
        return JSONResponse(P.chat_response(rid, self.model_id, msg, res.finish_reason,
                                            P.usage(res.n_prompt, res.n_gen, res.n_cached)))

    async def completions(self, request):
        body = await read_json(request)
        P.check_model(body, self.model_id)
        opts = P.parse_gen_options(body, chat=False)
        p = P.completion_prompt(body)
        if isinstance(p, str):
            ids = await run_in_threadpool(self.tok.encode, p)     # as `ggufkit run` encodes a prompt
        else:
            self.check_ids(p, "prompt")
            ids = list(p)
        if not ids:
            raise P.bad("the prompt is empty", "prompt")
        rid = P.new_id("cmpl")
        if opts.stream:
            return await self.stream(request, ids, opts, rid, chat=False)
        res, text = await self.collect(request, ids, opts, "prompt")
        return JSONResponse(P.completion_response(rid, self.model_id, text, res.finish_reason,
                                                  P.usage(res.n_prompt, res.n_gen, res.n_cached)))

    def submit(self, ids, opts, param: str) -> tuple[Job, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        job = Job(ids, opts.params, opts.max_tokens, opts.stop, lambda ev: loop.call_soon_threadsafe(q.put_nowait, ev),
                  opts.ignore_eos, json_mode=opts.json_mode)
        try:
            self.engine.submit(job)
        except QueueFull as e:
            raise P.APIError(429, str(e), "rate_limit_error", None, "queue_full") from None
        except ContextTooSmall as e:
            raise P.APIError(400, str(e), "invalid_request_error", param, "context_length_exceeded") from None
        return job, q

    async def collect(self, request: Request, ids, opts, param: str):
        """Run a job to its end (non-streaming); a client that goes away cancels it."""
        job, q = self.submit(ids, opts, param)
        pieces = []
        loop = asyncio.get_running_loop()
        next_check = loop.time() + DISCONNECT_POLL
        try:
            while True:
                try:
                    kind, val = await asyncio.wait_for(q.get(), DISCONNECT_POLL)
                except asyncio.TimeoutError:
                    kind = None
                if loop.time() >= next_check:
                    next_check = loop.time() + DISCONNECT_POLL
                    if await request.is_disconnected():
                        job.cancel()
                        raise ClientDisconnect() from None
                if kind is None:
                    continue
                if kind == "text":
                    pieces.append(val)
                elif kind == "done":
                    return val, "".join(pieces)
                else:
                    raise P.APIError(503 if "shutting down" in val else 500, val, "server_error")
        finally:
            job.cancel()              # no-op when finished; frees the slot if the handler was cancelled

    async def stream(self, request, ids, opts, rid, chat: bool, think_open: bool = False, split: bool = True):
        job, q = self.submit(ids, opts, "messages" if chat else "prompt")   # refusals come before the stream
        model = self.model_id
        sse = lambda d: f"data: {json.dumps(d, ensure_ascii=False)}\n\n"   # noqa: E731

        async def events():
            splitter = P.StreamSplitter(think_open, split)
            try:
                if chat:
                    yield sse(P.chat_chunk(rid, model, {"role": "assistant", "content": ""}))
                while True:
                    kind, val = await q.get()
                    if kind == "text":
                        if chat:
                            for d in splitter.feed(val):
                                yield sse(P.chat_chunk(rid, model, d))
                        else:
                            yield sse(P.completion_response(rid, model, val, None, None))
                        continue
                    if kind == "error":
                        yield sse(P.APIError(500, val, "server_error").body())
                        break
                    use = P.usage(val.n_prompt, val.n_gen, val.n_cached)
                    if chat:
                        rest, calls = splitter.finish()
                        for d in rest:
                            yield sse(P.chat_chunk(rid, model, d))
                        finish = val.finish_reason
                        if calls:
                            yield sse(P.chat_chunk(rid, model, {"tool_calls": [
                                dict(c, index=i) for i, c in enumerate(calls)]}))
                            finish = "tool_calls" if finish == "stop" else finish
                        yield sse(P.chat_chunk(rid, model, {}, finish, use))
                        if opts.include_usage:
                            d = P.chat_chunk(rid, model, {}, None, use)
                            d["choices"] = []
                            yield sse(d)
                    else:
                        yield sse(P.completion_response(rid, model, "", val.finish_reason, use))
                    break
                yield "data: [DONE]\n\n"
            except Exception as e:          # mid-stream: the status is sent; end the stream with an error event
                log.error("stream %s failed: %s: %s", rid, type(e).__name__, e)
                yield sse(P.APIError(500, "internal server error", "server_error").body())
            finally:
                job.cancel()          # the client went away mid-stream (or we are done): free the slot

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def create_app(engine: Engine, model_id: str, api_key: str | None = None, template: str | None = None,
               replica: str | None = None) -> Starlette:
    """The Starlette app over a started (or to be started) engine (template: the chat template's
    text; default: the GGUF's, else a built-in, see ggufkit.serve.templates; replica: a name that
    /health reports, set under Ray Serve)."""
    srv = Server(engine, model_id, api_key, template, replica)

    async def not_found(request, exc):
        code = getattr(exc, "status_code", 404)
        e = P.APIError(code, f"{request.method} {request.url.path}: "
                       + ("not found" if code == 404 else "method not allowed"), "invalid_request_error",
                       None, "not_found" if code == 404 else "method_not_allowed")
        return error_response(e)

    app = Starlette(routes=srv.routes(), exception_handlers={404: not_found, 405: not_found})
    app.state.server = srv
    return app


LOG_CONFIG = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["err"], "level": "INFO", "propagate": False},
                "uvicorn.error": {"level": "INFO"},
                "uvicorn.access": {"handlers": ["err"], "level": "INFO", "propagate": False},
                "ggufkit.serve": {"handlers": ["err"], "level": "INFO", "propagate": False}},
}


def build(model_path: str, n_ctx: int = 4096, parallel: int = 1, n_threads: int | None = None, dev=None,
          api_key: str | None = None, max_queue: int = 64, prefill_chunk: int = 256, alias: str | None = None,
          template: str | None = None, replica: str | None = None):
    """Load the model and build the engine (not started) and the app: (app, engine, model_id,
    the chat template's origin). ``serve`` and each Ray Serve replica (ggufkit.serve.ray_app) call it."""
    from runtime.errors import ModelError
    from runtime.loader import load
    from runtime.plan import place_model

    model = load(model_path, n_threads=n_threads)
    model.step_background = True    # decode layer programs compile in a child process meanwhile
    try:
        tmpl, origin = chat_template(model.gguf, model.hp.arch, template)
    except ValueError as e:
        raise ModelError(str(e)) from None
    place_model(model, dev, n_ctx)                  # the slots together hold n_ctx positions of KV
    engine = Engine(model, n_ctx, parallel, max_queue, prefill_chunk)
    engine.log = log.error
    model_id = alias or os.path.basename(model_path)
    app = create_app(engine, model_id, api_key, tmpl, replica)
    return app, engine, model_id, origin


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8080, n_ctx: int = 4096, parallel: int = 1,
          n_threads: int | None = None, dev=None, api_key: str | None = None, max_queue: int = 64,
          prefill_chunk: int = 256, alias: str | None = None, template: str | None = None) -> None:
    """Load the model, start the engine and serve until SIGINT / SIGTERM."""
    import uvicorn

    logging.config.dictConfig(LOG_CONFIG)
    app, engine, model_id, origin = build(model_path, n_ctx, parallel, n_threads, dev, api_key, max_queue,
                                          prefill_chunk, alias, template)
    engine.start()
    warn_open(host, api_key)
    log.info("serving %s on http://%s:%d (%d slots of %d tokens, chat template: %s)%s", model_id, host, port,
             parallel, engine.n_ctx, origin, ", API key required" if api_key else "")
    try:
        uvicorn.run(app, host=host, port=port, log_config=LOG_CONFIG, timeout_graceful_shutdown=3)
    finally:
        engine.stop()


def warn_open(host: str, api_key: str | None) -> None:
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without --api-key: anyone who can reach this address can use the model", host)

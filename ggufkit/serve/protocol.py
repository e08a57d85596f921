"""Request validation and response shapes of the OpenAI API (and llama-server's extras), free of
any web framework: ``app.py`` calls these, the tests call them directly.

Every client mistake becomes an ``APIError`` (status, message, type, param, code), which the app
answers as ``{"error": {"message", "type", "param", "code"}}`` -- OpenAI's error shape.
"""
from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass, field

from runtime.chat import THINK_CLOSE, THINK_OPEN, TOOLCALL_RE, parse_reply, render, system_prompt
from runtime.generate import SamplingParams

TOOLCALL_OPEN, TOOLCALL_CLOSE = "<TOOLCALL>", "</TOOLCALL>"
DEFAULTS = SamplingParams()          # llama-server's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05
MAX_STOP = 16


class APIError(Exception):
    """A request the server refuses: HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


# ---------------------------------------------------------------- typed field access

_MISSING = object()
_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "an object"}


def field_of(body: dict, name: str, kind, default=None, lo=None, hi=None, required: bool = False):
    """body[name] checked to be of ``kind`` (int / float / str / bool / list / dict) and within
    [lo, hi]; null or absent gives ``default`` (APIError 400 if required)."""
    v = body.get(name, _MISSING)
    if v is _MISSING or v is None:
        if required:
            raise bad(f"'{name}' is required", name, "missing_required_parameter")
        return default
    ok = isinstance(v, kind) and not (kind in (int, float) and isinstance(v, bool))
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise bad(f"'{name}' must be {_TYPE_NAMES[kind]}, got {type(v).__name__}", name, "invalid_type")
    if kind is float and not math.isfinite(v):
        raise bad(f"'{name}' must be a finite number", name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (f"between {lo} and {hi}" if lo is not None and hi is not None
               else f">= {lo}" if lo is not None else f"<= {hi}")
        raise bad(f"'{name}' must be {rng}, got {v}", name)
    return v


# ---------------------------------------------------------------- generation options

@dataclass
class GenOptions:
    params: SamplingParams
    max_tokens: int | None          # None: what fits in the slot's context
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False        # llama-server's: generate past end-of-generation tokens (benchmarks)
    json_mode: bool = False         # response_format json_object: the reply is one JSON object (jsonmode.py)


def parse_gen_options(body: dict, chat: bool) -> GenOptions:
    """The sampling and length fields common to both completion endpoints."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object", None, "invalid_type")
    n = field_of(body, "n", int, 1)
    if n != 1:
        raise bad("only n = 1 is supported", "n")
    mt = field_of(body, "max_completion_tokens", int, None, lo=0) if chat else None
    if mt is None:
        mt = field_of(body, "max_tokens", int, None, lo=-1)
    if mt is not None and mt < 0:              # llama.cpp's -1: until end of text or the context is full
        mt = None
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad("'stop' must be a string or an array of strings", "stop", "invalid_type")
    if len(stop) > MAX_STOP:
        raise bad(f"at most {MAX_STOP} stop strings", "stop")
    stop = [s for s in stop if s]
    seed = field_of(body, "seed", int, None)
    if seed is not None and seed < 0:          # llama.cpp's -1 (LLAMA_DEFAULT_SEED): a random seed
        seed = None
    params = SamplingParams(
        temp=field_of(body, "temperature", float, DEFAULTS.temp, lo=0.0, hi=2.0),
        top_k=field_of(body, "top_k", int, DEFAULTS.top_k, lo=0),
        top_p=field_of(body, "top_p", float, DEFAULTS.top_p, lo=0.0, hi=1.0),
        min_p=field_of(body, "min_p", float, DEFAULTS.min_p, lo=0.0, hi=1.0),
        repeat_penalty=field_of(body, "repeat_penalty", float, DEFAULTS.repeat_penalty, lo=0.0, hi=10.0),
        repeat_last_n=field_of(body, "repeat_last_n", int, DEFAULTS.repeat_last_n, lo=-1),
        seed=seed)
    if params.repeat_penalty <= 0:
        raise bad("'repeat_penalty' must be > 0 (1 disables it)", "repeat_penalty")
    stream = field_of(body, "stream", bool, False)
    so = field_of(body, "stream_options", dict, {})
    include_usage = bool(so.get("include_usage", False))
    return GenOptions(params, mt, stop, stream, include_usage, field_of(body, "ignore_eos", bool, False),
                      response_format(body))


def response_format(body: dict) -> bool:
    """True for ``{"type": "json_object"}`` (constrained sampling), False for absent or ``text``;
    anything else (json_schema included) is a 400."""
    rf = body.get("response_format")
    if rf is None:
        return False
    if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
        raise bad("'response_format' must be an object with a 'type'", "response_format", "invalid_type")
    if rf["type"] == "text":
        return False
    if rf["type"] == "json_object":
        return True
    raise bad(f"response_format type {rf['type']!r} is not supported by this server (text and json_object are)",
              "response_format", "unsupported_parameter")


def check_model(body: dict, served: str) -> None:
    """The ``model`` field, when given, must name the served model (its id, with or without
    ``.gguf``; "default" and "" name it too)."""
    m = field_of(body, "model", str, None)
    stem = served[:-5] if served.endswith(".gguf") else served
    if m is not None and m not in (served, stem, "default", ""):
        raise APIError(404, f"the model '{m}' does not exist (this server serves '{served}')",
                       "invalid_request_error", "model", "model_not_found")


# ---------------------------------------------------------------- chat requests

def _text_of(content, where: str) -> str:
    """Message content as text: a string, null, or an array of {"type": "text", "text": ...} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise bad(f"{where}: only text content parts are supported", "messages", "invalid_type")
            out.append(part["text"])
        return "".join(out)
    raise bad(f"{where}: content must be a string, an array of text parts or null", "messages", "invalid_type")


def _check_tools(tools) -> list | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise bad("'tools' must be an array", "tools", "invalid_type")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(fn, dict)
                and isinstance(fn.get("name"), str) and fn["name"]
                and isinstance(fn.get("parameters", {}), dict)
                and isinstance(fn.get("description", ""), str)):
            raise bad(f"tools[{i}]: expected {{\"type\": \"function\", \"function\": {{\"name\": str, "
                      f"\"description\": str, \"parameters\": object}}}}", "tools", "invalid_tool")
    return tools


def _check_tool_calls(calls, where: str) -> list:
    if not isinstance(calls, list):
        raise bad(f"{where}: tool_calls must be an array", "messages", "invalid_type")
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str)
                and isinstance(fn.get("arguments", "{}"), (str, dict))):
            raise bad(f"{where}: each tool call needs function.name and function.arguments", "messages", "invalid_type")
        out.append({"id": c.get("id"), "type": "function",
                    "function": {"name": fn["name"], "arguments": fn.get("arguments", "{}")}})
    return out


def reasoning_switch(body: dict) -> str | None:
    """"on", "off" or None (the template's default) from ``reasoning_effort`` (none / minimal: off)
    or ``chat_template_kwargs.enable_thinking`` (or ``thinking``)."""
    kw = field_of(body, "chat_template_kwargs", dict, {})
    for k in ("enable_thinking", "thinking"):
        if k in kw:
            if not isinstance(kw[k], bool):
                raise bad(f"chat_template_kwargs.{k} must be a boolean", "chat_template_kwargs", "invalid_type")
            return "on" if kw[k] else "off"
    effort = field_of(body, "reasoning_effort", str, None)
    if effort is None:
        return None
    if effort not in ("none", "minimal", "low", "medium", "high"):
        raise bad("'reasoning_effort' must be one of none, minimal, low, medium, high", "reasoning_effort")
    return "off" if effort in ("none", "minimal") else "on"


def chat_messages(body: dict) -> list[dict]:
    """OpenAI messages checked and normalized for a chat template (content as text; tool calls kept
    in OpenAI's shape, which the Nemotron template renders back into <TOOLCALL>)."""
    msgs = field_of(body, "messages", list, required=True)
    if not msgs:
        raise bad("'messages' must not be empty", "messages")
    out = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object", "messages", "invalid_type")
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise bad(f"{where}: unknown role {role!r}", "messages")
        msg = {"role": role, "content": _text_of(m.get("content"), where)}
        if role == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = _check_tool_calls(m["tool_calls"], where)
        if role == "tool" and m.get("tool_call_id") is not None:
            msg["tool_call_id"] = str(m["tool_call_id"])
        out.append(msg)
    return out


@dataclass
class ChatPrompt:
    text: str
    think_open: bool     # the rendered prompt ends inside a <think> section (the template opened it)


def chat_prompt(body: dict, template: str, bos: str = "", eos: str = "") -> ChatPrompt:
    """Render the request's messages (and tools, reasoning switch) through the chat template;
    a template that cannot render them is a 400."""
    from runtime.errors import ModelError

    messages = chat_messages(body)
    tools = _check_tools(body.get("tools"))
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required") and not isinstance(choice, dict):
        raise bad("'tool_choice' must be auto, none, required or an object", "tool_choice", "invalid_type")
    if choice == "none":
        tools = None
    reasoning = reasoning_switch(body)
    if reasoning is not None:
        sys_text = messages[0]["content"] if messages[0]["role"] == "system" else None
        new = system_prompt(template, sys_text, reasoning)
        if messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": new or ""}
        elif new:
            messages.insert(0, {"role": "system", "content": new})
    try:
        text = render(template, messages, tools, True, bos, eos)
    except ModelError as e:
        raise bad(f"the chat template cannot render this request: {e}", "messages", "template_error") from None
    except Exception as e:                # a template tripping over a value (TypeError, ...)
        raise bad(f"the chat template cannot render this request: {type(e).__name__}: {e}", "messages",
                  "template_error") from None
    return ChatPrompt(text, text.rstrip().endswith(THINK_OPEN))


def completion_prompt(body: dict):
    """/v1/completions' ``prompt``: a string or an array of token ids (one prompt)."""
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if isinstance(p, str):
        return p
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        return p
    if p is None:
        raise bad("'prompt' is required", "prompt", "missing_required_parameter")
    raise bad("'prompt' must be a string or an array of token ids (one prompt)", "prompt", "invalid_type")


# ---------------------------------------------------------------- replies

def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def openai_tool_calls(calls: list[dict]) -> list[dict]:
    """runtime.chat.parse_reply's [{"name", "arguments"}] as OpenAI tool_calls with ids."""
    return [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                          else json.dumps(c["arguments"], ensure_ascii=False)}} for c in calls]


def split_reply(text: str, think_open: bool, split_reasoning: bool = True) -> dict:
    """The assistant message of a finished reply: content, reasoning_content, tool_calls."""
    if think_open:
        text = THINK_OPEN + text
    if not split_reasoning or (THINK_OPEN not in text and THINK_CLOSE not in text and TOOLCALL_OPEN not in text):
        return {"role": "assistant", "content": text}          # as streamed, unstripped
    r = parse_reply(text)
    msg = {"role": "assistant", "content": r.content}
    if r.reasoning is not None:
        msg["reasoning_content"] = r.reasoning
    if r.tool_calls:
        msg["tool_calls"] = openai_tool_calls(r.tool_calls)
        msg["content"] = r.content or None
    return msg


def usage(n_prompt: int, n_gen: int, n_cached: int) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen,
            "prompt_tokens_details": {"cached_tokens": n_cached}}


def chat_response(rid: str, model: str, msg: dict, finish: str, use: dict) -> dict:
    if msg.get("tool_calls") and finish == "stop":
        finish = "tool_calls"
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}], "usage": use}


def chat_chunk(rid: str, model: str, delta: dict, finish: str | None = None, use: dict | None = None) -> dict:
    d = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if use is not None:
        d["usage"] = use
    return d


def completion_response(rid: str, model: str, text: str, finish: str | None, use: dict | None) -> dict:
    d = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
         "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}
    if use is not None:
        d["usage"] = use
    return d


class StreamSplitter:
    """Splits streamed assistant text into reasoning_content / content deltas (``<think>``
    sections) and holds ``<TOOLCALL>...`` back until the end, where ``finish`` parses it into
    tool_calls. Tags split across chunks are handled by keeping a partial tag pending."""

    def __init__(self, think_open: bool = False, split_reasoning: bool = True):
        self.split = split_reasoning
        self.inside = think_open and split_reasoning
        self.seen_text = think_open            # a <think> is only recognised at the very start
        self.buf = ""
        self.tool_text = None                  # text from <TOOLCALL> on, once seen
        self.prefix = THINK_OPEN if think_open and not split_reasoning else ""   # raw text: as split_reply

    def feed(self, s: str) -> list[dict]:
        if not self.split:
            s, self.prefix = self.prefix + s, ""
            return [{"content": s}] if s else []
        if self.tool_text is not None:
            self.tool_text += s
            return []
        self.buf += s
        out = []
        while self.buf:
            if self.inside:
                i = self.buf.find(THINK_CLOSE)
                if i >= 0:
                    if self.buf[:i]:
                        out.append({"reasoning_content": self.buf[:i]})
                    self.buf, self.inside = self.buf[i + len(THINK_CLOSE):].lstrip(), False
                    continue
                keep = _partial(self.buf, THINK_CLOSE)
            else:
                if not self.seen_text:
                    head = self.buf.lstrip()
                    if head.startswith(THINK_OPEN):
                        self.buf, self.inside, self.seen_text = head[len(THINK_OPEN):].lstrip(), True, True
                        continue
                    if THINK_OPEN.startswith(head):
                        break
                    self.seen_text = True
                i = self.buf.find(TOOLCALL_OPEN)
                if i >= 0:
                    if self.buf[:i]:
                        out.append({"content": self.buf[:i]})
                    self.tool_text, self.buf = self.buf[i:], ""
                    break
                keep = _partial(self.buf, TOOLCALL_OPEN)
            emit = self.buf[:len(self.buf) - keep]
            if emit:
                out.append({"reasoning_content": emit} if self.inside else {"content": emit})
            self.buf = self.buf[len(self.buf) - keep:]
            break
        return out

    def finish(self) -> tuple[list[dict], list[dict]]:
        """(last deltas, OpenAI tool_calls) at the end of the stream."""
        out, calls = [], []
        if self.buf:
            out.append({"reasoning_content": self.buf} if self.inside else {"content": self.buf})
            self.buf = ""
        if self.tool_text is not None:
            parsed = parse_reply(self.tool_text)
            calls = openai_tool_calls(parsed.tool_calls)
            rest = TOOLCALL_RE.sub("", self.tool_text) if calls else self.tool_text
            if rest.strip():
                out.append({"content": rest})
        return out, calls


def _partial(buf: str, tag: str) -> int:
    """Length of the longest suffix of buf that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(buf)), 0, -1):
        if buf.endswith(tag[:n]):
            return n
    return 0

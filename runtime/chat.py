"""Chat: the GGUF's ``tokenizer.chat_template`` rendered with jinja2 (sandboxed), generation until
an end-of-generation token, ``<think>`` sections kept apart, ``<TOOLCALL>[...]</TOOLCALL>`` parsed.

    s = ChatSession(model, system="You are terse.", reasoning="off")
    reply = s.send("Hi!")              # Reply(content, reasoning, tool_calls, raw)

Reasoning switch, the way each template expects it:
    v1.5-style templates (the template tests for '/no_think'): "/no_think" appended to the system
        prompt turns reasoning off (the template then pre-fills an empty <think></think>);
    v1 templates ('detailed thinking' in the template or system prompt): the system prompt
        "detailed thinking on|off".
The KV cache is reused across turns: only the tokens after the common prefix are evaluated.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from runtime.errors import ModelError
from runtime.generate import GREEDY, SamplingParams, decode_one, prefill, sample

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOLCALL_RE = re.compile(r"<TOOLCALL>\s*(\[.*?\])\s*</TOOLCALL>", re.S)


@dataclass
class Reply:
    content: str                                     # the answer, without think / toolcall markup
    reasoning: str | None = None                     # text inside <think>...</think>, if any
    tool_calls: list = field(default_factory=list)   # [{"name": ..., "arguments": {...}}]
    raw: str = ""

    def to_json(self) -> dict:
        return {"role": "assistant", "content": self.content, "reasoning": self.reasoning,
                "tool_calls": self.tool_calls}


def parse_reply(text: str) -> Reply:
    """Split raw assistant text into reasoning, content and structured tool calls."""
    reasoning = None
    body = text
    if THINK_CLOSE in body:
        head, body = body.split(THINK_CLOSE, 1)
        reasoning = head.replace(THINK_OPEN, "", 1).strip()
    elif body.lstrip().startswith(THINK_OPEN):       # unfinished reasoning
        reasoning, body = body.lstrip()[len(THINK_OPEN):].strip(), ""
    calls = []
    for m in TOOLCALL_RE.finditer(body):
        try:
            items = json.loads(m.group(1))
        except json.JSONDecodeError:
            continue
        for it in items if isinstance(items, list) else [items]:
            if isinstance(it, dict) and "name" in it:
                args = it.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except json.JSONDecodeError:
                        pass
                calls.append({"name": it["name"], "arguments": args})
    content = TOOLCALL_RE.sub("", body).strip()
    return Reply(content=content, reasoning=reasoning, tool_calls=calls, raw=text)


# ---------------------------------------------------------------- template

def template_style(template: str) -> str:
    """"v1.5" (/no_think switch), "v1" (detailed thinking on/off) or "plain"."""
    if "/no_think" in template or "enable_thinking" in template:
        return "v1.5"
    if "detailed thinking" in template:
        return "v1"
    return "plain"


def system_prompt(template: str, system: str | None, reasoning: str | None) -> str | None:
    """The system prompt with the reasoning switch the template understands (None: leave as is)."""
    if reasoning not in (None, "on", "off"):
        raise ModelError(f"reasoning must be 'on' or 'off', got {reasoning!r}")
    style = template_style(template)
    sys_text = system or ""
    if reasoning is None or style == "plain":
        return system
    if style == "v1.5":
        sys_text = sys_text.replace("/no_think", "").replace("/think", "").strip()
        sys_text = (sys_text + " /no_think").strip() if reasoning == "off" else sys_text
        return sys_text
    sys_text = re.sub(r"detailed thinking (on|off)", "", sys_text).strip()
    return (f"detailed thinking {reasoning}\n{sys_text}").strip()


def render(template: str, messages: list[dict], tools=None, add_generation_prompt: bool = True,
           bos_token: str = "", eos_token: str = "") -> str:
    """Render a chat template in jinja2's immutable sandbox (as transformers does)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise ModelError(f"chat template: {msg}")

    def strftime_now(fmt):
        import time
        return time.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent,
                                                                                   ensure_ascii=ensure_ascii)
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        return env.from_string(template).render(messages=messages, tools=tools,
                                                add_generation_prompt=add_generation_prompt,
                                                bos_token=bos_token, eos_token=eos_token)
    except TemplateError as e:
        raise ModelError(f"chat template error: {e}") from None


# ---------------------------------------------------------------- session

class ChatSession:
    """A conversation with a model; ``send`` appends the user turn and the assistant's reply."""

    def __init__(self, model, system: str | None = None, reasoning: str | None = None, tools=None,
                 params: SamplingParams = GREEDY, n_ctx: int = 4096, max_tokens: int = 1024,
                 template: str | None = None):
        self.model, self.tools, self.params, self.max_tokens = model, tools, params, max_tokens
        g = getattr(model, "gguf", None)
        self.template = template or (g.get("tokenizer.chat_template") if g is not None else None)
        if not self.template:
            raise ModelError("the GGUF has no tokenizer.chat_template; chat needs one")
        self.messages: list[dict] = []
        sys_text = system_prompt(self.template, system, reasoning)
        if sys_text:
            self.messages.append({"role": "system", "content": sys_text})
        self.cache = model.new_cache(min(n_ctx, model.hp.n_ctx_train))
        self.cached: list[int] = []
        import numpy as np
        self.rng = np.random.default_rng(params.seed)

    def prompt_ids(self) -> list[int]:
        tok = self.model.tokenizer
        bos = tok.tokens[tok.bos] if tok.bos is not None else ""
        eos = tok.tokens[tok.eos] if tok.eos is not None else ""
        text = render(self.template, self.messages, self.tools, True, bos, eos)
        return tok.encode(text, add_special=not (bos and text.startswith(bos)), parse_special=True)

    def send(self, user: str, on_text=None, role: str = "user") -> Reply:
        """Add a user (or tool) message, generate the reply (streamed to on_text), return it parsed."""
        self.messages.append({"role": role, "content": user})
        ids = self.prompt_ids()
        tok = self.model.tokenizer
        if len(ids) + 1 > self.cache.n_ctx:
            raise ModelError(f"context overflow: conversation is {len(ids)} tokens, context {self.cache.n_ctx}")
        k = 0                                          # reuse the cached prefix
        while k < min(len(ids) - 1, len(self.cached)) and ids[k] == self.cached[k]:
            k += 1
        self.cache.n_past = k
        logits = prefill(self.model, self.cache, ids[k:])
        self.cached = list(ids)
        step = tok.stream_decoder()
        pieces = []
        budget = min(self.max_tokens, self.cache.n_ctx - len(ids))
        for _ in range(budget):
            tid = sample(logits, self.params, self.rng, self.cached)
            if tok.is_eog(tid):
                break
            s = step(tid)
            pieces.append(s)
            if on_text and s:
                on_text(s)
            self.cached.append(tid)
            if len(self.cached) >= self.cache.n_ctx:
                break
            logits = decode_one(self.model, self.cache, tid)
        reply = parse_reply("".join(pieces))
        msg = {"role": "assistant", "content": reply.raw}
        if reply.tool_calls:
            msg = {"role": "assistant", "content": TOOLCALL_RE.sub("", reply.raw).strip(),
                   "tool_calls": reply.tool_calls}
        self.messages.append(msg)
        return reply

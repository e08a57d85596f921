"""Chat: template rendering (bundled Nemotron v1.5-style template), reasoning switches, reply
parsing (think sections, TOOLCALL), the think printer, and a session on a tiny synthetic model."""
from __future__ import annotations

import io

import pytest

from ggufkit.commands.chat import ThinkPrinter
from runtime.chat import ChatSession, parse_reply, render, system_prompt, template_style
from runtime.generate import GREEDY, generate_ids
from tests.helpers.tiny_models import CHAT_TEMPLATE as TEMPLATE, write_chat_gguf

V1 = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %} detailed thinking"


def test_reasoning_switch_per_template_style():
    assert template_style(TEMPLATE) == "v1.5" and template_style(V1) == "v1"
    assert system_prompt(TEMPLATE, "Be brief.", "off") == "Be brief. /no_think"
    assert system_prompt(TEMPLATE, "Be brief. /no_think", "on") == "Be brief."
    assert system_prompt(V1, "Be brief.", "off") == "detailed thinking off\nBe brief."
    assert system_prompt(V1, None, "on") == "detailed thinking on"


def test_v15_template_renders_empty_think_when_off():
    msgs = [{"role": "system", "content": system_prompt(TEMPLATE, "", "off")}, {"role": "user", "content": "Hi"}]
    text = render(TEMPLATE, msgs)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "/no_think" not in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n\n</think>\n\n")
    on = render(TEMPLATE, [{"role": "user", "content": "Hi"}])
    assert on.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    tools = [{"name": "get_weather", "parameters": {"city": "str"}}]
    assert '<AVAILABLE_TOOLS>[{"name": "get_weather"' in render(TEMPLATE, msgs, tools=tools)


def test_template_is_sandboxed():
    from runtime.errors import ModelError
    with pytest.raises(ModelError):
        render("{{ messages.__class__.__mro__[1].__subclasses__() }}", [])


def test_parse_reply_think_and_toolcalls():
    r = parse_reply('<think>\nweather needed\n</think>\n\nSure. <TOOLCALL>[{"name": "get_weather", '
                    '"arguments": {"city": "Paris"}}, {"name": "f", "arguments": "{\\"x\\": 1}"}]</TOOLCALL>')
    assert r.reasoning == "weather needed"
    assert r.content == "Sure."
    assert r.tool_calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "f", "arguments": {"x": 1}}]
    plain = parse_reply("Just text.")
    assert plain.reasoning is None and plain.tool_calls == [] and plain.content == "Just text."


def test_think_printer_marks_sections_split_across_chunks():
    out = io.StringIO()
    p = ThinkPrinter(out, tty=False)
    for piece in ["<th", "ink>abc</", "think>", "answer"]:
        p(piece)
    p.end()
    assert out.getvalue() == "[thinking] abc [/thinking]answer\n"


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    from runtime.loader import load
    return load(str(write_chat_gguf(tmp_path_factory.mktemp("chat") / "chat.gguf")))


def test_session_reuses_cache_and_matches_fresh_generation(chat_model):
    s = ChatSession(chat_model, system="Be brief.", reasoning="off", max_tokens=6, n_ctx=256)
    r1 = s.send("Hello there")
    n_after_first = len(s.cached)
    s.send("And again?")
    assert s.messages[0]["content"] == "Be brief. /no_think"
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert len(s.cached) > n_after_first
    # the first reply equals plain greedy generation on the rendered prompt (until an EOG token)
    s2 = ChatSession(chat_model, system="Be brief.", reasoning="off", max_tokens=6, n_ctx=256)
    s2.messages.append({"role": "user", "content": "Hello there"})
    ids = s2.prompt_ids()
    assert ids[0] == 128000 and ids.count(128000) == 1
    gen = generate_ids(chat_model, ids, 6)
    text = chat_model.tokenizer.decode([t for t in gen if not chat_model.tokenizer.is_eog(t)])
    assert r1.raw == text[:len(r1.raw)] and len(r1.raw) > 0 or gen[0] in chat_model.tokenizer.eog
    # the second turn with the reused cache equals a fresh session replaying the conversation
    s3 = ChatSession(chat_model, system="Be brief.", reasoning="off", max_tokens=6, n_ctx=256)
    s3.messages = [dict(m) for m in s.messages[:4]]
    ids3 = s3.prompt_ids()
    gen3 = generate_ids(chat_model, ids3, 6)
    text3 = chat_model.tokenizer.decode([t for t in gen3 if not chat_model.tokenizer.is_eog(t)])
    assert s.messages[4]["content"] == text3[:len(s.messages[4]["content"])]
    assert GREEDY.temp == 0.0

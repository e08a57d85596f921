"""ggufkit.serve.protocol: request validation (OpenAI error fields), chat rendering with tools and
the reasoning switch (bundled Nemotron v1.5-style template), reply splitting, streamed or not."""
from __future__ import annotations

import json

import pytest

from ggufkit.serve import protocol as P
from tests.helpers.tiny_models import CHAT_TEMPLATE as TEMPLATE

USER = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def err(fn, *a, **k) -> P.APIError:
    with pytest.raises(P.APIError) as e:
        fn(*a, **k)
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}
    return e.value


def test_response_format():
    assert P.parse_gen_options({"response_format": {"type": "json_object"}}, chat=True).json_mode
    assert not P.parse_gen_options({"response_format": {"type": "text"}}, chat=True).json_mode
    assert not P.parse_gen_options({}, chat=False).json_mode
    e = err(P.parse_gen_options, {"response_format": {"type": "json_schema", "json_schema": {}}}, chat=True)
    assert e.status == 400 and e.param == "response_format" and e.code == "unsupported_parameter"
    assert err(P.parse_gen_options, {"response_format": "json"}, chat=True).code == "invalid_type"


def test_gen_options_defaults_and_ranges():
    o = P.parse_gen_options({"max_tokens": 5, "temperature": 0, "stop": "x", "seed": 3}, chat=True)
    assert (o.max_tokens, o.params.temp, o.stop, o.params.seed, o.stream) == (5, 0.0, ["x"], 3, False)
    assert P.parse_gen_options({"max_completion_tokens": 7, "max_tokens": 2}, chat=True).max_tokens == 7
    assert P.parse_gen_options({}, chat=False).max_tokens is None          # what fits
    assert P.parse_gen_options({"max_tokens": -1}, chat=False).max_tokens is None
    assert P.parse_gen_options({"seed": -1}, chat=False).params.seed is None            # llama.cpp's random seed
    for body, param in (({"temperature": 2.5}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
                        ({"temperature": "hot"}, "temperature"), ({"max_tokens": "5"}, "max_tokens"),
                        ({"max_tokens": 1.5}, "max_tokens"), ({"stop": [1]}, "stop"), ({"n": 2}, "n"),
                        ({"seed": True}, "seed"), ({"repeat_penalty": 0}, "repeat_penalty"), ({"stream": "yes"}, "stream"), ({"min_p": -0.1}, "min_p")):
        e = err(P.parse_gen_options, body, True)
        assert e.status == 400 and e.param == param, body


def test_model_name_checked():
    P.check_model({"model": "chat.gguf"}, "chat.gguf")
    P.check_model({}, "chat.gguf")
    P.check_model({"model": "chat"}, "chat.gguf")
    assert err(P.check_model, {"model": "c"}, "chat.gguf").status == 404
    e = err(P.check_model, {"model": "gpt-4"}, "chat.gguf")
    assert e.status == 404 and e.code == "model_not_found"


def test_chat_prompt_reasoning_switch_and_tools():
    on = P.chat_prompt({"messages": USER}, TEMPLATE)
    off = P.chat_prompt({"messages": USER, "reasoning_effort": "none"}, TEMPLATE)
    off2 = P.chat_prompt({"messages": USER, "chat_template_kwargs": {"enable_thinking": False}}, TEMPLATE)
    assert off.text == off2.text and off.text.endswith("<think>\n\n</think>\n\n") and not on.text.endswith("</think>\n\n")
    assert "/no_think" not in off.text
    t = P.chat_prompt({"messages": USER, "tools": TOOLS}, TEMPLATE).text
    assert '<AVAILABLE_TOOLS>[{"name": "get_weather"' in t
    assert "AVAILABLE_TOOLS" not in P.chat_prompt({"messages": USER, "tools": TOOLS, "tool_choice": "none"}, TEMPLATE).text
    # the round trip back: an assistant tool call and the tool's answer render as Nemotron expects
    msgs = USER + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]
    t = P.chat_prompt({"messages": msgs, "tools": TOOLS}, TEMPLATE).text
    assert '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</TOOLCALL>' in t
    assert '<TOOL_RESPONSE>[{"temp": 21}]</TOOL_RESPONSE>' in t


def test_chat_prompt_refusals():
    assert err(P.chat_prompt, {"messages": USER, "tools": [{"type": "function", "function": {"name": 3}}]},
               TEMPLATE).code == "invalid_tool"
    assert err(P.chat_prompt, {"messages": USER, "tools": {"x": 1}}, TEMPLATE).param == "tools"
    assert err(P.chat_prompt, {"messages": []}, TEMPLATE).param == "messages"
    assert err(P.chat_prompt, {"messages": [{"role": "wizard", "content": "x"}]}, TEMPLATE).param == "messages"
    assert err(P.chat_prompt, {"messages": [{"role": "user", "content": 5}]}, TEMPLATE).code == "invalid_type"
    e = err(P.chat_prompt, {"messages": USER}, "{{ raise_exception('no system role') }}")
    assert e.status == 400 and e.code == "template_error"
    e = err(P.chat_prompt, {"messages": USER}, "{{ messages[0].content + 1 }}")     # a TypeError inside jinja
    assert e.code == "template_error"


def test_split_reply_reasoning_and_tool_calls():
    msg = P.split_reply('<think>\nlook up\n</think>\n\n<TOOLCALL>[{"name": "get_weather", "arguments": '
                        '{"city": "Paris"}}]</TOOLCALL>', think_open=False)
    assert msg["reasoning_content"] == "look up" and msg["content"] is None
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert P.split_reply(" plain text", False) == {"role": "assistant", "content": " plain text"}
    assert P.split_reply("still thinking", think_open=True)["reasoning_content"] == "still thinking"
    assert P.split_reply("<think>x</think>y", False, split_reasoning=False)["content"] == "<think>x</think>y"


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
def test_stream_splitter_matches_split_reply(cut):
    text = '<think>\nhm, weather\n</think>\n\nLet me check. <TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</TOOLCALL>'
    sp = P.StreamSplitter()
    deltas = []
    for i in range(0, len(text), cut):
        deltas += sp.feed(text[i:i + cut])
    rest, calls = sp.finish()
    deltas += rest
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content", "") for d in deltas)
    assert reasoning.strip() == "hm, weather" and content.strip() == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    plain = P.StreamSplitter()
    assert "".join(d["content"] for d in plain.feed("a <b") + plain.feed("c") + plain.finish()[0]) == "a <bc"


def test_chat_template_choice(tmp_path):
    from ggufkit.serve.templates import BUILTIN, chat_template

    class G:
        def __init__(self, t):
            self.t = t

        def get(self, k):
            return self.t if k == "tokenizer.chat_template" else None

    assert chat_template(G("X"), "llama") == ("X", "the GGUF")
    assert chat_template(G(None), "gemma3")[0] == BUILTIN["gemma"]
    assert chat_template(G(None), "deci")[0] == BUILTIN["chatml"]
    assert chat_template(G("X"), "llama", "chatml")[0] == BUILTIN["chatml"]
    f = tmp_path / "t.jinja"
    f.write_text("{{ messages[0].content }}")
    assert chat_template(G("X"), "llama", str(f))[0] == "{{ messages[0].content }}"
    with pytest.raises(ValueError):
        chat_template(G("X"), "llama", "nonesuch")
    text = P.chat_prompt({"messages": [{"role": "system", "content": "S"}] + USER}, BUILTIN["chatml"]).text
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"


def test_stream_splitter_raw_keeps_the_templates_think():
    raw = P.StreamSplitter(think_open=True, split_reasoning=False)
    text = "".join(d["content"] for d in raw.feed("hm</think>") + raw.feed("A"))
    assert text == P.split_reply("hm</think>A", True, split_reasoning=False)["content"] == "<think>hm</think>A"
    inside = P.StreamSplitter(think_open=True)
    deltas = inside.feed("hm</thi") + inside.feed("nk>\n\nA") + inside.finish()[0]
    assert [list(d.items())[0] for d in deltas] == [("reasoning_content", "hm"), ("content", "A")]

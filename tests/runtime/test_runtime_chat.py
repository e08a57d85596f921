"""Chat: template rendering (bundled Nemotron v1.5-style template), reasoning switches, reply
parsing (think sections, TOOLCALL), the think printer, and a session on a tiny synthetic model."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from ggufkit.commands.chat import ThinkPrinter
from runtime.chat import ChatSession, parse_reply, render, system_prompt, template_style
from runtime.generate import GREEDY, generate_ids

TEMPLATE = json.loads((Path(__file__).resolve().parent.parent / "ggufkit" / "data" / "llama3-tokenizer"
                       / "tokenizer_config.json").read_text())["chat_template"]
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


def write_chat_gguf(path, pre: str = "smaug-bpe", add_bos: bool | None = False) -> Path:
    """A tiny random llama GGUF carrying the bundled Llama-3 tokenizer and chat template."""
    from gguf import GGUFWriter

    from tests.test_runtime_tokenizer import llama3_metadata

    md = llama3_metadata()
    n_vocab, n_embd, rng = len(md["tokenizer.ggml.tokens"]), 32, np.random.default_rng(1)
    w = GGUFWriter(str(path), "llama")
    for k, v in ((w.add_block_count, 1), (w.add_embedding_length, n_embd), (w.add_context_length, 512),
                 (w.add_head_count, 2), (w.add_head_count_kv, 1), (w.add_feed_forward_length, 64),
                 (w.add_layer_norm_rms_eps, 1e-5), (w.add_rope_dimension_count, 16)):
        k(v)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(md["tokenizer.ggml.tokens"])
    w.add_token_types(md["tokenizer.ggml.token_type"])
    w.add_token_merges(md["tokenizer.ggml.merges"])
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128009)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.add_chat_template(TEMPLATE)
    f = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", f(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    for t, s in (("attn_norm", (n_embd,)), ("ffn_norm", (n_embd,))):
        w.add_tensor(f"blk.0.{t}.weight", np.ones(s, np.float32))
    for t, s in (("attn_q", (32, n_embd)), ("attn_k", (16, n_embd)), ("attn_v", (16, n_embd)),
                 ("attn_output", (n_embd, 32)), ("ffn_gate", (64, n_embd)), ("ffn_up", (64, n_embd)),
                 ("ffn_down", (n_embd, 64))):
        w.add_tensor(f"blk.0.{t}.weight", f(*s))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


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

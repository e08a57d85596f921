"""response_format json_object (ggufkit.serve.jsonmode): the byte recognizer agrees with Python's
json module (every prefix of a valid object accepted, complete exactly at its end; on mutated
texts, complete if and only if json.loads gives an object), the vocabulary mask equals the
per-token check, and the engine's constrained replies are JSON objects: a scripted model's object
is cut where it closes, and a random-weight model's replies (greedy and sampled, 2 slots) are
always a valid prefix and an object when they end."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("openai")
pytestmark = pytest.mark.timeout(180)

from ggufkit.serve.engine import Engine, Job  # noqa: E402
from ggufkit.serve.jsonmode import JsonState, Vocab  # noqa: E402
from runtime.generate import GREEDY, SamplingParams  # noqa: E402
from tests.ggufkit.serve.test_serve_engine import client_for, model  # noqa: E402,F401  (the module fixture)
from tests.helpers.serve import Sink  # noqa: E402


class _Bytes:
    """A Vocab stand-in for feeding raw bytes."""
    usable = np.zeros(0, dtype=np.bool_)


def fresh() -> JsonState:
    return JsonState(_Bytes())


def verdict(text: str) -> str:
    """'done' (a complete object, nothing after it), 'open' (a valid prefix) or 'refused'."""
    st = fresh()
    for b in text.encode():
        if st.done or not st.feed(bytes([b])):
            return "refused"
    return "done" if st.done else "open"


def reference(text: str) -> bool:
    """json's verdict: text is exactly one JSON object (no NaN / Infinity; whitespace before it)."""
    def no_constants(c):
        raise ValueError(c)
    try:
        return isinstance(json.loads(text, parse_constant=no_constants), dict) and text == text.rstrip(" \t\r\n")
    except ValueError:
        return False


def random_value(rng: random.Random, depth: int = 0):
    k = rng.randrange(8 if depth < 4 else 5)
    if k == 0:
        return rng.choice([True, False, None])
    if k == 1:
        return rng.randint(-10 ** 6, 10 ** 6)
    if k == 2:
        return rng.uniform(-1e6, 1e6) * rng.choice([1, 1e-9, 1e20])
    if k in (3, 4):
        return "".join(rng.choice('ab "\\/\n\té€😀\u0001x') for _ in range(rng.randrange(6)))
    if k == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_value(rng, 4) if rng.random() < 0.3 else f"k{i}": random_value(rng, depth + 1)
            for i in range(rng.randrange(4))}


def corpus(n=150, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        obj = {f"k{i}": random_value(rng) for i in range(rng.randrange(4))}
        out.append(json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1, "\t"]),
                              separators=rng.choice([None, (",", ":")])))
    return out + ['{}', ' \n{"a":0}', '{"a": [[], {}, [[1e5, -0.5E-2, 0]]]}', '{"\\u00e9\\"": "\\ud83d\\ude00"}']


def test_every_prefix_accepted_and_complete_at_the_end():
    for text in corpus():
        assert verdict(text) == "done", text
        for i in range(len(text)):
            assert verdict(text[:i]) == "open", (text, i)
    for text in ('[1]', '"a"', '1', '{"a": 01}', '{"a" 1}', '{"a": tru}', '{"a": 1,}', '{"a": 1.}', '{"a": 1e}',
                 '{"a": "\x01"}', '{a: 1}', "{'a': 1}", '{"a": NaN}', '{"a": 1} {', '{"a": "\\x"}', '{"a": "\\u12G4"}'):
        assert verdict(text) == "refused", text


def test_mutations_agree_with_json_module():
    rng = random.Random(1)
    alphabet = '{}[]:,"\\ 0123456789.eE+-truefalsn\nab'
    docs = corpus(60, seed=2)
    n_done = 0
    for _ in range(3000):
        t = list(rng.choice(docs))
        for _ in range(rng.randrange(1, 3)):
            i = rng.randrange(len(t) + 1)
            op = rng.randrange(3)
            if op == 0 and i < len(t):
                del t[i]
            elif op == 1:
                t.insert(i, rng.choice(alphabet))
            elif i < len(t):
                t[i] = rng.choice(alphabet)
        text = "".join(t)
        v = verdict(text)
        assert (v == "done") == reference(text), (text, v)
        n_done += v == "done"
    assert 100 < n_done < 2900                     # both outcomes are exercised


def test_mask_equals_per_token_check(model):
    vocab = Vocab(model.tokenizer)
    tok = model.tokenizer
    assert not vocab.usable[tok.eos]
    for prefix in ("", '{"ke', '{"key": ', '{"key": 12', '{"key": [true, "x\\', '{"a": {"b": null}'):
        st = JsonState(vocab)
        assert st.feed(prefix.encode())
        m = st.mask()
        ids = np.union1d(np.flatnonzero(m), np.random.default_rng(0).choice(tok.n_vocab, 5000, replace=False))
        np.testing.assert_array_equal(m[ids], [st.accepts(int(t)) for t in ids], err_msg=prefix)
        assert 0 < m.sum() < len(m) and not m[tok.eos]


def test_scripted_object_is_cut_where_it_closes(model):
    obj = '{"city": "Paris", "n": [1, 2.5e3, true, null]}'
    eng, http, client = client_for(model, obj + " and some more text")
    try:
        msgs = [{"role": "user", "content": "JSON please"}]
        r = client.chat.completions.create(model="chat.gguf", messages=msgs, response_format={"type": "json_object"},
                                           temperature=0)
        assert r.choices[0].message.content == obj and r.choices[0].finish_reason == "stop"
        chunks = list(client.chat.completions.create(model="chat.gguf", messages=msgs, stream=True, temperature=0,
                                                     response_format={"type": "json_object"}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == obj
        plain = client.chat.completions.create(model="chat.gguf", messages=msgs, temperature=0)
        assert plain.choices[0].message.content == obj + " and some more text"
    finally:
        eng.stop()


def test_random_model_replies_are_json(model):
    enc = model.tokenizer.encode
    eng = Engine(model, 2 * 256, parallel=2)
    eng.start()
    try:
        sinks = []
        for i, p in enumerate(["Give me a JSON object", "The weather is"]):
            params = GREEDY if i % 2 == 0 else SamplingParams(temp=1.0, seed=i)
            s = Sink()
            eng.submit(Job(enc(p), params, 30, [], s, json_mode=True))
            sinks.append(s)
        for s in sinks:
            s.wait(120)
            text = "".join(s.text)
            assert verdict(text) in ("open", "done"), text
            if s.result.finish_reason == "stop":
                assert isinstance(json.loads(text), dict), text
            else:
                assert s.result.finish_reason == "length" and s.result.n_gen == 30
    finally:
        eng.stop()

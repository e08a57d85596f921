"""Generation as a few small verbs: prefill, decode_one, sample, generate.

    cache  = model.new_cache(n_ctx)
    logits = prefill(model, cache, prompt_ids)          # f32 [n_vocab] for the last prompt token
    tid    = sample(logits, params, rng, history)
    logits = decode_one(model, cache, tid)
    tid    = decode_sample(model, cache, tid, params, rng, history)   # both (one CUDA graph on a GPU)

Sampling follows llama.cpp's default chain (common/sampling.cpp): repetition penalty over the
last ``repeat_last_n`` tokens, top-k, top-p, min-p, temperature, then a draw; ``temp <= 0``
is greedy (argmax after the penalty).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from runtime import backend as B
from runtime.errors import ModelError


@dataclass(frozen=True)
class SamplingParams:
    temp: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None


GREEDY = SamplingParams(temp=0.0)
DEFAULT_CTX = 4096       # context when generating until end of text (llama.cpp's default n_ctx)


def prefill(model, cache, ids, n_batch: int = 512, host: bool = True) -> np.ndarray:
    """Evaluate the prompt in batches of n_batch; logits of its last token, f32 [n_vocab]
    (host=False: an array of the output head's device, for ``sample_on``)."""
    ids = list(ids)
    if not ids:
        raise ModelError("empty prompt")
    h = None
    for s in range(0, len(ids), n_batch):
        h = model.forward(ids[s:s + n_batch], cache, out_rows=-1)
    return model.logits(h, host)[0]


def decode_one(model, cache, tid: int, host: bool = True) -> np.ndarray:
    """Evaluate one token at the next position; its logits f32 [n_vocab] (host as in prefill).
    A model placed wholly on a GPU may replay a captured CUDA graph (runtime.cuda.graph)."""
    graph = getattr(model, "decode_graph", None)
    y = graph(cache, tid) if graph is not None else None
    if y is None:
        y = model.logits(model.forward([tid], cache, out_rows=-1), host=False)
    return (model.out_backend.to_host(y) if host else y)[0]


def decode_sample(model, cache, tid: int, p: SamplingParams = GREEDY, rng: np.random.Generator | None = None,
                  history=()) -> int:
    """``decode_one`` then ``sample_on``: evaluate tid and pick the next token. A model wholly on
    a GPU replays one captured CUDA graph for both (runtime.cuda.graph: the layers, the output
    head and the sampling chain)."""
    rng = rng or np.random.default_rng(p.seed)
    graph = getattr(model, "decode_graph", None)
    t = graph.step(cache, tid, p, rng, history) if graph is not None else None
    if t is not None:
        return t
    return sample_on(model.out_backend, decode_one(model, cache, tid, host=False), p, rng, history)


def sample_on(backend, logits, p: SamplingParams = GREEDY, rng: np.random.Generator | None = None,
              history=()) -> int:
    """``sample`` where the logits are: on a GPU only the token id crosses back (greedy, top-k,
    top-p, min-p, penalty on the device); on the CPU, or for a chain the device cannot run
    (top_k 0 or above its limit), on the host."""
    rng = rng or np.random.default_rng(p.seed)
    tid = backend.sample(logits, p, rng, history)
    return tid if tid is not None else sample(backend.to_host(logits), p, rng, history)


def sample(logits: np.ndarray, p: SamplingParams = GREEDY, rng: np.random.Generator | None = None,
           history=()) -> int:
    """One token id from logits [n_vocab] (see the module docstring for the chain)."""
    x = np.array(logits, dtype=np.float32)
    if p.repeat_penalty != 1.0 and p.repeat_last_n != 0 and len(history):
        last = np.unique(np.asarray(list(history)[-p.repeat_last_n:] if p.repeat_last_n > 0 else list(history)))
        v = x[last]
        x[last] = np.where(v <= 0, v * p.repeat_penalty, v / p.repeat_penalty)
    if p.temp <= 0:
        return int(np.argmax(x))
    idx = np.argsort(-x, kind="stable")
    if p.top_k > 0:
        idx = idx[:p.top_k]
    probs = B.softmax(x[idx]).astype(np.float64)
    if p.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
        idx, probs = idx[:keep], probs[:keep]
    if p.min_p > 0.0:
        keep = probs >= p.min_p * probs[0]
        idx = idx[keep]
    probs = B.softmax(x[idx] / np.float32(p.temp)).astype(np.float64)
    rng = rng or np.random.default_rng(p.seed)
    return int(idx[rng.choice(len(idx), p=probs / probs.sum())])


def generate(model, prompt_ids, n_predict: int, params: SamplingParams = GREEDY, n_ctx: int | None = None,
             stop_at_eog: bool = True, cache=None, n_batch: int = 512) -> Iterator[int]:
    """Yield up to n_predict new token ids (stops after an end-of-generation token if asked).

    n_predict < 0 (llama.cpp's -1) generates until end of text or until the context is full.
    n_ctx defaults to prompt + n_predict (with n_predict < 0: DEFAULT_CTX, capped by the model's
    training context)."""
    prompt_ids = list(prompt_ids)
    if cache is None:
        if not n_ctx:
            n_ctx = len(prompt_ids) + n_predict if n_predict >= 0 else min(model.hp.n_ctx_train, DEFAULT_CTX)
        cache = model.new_cache(check_context(len(prompt_ids), n_predict, n_ctx))
    room = cache.n_ctx - cache.n_past - len(prompt_ids)
    n_predict = room if n_predict < 0 else n_predict
    rng = np.random.default_rng(params.seed)
    history = list(prompt_ids)
    out = model.out_backend                 # logits stay where the output head ran
    logits = prefill(model, cache, prompt_ids, n_batch, host=False)
    tok = model.tokenizer
    tid = sample_on(out, logits, params, rng, history) if n_predict > 0 else None
    for i in range(n_predict):
        history.append(tid)
        yield tid
        if stop_at_eog and tok is not None and tok.is_eog(tid):
            return
        if i + 1 < n_predict:
            tid = decode_sample(model, cache, tid, params, rng, history)


def check_context(n_prompt: int, n_predict: int, n_ctx: int) -> int:
    """n_ctx if a prompt of n_prompt tokens and n_predict new ones (< 0: at least one) fit in it;
    ModelError otherwise."""
    need = n_prompt + (n_predict if n_predict >= 0 else 1)
    if need > n_ctx:
        what = f"{n_predict} tokens" if n_predict >= 0 else "1 token"
        raise ModelError(f"context overflow: prompt {n_prompt} + {what} > context {n_ctx}")
    return n_ctx


def generate_ids(model, prompt_ids, n_predict: int, temp: float = 0.0, **kw) -> list[int]:
    """The whole continuation as a list (greedy by default)."""
    return list(generate(model, prompt_ids, n_predict, SamplingParams(temp=temp, **kw)))

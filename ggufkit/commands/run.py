"""``ggufkit run``: the prompt and its continuation streamed to stdout, speed on stderr."""
from __future__ import annotations

import sys
import time

from ggufkit.errors import GGUFKitError
from runtime.errors import ModelError
from runtime.generate import DEFAULT_CTX, GREEDY, SamplingParams, check_context, generate


def check_n_predict(n_predict: int) -> None:
    if n_predict < -1:
        raise GGUFKitError(f"-n {n_predict}: use -1 (until end of text or the context is full) or a count >= 0")


def run(model_path: str, prompt: str, n_predict: int, params: SamplingParams = GREEDY,
        n_threads: int | None = None, n_ctx: int | None = None, out=None, err=None, dev=None) -> str:
    """Load, stream the continuation to ``out``; Ctrl-C stops after the current token and keeps
    what was generated. n_predict -1: until end of text or the context (default 4096) is full."""
    from runtime.loader import load
    from runtime.plan import place_model

    check_n_predict(n_predict)
    if n_ctx is not None and n_ctx < 1:
        raise GGUFKitError(f"-c {n_ctx}: the context size must be positive")
    out = out or sys.stdout
    model = load(model_path, n_threads=n_threads)
    model.step_background = True    # decode layer programs compile in a child process meanwhile
    ids = model.tokenizer.encode(prompt)
    if not n_ctx:
        n_ctx = len(ids) + n_predict if n_predict >= 0 else DEFAULT_CTX
        n_ctx = min(model.hp.n_ctx_train, n_ctx)
    try:
        check_context(len(ids), n_predict, n_ctx)
    except ModelError as e:
        raise GGUFKitError(f"{e} (raise -c or lower -n)") from None
    place_model(model, dev, n_ctx)
    step = model.tokenizer.stream_decoder()
    text, n = [], 0
    out.write(prompt)
    out.flush()
    t0 = time.perf_counter()
    try:
        for tid in generate(model, ids, n_predict, params, n_ctx=n_ctx):
            s = step(tid)
            n += 1
            text.append(s)
            out.write(s)
            out.flush()
    except KeyboardInterrupt:
        if err is not None:
            err.write("\n[interrupted]")
    dt = time.perf_counter() - t0
    out.write("\n")
    if err is not None:
        err.write(f"[{len(ids)} prompt tokens, {n} generated in {dt:.2f} s: {n / dt if dt else 0:.2f} tokens/s]\n")
    return "".join(text)

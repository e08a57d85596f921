"""Importance-matrix collection as llama.cpp's ``tools/imatrix/imatrix.cpp`` does it.

Collection point: the input activations of every matrix multiplication whose weight is named
``blk.*`` (``output.weight`` too with ``process_output``), for batches of at least 16 tokens:
per weight the float32 sums of x² over the tokens and the token count (``quant.imatrix.RawImatrix``).

Text handling is llama-imatrix's: tokenize once (BOS per the GGUF), n_chunk = min(chunks,
n_tokens // n_ctx), each chunk from an empty KV cache with its first token replaced by BOS; the
perplexity of the second half of each chunk is reported along the way (``compute_ppl``).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from quant.imatrix import RawImatrix
from runtime import backend as B
from runtime.errors import ModelError

MIN_TOKENS = 16          # llama-imatrix ignores smaller batches


class Collector:
    """A ``backend.MATMUL_OBSERVERS`` hook accumulating into a RawImatrix while installed
    (``output.weight`` is added by ``compute_imatrix`` itself: the logits are computed in blocks)."""

    def __init__(self, raw: RawImatrix):
        self.raw = raw

    def __call__(self, w, x) -> None:
        if x.shape[0] >= MIN_TOKENS and w.name.startswith("blk."):
            self.raw.add(w.name, x)

    def __enter__(self):
        B.MATMUL_OBSERVERS.append(self)
        return self

    def __exit__(self, *exc):
        B.MATMUL_OBSERVERS.remove(self)


def compute_imatrix(model, text: str, n_ctx: int = 512, n_chunks: int = -1, raw: RawImatrix | None = None,
                    process_output: bool = False, compute_ppl: bool = True,
                    on_chunk: Callable[[int, int, float | None], None] | None = None,
                    cache_dtype=np.float16) -> tuple[RawImatrix, float | None]:
    """Run ``text`` through ``model`` in chunks of n_ctx tokens, collecting activations.

    Returns (raw imatrix, final PPL or None). ``on_chunk(i, n_chunk, running_ppl)`` after each chunk."""
    from runtime.perplexity import _nll, _rows_logits, chunks

    if n_ctx < 16:
        raise ModelError(f"context size {n_ctx} is too small for imatrix (at least 16)")
    tok = model.tokenizer
    _, windows = chunks(tok, text, n_ctx, n_chunks, f"for a context of {n_ctx} tokens")
    n_chunk = len(windows)
    raw = raw if raw is not None else RawImatrix(chunk_size=n_ctx)
    raw.chunk_size = n_ctx
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    ppl = None
    has_output = process_output and "output.weight" in model.w.mats
    with Collector(raw):
        for i, chunk in enumerate(windows):
            cache = model.new_cache(n_ctx, cache_dtype)
            if has_output:        # llama-imatrix asks for every row's logits: output.weight sees them all
                h = model.forward(chunk, cache)
                raw.add("output.weight", h)
                h = h[first:n_ctx - 1]
            elif compute_ppl:
                h = model.forward(chunk, cache, out_rows=np.arange(first, n_ctx - 1))
            if compute_ppl:
                targets = chunk[first + 1:]
                # the output matmul runs on LOGIT_ROWS rows at a time; llama.cpp sees all rows at once
                for r, lg in _rows_logits(model, h):
                    v = _nll(lg, targets[r:r + len(lg)])
                    nll += float(v.sum())
                    nll2 += float((v * v).sum())
                count += n_ctx - first - 1
                ppl = math.exp(nll / count)
            elif not has_output:
                model.forward(chunk, cache, out_rows=np.arange(1))
            if on_chunk is not None:
                on_chunk(i, n_chunk, ppl)
    return raw, ppl

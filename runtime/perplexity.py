"""Perplexity and KL divergence exactly as llama.cpp's ``tools/perplexity/perplexity.cpp``.

Method: tokenize the whole text once (BOS per the GGUF's add_bos rule); cut it into
``n_chunk = min(--chunks, n_tokens // n_ctx)`` chunks of n_ctx tokens; evaluate each chunk from
an empty KV cache with its first token replaced by BOS (when add_bos); score only the second
half: the logits at positions first .. n_ctx-2 (first = n_ctx/2) against the next token.
Per token nll = max + log(sum exp(l - max)) - l[tok] (expf terms, double sum). The result:

    PPL = exp(mean nll) +/- ppl * sqrt((mean nll^2 - mean nll^2) / (count - 1))

Nothing here prints: ``on_chunk`` callbacks get the running results, and ``ggufkit perplexity``
(ggufkit/commands/perplexity.py) prints llama-perplexity's lines from them.

KL divergence: ``logits_out`` (a binary file) receives llama.cpp's logits file (``_logits_``, i32 n_ctx,
i32 n_vocab, i32 n_chunk, i32 tokens[n_chunk*n_ctx], then per chunk (n_ctx-1-first) rows of
nv = 2*((n_vocab+1)/2)+4 uint16: f32 scale, f32 min_log_prob, then log-probs quantized to 16
bits; ``write_logits_header`` then one block per chunk); ``kl_divergence`` reads such a file (from llama-perplexity or from here) and reports
llama.cpp's statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from runtime.errors import ModelError

LOGIT_ROWS = 32          # logits are computed this many rows at a time ([rows, n_vocab] f32)


@dataclass
class PPLResult:
    ppl: float
    err: float
    chunk_ppl: list = field(default_factory=list)   # running PPL after each chunk
    n_tokens: int = 0                               # tokens in the text
    count: int = 0                                  # scored tokens
    n_chunk: int = 0                                # chunks that will be (or were) evaluated
    n_ctx: int = 0
    n_batch: int = 0


def read_text_file(path: str) -> str:
    """A text file as llama.cpp's ``-f`` reads it: raw bytes (CRLF kept), one trailing newline dropped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"{path}: {e.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _load(model, n_threads: int | None = None):
    """A loaded model, or the one at path ``model`` loaded with n_threads kernel threads (a model
    loaded already keeps the count it was loaded with)."""
    if isinstance(model, str):
        from runtime.loader import load
        return load(model, n_threads=n_threads)
    return model


def _chunk_hidden(model, chunk: np.ndarray, first: int, n_batch: int, cache_dtype) -> np.ndarray:
    """Final-normed hidden states at positions first..n_ctx-2 of one chunk, f32 [n_ctx-1-first, n_embd]."""
    n_ctx = len(chunk)
    cache = model.new_cache(n_ctx, cache_dtype)
    hs = []
    for s in range(0, n_ctx, n_batch):
        e = min(n_ctx, s + n_batch)
        lo, hi = max(first, s), min(n_ctx - 1, e)       # positions we need logits for, in this batch
        rows = np.arange(lo - s, hi - s) if hi > lo else np.arange(0)
        h = model.forward(chunk[s:e], cache, out_rows=rows)
        if len(rows):
            hs.append(h)
    return np.concatenate(hs)


def _rows_logits(model, h: np.ndarray):
    """Yield (row offset, logits f32 [rows, n_vocab]) in blocks of LOGIT_ROWS."""
    for r in range(0, len(h), LOGIT_ROWS):
        yield r, model.logits(h[r:r + LOGIT_ROWS])


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log_softmax as perplexity.cpp: float max, expf(l - max) summed in double. -> nll f64 [rows]."""
    mx = logits.max(axis=1)
    sum_exp = np.exp(logits - mx[:, None]).astype(np.float64).sum(axis=1)
    lt = logits[np.arange(len(targets)), targets]
    return -((lt - mx).astype(np.float64) - np.log(sum_exp))


def _quantized_log_probs(logits: np.ndarray) -> np.ndarray:
    """perplexity.cpp's log_softmax(..., uint16_t * log_prob, ...): rows -> uint16 [rows, nv]."""
    rows, n_vocab = logits.shape
    nv = 2 * ((n_vocab + 1) // 2) + 4
    out = np.zeros((rows, nv), np.uint16)
    mx = logits.max(axis=1)
    mn = np.maximum(logits.min(axis=1), mx - np.float32(16))
    sum_exp = np.exp(logits - mx[:, None]).astype(np.float64).sum(axis=1)
    log_sum_exp = np.log(sum_exp).astype(np.float32)
    min_log_prob = (mn - mx - log_sum_exp).astype(np.float32)
    scale = ((mx - mn) / np.float32(65535)).astype(np.float32)
    head = out[:, :4].view(np.float32)                     # two floats in the first 4 uint16
    head[:, 0], head[:, 1] = scale, min_log_prob
    for r in range(rows):
        if scale[r]:
            inv = np.float32(1) / scale[r]
            q = np.rint(inv * (logits[r] - mn[r])).astype(np.int64)    # nearest_int: half to even
            out[r, 4:4 + n_vocab] = np.where(logits[r] > mn[r], q, 0).astype(np.uint16)
    return out


def chunks(tok, text: str, n_ctx: int, n_chunks: int | None, need: str,
           min_tokens: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The text's tokens (with BOS as the tokenizer adds it) and its first ``n_chunks`` (None or < 0:
    all) windows of n_ctx tokens, each starting with BOS when the tokenizer adds one, as
    llama-perplexity and llama-imatrix cut them. A text of fewer than ``min_tokens`` (default
    2 n_ctx) tokens is refused: "you need at least <min_tokens> tokens <need>; ..."."""
    tokens = np.asarray(tok.encode(text, add_special=True), dtype=np.int32)
    min_tokens = 2 * n_ctx if min_tokens is None else min_tokens
    if len(tokens) < min_tokens:
        raise ModelError(f"you need at least {min_tokens} tokens {need}; the text tokenizes to only "
                         f"{len(tokens)} tokens")
    n_chunk_max = len(tokens) // n_ctx
    n_chunk = n_chunk_max if n_chunks is None or n_chunks < 0 else min(n_chunks, n_chunk_max)
    out = []
    for i in range(n_chunk):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
        if tok.add_bos:
            chunk[0] = tok.bos
        out.append(chunk)
    return tokens, out


def perplexity(model, text: str, n_ctx: int = 512, n_chunks: int = -1, n_batch: int = 2048,
               n_threads: int | None = None, logits_out=None, on_chunk=None,
               cache_dtype=np.float16) -> PPLResult:
    """llama-perplexity on ``text``. ``on_chunk(i, res)`` is called with i = 0 before the first
    chunk (res.n_chunk, n_ctx, n_batch set) and with i = 1..n_chunk after each (res.chunk_ppl
    grows). ``logits_out``: a binary file that receives llama.cpp's base logits file."""
    model = _load(model, n_threads)
    if n_ctx < 4:
        raise ModelError(f"context size {n_ctx} is too small")
    tok = model.tokenizer
    if tok.add_eos:
        raise ModelError("perplexity needs a tokenizer that does not append EOS")
    tokens, windows = chunks(tok, text, n_ctx, n_chunks, f"to evaluate perplexity with a context of {n_ctx}")
    n_chunk = len(windows)
    if n_chunk < 1:
        raise ModelError("no chunks to evaluate (the chunk count is 0)")
    n_batch = min(n_batch, n_ctx) if n_batch and n_batch > 0 else n_ctx
    first = n_ctx // 2
    res = PPLResult(0.0, 0.0, n_tokens=len(tokens), n_chunk=n_chunk, n_ctx=n_ctx, n_batch=n_batch)
    if on_chunk:
        on_chunk(0, res)
    if logits_out is not None:
        write_logits_header(logits_out, n_ctx, tok.n_vocab, n_chunk, tokens[:n_chunk * n_ctx])
    nll = nll2 = 0.0
    count = 0
    for i, chunk in enumerate(windows):
        h = _chunk_hidden(model, chunk, first, n_batch, cache_dtype)
        targets = chunk[first + 1:]
        for r, lg in _rows_logits(model, h):
            v = _nll(lg, targets[r:r + len(lg)])
            nll += float(v.sum())
            nll2 += float((v * v).sum())
            if logits_out is not None:
                logits_out.write(_quantized_log_probs(lg).tobytes())
        count += n_ctx - first - 1
        res.chunk_ppl.append(math.exp(nll / count))
        if on_chunk:
            on_chunk(i + 1, res)
    mean, mean2 = nll / count, nll2 / count
    res.ppl = math.exp(mean)
    var = mean2 - mean * mean
    res.err = math.sqrt(var / (count - 1)) * res.ppl if var > 0 else 0.0
    res.count = count
    return res


def write_logits_header(f, n_ctx: int, n_vocab: int, n_chunk: int, tokens: np.ndarray) -> None:
    """llama.cpp's logits file header: ``_logits_``, i32 n_ctx, n_vocab, n_chunk, i32 tokens."""
    f.write(b"_logits_")
    f.write(np.array([n_ctx, n_vocab, n_chunk], dtype="<i4").tobytes())
    f.write(np.asarray(tokens, dtype="<i4").tobytes())


# ---------------------------------------------------------------- KL divergence

def read_logits_header(path: str):
    """Open a llama.cpp logits file: (file positioned at the first chunk, n_ctx, n_vocab, n_chunk, tokens)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ModelError(f"{path}: cannot open logits file ({e.strerror})") from None
    if f.read(8) != b"_logits_":
        f.close()
        raise ModelError(f"{path}: not a llama.cpp logits file (bad magic)")
    hdr = np.frombuffer(f.read(12), dtype="<i4")
    if hdr.size != 3:
        f.close()
        raise ModelError(f"{path}: truncated logits file")
    n_ctx, n_vocab, n_chunk = (int(v) for v in hdr)
    tokens = np.frombuffer(f.read(4 * n_ctx * n_chunk), dtype="<i4")
    if tokens.size != n_ctx * n_chunk:
        f.close()
        raise ModelError(f"{path}: truncated logits file (tokens)")
    return f, n_ctx, n_vocab, n_chunk, tokens.astype(np.int32)


@dataclass
class KLDResult:
    """llama-perplexity --kl-divergence's statistics (``*_err``: the +/- uncertainties)."""
    ppl: float
    ppl_err: float
    ppl_base: float
    ppl_base_err: float
    ppl_cor: float              # correlation of ln PPL(Q) and ln PPL(base)
    ln_ppl_ratio: float
    ln_ppl_ratio_err: float
    ppl_ratio: float
    ppl_diff_err: float         # of PPL(Q) - PPL(base)
    kld_mean: float
    kld_err: float
    dp_mean: float
    dp_err: float
    rms_dp: float
    rms_dp_err: float
    same_top: float
    same_top_err: float
    count: int
    kld_values: np.ndarray = None    # sorted, f32 (final result only)
    dp_values: np.ndarray = None     # sorted, f32 (final result only)

    @property
    def kld_median(self) -> float:
        return median(self.kld_values)

    @property
    def kld_max(self) -> float:
        return float(self.kld_values[-1])


def median(v: np.ndarray) -> float:
    """perplexity.cpp's median of a sorted vector."""
    n = len(v)
    return float(0.5 * (v[n // 2] + v[n // 2 - 1]) if n % 2 == 0 else v[n // 2])


def _mean_unc(s: float, s2: float, n: int) -> tuple[float, float]:
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def percentile(v: np.ndarray, frac: float) -> float:
    """perplexity.cpp's percentile of a sorted vector (linear interpolation, float32 position)."""
    if frac <= 0:
        return float(v[0])
    if frac >= 1:
        return float(v[-1])
    p = np.float32(frac) * np.float32(len(v) - 1)
    ip = int(p)
    p -= ip
    return float((1 - p) * v[ip] + p * v[min(ip + 1, len(v) - 1)])


def _kld_rows(logits: np.ndarray, base: np.ndarray, targets: np.ndarray, acc: dict) -> tuple[np.ndarray, np.ndarray]:
    """perplexity.cpp's log_softmax(n_vocab, logits, base_log_prob, tok, kld) over rows."""
    rows, n_vocab = logits.shape
    head = base[:, :4].view(np.float32)
    scale, min_lp = head[:, 0], head[:, 1]
    q = base[:, 4:4 + n_vocab].astype(np.float32)
    imax = logits.argmax(axis=1)
    mx = logits.max(axis=1)
    sum_exp = np.exp(logits - mx[:, None]).astype(np.float64).sum(axis=1)
    lse = np.log(sum_exp).astype(np.float32)
    ar = np.arange(rows)
    nll = (mx + lse - logits[ar, targets]).astype(np.float32)
    p_log_base = (scale[:, None] * q + min_lp[:, None]).astype(np.float32)
    nll_base = (-p_log_base[ar, targets]).astype(np.float32)
    mlse = (mx + lse)[:, None]
    term = np.where(p_log_base > -16.0, np.exp(p_log_base) * (p_log_base - logits + mlse), 0.0)
    kld = term.astype(np.float64).sum(axis=1)
    imax_base = p_log_base.argmax(axis=1)
    p_diff = (np.exp(-nll) - np.exp(-nll_base)).astype(np.float32)
    n64, nb64, pd = nll.astype(np.float64), nll_base.astype(np.float64), p_diff.astype(np.float64)
    acc["nll"] += n64.sum(); acc["nll2"] += (n64 * n64).sum()
    acc["nllb"] += nb64.sum(); acc["nllb2"] += (nb64 * nb64).sum(); acc["nn"] += (n64 * nb64).sum()
    acc["kld"] += kld.sum(); acc["kld2"] += (kld * kld).sum()
    acc["pd"] += pd.sum(); acc["pd2"] += (pd * pd).sum(); acc["pd4"] += (pd ** 4).sum()
    acc["same"] += int((imax == imax_base).sum()); acc["n"] += rows
    return kld.astype(np.float32), p_diff


def kl_divergence(model, base_file: str, n_batch: int = 2048, n_threads: int | None = None, on_chunk=None,
                  cache_dtype=np.float16) -> KLDResult:
    """Compare this model's logits with a base logits file (llama.cpp format) on its tokens.

    ``on_chunk(i, res)`` gets the running statistics after chunk i (1-based; no value arrays)."""
    model = _load(model, n_threads)
    tok = model.tokenizer
    f, n_ctx, n_vocab, n_chunk, tokens = read_logits_header(base_file)
    if n_vocab != tok.n_vocab:
        f.close()
        raise ModelError(f"{base_file}: n_vocab {n_vocab} differs from the model's {tok.n_vocab}")
    first = n_ctx // 2
    nv = 2 * ((n_vocab + 1) // 2) + 4
    n_rows = n_ctx - 1 - first
    n_batch = min(n_batch, n_ctx) if n_batch and n_batch > 0 else n_ctx
    acc = dict.fromkeys(["nll", "nll2", "nllb", "nllb2", "nn", "kld", "kld2", "pd", "pd2", "pd4"], 0.0)
    acc["same"] = acc["n"] = 0
    klds, pds = [], []
    try:
        for i in range(n_chunk):
            base = np.frombuffer(f.read(n_rows * nv * 2), dtype=np.uint16)
            if base.size != n_rows * nv:
                raise ModelError(f"{base_file}: truncated logits file at chunk {i + 1}")
            base = base.reshape(n_rows, nv)
            chunk = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
            if tok.add_bos:
                chunk[0] = tok.bos
            h = _chunk_hidden(model, chunk, first, n_batch, cache_dtype)
            targets = tokens[i * n_ctx + first + 1:(i + 1) * n_ctx]
            for r, lg in _rows_logits(model, h):
                k, d = _kld_rows(lg, base[r:r + len(lg)], targets[r:r + len(lg)], acc)
                klds.append(k), pds.append(d)
            if on_chunk:
                on_chunk(i + 1, _kld_result(acc))
    finally:
        f.close()
    if not acc["n"]:
        raise ModelError(f"{base_file}: no chunks to compare")
    return _kld_result(acc, np.sort(np.concatenate(klds)), np.sort(np.concatenate(pds)))


def _cov(a, b, ab, n):
    return 0.0 if n < 10 else (ab / n - (a / n) * (b / n)) / (n - 1)


def _kld_result(a: dict, kv: np.ndarray | None = None, pv: np.ndarray | None = None) -> KLDResult:
    """perplexity.cpp's statistics from the accumulated sums."""
    n = a["n"]
    lp, lpu = _mean_unc(a["nll"], a["nll2"], n)
    lb, lbu = _mean_unc(a["nllb"], a["nllb2"], n)
    cov = _cov(a["nll"], a["nllb"], a["nn"], n)
    kd, kdu = _mean_unc(a["kld"], a["kld2"], n)
    dp, dpu = _mean_unc(a["pd"], a["pd2"], n)
    mse, mseu = _mean_unc(a["pd2"], a["pd4"], n)
    rms = math.sqrt(mse)
    top = a["same"] / n if n else 0.0
    ppl, pplb = math.exp(lp), math.exp(lb)
    return KLDResult(
        ppl=ppl, ppl_err=ppl * lpu, ppl_base=pplb, ppl_base_err=pplb * lbu,
        ppl_cor=cov / (lpu * lbu) if lpu * lbu else 0.0,
        ln_ppl_ratio=lp - lb, ln_ppl_ratio_err=math.sqrt(max(lpu * lpu + lbu * lbu - 2.0 * cov, 0.0)),
        ppl_ratio=math.exp(lp - lb),
        ppl_diff_err=math.sqrt(max((ppl * lpu) ** 2 + (pplb * lbu) ** 2 - 2.0 * ppl * pplb * cov, 0.0)),
        kld_mean=kd, kld_err=kdu, dp_mean=dp, dp_err=dpu, rms_dp=rms,
        rms_dp_err=0.5 / rms * mseu if rms else 0.0,
        same_top=top, same_top_err=math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0,
        count=n, kld_values=kv, dp_values=pv)

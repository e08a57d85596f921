"""Perplexity and KL divergence exactly as llama.cpp's ``tools/perplexity/perplexity.cpp``.

Method: tokenize the whole text once (BOS per the GGUF's add_bos rule); cut it into
``n_chunk = min(--chunks, n_tokens // n_ctx)`` chunks of n_ctx tokens; evaluate each chunk from
an empty KV cache with its first token replaced by BOS (when add_bos); score only the second
half: the logits at positions first .. n_ctx-2 (first = n_ctx/2) against the next token.
Per token nll = max + log(sum exp(l - max)) - l[tok] (expf terms, double sum). The running
output is ``[i]ppl,`` per chunk and then

    Final estimate: PPL = exp(mean nll) +/- ppl * sqrt((mean nll^2 - mean nll^2) / (count - 1))

KL divergence: ``kl_base_file`` writes llama.cpp's logits file (``_logits_``, i32 n_ctx,
i32 n_vocab, i32 n_chunk, i32 tokens[n_chunk*n_ctx], then per chunk (n_ctx-1-first) rows of
nv = 2*((n_vocab+1)/2)+4 uint16: f32 scale, f32 min_log_prob, then log-probs quantized to 16
bits); ``kl_divergence`` reads such a file (from llama-perplexity or from here) and reports
llama.cpp's statistics.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from runtime import backend as B
from runtime.errors import ModelError

LOGIT_ROWS = 32          # logits are computed this many rows at a time ([rows, n_vocab] f32)


@dataclass
class PPLResult:
    ppl: float
    err: float
    chunk_ppl: list = field(default_factory=list)   # running PPL after each chunk
    n_tokens: int = 0                               # tokens in the text
    count: int = 0                                  # scored tokens


def read_text_file(path: str) -> str:
    """A text file as llama.cpp's ``-f`` reads it: raw bytes (CRLF kept), one trailing newline dropped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"{path}: {e.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _load(model):
    if isinstance(model, str):
        from runtime.loader import load
        return load(model)
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


def perplexity(model, text: str, n_ctx: int = 512, n_chunks: int = -1, n_batch: int = 2048,
               n_threads: int | None = None, kl_base_file: str | None = None, out=sys.stdout,
               cache_dtype=np.float16) -> PPLResult:
    """llama-perplexity on ``text`` (a path's content); prints its lines to ``out`` (None: silent)."""
    model = _load(model)
    if n_threads:
        B.set_num_threads(n_threads)
    if n_ctx < 4:
        raise ModelError(f"context size {n_ctx} is too small")
    tok = model.tokenizer
    if tok.add_eos:
        raise ModelError("perplexity needs a tokenizer that does not append EOS")
    tokens = np.asarray(tok.encode(text, add_special=True), dtype=np.int32)
    if len(tokens) < 2 * n_ctx:
        raise ModelError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of "
                         f"{n_ctx}; the text tokenizes to only {len(tokens)} tokens")
    n_chunk_max = len(tokens) // n_ctx
    n_chunk = n_chunk_max if n_chunks is None or n_chunks < 0 else min(n_chunks, n_chunk_max)
    n_batch = min(n_batch, n_ctx) if n_batch else n_ctx
    first = n_ctx // 2
    say = (lambda s: (out.write(s), out.flush())) if out is not None else (lambda s: None)
    say(f"perplexity: calculating perplexity over {n_chunk} chunks, n_ctx={n_ctx}, batch_size={n_batch}\n")
    kl = None
    if kl_base_file:
        kl = _LogitsWriter(kl_base_file, n_ctx, tok.n_vocab, n_chunk, tokens[:n_chunk * n_ctx])
    nll = nll2 = 0.0
    count = 0
    res = PPLResult(0.0, 0.0, n_tokens=len(tokens))
    ok = False
    try:
        for i in range(n_chunk):
            chunk = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
            if tok.add_bos:
                chunk[0] = tok.bos
            h = _chunk_hidden(model, chunk, first, n_batch, cache_dtype)
            targets = chunk[first + 1:]
            for r, lg in _rows_logits(model, h):
                v = _nll(lg, targets[r:r + len(lg)])
                nll += float(v.sum())
                nll2 += float((v * v).sum())
                if kl is not None:
                    kl.write(_quantized_log_probs(lg).tobytes())
            count += n_ctx - first - 1
            res.chunk_ppl.append(math.exp(nll / count))
            say(f"[{i + 1}]{res.chunk_ppl[-1]:.4f},")
        ok = True
    finally:
        if kl is not None:
            kl.close(keep=ok)
    say("\n")
    mean, mean2 = nll / count, nll2 / count
    res.ppl = math.exp(mean)
    var = mean2 - mean * mean
    res.err = math.sqrt(var / (count - 1)) * res.ppl if var > 0 else 0.0
    res.count = count
    say(f"Final estimate: PPL = {res.ppl:.4f} +/- {res.err:.5f}\n")
    return res


def perplexity_file(model_path: str, text_file: str | None, n_ctx: int = 512, n_chunks: int = -1,
                    n_batch: int = 2048, n_threads: int | None = None, kl_base_file: str | None = None,
                    kl_divergence_mode: bool = False, out=sys.stdout, dev=None):
    """``ggufkit perplexity``: PPL of a text file (optionally saving base logits), or with
    ``kl_divergence_mode`` the KL-divergence statistics against ``kl_base_file``."""
    from runtime.loader import load
    from runtime.plan import place_model

    model = load(model_path)
    if kl_divergence_mode:
        if not kl_base_file:
            raise ModelError("--kl-divergence needs --kl-divergence-base FILE (the base logits)")
        f, base_ctx, *_ = read_logits_header(kl_base_file)     # its n_ctx sizes the KV cache
        f.close()
        place_model(model, dev, base_ctx, min(n_batch, base_ctx) if n_batch else base_ctx)
        return kl_divergence(model, kl_base_file, n_batch, n_threads, out)
    if not text_file:
        raise ModelError("perplexity needs a text file (-f)")
    place_model(model, dev, n_ctx, min(n_batch, n_ctx) if n_batch else n_ctx)
    return perplexity(model, read_text_file(text_file), n_ctx, n_chunks, n_batch, n_threads, kl_base_file, out)


# ---------------------------------------------------------------- KL divergence

class _LogitsWriter:
    """llama.cpp's logits file, written to PATH.tmp and renamed on success (never half-written)."""

    def __init__(self, path: str, n_ctx: int, n_vocab: int, n_chunk: int, tokens: np.ndarray):
        import os
        self.path, self.tmp = path, f"{path}.tmp{os.getpid()}"
        self.f = open(self.tmp, "wb")
        self.f.write(b"_logits_")
        self.f.write(np.array([n_ctx, n_vocab, n_chunk], dtype="<i4").tobytes())
        self.f.write(np.asarray(tokens, dtype="<i4").tobytes())

    def write(self, b: bytes) -> None:
        self.f.write(b)

    def close(self, keep: bool = True) -> None:
        import os
        self.f.close()
        if keep:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)


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
    ppl: float
    ppl_base: float
    ppl_ratio: float
    ln_ppl_ratio: float
    kld_mean: float
    kld_err: float
    kld_median: float
    kld_max: float
    same_top: float
    rms_dp: float
    dp_mean: float
    count: int
    kld_values: np.ndarray = None
    dp_values: np.ndarray = None


def _mean_unc(s: float, s2: float, n: int) -> tuple[float, float]:
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def _percentile(v: np.ndarray, frac: float) -> float:
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


def kl_divergence(model, base_file: str, n_batch: int = 2048, n_threads: int | None = None, out=sys.stdout,
                  cache_dtype=np.float16) -> KLDResult:
    """Compare this model's logits with a base logits file (llama.cpp format) on its tokens."""
    model = _load(model)
    if n_threads:
        B.set_num_threads(n_threads)
    tok = model.tokenizer
    f, n_ctx, n_vocab, n_chunk, tokens = read_logits_header(base_file)
    if n_vocab != tok.n_vocab:
        raise ModelError(f"{base_file}: n_vocab {n_vocab} differs from the model's {tok.n_vocab}")
    first = n_ctx // 2
    nv = 2 * ((n_vocab + 1) // 2) + 4
    n_rows = n_ctx - 1 - first
    n_batch = min(n_batch, n_ctx) if n_batch else n_ctx
    acc = dict.fromkeys(["nll", "nll2", "nllb", "nllb2", "nn", "kld", "kld2", "pd", "pd2", "pd4"], 0.0)
    acc["same"] = acc["n"] = 0
    klds, pds = [], []
    say = (lambda s: (out.write(s), out.flush())) if out is not None else (lambda s: None)
    say("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
        "\u0394p RMS            Same top p\n")
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
            say(_kld_line(i + 1, acc))
    finally:
        f.close()
    return _kld_summary(acc, np.sort(np.concatenate(klds)), np.sort(np.concatenate(pds)), say)


def _cov(a, b, ab, n):
    return 0.0 if n < 10 else (ab / n - (a / n) * (b / n)) / (n - 1)


def _kld_line(i: int, a: dict) -> str:
    n = a["n"]
    lp, lpu = _mean_unc(a["nll"], a["nll2"], n)
    lb, lbu = _mean_unc(a["nllb"], a["nllb2"], n)
    ratio_unc = math.sqrt(max(lpu * lpu + lbu * lbu - 2.0 * _cov(a["nll"], a["nllb"], a["nn"], n), 0.0))
    kd, kdu = _mean_unc(a["kld"], a["kld2"], n)
    mse, mseu = _mean_unc(a["pd2"], a["pd4"], n)
    rms = math.sqrt(mse)
    top = a["same"] / n
    topu = math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0
    return (f"{i:4d}    {math.exp(lp):9.4f} \u00b1 {math.exp(lp) * lpu:9.4f}    {lp - lb:10.5f} \u00b1 {ratio_unc:10.5f}"
            f"    {kd:10.5f} \u00b1 {kdu:10.5f}    {100 * rms:6.3f} \u00b1 {100 * 0.5 / rms * mseu if rms else 0:6.3f} %"
            f"    {100 * top:6.3f} \u00b1 {100 * topu:6.3f} %\n")


def _kld_summary(a: dict, kv: np.ndarray, pv: np.ndarray, say) -> KLDResult:
    n = a["n"]
    lp, lpu = _mean_unc(a["nll"], a["nll2"], n)
    lb, lbu = _mean_unc(a["nllb"], a["nllb2"], n)
    cov = _cov(a["nll"], a["nllb"], a["nn"], n)
    kd, kdu = _mean_unc(a["kld"], a["kld2"], n)
    dp, dpu = _mean_unc(a["pd"], a["pd2"], n)
    mse, mseu = _mean_unc(a["pd2"], a["pd4"], n)
    rms = math.sqrt(mse)
    top = a["same"] / n
    med = lambda v: float(0.5 * (v[len(v) // 2] + v[len(v) // 2 - 1]) if len(v) % 2 == 0 else v[len(v) // 2])  # noqa: E731
    r = KLDResult(ppl=math.exp(lp), ppl_base=math.exp(lb), ppl_ratio=math.exp(lp - lb), ln_ppl_ratio=lp - lb,
                  kld_mean=kd, kld_err=kdu, kld_median=med(kv), kld_max=float(kv[-1]), same_top=top, rms_dp=rms,
                  dp_mean=dp, count=n, kld_values=kv, dp_values=pv)
    say("\n")
    if n < 100:
        return r
    ratio_unc = math.sqrt(max(lpu * lpu + lbu * lbu - 2.0 * cov, 0.0))
    ppl, pplb = math.exp(lp), math.exp(lb)
    say("====== Perplexity statistics ======\n")
    say(f"Mean PPL(Q)                   : {ppl:10.6f} \u00b1 {ppl * lpu:10.6f}\n")
    say(f"Mean PPL(base)                : {pplb:10.6f} \u00b1 {pplb * lbu:10.6f}\n")
    say(f"Cor(ln(PPL(Q)), ln(PPL(base))): {100.0 * cov / (lpu * lbu) if lpu * lbu else 0:6.2f}%\n")
    say(f"Mean ln(PPL(Q)/PPL(base))     : {lp - lb:10.6f} \u00b1 {ratio_unc:10.6f}\n")
    say(f"Mean PPL(Q)/PPL(base)         : {r.ppl_ratio:10.6f} \u00b1 {r.ppl_ratio * ratio_unc:10.6f}\n")
    diff_unc = math.sqrt(max((ppl * lpu) ** 2 + (pplb * lbu) ** 2 - 2.0 * ppl * pplb * cov, 0.0))
    say(f"Mean PPL(Q)-PPL(base)         : {ppl - pplb:10.6f} \u00b1 {diff_unc:10.6f}\n\n")
    say("====== KL divergence statistics ======\n")
    say(f"Mean    KLD: {kd:10.6f} \u00b1 {kdu:10.6f}\n")
    say(f"Maximum KLD: {kv[-1]:10.6f}\n")
    for frac, lab in ((0.999, "99.9%"), (0.99, "99.0%"), (0.95, "95.0%"), (0.90, "90.0%")):
        say(f"{lab}   KLD: {_percentile(kv, frac):10.6f}\n")
    say(f"Median  KLD: {med(kv):10.6f}\n")
    for frac, lab in ((0.1, "10.0%"), (0.05, " 5.0%"), (0.01, " 1.0%"), (0.001, " 0.1%")):
        say(f"{lab}   KLD: {_percentile(kv, frac):10.6f}\n")
    say(f"Minimum KLD: {kv[0]:10.6f}\n\n")
    say("====== Token probability statistics ======\n")
    say(f"Mean    \u0394p: {100 * dp:6.3f} \u00b1 {100 * dpu:5.3f} %\n")
    say(f"Maximum \u0394p: {100 * pv[-1]:6.3f}%\n")
    for frac, lab in ((0.999, "99.9%"), (0.99, "99.0%"), (0.95, "95.0%"), (0.90, "90.0%"), (0.75, "75.0%")):
        say(f"{lab}   \u0394p: {100 * _percentile(pv, frac):6.3f}%\n")
    say(f"Median  \u0394p: {100 * med(pv):6.3f}%\n")
    for frac, lab in ((0.25, "25.0%"), (0.1, "10.0%"), (0.05, " 5.0%"), (0.01, " 1.0%"), (0.001, " 0.1%")):
        say(f"{lab}   \u0394p: {100 * _percentile(pv, frac):6.3f}%\n")
    say(f"Minimum \u0394p: {100 * pv[0]:6.3f}%\n")
    say(f"RMS \u0394p    : {100 * rms:6.3f} \u00b1 {100 * 0.5 / rms * mseu if rms else 0:5.3f} %\n")
    say(f"Same top p: {100 * top:6.3f} \u00b1 {100 * math.sqrt(top * (1 - top) / (n - 1)):5.3f} %\n")
    return r

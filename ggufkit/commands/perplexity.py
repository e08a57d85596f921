"""``ggufkit perplexity``: llama-perplexity's output lines, from the library's results."""
from __future__ import annotations

import sys

from ggufkit.atomic import atomic_path, check_output
from ggufkit.errors import GGUFKitError
from runtime.perplexity import KLDResult, PPLResult, kl_divergence, median, percentile, perplexity, read_text_file


def perplexity_file(model_path: str, text_file: str | None, n_ctx: int = 512, n_chunks: int = -1,
                    n_batch: int = 2048, n_threads: int | None = None, kl_base_file: str | None = None,
                    kl_divergence_mode: bool = False, out=None, dev=None):
    """PPL of a text file (with ``kl_base_file``: also saving the base logits there), or with
    ``kl_divergence_mode`` the KL-divergence statistics against ``kl_base_file``."""
    from runtime.loader import load
    from runtime.perplexity import read_logits_header
    from runtime.plan import place_model

    out = out or sys.stdout
    say = lambda s: (out.write(s), out.flush())  # noqa: E731
    if kl_divergence_mode:
        if not kl_base_file:
            raise GGUFKitError("--kl-divergence needs --kl-divergence-base FILE (the base logits)")
        model = load(model_path, n_threads=n_threads)
        f, base_ctx, *_ = read_logits_header(kl_base_file)      # its n_ctx sizes the KV cache
        f.close()
        place_model(model, dev, base_ctx, min(n_batch, base_ctx) if n_batch else base_ctx)
        say(KLD_HEADER)
        r = kl_divergence(model, kl_base_file, n_batch, on_chunk=lambda i, r: say(kld_line(i, r)))
        say(kld_summary(r))
        return r
    if not text_file:
        raise GGUFKitError("perplexity needs a text file (-f)")
    if kl_base_file:
        check_output(kl_base_file)
    model = load(model_path, n_threads=n_threads)
    place_model(model, dev, n_ctx, min(n_batch, n_ctx) if n_batch else n_ctx)
    text = read_text_file(text_file)
    if not kl_base_file:
        r = perplexity(model, text, n_ctx, n_chunks, n_batch, on_chunk=_printer(say))
    else:
        with atomic_path(kl_base_file) as tmp, open(tmp, "wb") as f:
            r = perplexity(model, text, n_ctx, n_chunks, n_batch, logits_out=f, on_chunk=_printer(say))
    say(f"\nFinal estimate: PPL = {r.ppl:.4f} +/- {r.err:.5f}\n")
    return r


def _printer(say):
    def on_chunk(i: int, r: PPLResult) -> None:
        if i == 0:
            say(f"perplexity: calculating perplexity over {r.n_chunk} chunks, n_ctx={r.n_ctx}, "
                f"batch_size={r.n_batch}\n")
        else:
            say(f"[{i}]{r.chunk_ppl[-1]:.4f},")
    return on_chunk


KLD_HEADER = ("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
              "\u0394p RMS            Same top p\n")


def kld_line(i: int, r: KLDResult) -> str:
    return (f"{i:4d}    {r.ppl:9.4f} \u00b1 {r.ppl_err:9.4f}    {r.ln_ppl_ratio:10.5f} \u00b1 {r.ln_ppl_ratio_err:10.5f}"
            f"    {r.kld_mean:10.5f} \u00b1 {r.kld_err:10.5f}    {100 * r.rms_dp:6.3f} \u00b1 {100 * r.rms_dp_err:6.3f} %"
            f"    {100 * r.same_top:6.3f} \u00b1 {100 * r.same_top_err:6.3f} %\n")


def kld_summary(r: KLDResult) -> str:
    """The statistics block llama-perplexity prints (only with at least 100 tokens)."""
    if r.count < 100:
        return "\n"
    kv, pv = r.kld_values, r.dp_values
    lines = ["",
             "====== Perplexity statistics ======",
             f"Mean PPL(Q)                   : {r.ppl:10.6f} \u00b1 {r.ppl_err:10.6f}",
             f"Mean PPL(base)                : {r.ppl_base:10.6f} \u00b1 {r.ppl_base_err:10.6f}",
             f"Cor(ln(PPL(Q)), ln(PPL(base))): {100.0 * r.ppl_cor:6.2f}%",
             f"Mean ln(PPL(Q)/PPL(base))     : {r.ln_ppl_ratio:10.6f} \u00b1 {r.ln_ppl_ratio_err:10.6f}",
             f"Mean PPL(Q)/PPL(base)         : {r.ppl_ratio:10.6f} \u00b1 {r.ppl_ratio * r.ln_ppl_ratio_err:10.6f}",
             f"Mean PPL(Q)-PPL(base)         : {r.ppl - r.ppl_base:10.6f} \u00b1 {r.ppl_diff_err:10.6f}",
             "",
             "====== KL divergence statistics ======",
             f"Mean    KLD: {r.kld_mean:10.6f} \u00b1 {r.kld_err:10.6f}",
             f"Maximum KLD: {kv[-1]:10.6f}"]
    lines += [f"{lab}   KLD: {percentile(kv, frac):10.6f}"
              for frac, lab in ((0.999, "99.9%"), (0.99, "99.0%"), (0.95, "95.0%"), (0.90, "90.0%"))]
    lines.append(f"Median  KLD: {median(kv):10.6f}")
    lines += [f"{lab}   KLD: {percentile(kv, frac):10.6f}"
              for frac, lab in ((0.1, "10.0%"), (0.05, " 5.0%"), (0.01, " 1.0%"), (0.001, " 0.1%"))]
    lines += [f"Minimum KLD: {kv[0]:10.6f}", "",
              "====== Token probability statistics ======",
              f"Mean    \u0394p: {100 * r.dp_mean:6.3f} \u00b1 {100 * r.dp_err:5.3f} %",
              f"Maximum \u0394p: {100 * pv[-1]:6.3f}%"]
    lines += [f"{lab}   \u0394p: {100 * percentile(pv, frac):6.3f}%"
              for frac, lab in ((0.999, "99.9%"), (0.99, "99.0%"), (0.95, "95.0%"), (0.90, "90.0%"), (0.75, "75.0%"))]
    lines.append(f"Median  \u0394p: {100 * median(pv):6.3f}%")
    lines += [f"{lab}   \u0394p: {100 * percentile(pv, frac):6.3f}%"
              for frac, lab in ((0.25, "25.0%"), (0.1, "10.0%"), (0.05, " 5.0%"), (0.01, " 1.0%"), (0.001, " 0.1%"))]
    lines += [f"Minimum \u0394p: {100 * pv[0]:6.3f}%",
              f"RMS \u0394p    : {100 * r.rms_dp:6.3f} \u00b1 {100 * r.rms_dp_err:5.3f} %",
              f"Same top p: {100 * r.same_top:6.3f} \u00b1 {100 * r.same_top_err:5.3f} %"]
    return "\n".join(lines) + "\n"

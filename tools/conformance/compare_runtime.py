#!/usr/bin/env python3
"""Check ggufkit's runtime against llama.cpp, and (re)make the golden files under tests/golden/runtime/.

    python -m tools.conformance.compare_runtime tokens MODEL.gguf NAME    # llama-tokenize ids -> tokens-NAME.json
    python -m tools.conformance.compare_runtime ppl MODEL.gguf NAME [-c 512 --chunks 4 -t 2]
                                                              # llama-perplexity vs ggufkit -> ppl-NAME.json
    python -m tools.conformance.compare_runtime ppl-fixture FIXTURE.gguf NAME -c 128 --chunks 4
                                                              # same on tests/golden/runtime/fixture-text.txt
    python -m tools.conformance.compare_runtime kld-fixture F16.gguf NAME --quant Q.gguf -c 128 --chunks 4
                                                              # KL divergence stats -> kld-NAME.json
    python -m tools.conformance.compare_runtime greedy MODEL.gguf NAME [-p PROMPT -n 16]
                                                              # llama.cpp greedy tokens vs ggufkit -> greedy-NAME.json
    python -m tools.conformance.compare_runtime all                       # all of it for the gemma3 model and fixtures

llama.cpp binaries come from $LLAMA_BIN (default /work/oracle/build/bin). Every subcommand
prints ggufkit's result beside llama.cpp's and writes the llama.cpp side as the golden file
(``--no-write`` to only compare).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "runtime"
LLAMA_BIN = Path(os.environ.get("LLAMA_BIN", "/work/oracle/build/bin"))
WIKITEXT = Path(os.environ.get("WIKITEXT", REPO.parent / "shared" / "data" / "wikitext-2-test.txt"))

# Texts for the tokenizer goldens: plain, unicode, digits, whitespace runs, special tokens.
TOKEN_TEXTS = [
    "Hello world",
    " Hello  world ",
    "Hello, world! How's it going? I'm fine; you'll see, we'd've DONE it.",
    "ünïcödé café naïve — “quotes” ‘single’ … ½ × ÷ €100",
    "日本語のテキストと中文字符, 한국어 텍스트, Ελληνικά, русский текст, עברית, العربية",
    "emoji 😀🎉👍🏽 and 🇫🇷 flags",
    "1 12 123 1234 12345 123456 3.14159 1,000,000 0x1F 2026-11-23",
    "tabs\there\t\tand\nnewlines\n\n\nand\r\nCRLF   spaces    end   ",
    "    leading spaces and trailing spaces    ",
    "\n\n\n",
    "def f(x):\n    return x**2  # comment\n\tif x: pass\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text with <eos> inside and <unk> <pad> tokens",
    "a" * 40 + " " + "ab" * 20,
    "",
]


GREEDY_PROMPT_2 = "Question: Why is the sky blue?\nAnswer:"


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def llama_tokenize(model: Path, text: str, parse_special: bool = True) -> list[int]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8", newline="") as f:
        f.write(text)
    try:
        cmd = [LLAMA_BIN / "llama-tokenize", "-m", model, "-f", f.name, "--ids", "--log-disable", "--no-escape"]
        if not parse_special:
            cmd.append("--no-parse-special")
        r = run(cmd)
        if r.returncode:
            raise RuntimeError(r.stderr[-2000:])
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(f.name)


def cmd_tokens(model: Path, name: str, write: bool) -> bool:
    from quant.gguf import GGUFReader
    from runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(GGUFReader(model))
    cases, ok = [], True
    for text in TOKEN_TEXTS:
        for ps in (True, False):
            ref = llama_tokenize(model, text, ps) if text else ([tok.bos] if tok.add_bos else [])
            ours = tok.encode(text, add_special=True, parse_special=ps)
            same = ref == ours
            ok &= same
            if not same:
                print(f"MISMATCH parse_special={ps} {text!r}\n  llama.cpp {ref}\n  ggufkit   {ours}")
            cases.append({"text": text, "parse_special": ps, "ids": ref})
    print(f"tokens {name}: {len(cases)} cases, {'all equal' if ok else 'MISMATCHES'}")
    if write:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        out = {"model": model.name, "tool": "llama-tokenize --ids", "cases": cases}
        (GOLDEN / f"tokens-{name}.json").write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n")
    return ok


# ---------------------------------------------------------------- perplexity

def llama_perplexity(model: Path, text: Path, ctx: int, chunks: int, threads: int, extra=()) -> dict:
    r = run([LLAMA_BIN / "llama-perplexity", "-m", model, "-f", text, "-c", ctx, "--chunks", chunks,
             "-t", threads, "-b", ctx, *extra])
    out = r.stdout + r.stderr
    if r.returncode:
        raise RuntimeError(out[-3000:])
    chunk_ppl = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+)", out)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    return {"chunks": chunk_ppl, "ppl": float(m.group(1)), "err": float(m.group(2))}


def fixture_text(n_words: int = 3000, seed: int = 0) -> str:
    """A deterministic made-up English-like text for perplexity on the tiny fixtures."""
    import numpy as np
    words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
             "but have an they you were her she there been one all we their has would when if so no will more "
             "model layer token weight quantized matrix river city music 1998 42 , . ; ( ) \" ' - 3.14 Über naïve").split()
    rng = np.random.default_rng(seed)
    lines, line = [], []
    for i in range(n_words):
        line.append(words[int(rng.integers(len(words)))])
        if rng.random() < 0.06:
            lines.append(" ".join(line))
            line = []
    return "\n".join(lines) + "\n"


def cmd_ppl(model: Path, name: str, ctx: int, chunks: int, threads: int, write: bool, text_path: Path = None) -> bool:
    from runtime.perplexity import perplexity, read_text_file

    text_path = text_path or WIKITEXT
    ref = llama_perplexity(model, text_path, ctx, chunks, threads)
    ref_fa_off = llama_perplexity(model, text_path, ctx, chunks, threads, extra=("-fa", "off"))
    res = perplexity(str(model), read_text_file(str(text_path)), n_ctx=ctx, n_chunks=chunks,
                     n_threads=threads)
    rel = abs(res.ppl - ref["ppl"]) / ref["ppl"]
    print(f"ppl {name}: llama.cpp {ref['ppl']:.4f} +/- {ref['err']:.5f}   ggufkit {res.ppl:.4f} +/- {res.err:.5f}"
          f"   rel diff {rel:.2e}\n  llama.cpp -fa off {ref_fa_off['ppl']:.4f}: rel diff "
          f"{abs(res.ppl - ref_fa_off['ppl']) / ref_fa_off['ppl']:.2e}")
    if write:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / f"ppl-{name}.json").write_text(json.dumps(
            {"model": model.name, "text": text_path.name, "n_ctx": ctx, "n_chunks": chunks, **ref,
             "fa_off": ref_fa_off, "ggufkit": {"chunks": res.chunk_ppl, "ppl": res.ppl, "err": res.err}}, indent=1) + "\n")
    return rel


def cmd_kld_fixture(base: Path, quant: Path, name: str, ctx: int, chunks: int, threads: int, write: bool):
    """llama-perplexity --kl-divergence-base on BASE, --kl-divergence on QUANT; ggufkit the same."""
    from runtime.perplexity import kl_divergence, perplexity, read_text_file

    text = GOLDEN / "fixture-text.txt"
    with tempfile.TemporaryDirectory() as d:
        lb = Path(d) / "base.logits"
        llama_perplexity(base, text, ctx, chunks, threads, extra=("--kl-divergence-base", lb))
        r = run([LLAMA_BIN / "llama-perplexity", "-m", quant, "-c", ctx, "-t", threads,
                 "--kl-divergence-base", lb, "--kl-divergence"])
        out = r.stdout + r.stderr
        num = lambda pat: float(re.search(pat + r"\s*:\s*(-?[0-9.]+)", out).group(1))  # noqa: E731
        ref = {"kld_mean": num(r"Mean    KLD"), "kld_median": num(r"Median  KLD"), "kld_max": num(r"Maximum KLD"),
               "same_top_pct": num(r"Same top p"), "ppl_q": num(r"Mean PPL\(Q\)\s"),
               "ppl_base": num(r"Mean PPL\(base\)\s")}
        ob = Path(d) / "ours.logits"
        with open(ob, "wb") as f:
            perplexity(str(base), read_text_file(str(text)), ctx, chunks, n_threads=threads, logits_out=f)
        k = kl_divergence(str(quant), str(ob), n_threads=threads)
    print(f"kld {name}: llama.cpp {ref}\n  ggufkit mean KLD {k.kld_mean:.6f} median {k.kld_median:.6f} "
          f"max {k.kld_max:.6f} same top {100 * k.same_top:.3f}% PPL(Q) {k.ppl:.6f} PPL(base) {k.ppl_base:.6f}")
    if write:
        (GOLDEN / f"kld-{name}.json").write_text(json.dumps(
            {"base": base.name, "quant": quant.name, "n_ctx": ctx, "n_chunks": chunks, **ref}, indent=1) + "\n")


# ---------------------------------------------------------------- greedy generation

def llama_greedy(model: Path, prompt: str, n: int) -> str:
    """llama.cpp's greedy continuation text: ``llama-simple -n N PROMPT`` (greedy sampler, BOS
    per the GGUF) prints the prompt's pieces (specials included) and then the new text."""
    r = run([LLAMA_BIN / "llama-simple", "-m", model, "-n", n, prompt])
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    out = r.stdout
    k = out.find(prompt)
    if k < 0:
        raise RuntimeError(f"prompt not found in llama-simple output: {out[:200]!r}")
    out = out[k + len(prompt):]
    return out[:-1] if out.endswith("\n") else out     # llama-simple ends with a newline


def cmd_greedy(model: Path, name: str, prompt: str, n: int, threads: int, write: bool) -> int:
    from runtime.generate import generate_ids
    from runtime.loader import load

    ref = llama_greedy(model, prompt, n)
    m = load(str(model), n_threads=threads)
    ours_ids = generate_ids(m, m.tokenizer.encode(prompt), n, temp=0.0)
    ours = m.tokenizer.decode(ours_ids)
    k = next((i for i, (a, b) in enumerate(zip(ref, ours)) if a != b), min(len(ref), len(ours)))
    print(f"greedy {name}: {'equal' if ref == ours else f'first {k} characters equal'}\n"
          f"  llama.cpp {ref!r}\n  ggufkit   {ours!r}")
    if write:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / f"greedy-{name}.json").write_text(json.dumps(
            {"model": model.name, "tool": "llama-simple (greedy)", "prompt": prompt, "n": n, "text": ref,
             "ggufkit_ids": ours_ids}, ensure_ascii=False, indent=1) + "\n")
    return k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tokens", "ppl", "ppl-fixture", "kld-fixture", "greedy", "all"])
    ap.add_argument("--quant", help="kld-fixture: the quantized GGUF compared with MODEL")
    ap.add_argument("model", nargs="?")
    ap.add_argument("name", nargs="?")
    ap.add_argument("-c", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-p", default="The capital of France is")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    write = not a.no_write
    if a.what == "all":
        from tools.get_gemma3 import default_path
        g = default_path()
        cmd_tokens(g, "gemma3", write)
        cmd_ppl(g, "gemma3-q4km", a.c, a.chunks, a.t, write)
        cmd_greedy(g, "gemma3-q4km", a.p, a.n, a.t, write)
        cmd_greedy(g, "gemma3-q4km-2", GREEDY_PROMPT_2, a.n, a.t, write)
        return
    model = Path(a.model)
    if a.what == "tokens":
        cmd_tokens(model, a.name, write)
    elif a.what == "ppl":
        cmd_ppl(model, a.name, a.c, a.chunks, a.t, write)
    elif a.what == "kld-fixture":
        cmd_kld_fixture(model, Path(a.quant), a.name, a.c, a.chunks, a.t, write)
    elif a.what == "ppl-fixture":          # MODEL = a fixture GGUF (e.g. ggufkit convert --outtype f16)
        text = GOLDEN / "fixture-text.txt"
        if write:
            text.write_text(fixture_text(), encoding="utf-8")
        cmd_ppl(model, a.name, a.c, a.chunks, a.t, write, text)
    else:
        cmd_greedy(model, a.name, a.p, a.n, a.t, write)


if __name__ == "__main__":
    main()

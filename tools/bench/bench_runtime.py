#!/usr/bin/env python3
"""ggufkit bench vs llama-bench on the same GGUF files and thread count; prints a markdown table
with the ratios (ggufkit / llama.cpp) of the median tokens/s for pp and tg.

    python -m tools.bench.bench_runtime MODEL.gguf [MODEL2.gguf ...] [-t 2] [-p 512] [-n 128] [-r 3] [--rounds 1]
    python -m tools.bench.bench_runtime --make-deci deci-mid-f16.gguf     # then: llama-quantize (or
                                  # ggufkit quantize) deci-mid-f16.gguf deci-mid-q4km.gguf Q4_K_M
    python -m tools.bench.bench_runtime --host MODEL.gguf [-t 2] [-n 64] [--rounds 3]

--host prints the host overhead of decode: wall time per token per layer spent outside the Numba
kernels (Python, numpy temporaries, and the dispatch of each kernel call up to its entry), for the
per-op path and the layer programs (runtime/step.py), alternating --rounds times. It counts every
call into a compiled Numba function made from Python during a decode loop of -n tokens (a wrapper
on numba's CPUDispatcher.__call__ adds each call's wall time): host = (loop wall time - time in
those calls) / (tokens x layers). The dispatch of a call (type checks, unboxing the arguments)
counts as kernel time here, so this undercounts the host cost by about 1 us per kernel call.

llama-bench comes from $LLAMA_BIN (default: build/bin of the sdist that .ci/run unpacks into
~/.cache/ggufkit, as tools/bench/bench_serve.py). For each model the two
tools run back to back (llama-bench, then ggufkit in this process), --rounds times alternating,
each with -r repetitions after a warm-up; the ratio is median(ggufkit samples) / median(llama.cpp
samples) over all rounds. llama-bench runs as shipped: default flags but -p/-n/-t/-r, and the
environment this script was started with (never the OMP_WAIT_POLICY ggufkit sets for itself). Ratios
in docs/PERFORMANCE.md before issue 17 were taken against a llama-bench slowed by
OMP_WAIT_POLICY=PASSIVE. The load average before and after each model is printed (the machine
may be shared). Targets (issue 9): tg >= 1.0 (>= 0.8 for models under 0.3 GB), pp >= 1.0
(K-quants, legacy types) / 0.7 (files with IQ types).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LLAMA_BIN = Path(os.environ.get("LLAMA_BIN", Path.home() / ".cache/ggufkit/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"))
# llama-bench runs as its users run it: this process's environment as it was at start, with only -t
# set. ggufkit's loader sets OMP_WAIT_POLICY=PASSIVE for its own threads (runtime.loader.set_threads);
# llama.cpp must not inherit that (it cost llama-bench 38% of its decode speed here: issue 17).
LLAMA_ENV = dict(os.environ)      # taken before anything of ggufkit is loaded


def llama_bench(model: str, p: int, n: int, t: int, r: int) -> dict:
    out = subprocess.run([str(LLAMA_BIN / "llama-bench"), "-m", model, "-p", str(p), "-n", str(n), "-t", str(t),
                          "-r", str(r), "-o", "json"], capture_output=True, text=True, check=True, env=LLAMA_ENV).stdout
    res = json.loads(out)
    return {("pp" if x["n_prompt"] else "tg"): list(x["samples_ts"]) for x in res}


def ours_bench(model: str, p: int, n: int, t: int, r: int) -> dict:
    from runtime.bench import bench
    res = bench(model, p, n, r, t)
    return {("pp" if x.n_prompt else "tg"): list(x.samples_ts) for x in res}


def _target(model: str, test: str) -> float:
    """Issue 9's bar for this file and test."""
    from runtime.loader import load
    g = load(model, with_tokenizer=False).gguf
    size = sum(t.data.nbytes for t in g.tensors.values())
    iq = any(t.qtype.startswith("IQ") for t in g.tensors.values())
    if test == "tg":
        return 1.0 if size >= 0.3e9 else 0.8
    return 0.7 if iq else 1.0


DECI_MID_LAYERS = [(16, 4, 5632), (16, 4, 5632), (0, 0, 2816), (16, 0, 5632), (16, 2, 5632), (16, 4, 2816)]


def make_deci_mid(path: str, seed: int = 0) -> None:
    """A mid-size random DeciLM GGUF (F16): hidden 2048, 16 heads of 128, six layers of every kind
    (GQA 4/2 KV heads, no-op attention, linear attention), tied output, the Llama-3 vocab."""
    import numpy as np
    from gguf import GGUFWriter

    from tests.helpers.vocab_cases import llama3_metadata

    md, E, HD, rng = llama3_metadata(), 2048, 128, np.random.default_rng(seed)
    w = GGUFWriter(path, "deci")
    w.add_block_count(len(DECI_MID_LAYERS))
    w.add_embedding_length(E)
    w.add_context_length(4096)
    w.add_head_count([a for a, _, _ in DECI_MID_LAYERS])
    w.add_head_count_kv([b for _, b, _ in DECI_MID_LAYERS])
    w.add_feed_forward_length([c for _, _, c in DECI_MID_LAYERS])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HD)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_rope_freq_base(500000.0)
    w.add_vocab_size(len(md["tokenizer.ggml.tokens"]))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smaug-bpe")
    w.add_token_list(md["tokenizer.ggml.tokens"])
    w.add_token_types(md["tokenizer.ggml.token_type"])
    w.add_token_merges(md["tokenizer.ggml.merges"])
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128009)
    w.add_file_type(1)
    f = lambda *s: (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np.float16)  # noqa: E731
    w.add_tensor("token_embd.weight", f(len(md["tokenizer.ggml.tokens"]), E))
    w.add_tensor("output_norm.weight", np.ones(E, np.float32))
    for il, (nh, nkv, nff) in enumerate(DECI_MID_LAYERS):
        p = f"blk.{il}."
        if nh:
            w.add_tensor(p + "attn_norm.weight", np.ones(E, np.float32))
            if nkv:
                w.add_tensor(p + "attn_q.weight", f(nh * HD, E))
                w.add_tensor(p + "attn_k.weight", f(nkv * HD, E))
                w.add_tensor(p + "attn_v.weight", f(nkv * HD, E))
                w.add_tensor(p + "attn_output.weight", f(E, nh * HD))
            else:
                w.add_tensor(p + "attn_output.weight", f(E, E))
        if nff:
            w.add_tensor(p + "ffn_norm.weight", np.ones(E, np.float32))
            w.add_tensor(p + "ffn_gate.weight", f(nff, E))
            w.add_tensor(p + "ffn_up.weight", f(nff, E))
            w.add_tensor(p + "ffn_down.weight", f(E, nff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def host_overhead(model_path: str, n: int, t: int, rounds: int) -> None:
    """Print old (per-op) and new (layer programs) host us per token per layer, alternating."""
    import statistics
    import time

    from numba.core.registry import CPUDispatcher
    from runtime.generate import decode_one, prefill
    from runtime.loader import load

    m = load(model_path, with_tokenizer=False, n_threads=t)
    spent = [0]
    call = CPUDispatcher.__call__

    def timed(self, *a, **k):
        t0 = time.perf_counter_ns()
        try:
            return call(self, *a, **k)
        finally:
            spent[0] += time.perf_counter_ns() - t0

    def loop(fused: bool) -> tuple[float, float]:
        m.fused_decode = fused
        c = m.new_cache(n + 2)
        prefill(m, c, [1])
        decode_one(m, c, 2)                          # warm (compiles the layer programs once)
        c.n_past = 1
        spent[0] = 0
        CPUDispatcher.__call__ = timed
        try:
            t0 = time.perf_counter_ns()
            for i in range(n - 1):
                decode_one(m, c, 3 + i % 50)
            wall = time.perf_counter_ns() - t0
        finally:
            CPUDispatcher.__call__ = call
        per = (n - 1) * m.hp.n_layer
        return (wall - spent[0]) / per / 1e3, wall / (n - 1) / 1e6

    res = {False: [], True: []}
    for _ in range(rounds):
        for fused in (False, True):
            res[fused].append(loop(fused))
    print(f"{Path(model_path).name}, {t} threads, {n} tokens, {m.hp.n_layer} layers, step: "
          f"{m.step_refused or 'layer programs'}")
    for fused, name in ((False, "per-op"), (True, "layer programs")):
        h = [a for a, _ in res[fused]]
        w = [b for _, b in res[fused]]
        print(f"  {name:15s} host {statistics.median(h):6.1f} us/token/layer (runs {', '.join(f'{x:.1f}' for x in h)});"
              f" {statistics.median(w):6.2f} ms/token (runs {', '.join(f'{x:.2f}' for x in w)})")


def setup_line() -> str:
    """What the numbers depend on besides the files: OpenBLAS's kernel (the prefill GEMM) and
    the llama.cpp build. Benchmark with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE as the user has them;
    a workplace that forces an older kernel (Haswell on an AVX-512 CPU) slows the prefill ~1.8x."""
    from runtime.backend import blas_setup
    return (f"OpenBLAS kernel: {blas_setup()}; "
            f"llama-bench: {LLAMA_BIN / 'llama-bench'}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--make-deci", metavar="OUT.gguf", help="write the mid-size random DeciLM (F16) and exit")
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="alternate llama-bench / ggufkit this many times")
    ap.add_argument("--host", action="store_true", help="print decode's host overhead, per-op vs layer programs")
    a = ap.parse_args()
    if a.make_deci:
        make_deci_mid(a.make_deci)
        return
    if a.host:
        for m in a.models:
            host_overhead(m, a.n, a.t, a.rounds)
        return
    import statistics
    print(setup_line(), flush=True)
    rows = ["| model | threads | test | llama.cpp t/s (median) | ggufkit t/s (median) | ratio | target | load |",
            "| ----- | ------: | ---- | ---------------------: | -------------------: | ----: | -----: | ---- |"]
    for m in a.models:
        load0 = os.getloadavg()[0]
        ref, ours = {"pp": [], "tg": []}, {"pp": [], "tg": []}
        for _ in range(a.rounds):
            for k, v in llama_bench(m, a.p, a.n, a.t, a.r).items():
                ref[k] += v
            for k, v in ours_bench(m, a.p, a.n, a.t, a.r).items():
                ours[k] += v
        load = f"{load0:.1f}-{os.getloadavg()[0]:.1f}"
        for test, size in (("pp", a.p), ("tg", a.n)):
            if not ref[test] or not ours[test]:
                continue
            lr, orr = statistics.median(ref[test]), statistics.median(ours[test])
            rows.append(f"| {Path(m).name} | {a.t} | {test}{size} | {lr:.2f} | {orr:.2f} | {orr / lr:.3f} "
                        f"| {_target(m, test)} | {load} |")
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()

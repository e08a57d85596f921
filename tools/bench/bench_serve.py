#!/usr/bin/env python3
"""``ggufkit serve`` vs ``llama-server``: aggregate decode tokens/s and time to first token at 1, 2,
4 and 8 concurrent streams, on the same GGUF, thread count and ``--parallel``; prints a markdown table.

    python -m tools.bench.bench_serve [MODEL.gguf] [-t 2] [-np 8] [--streams 1,2,4,8] [-n 64] [--rounds 1]
                                      [--no-llama] [-o md|json]

Each server is started as its users start it (``ggufkit serve MODEL -np P -c C -t T``;
``llama-server -m MODEL -np P -c C -t T -tb T``, as shipped, from $LLAMA_BIN, default the
llama-cpp-python sdist's build/bin) on a free 127.0.0.1 port, waited for on /health, warmed up
with one short request, measured by ``ggufkit.serve.loadgen`` (every stream a streamed greedy
``/v1/completions`` with its own prompt, ``ignore_eos``, ``max_tokens`` n; aggregate tok/s = all
streams' tokens / the round's wall time, prefill included), and stopped. With --rounds R the two
servers alternate R times and the table gives medians (and min-max when R > 1). The load average
before and after is printed: the machine may be shared. Goals (issue 20): 4 streams >= 2.5x one
stream; ggufkit >= 1.0x llama-server's tok/s at every concurrency; TTFT within 1.5x llama-server's.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLAMA_BIN = Path(os.environ.get("LLAMA_BIN", Path.home() / ".cache/ggufkit/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"))
LLAMA_ENV = dict(os.environ)      # llama-server runs in the environment this script was started with


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(which: str, model: str, port: int, parallel: int, ctx: int, threads: int) -> list[str]:
    if which == "ggufkit":
        return [sys.executable, "-m", "ggufkit", "serve", model, "--port", str(port), "-np", str(parallel),
                "-c", str(ctx), "-t", str(threads), "--queue-size", "64"]
    return [str(LLAMA_BIN / "llama-server"), "-m", model, "--host", "127.0.0.1", "--port", str(port),
            "-np", str(parallel), "-c", str(ctx), "-t", str(threads), "-tb", str(threads)]


def run_server(which: str, model: str, parallel: int, ctx: int, threads: int, streams, n: int) -> list[dict]:
    """Start one server, warm it up, measure every concurrency, stop it; loadgen's rows."""
    import httpx

    from ggufkit.serve.loadgen import measure
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command(which, model, port, parallel, ctx, threads), stdout=log,
                                stderr=subprocess.STDOUT, env=LLAMA_ENV if which == "llama-server" else None)
        try:
            deadline = time.time() + 300
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"error: {which} exited: {log.read().decode(errors='replace')[-2000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise SystemExit(f"error: {which} did not answer /health within 300 s")
                time.sleep(0.3)
            url = f"http://127.0.0.1:{port}"
            measure(url, [1], 8, prompt="Warm-up {i}.")             # compile / first-touch out of the numbers
            return measure(url, streams, n)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _agg(vals: list[float]) -> str:
    if not vals:
        return "-"
    m = statistics.median(vals)
    return f"{m:.2f}" if len(vals) == 1 else f"{m:.2f} ({min(vals):.2f}-{max(vals):.2f})"


def table(results: dict, streams) -> str:
    """results[server][streams] = list of loadgen rows (one per round)."""
    from ggufkit.mdtable import md_table
    servers = list(results)
    med = {s: {c: (statistics.median([r["agg_tok_s"] for r in rows]),
                   statistics.median([r["ttft_mean_s"] or 0.0 for r in rows])) for c, rows in results[s].items()}
           for s in servers}
    head, rows = ["streams"], []
    for s in servers:
        head += [f"{s} tok/s", f"{s} TTFT s"]
    if len(servers) == 2:
        head += ["tok/s ratio", "TTFT ratio"]
    for c in streams:
        row = [c]
        for s in servers:
            row += [_agg([r["agg_tok_s"] for r in results[s][c]]), _agg([r["ttft_mean_s"] or 0.0 for r in results[s][c]])]
        if len(servers) == 2:
            (a, ta), (b, tb) = med[servers[0]][c], med[servers[1]][c]
            row += [f"{a / b:.2f}" if b else "-", f"{ta / tb:.2f}" if tb else "-"]
        rows.append(row)
    out = md_table(head, ["---:"] * len(head), rows)
    if 1 in streams and 4 in streams:
        out += "\n" + "; ".join(f"{s}: 4 streams / 1 stream = {med[s][4][0] / med[s][1][0]:.2f}x"
                                for s in servers if med[s][1][0]) + "\n"
    errors = sum(len(r["errors"]) for s in servers for rows_ in results[s].values() for r in rows_)
    if errors:
        out += f"{errors} stream(s) failed\n"
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="GGUF (default: the gemma-3-270m of tools/get_gemma3.py)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-np", "--parallel", type=int, default=8, help="slots of both servers")
    ap.add_argument("-c", "--ctx-size", type=int, default=0, help="total context (default: 512 per slot)")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("-n", "--tokens", type=int, default=64, help="tokens per stream")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-llama", action="store_true", help="ggufkit serve only")
    ap.add_argument("-o", "--output", choices=["md", "json"], default="md")
    a = ap.parse_args(argv)
    model = a.model
    if model is None:
        from tools.get_gemma3 import default_path
        model = str(default_path())
    if not Path(model).is_file():
        raise SystemExit(f"error: no such model file: {model}")
    streams = [int(x) for x in a.streams.split(",")]
    if max(streams) > a.parallel:
        raise SystemExit(f"error: {max(streams)} streams need -np >= {max(streams)}")
    ctx = a.ctx_size or 512 * a.parallel
    servers = ["ggufkit"] + ([] if a.no_llama else ["llama-server"])
    if not a.no_llama and not (LLAMA_BIN / "llama-server").is_file():
        raise SystemExit(f"error: no llama-server in {LLAMA_BIN} (set LLAMA_BIN, or --no-llama)")
    results = {s: {c: [] for c in streams} for s in servers}
    print(f"# {Path(model).name}, -t {a.threads}, -np {a.parallel}, -c {ctx}, {a.tokens} tokens/stream, "
          f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for _ in range(a.rounds):
        for s in servers:
            for row in run_server(s, model, a.parallel, ctx, a.threads, streams, a.tokens):
                results[s][row["streams"]].append(row)
    print(f"# load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if a.output == "json":
        print(json.dumps(results, indent=1))
    else:
        print(table(results, streams), end="")


if __name__ == "__main__":
    main()

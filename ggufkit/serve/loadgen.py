"""Concurrent-stream load against any OpenAI-compatible server (``ggufkit serve``, llama-server):
aggregate generated tokens/s and time to first token at 1, 2, 4, 8 ... concurrent streams.

    python -m ggufkit.serve.loadgen --url http://127.0.0.1:8080 --streams 1,2,4,8 -n 64 [-o md|json]

Each stream is one streamed ``/v1/completions`` request with its own prompt (so no prefix is
shared), greedy, ``ignore_eos`` (llama-server's field, honoured by ggufkit serve), ``max_tokens``
n. Aggregate tokens/s = all streams' generated tokens / the round's wall time (first request sent
to last stream done, prefill included). Needs httpx.
"""
from __future__ import annotations

import argparse
import json
import threading
import time

from ggufkit.mdtable import md_table


def one_stream(url: str, prompt: str, n: int, headers: dict) -> dict:
    import httpx
    body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True, "ignore_eos": True}
    t0 = time.perf_counter()
    ttft, pieces, usage = None, 0, None
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=headers, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            d = json.loads(line[6:])
            if d.get("usage"):
                usage = d["usage"]
            text = (d.get("choices") or [{}])[0].get("text") or d.get("content") or ""
            if text:
                pieces += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    n_gen = usage["completion_tokens"] if usage else pieces
    return {"ttft_s": ttft or 0.0, "tokens": n_gen, "seconds": time.perf_counter() - t0}


def measure(url: str, streams=(1, 2, 4, 8), n: int = 64, api_key: str | None = None,
            prompt: str = "Request {i}: write a long story about a lighthouse keeper.") -> list[dict]:
    """One round per concurrency: rows of streams, aggregate tok/s, mean and max TTFT."""
    url = url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rows = []
    for c in streams:
        results, errors = [None] * c, []

        def run(i, c=c):
            try:
                results[i] = one_stream(url, prompt.format(i=i, c=c), n, headers)
            except Exception as e:          # reported in the row
                errors.append(f"{type(e).__name__}: {e}")
        threads = [threading.Thread(target=run, args=(i,)) for i in range(c)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ok = [r for r in results if r is not None]
        toks = sum(r["tokens"] for r in ok)
        rows.append({"streams": c, "tokens": toks, "wall_s": round(wall, 3),
                     "agg_tok_s": round(toks / wall, 2) if wall else 0.0,
                     "ttft_mean_s": round(sum(r["ttft_s"] for r in ok) / len(ok), 3) if ok else None,
                     "ttft_max_s": round(max(r["ttft_s"] for r in ok), 3) if ok else None,
                     "errors": errors})
    return rows


def format_rows(rows: list[dict]) -> str:
    return md_table(["streams", "tokens", "wall s", "aggregate tok/s", "TTFT mean s", "TTFT max s", "errors"],
                    ["---:"] * 7, [[r["streams"], r["tokens"], r["wall_s"], r["agg_tok_s"], r["ttft_mean_s"],
                                    r["ttft_max_s"], len(r["errors"])] for r in rows])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--streams", default="1,2,4,8", help="comma-separated concurrencies")
    ap.add_argument("-n", "--tokens", type=int, default=64, help="tokens per stream")
    ap.add_argument("--api-key")
    ap.add_argument("-o", "--output", choices=["md", "json"], default="md")
    a = ap.parse_args(argv)
    rows = measure(a.url, [int(x) for x in a.streams.split(",")], a.tokens, a.api_key)
    print(json.dumps(rows, indent=1) if a.output == "json" else format_rows(rows), end="")


if __name__ == "__main__":
    main()

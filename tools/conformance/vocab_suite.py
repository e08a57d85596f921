"""Run llama.cpp's tokenizer test suite (models/ggml-vocab-*.gguf + .inp/.out, as
tests/test-tokenizer-0.cpp: add_special=false, parse_special=false) against runtime/tokenizer.

    python -m tools.conformance.vocab_suite /path/to/llama.cpp/models [--write-goldens tests/golden/vocab]

Prints one line per vocab file: cases passed / total. --write-goldens stores the .inp/.out pair as
compact JSON (tests/golden/vocab/<name>.json) for the CI test.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ggufkit.tokenize import open_gguf
from runtime.tokenizer import Tokenizer

SEP = "\n__ggml_vocab_test__\n"


def load_cases(gguf: Path) -> list[tuple[str, list[int]]]:
    """read_tests of test-tokenizer-0.cpp: inputs split on the separator, one .out line each."""
    raw = Path(str(gguf) + ".inp").read_bytes().decode("utf-8")
    inp, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt == -1:
            inp.append(raw[pos:])
            break
        inp.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    out = Path(str(gguf) + ".out").read_bytes().decode("utf-8").split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(inp) != len(out):
        raise ValueError(f"{gguf}: {len(inp)} inputs, {len(out)} outputs")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(inp, out)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("--write-goldens")
    ap.add_argument("-k", default="")
    a = ap.parse_args()
    bad_total = 0
    for g in sorted(Path(a.models).glob("ggml-vocab-*.gguf")):
        if a.k not in g.name:
            continue
        if not Path(str(g) + ".inp").exists():
            print(f"{g.name}: no .inp/.out")
            continue
        cases = load_cases(g)
        t0 = time.time()
        try:
            tok = Tokenizer.from_gguf(open_gguf(g))
        except Exception as e:  # noqa: BLE001
            print(f"{g.name}: LOAD FAIL {e}")
            bad_total += len(cases)
            continue
        bad = []
        for text, ids in cases:
            got = tok.encode(text, add_special=False, parse_special=False)
            if got != ids:
                bad.append((text, ids, got))
        print(f"{g.name}: {len(cases) - len(bad)}/{len(cases)} ({time.time() - t0:.1f}s)")
        for text, ids, got in bad[:3]:
            print(f"   {text!r}\n     want {ids}\n     got  {got}")
        bad_total += len(bad)
        if a.write_goldens:
            Path(a.write_goldens).mkdir(parents=True, exist_ok=True)
            (Path(a.write_goldens) / (g.stem + ".json")).write_text(
                json.dumps({"vocab": g.name, "cases": [{"text": t, "ids": i} for t, i in cases]}, ensure_ascii=False),
                encoding="utf-8")
    return 1 if bad_total else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Print our perplexity vs llama-perplexity's (tests/golden/arch/*.json) for the tiny arch fixtures.

    python -m tools.conformance.compare_archs [ARCH ...]

F16 files from tests/data/models; Q8_0 made with ggufkit quantize (byte-identical to llama-quantize).
The numbers in docs/COMPATIBILITY.md come from this.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from ggufkit.quantize import quantize_file
from runtime.loader import load
from runtime.perplexity import perplexity, read_text_file


def main() -> None:
    gold = REPO / "tests" / "golden" / "arch"
    archs = sys.argv[1:] or sorted(p.stem.removesuffix("-tiny") for p in gold.glob("*-tiny.json"))
    text = read_text_file(str(gold / "text.txt"))
    with tempfile.TemporaryDirectory() as td:
        for a in archs:
            g = json.loads((gold / f"{a}-tiny.json").read_text())
            f16 = REPO / "tests" / "data" / "models" / f"{a}-tiny-f16.gguf"
            q8 = Path(td) / f"{a}-q8_0.gguf"
            quantize_file(f16, q8, "Q8_0")
            for t, path in (("f16", f16), ("q8_0", q8)):
                r = perplexity(load(str(path)), text, n_ctx=g["ctx"], n_chunks=g["chunks"])
                ref = g[f"ppl_{t}"]
                print(f"{a:9s} {t:5s} ours {r.ppl:10.4f}  llama.cpp {ref:10.4f}  {100 * (r.ppl / ref - 1):+.4f}%", flush=True)


if __name__ == "__main__":
    main()

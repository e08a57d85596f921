#!/usr/bin/env python3
"""Goldens for tests/test_allocate.py: an allocation written as a ``--tensor-type-file`` and the
sha256 of what llama-quantize makes of it on the tiny deterministic llama (tests/quantize_cases.py)
with llama-tiny's imatrix.

    python tools/gen_alloc_golden.py --llama-quantize /path/to/llama-quantize

Writes tests/golden/alloc/mix.txt (every quantizable tensor a different candidate type, cycling
through ggufkit.allocate.DEFAULT_CANDIDATES) and tests/golden/alloc/hashes.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from quantize_cases import GOLDEN_DIR, IMATRIX_GGUF, write_tiny_gguf  # noqa: E402

OUT = ROOT / "tests" / "golden" / "alloc"


def tiny_mix(src: Path) -> dict:
    from ggufkit.allocate import DEFAULT_CANDIDATES, _plans, _source, candidate_types
    from quant.imatrix import load_imatrix
    im = load_imatrix(GOLDEN_DIR / IMATRIX_GGUF)
    s = _source(src)
    types, k = {}, 0
    for p in _plans(s):
        if p.dst_type == p.src_type:
            continue
        c = candidate_types(p.shape[0], p.name in im.entries, DEFAULT_CANDIDATES)
        types[p.name] = c[k % len(c)]
        k += 1
    return types


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-quantize", required=True)
    a = ap.parse_args()
    from ggufkit.allocate import tensor_type_lines
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        src = write_tiny_gguf(Path(d) / "tiny-f16.gguf")
        mix = OUT / "mix.txt"
        mix.write_text("\n".join(tensor_type_lines(tiny_mix(src))) + "\n")
        res = {}
        for ft in ("Q4_K_M", "Q2_K"):
            dst = Path(d) / "out.gguf"
            subprocess.run([a.llama_quantize, "--imatrix", IMATRIX_GGUF, "--tensor-type-file", str(mix), str(src),
                            str(dst), ft, "2"], check=True, capture_output=True, cwd=GOLDEN_DIR)
            b = dst.read_bytes()
            res[ft] = {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
            print(ft, res[ft])
    (OUT / "hashes.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

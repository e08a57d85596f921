#!/usr/bin/env python3
"""Goldens for tests/ggufkit/test_allocate.py: an allocation written as a ``--tensor-type-file`` and the
sha256 of what llama-quantize makes of it on the tiny deterministic llama (tests/helpers/quantize_cases.py)
with llama-tiny's imatrix.

    python -m tools.golden.gen_alloc_golden --llama-quantize /path/to/llama-quantize

Writes tests/golden/alloc/mix.txt (every quantizable tensor a different candidate type, cycling
through ggufkit.measure.DEFAULT_CANDIDATES) and tests/golden/alloc/hashes.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import GOLDENS
from tests.helpers.quantize_cases import GOLDEN_DIR, IMATRIX_GGUF, tiny_mix, write_tiny_gguf

OUT = GOLDENS / "alloc"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-quantize", required=True)
    a = ap.parse_args()
    from quant.recipes import fixed
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        src = write_tiny_gguf(Path(d) / "tiny-f16.gguf")
        mix = OUT / "mix.txt"
        mix.write_text("\n".join(fixed(tiny_mix(src)).tensor_type_lines()) + "\n")
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

#!/usr/bin/env python3
"""Record llama-quantize's output (sha256) for every case of tests/helpers/quantize_cases.py.

Writes tests/golden/quantize/hashes.json: case -> {"sha256": ..., "size": ...} or
{"error": "..."} when llama-quantize refuses. Also requantize (Q8_0 -> Q4_K_M with
--allow-requantize) and the dequantize equivalents (Q4_K_M -> F16 / F32 / BF16).

The imatrix files in tests/golden/quantize/ come from llama-imatrix on the llama-tiny fixture
(see tools/conformance/compare_quantize.py; -c 128 --chunks 8 on llama.cpp's README + docs/build.md,
``--output-format dat`` for the legacy file).

    python -m tools.golden.gen_quantize_golden [--llama-quantize /work/oracle/build/bin/llama-quantize]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from tests.helpers.quantize_cases import (
    GOLDEN_DIR, MOE_IMATRIX, N_EXPERT, cases, moe_cases, write_moe_imatrix, write_tiny_gguf)


def run(lq: str, opts: list[str], src: Path, dst: Path, ftype: str) -> dict:
    p = subprocess.run([lq, *opts, str(src), str(dst), ftype, "2"], capture_output=True, text=True,
                       cwd=GOLDEN_DIR)
    if p.returncode != 0:
        m = re.findall(r"failed to quantize: (.*)", p.stdout + p.stderr)
        return {"error": m[-1].strip() if m else "failed"}
    b = dst.read_bytes()
    return {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-quantize", default="/work/oracle/build/bin/llama-quantize")
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = write_tiny_gguf(d / "tiny-f16.gguf")
        out["input"] = {"sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
        for name, (opts, ftype) in cases().items():
            out[name] = run(args.llama_quantize, opts, src, d / "out.gguf", ftype)
            print(name, out[name])
        q8 = d / "q8.gguf"
        run(args.llama_quantize, [], src, q8, "Q8_0")
        out["requantize/Q8_0-no-allow"] = run(args.llama_quantize, [], q8, d / "out.gguf", "Q4_K_M")
        out["requantize/Q8_0-Q4_K_M"] = run(args.llama_quantize, ["--allow-requantize"], q8, d / "out.gguf", "Q4_K_M")
        q4 = d / "q4km.gguf"
        run(args.llama_quantize, [], src, q4, "Q4_K_M")
        for t in ("F16", "F32", "BF16"):
            out[f"dequantize/Q4_K_M-{t}"] = run(args.llama_quantize, ["--allow-requantize"], q4, d / "out.gguf", t)
        write_moe_imatrix(GOLDEN_DIR / MOE_IMATRIX)
        moe = write_tiny_gguf(d / "moe-f16.gguf", n_expert=N_EXPERT)
        out["moe-input"] = {"sha256": hashlib.sha256(moe.read_bytes()).hexdigest()}
        for name, (opts, ftype) in moe_cases().items():
            out[name] = run(args.llama_quantize, opts, moe, d / "out.gguf", ftype)
            print(name, out[name])
    dest = GOLDEN_DIR / "hashes.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(out)} entries -> {dest}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Compare ``ggufkit quantize`` with llama-quantize, file for file.

For the fixture DeciLM (deci-tiny) and Llama (llama-tiny) checkpoints, converted to F16 GGUF by
llama.cpp's own converter, and every llama-quantize file type, in three modes:

    plain     llama-quantize IN OUT TYPE NTHREADS
    pure      ... --pure
    imatrix   ... --imatrix <made by llama-imatrix on the same GGUF>

it runs llama-quantize and ``ggufkit.quantize.quantize_file`` with the same arguments and reports
``identical`` (byte-for-byte), ``both refuse`` (same refusal, e.g. an IQ type without imatrix),
or the first difference (metadata key, tensor type, or the first tensor whose bytes differ).

llama.cpp comes from the llama-cpp-python 0.3.36 sdist (vendor/llama.cpp). Build it once:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 && tar xzf llama_cpp_python-0.3.36.tar.gz
    cmake -S llama_cpp_python-0.3.36/vendor/llama.cpp -B build -DGGML_NATIVE=OFF -DGGML_AVX2=ON \\
          -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF
    cmake --build build --target llama-quantize llama-imatrix -j2

and have a Python with torch + transformers==4.57.6 for its converter (``--converter-python``).

Usage:
    python -m tools.conformance.compare_quantize --llama-cpp DIR --bin DIR [--types Q4_K_M,IQ2_XS]
        [--models deci-tiny,llama-tiny] [--modes plain,pure,imatrix] [--markdown out.md]
Defaults point at this machine's /work/oracle build.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from ggufkit.errors import GGUFKitError
from ggufkit.quantize import _scan, quantize_file
from quant.errors import QuantError
from quant.recipes import QUANT_OPTIONS

ORACLE = Path("/work/oracle")
DEFAULT_LLAMA_CPP = ORACLE / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
DEFAULT_BIN = ORACLE / "build" / "bin"
DEFAULT_PY = ORACLE / "venv" / "bin" / "python"
MODES = ("plain", "pure", "imatrix")
ALIASES = {"Q3_K", "Q4_K", "Q5_K"}   # same ftype as Q3_K_M / Q4_K_M / Q5_K_M: not run twice


def sh(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def prepare_model(name: str, work: Path, llama_cpp: Path, py: str, bin_dir: Path, calib: Path):
    """Fixture checkpoint -> F16 GGUF (llama.cpp converter) -> imatrix (llama-imatrix)."""
    from ggufkit.fixtures import make_checkpoint

    gguf = work / f"{name}-f16.gguf"
    imx = work / f"{name}.imatrix.gguf"
    if not gguf.exists():
        ckpt = work / name
        if not ckpt.exists():
            make_checkpoint(ckpt, preset=name)
        cfg = json.loads((ckpt / "config.json").read_text())
        if cfg.pop("auto_map", None) is not None:   # its tokenizer loading refuses remote code
            (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
        env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"))
        p = sh([py, llama_cpp / "convert_hf_to_gguf.py", ckpt, "--outtype", "f16", "--outfile", gguf], env=env)
        if p.returncode != 0:
            sys.exit(f"llama.cpp converter failed for {name}:\n{p.stderr[-2000:]}")
    if not imx.exists():
        p = sh([bin_dir / "llama-imatrix", "-m", gguf, "-f", calib, "-o", imx, "-c", "128",
                "--chunks", "8", "-t", "2"])
        if p.returncode != 0:
            sys.exit(f"llama-imatrix failed for {name}:\n{p.stderr[-2000:]}")
    return gguf, imx


def first_difference(a: Path, b: Path) -> str:
    sa, sb = _scan(a), _scan(b)
    ka, kb = [k for k, _ in sa.kv_raw], [k for k, _ in sb.kv_raw]
    if ka != kb:
        return f"metadata keys differ: {sorted(set(ka) ^ set(kb)) or 'order'}"
    for (k, ra), (_, rb) in zip(sa.kv_raw, sb.kv_raw):
        if ra != rb:
            return f"metadata value differs: {k}"
    for ta, tb, ia, ib in zip(sa.tensors, sb.tensors, sa.infos, sb.infos):
        if ta.name != tb.name:
            return f"tensor order differs at {ta.name} / {tb.name}"
        if ia.type != ib.type:
            return f"{ta.name}: type {ia.type} (llama.cpp) vs {ib.type} (ggufkit)"
        da = sa.data[sa.data_offset + ta.offset:][:ta.n_bytes]
        db = sb.data[sb.data_offset + tb.offset:][:tb.n_bytes]
        if (da != db).any():
            return f"{ta.name} ({ia.type}): bytes differ"
    return "files differ (padding/layout)"


def run_case(lq: Path, src: Path, ftype: str, mode: str, imx: Path, work: Path, threads: int):
    extra = {"plain": [], "pure": ["--pure"], "imatrix": ["--imatrix", str(imx)]}[mode]
    ref, ours = work / "ref.gguf", work / "ours.gguf"
    for f in (ref, ours):
        f.unlink(missing_ok=True)
    t0 = time.perf_counter()
    p = sh([lq, *extra, src, ref, ftype, threads])
    t_ref = time.perf_counter() - t0
    ref_err = None
    if p.returncode != 0:
        m = re.findall(r"failed to quantize: (.*)", p.stdout + p.stderr)
        ref_err = m[-1].strip() if m else "failed"
    t0 = time.perf_counter()
    our_err = None
    try:
        quantize_file(src, ours, ftype, threads, pure=mode == "pure",
                      imatrix=str(imx) if mode == "imatrix" else None, progress=False)
    except (QuantError, GGUFKitError) as e:
        our_err = str(e)
    t_ours = time.perf_counter() - t0
    if ref_err and our_err:
        res = "both refuse"
    elif ref_err:
        res = f"llama.cpp refuses ({ref_err}), ggufkit wrote a file"
    elif our_err:
        res = f"ggufkit refuses: {our_err}"
    elif ref.read_bytes() == ours.read_bytes():
        res = "identical"
    else:
        res = "DIFFERS: " + first_difference(ref, ours)
    return res, t_ref, t_ours, ref_err, our_err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA_CPP, help="llama.cpp source tree")
    ap.add_argument("--bin", type=Path, default=DEFAULT_BIN, help="dir with llama-quantize, llama-imatrix")
    ap.add_argument("--converter-python", default=str(DEFAULT_PY))
    ap.add_argument("--work", type=Path, default=Path("/tmp/ggufkit-compare-quantize"))
    ap.add_argument("--models", default="deci-tiny,llama-tiny")
    ap.add_argument("--types", default="", help="comma list of file types (default: all)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--markdown", type=Path, help="write the result table here")
    ap.add_argument("--json", type=Path, help="write raw results here")
    args = ap.parse_args()

    lq = args.bin / "llama-quantize"
    if not lq.exists() or not (args.llama_cpp / "convert_hf_to_gguf.py").exists():
        sys.exit(f"llama.cpp not found (--llama-cpp {args.llama_cpp}, --bin {args.bin}); see --help to build it")
    args.work.mkdir(parents=True, exist_ok=True)
    calib = args.work / "calib.txt"
    if not calib.exists():
        calib.write_text((args.llama_cpp / "README.md").read_text() + (args.llama_cpp / "docs" / "build.md").read_text())
    types = [t for t in args.types.split(",") if t] or [n for n, _, _ in QUANT_OPTIONS if n not in ALIASES]
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]

    results = {}
    for model in models:
        src, imx = prepare_model(model, args.work, args.llama_cpp, args.converter_python, args.bin, calib)
        # the imatrix path is written into the output: give both tools the same string
        for ft in types:
            for mode in modes:
                res, t_ref, t_ours, *_ = run_case(lq, src, ft, mode, imx, args.work, args.threads)
                results[(model, ft, mode)] = res
                print(f"{model:11s} {ft:9s} {mode:8s} {res}   (llama.cpp {t_ref:.1f} s, ggufkit {t_ours:.1f} s)",
                      flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"/".join(k): v for k, v in results.items()}, indent=1))

    cols = [(m, mode) for m in models for mode in modes]
    short = {"identical": "identical", "both refuse": "both refuse (needs imatrix)"}
    lines = ["| type | " + " | ".join(f"{m} {mode}" for m, mode in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for ft in types:
        cells = [short.get(results.get((m, ft, mode), "-"), results.get((m, ft, mode), "-")) for m, mode in cols]
        lines.append(f"| {ft} | " + " | ".join(cells) + " |")
    n_id = sum(v == "identical" for v in results.values())
    n_ref = sum(v == "both refuse" for v in results.values())
    summary = f"{n_id} identical, {n_ref} refused by both, {len(results) - n_id - n_ref} other, of {len(results)} cases"
    table = "\n".join(lines) + "\n\n" + summary + "\n"
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0 if n_id + n_ref == len(results) else 1      # every case identical or refused by both


if __name__ == "__main__":
    sys.exit(main())

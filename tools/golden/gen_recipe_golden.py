#!/usr/bin/env python3
"""Capture llama-quantize's per-tensor type choices as golden JSON for tests/quant/test_recipes.py.

For each model and each llama-quantize file type, runs ``llama-quantize --dry-run`` plainly,
with ``--pure``, and with an importance matrix, plus a few option cases, and records the type
it prints for every tensor. Only names, shapes and hyperparameters decide the types, so the
models are metadata-complete GGUFs whose tensors hold zeros:

- ``deci-tiny`` / ``llama-tiny``: the tensor names and shapes of the fixture checkpoints
  (``ggufkit.fixtures``) converted by llama.cpp's converter (read from a converted file);
- ``deci-super49b``: the layer structure of Llama-3.3-Nemotron-Super-49B v1 (80 blocks, 31
  attention-free, GQA 8, llama.cpp's "70B" model type) at small widths;
- ``llama-70b``: 80 blocks with GQA (llama.cpp's LLM_TYPE_70B attn_v rule);
- ``llama-odd``: row lengths not divisible by 256 or 32 (the block-size fallbacks) and tied
  embeddings (no output.weight).

Usage:
    python -m tools.golden.gen_recipe_golden --llama-quantize /work/oracle/build/bin/llama-quantize \\
        --deci-gguf deci-tiny-f16.gguf --llama-gguf llama-tiny-f16.gguf --work /tmp/golden
Writes tests/golden/recipes/<model>.json.gz.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from quant.imatrix import save_imatrix_gguf
from quant.recipes import QUANT_OPTIONS
from tests.helpers.tiny_models import write_kv_gguf

OUT_DIR = ROOT / "tests" / "golden" / "recipes"

# extra option cases, each run for a few file types
OPTION_CASES = {
    "tensor-type": ["--tensor-type", "attn_v=q8_0", "--tensor-type", r"blk\.[0-2]\.ffn_down=iq4_nl",
                    "--tensor-type", "ffn_up=f16"],
    "output-embd-types": ["--output-tensor-type", "q4_0", "--token-embedding-type", "q5_1"],
    "leave-output": ["--leave-output-tensor"],
}
OPTION_FTYPES = ("Q4_K_M", "Q3_K_M", "IQ2_XS", "Q2_K_S", "IQ3_XS", "Q8_0", "F16")


# --- synthetic models --------------------------------------------------------------------------

def _tensor_list_from_gguf(path: Path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    kv = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k.startswith("tokenizer."):
            continue
        kv[k] = f.contents()
    tensors = [(t.name, [int(x) for x in t.shape], t.tensor_type.name) for t in r.tensors]
    return kv, tensors


def _llama_like(arch: str, n_layer: int, n_embd: int, n_head, n_head_kv, n_ff, vocab: int,
                tied: bool = False, head_dim: int | None = None):
    """(kv, tensors) for a llama/deci model; per-layer lists allowed for deci."""
    per = lambda v: v if isinstance(v, list) else [v] * n_layer  # noqa: E731
    heads, kvh, ffs = per(n_head), per(n_head_kv), per(n_ff)
    hd = head_dim or n_embd // max(h for h in heads if h) if any(heads) else 64
    kv = {
        "general.architecture": arch, "general.type": "model", "general.name": f"{arch} golden",
        f"{arch}.block_count": n_layer, f"{arch}.context_length": 4096,
        f"{arch}.embedding_length": n_embd,
        f"{arch}.feed_forward_length": ffs if arch == "deci" else n_ff,
        f"{arch}.attention.head_count": heads if arch == "deci" else n_head,
        f"{arch}.attention.head_count_kv": kvh if arch == "deci" else n_head_kv,
        f"{arch}.rope.freq_base": 500000.0, f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        f"{arch}.attention.key_length": hd, f"{arch}.attention.value_length": hd,
        f"{arch}.vocab_size": vocab, f"{arch}.rope.dimension_count": hd, "general.file_type": 1,
    }
    T = [("token_embd.weight", [n_embd, vocab], "F16")]
    for i in range(n_layer):
        h, k, f = heads[i], kvh[i], ffs[i]
        if h:
            T.append((f"blk.{i}.attn_norm.weight", [n_embd], "F32"))
            if k:
                T += [(f"blk.{i}.attn_q.weight", [n_embd, h * hd], "F16"),
                      (f"blk.{i}.attn_k.weight", [n_embd, k * hd], "F16"),
                      (f"blk.{i}.attn_v.weight", [n_embd, k * hd], "F16"),
                      (f"blk.{i}.attn_output.weight", [h * hd, n_embd], "F16")]
            else:
                T.append((f"blk.{i}.attn_output.weight", [n_embd, n_embd], "F16"))
        if f:
            T += [(f"blk.{i}.ffn_norm.weight", [n_embd], "F32"),
                  (f"blk.{i}.ffn_gate.weight", [n_embd, f], "F16"),
                  (f"blk.{i}.ffn_up.weight", [n_embd, f], "F16"),
                  (f"blk.{i}.ffn_down.weight", [f, n_embd], "F16")]
    T.append(("output_norm.weight", [n_embd], "F32"))
    if not tied:
        T.append(("output.weight", [n_embd, vocab], "F16"))
    return kv, T


def super49b_structure():
    no_attn = {6, 7, 11, *range(42, 52), *range(53, 71)}
    heads = [0 if i in no_attn else 8 for i in range(80)]
    kvh = [0 if i in no_attn else 1 for i in range(80)]
    ffs = [512 if i % 5 else 256 for i in range(80)]
    return _llama_like("deci", 80, 256, heads, kvh, ffs, vocab=512, head_dim=32)


def synthetic_models(deci_gguf: Path | None, llama_gguf: Path | None):
    models = {}
    if deci_gguf:
        models["deci-tiny"] = _tensor_list_from_gguf(deci_gguf)
    if llama_gguf:
        models["llama-tiny"] = _tensor_list_from_gguf(llama_gguf)
    models["deci-super49b"] = super49b_structure()
    models["llama-70b"] = _llama_like("llama", 80, 256, 8, 1, 512, vocab=512)
    # row lengths 320 (not /256) and 400 (not /32); tied embeddings; GQA exactly 4
    models["llama-odd"] = _llama_like("llama", 6, 320, 8, 2, 400, vocab=500, tied=True, head_dim=64)
    return models


# --- running llama-quantize ---------------------------------------------------------------------

LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[([^\]]*)\], type =\s+(\S+), size =.*?(?:\((\S+)\))?\s*$")


def dry_run(lq: str, gguf_path: Path, ftype: str, extra: list[str]) -> list[tuple[str, str]] | str:
    cmd = [lq, "--dry-run", *extra, str(gguf_path), ftype]
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        m = re.search(r"failed to quantize: (.*)", out)
        return "error: " + (m.group(1).strip() if m else out.strip().splitlines()[-1])
    res = []
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            name, cur, new = m.group(1), m.group(3), m.group(4)
            res.append((name, (new or cur).upper()))
    return res


def make_imatrix(path: Path, tensors) -> None:
    sums, counts = {}, {}
    for name, shape, typ in tensors:
        if len(shape) >= 2 and name.endswith(".weight") and "norm" not in name:
            sums[name] = np.ones(shape[0], np.float32)
            counts[name] = np.ones(1, np.float32)
    save_imatrix_gguf(path, sums, counts, datasets=["golden.txt"], chunk_count=1, chunk_size=512)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-quantize", default="/work/oracle/build/bin/llama-quantize")
    ap.add_argument("--deci-gguf", type=Path, help="deci-tiny converted by llama.cpp (any outtype)")
    ap.add_argument("--llama-gguf", type=Path, help="llama-tiny converted by llama.cpp")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ggufkit-recipe-golden"))
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    ftypes = [name for name, _, _ in QUANT_OPTIONS]
    for mname, (kv, tensors) in synthetic_models(args.deci_gguf, args.llama_gguf).items():
        g = args.work / f"{mname}.gguf"
        write_kv_gguf(g, kv, [(name, np.zeros(tuple(reversed(shape)), np.float32 if typ == "F32" else np.float16))
                              for name, shape, typ in tensors])
        im = args.work / f"{mname}.imatrix.gguf"
        make_imatrix(im, tensors)
        cases = {}
        for ft in ftypes:
            for mode, extra in (("plain", []), ("pure", ["--pure"]), ("imatrix", ["--imatrix", str(im)])):
                cases[f"{ft}/{mode}"] = dry_run(args.llama_quantize, g, ft, extra)
        for cname, extra in OPTION_CASES.items():
            for ft in OPTION_FTYPES:
                cases[f"{ft}/{cname}"] = dry_run(args.llama_quantize, g, ft, extra)
        doc = {
            "model": mname,
            "kv": {k: v for k, v in kv.items() if not isinstance(v, str) or k == "general.architecture"},
            "tensors": tensors,
            "option_cases": OPTION_CASES,
            "cases": {k: (v if isinstance(v, str) else {"order": [n for n, _ in v], "types": [t for _, t in v]})
                      for k, v in cases.items()},
        }
        # order is the same for every case; store it once
        orders = {tuple(c["order"]) for c in doc["cases"].values() if isinstance(c, dict)}
        assert len(orders) == 1, mname
        doc["order"] = list(orders.pop())
        doc["cases"] = {k: (v if isinstance(v, str) else v["types"]) for k, v in doc["cases"].items()}
        dest = args.out / f"{mname}.json.gz"
        with gzip.GzipFile(dest, "wb", mtime=0) as f:  # mtime=0: same input, same bytes
            f.write((json.dumps(doc, separators=(",", ":")) + "\n").encode())
        n_err = sum(isinstance(v, str) for v in doc["cases"].values())
        print(f"{mname}: {len(cases)} cases ({n_err} errors) -> {dest}")


if __name__ == "__main__":
    main()

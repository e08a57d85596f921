#!/usr/bin/env python3
"""Compare ``ggufkit convert`` with llama.cpp's convert_hf_to_gguf.py on the tiny fixtures.

For each preset (deci-tiny, llama-tiny) and outtype (f32, f16, bf16, q8_0, auto) it runs both
converters on the same checkpoint and compares:
  * metadata: every KV key, type and value, except general.* naming keys (see NAMING_KEYS below);
  * tensors: names, order, ggml types, shapes and data bytes;
  * the whole files, byte for byte (so the naming keys are in fact checked too).

What it builds, when not given (everything goes under --work, default ./compare-convert-work):
  * the oracle source: ``pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36``,
    unpacked; its vendor/llama.cpp holds convert_hf_to_gguf.py and gguf-py;
  * a venv with torch==2.13.0 (CPU) and transformers==4.57.6 (+ sentencepiece, protobuf).
The oracle refuses remote code, so it runs on a copy of each checkpoint whose config.json has no
``auto_map``; ggufkit converts the original (it ignores auto_map), from a directory with the same
name (general.name falls back to the directory name).

    python -m tools.conformance.compare_convert                                   # build everything
    python -m tools.conformance.compare_convert --oracle-src /work/oracle/llama_cpp_python-0.3.36 \\
        --venv /work/oracle/venv --golden tests/golden/convert/oracle_sha256.json
Exit status 0 when every file is byte-identical.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import gguf

REPO = Path(__file__).resolve().parents[2]

from ggufkit.convert import convert
from ggufkit.fixtures import make_checkpoint

SDIST = "llama-cpp-python==0.3.36"
PRESETS = ("deci-tiny", "llama-tiny")
OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")
# general.* keys that only name/describe the model (gguf.Metadata); ignored in the KV comparison
NAMING_KEYS = {
    "general.name", "general.basename", "general.finetune", "general.version", "general.size_label",
    "general.organization", "general.author", "general.description", "general.url", "general.doi",
    "general.uuid", "general.repo_url", "general.license", "general.license.name",
    "general.license.link", "general.tags", "general.languages", "general.quantized_by",
}
NAMING_PREFIXES = ("general.base_model.", "general.dataset.", "general.source.")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def oracle_source(args) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist (downloaded and unpacked if needed)."""
    if args.oracle_src:
        root = Path(args.oracle_src)
    else:
        dl = args.work / "sdist"
        root = dl / "llama_cpp_python-0.3.36"
        if not root.is_dir():
            dl.mkdir(parents=True, exist_ok=True)
            log(f"downloading {SDIST} sdist ...")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            SDIST, "-d", str(dl)], check=True)
            tgz = next(dl.glob("llama_cpp_python-0.3.36.tar.gz"))
            with tarfile.open(tgz) as t:
                t.extractall(dl, filter="data")
    llama = root / "vendor" / "llama.cpp" if (root / "vendor").is_dir() else root
    if not (llama / "convert_hf_to_gguf.py").is_file():
        sys.exit(f"convert_hf_to_gguf.py not found under {llama}")
    return llama


def oracle_python(args) -> Path:
    """A python with torch 2.13.0 + transformers 4.57.6 (a venv is created if needed)."""
    venv = Path(args.venv) if args.venv else args.work / "venv"
    py = venv / "bin" / "python"
    if not py.is_file():
        log(f"creating {venv} (torch==2.13.0, transformers==4.57.6) ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--extra-index-url", "https://download.pytorch.org/whl/cpu",
                        "torch==2.13.0", "transformers==4.57.6", "sentencepiece", "protobuf", "numpy"], check=True)
    return py


def checkpoints(work: Path) -> dict[str, tuple[Path, Path]]:
    """preset -> (original checkpoint, copy without auto_map); both dirs carry the preset's name."""
    out = {}
    for preset in PRESETS:
        orig = work / "ckpt" / preset
        if not (orig / "config.json").is_file():
            log(f"writing fixture {preset} ...")
            make_checkpoint(orig, preset, seed=0, n_shards=2)
        out[preset] = (orig, oracle_copy(orig, work / "ckpt-oracle" / preset))
    return out


def oracle_copy(model: Path, dst: Path) -> Path:
    """The checkpoint as the oracle gets it: config.json without auto_map, the rest symlinked; the
    copy keeps the model's directory name, so general.name (and so the file) can be identical."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        d = dst / f.name
        if f.name == "config.json":
            cfg = json.loads(f.read_text())
            cfg.pop("auto_map", None)
            d.write_text(json.dumps(cfg, indent=2) + "\n")
        elif not d.exists():
            d.symlink_to(f.resolve())
    return dst


def kv_table(r: gguf.GGUFReader) -> dict[str, bytes]:
    """key -> the field's encoded bytes (key, type, value) as stored; naming keys left out."""
    kv = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in NAMING_KEYS or name.startswith(NAMING_PREFIXES):
            continue
        size = sum(int(p.nbytes) for p in f.parts)
        kv[name] = bytes(r.data[f.offset:f.offset + size])
    return kv


def compare(a: Path, b: Path) -> dict:
    """Compare two GGUFs: metadata (naming keys aside), tensors, whole file."""
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    ka, kb = kv_table(ra), kv_table(rb)
    kv_diff = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
    kv_order = [k for k in ka] == [k for k in kb]
    ta = [(t.name, t.tensor_type.name, [int(s) for s in t.shape]) for t in ra.tensors]
    tb = [(t.name, t.tensor_type.name, [int(s) for s in t.shape]) for t in rb.tensors]
    data_diff = [x.name for x, y in zip(ra.tensors, rb.tensors)
                 if x.name != y.name or x.data.tobytes() != y.data.tobytes()]
    same_file = sha256(a) == sha256(b)
    return {"kv_same": not kv_diff and kv_order, "kv_diff": kv_diff[:5], "n_kv": len(ka),
            "tensors_same": ta == tb, "n_tensors": len(ta), "data_same": ta == tb and not data_diff,
            "data_diff": data_diff[:5], "file_identical": same_file, "sha256": sha256(b), "size": b.stat().st_size}


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for blk in iter(lambda: f.read(1 << 24), b""):
            h.update(blk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("compare-convert-work"), help="scratch directory")
    ap.add_argument("--oracle-src", default=os.environ.get("GGUFKIT_ORACLE_SRC"),
                    help="unpacked llama_cpp_python-0.3.36 (or its vendor/llama.cpp); default: pip download")
    ap.add_argument("--venv", default=os.environ.get("GGUFKIT_ORACLE_VENV"),
                    help="venv with torch 2.13.0 + transformers 4.57.6; default: create WORK/venv")
    ap.add_argument("--outtypes", nargs="+", default=list(OUTTYPES), choices=OUTTYPES)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--golden", type=Path, help="also write {preset-outtype: sha256 of the oracle's file} here")
    args = ap.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)

    llama = oracle_source(args)
    py = oracle_python(args)
    ckpts = checkpoints(args.work)
    env = dict(os.environ, PYTHONPATH=str(llama / "gguf-py"))
    rows, golden = [], {}
    for preset in args.presets:
        orig, copy = ckpts[preset]
        for t in args.outtypes:
            out_o = args.work / "oracle" / f"{preset}-{t}.gguf"
            out_g = args.work / "ggufkit" / f"{preset}-{t}.gguf"
            out_o.parent.mkdir(exist_ok=True)
            if not out_o.is_file():
                log(f"oracle: {preset} {t}")
                part = out_o.with_name(out_o.name + ".part")  # renamed only when complete
                res = subprocess.run([str(py), str(llama / "convert_hf_to_gguf.py"), str(copy),
                                      "--outfile", str(part), "--outtype", t], env=env,
                                     capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"oracle failed on {preset} {t}:\n{res.stderr[-3000:]}")
                part.rename(out_o)
            log(f"ggufkit: {preset} {t}")
            convert(orig, out_g, t)
            c = compare(out_o, out_g)
            golden[f"{preset}-{t}"] = sha256(out_o)
            rows.append((preset, t, c))

    def yes(b: bool) -> str:
        return "yes" if b else "**NO**"

    print("| preset | outtype | KV (naming aside) | tensor names/order/types/shapes | tensor bytes | whole file byte-identical | size (bytes) |")
    print("|---|---|---|---|---|---|---|")
    for preset, t, c in rows:
        print(f"| {preset} | {t} | {yes(c['kv_same'])} ({c['n_kv']} keys) | {yes(c['tensors_same'])} ({c['n_tensors']}) "
              f"| {yes(c['data_same'])} | {yes(c['file_identical'])} | {c['size']:,} |")
        if not c["kv_same"] or not c["data_same"]:
            print(f"<!-- {preset} {t}: kv_diff={c['kv_diff']} data_diff={c['data_diff']} -->")
    if args.golden:
        args.golden.parent.mkdir(parents=True, exist_ok=True)
        args.golden.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        log(f"wrote {args.golden}")
    return 0 if all(c["file_identical"] for _, _, c in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

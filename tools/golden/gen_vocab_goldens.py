"""Token-id goldens from llama.cpp's llama-tokenize for every pre type and vocab type.

    python -m tools.golden.gen_vocab_goldens LLAMA_CPP_DIR [-o tests/golden/vocab/hard.json]

For each ``tokenizer.ggml.pre`` in runtime/tokenizer/pretypes.py a vocab-only GGUF is written from
the bundled Llama-3 tokenizer with that pre type (tests/helpers/vocab_cases.py), plus a synthetic RWKV and
UGM vocab and every models/ggml-vocab-*.gguf of the tree; llama-tokenize runs the hard texts of
tests/helpers/vocab_cases.py on each, twice: default (parse special, BOS as the model wants) and with
--no-parse-special --no-bos (pre types: once, default mode, on the texts joined by newlines; the
first pre types of an earlier run have both modes per text). The ids are stored;
tests/runtime/test_tokenizer_goldens.py compares.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from ggufkit.tokenize import open_gguf
from runtime.tokenizer.pretypes import NAMES
from tests.helpers.tiny_models import write_kv_gguf
from tests.helpers.vocab_cases import HARD_TEXTS, pretype_metadata, rwkv_metadata, ugm_metadata


def tokenize(binary: Path, gguf: Path, text_file: Path, extra: list[str]) -> list[int]:
    r = subprocess.run([str(binary), "-m", str(gguf), "-f", str(text_file), "--ids", "--no-escape", "--log-disable",
                        *extra], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"llama-tokenize failed on {gguf.name}: {r.stderr[-2000:]}")
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("[")][-1]
    return json.loads(line)


def run_all(binary: Path, gguf: Path, tmp: Path) -> dict:
    res = {"special": [], "plain": []}
    for i, t in enumerate(HARD_TEXTS):
        f = tmp / f"text{i}.txt"
        f.write_bytes(t.encode("utf-8"))
        res["special"].append(tokenize(binary, gguf, f, []))
        res["plain"].append(tokenize(binary, gguf, f, ["--no-parse-special", "--no-bos"]))
    return res


def run_joined(binary: Path, gguf: Path, tmp: Path) -> dict:
    """One llama-tokenize call (parse special, BOS as the model wants) on the texts joined by newlines."""
    f = tmp / "joined.txt"
    f.write_bytes("\n".join(HARD_TEXTS).encode("utf-8"))
    return {"joined": tokenize(binary, gguf, f, [])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("llama_cpp")
    ap.add_argument("-o", default="tests/golden/vocab/hard.json")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    root = Path(a.llama_cpp)
    binary = root / "build" / "bin" / "llama-tokenize"
    out = {"texts": HARD_TEXTS, "pretypes": {}, "files": {}, "synthetic": {}}
    partial = Path(a.o + ".partial")
    if partial.is_file():                      # resume an interrupted run
        old = json.loads(partial.read_text(encoding="utf-8"))
        if old.get("texts") == HARD_TEXTS:
            out = old

    def save():
        partial.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for pre in NAMES:
            if (a.only and a.only != pre) or pre in out["pretypes"]:
                continue
            g = write_kv_gguf(tmp / "v.gguf", pretype_metadata(pre))
            try:
                out["pretypes"][pre] = run_joined(binary, g, tmp)
            except RuntimeError as e:
                out["pretypes"][pre] = {"error": str(e)[-300:]}
            print(pre, "ok" if "error" not in out["pretypes"][pre] else out["pretypes"][pre]["error"], flush=True)
            save()
        for name, md in (("rwkv", rwkv_metadata()),
                         ("ugm", ugm_metadata(open_gguf(root / "models" / "ggml-vocab-llama-spm.gguf").fields))):
            g = write_kv_gguf(tmp / f"{name}.gguf", md)
            out["synthetic"][name] = run_all(binary, g, tmp)
            print(name, "ok", flush=True)
        for g in sorted((root / "models").glob("ggml-vocab-*.gguf")):
            try:
                out["files"][g.name] = run_all(binary, g, tmp)
            except RuntimeError as e:
                out["files"][g.name] = {"error": str(e)[-300:]}
            print(g.name, "ok" if "error" not in out["files"][g.name] else "error", flush=True)
    Path(a.o).parent.mkdir(parents=True, exist_ok=True)
    Path(a.o).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

"""``ggufkit tokenize`` prints exactly what llama-tokenize prints (tests/golden/vocab/cli-*.txt were
written by llama-tokenize -m VOCAB -p PROMPT [--ids --no-bos --no-parse-special]) on vocab-only GGUFs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import GOLDENS
from tests.helpers.vocab_cases import VOCAB_DIR

GOLDEN = GOLDENS / "vocab"
PROMPT = "Hi <|x|>\\tüñí 世界 😀 12345\\n\\n<s> end"   # escapes processed, as llama-tokenize -p


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ggufkit", "tokenize", *args], capture_output=True, timeout=120)


@pytest.mark.parametrize("vocab", ["llama-spm", "bert-bge", "gpt-2"])
def test_tokenize_output_equals_llama_tokenize(vocab):
    model = str(VOCAB_DIR / f"ggml-vocab-{vocab}.gguf")
    r = run(model, "-p", PROMPT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (GOLDEN / f"cli-{vocab}.txt").read_bytes()
    r = run(model, "-p", PROMPT, "--ids", "--no-bos", "--no-parse-special")
    assert r.stdout == (GOLDEN / f"cli-{vocab}-ids.txt").read_bytes()


def test_tokenize_file_and_errors(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes(PROMPT.encode())
    model = str(VOCAB_DIR / "ggml-vocab-llama-spm.gguf")
    assert run(model, "-f", str(f)).stdout == (GOLDEN / "cli-llama-spm.txt").read_bytes()
    r = run(str(tmp_path / "missing.gguf"), "-p", "x")
    assert r.returncode == 1 and r.stdout == b"" and r.stderr.startswith(b"error: ")
    r = run(model)
    assert r.returncode != 0 and b"-p/--prompt" in r.stderr

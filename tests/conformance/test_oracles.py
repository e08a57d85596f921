"""The conformance tools (tools/conformance/) as opt-in tests: ``pytest -m llamacpp`` runs the ones
whose oracle is llama.cpp (its source tree, binaries and libggml), ``pytest -m gpu`` the ones that
need a CUDA GPU. A plain ``pytest`` deselects both (pyproject.toml); each one skips, naming what
is missing, when its oracle is absent.

Where the oracle is:
  llama.cpp source  $LLAMA_CPP_DIR (the sdist's vendor/llama.cpp; .ci/run fetches it), else
                    /work/oracle/llama_cpp_python-0.3.36/vendor/llama.cpp
  binaries, libggml $LLAMA_BIN, else $LLAMA_CPP_DIR/build/bin, else /work/oracle/build/bin
  converter python  $GGUFKIT_ORACLE_VENV (torch + transformers, for convert_hf_to_gguf.py), else
                    /work/oracle/venv
  GPU               CuPy with at least one CUDA device"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

ORACLE = Path("/work/oracle")


def llama_cpp_dir() -> Path:
    for d in (os.environ.get("LLAMA_CPP_DIR"), ORACLE / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"):
        if d and (Path(d) / "convert_hf_to_gguf.py").is_file():
            return Path(d)
    pytest.skip("llama.cpp source not found ($LLAMA_CPP_DIR)")


def llama_bin(*names: str) -> Path:
    dirs = [os.environ.get("LLAMA_BIN")]
    if os.environ.get("LLAMA_CPP_DIR"):
        dirs.append(str(Path(os.environ["LLAMA_CPP_DIR"]) / "build" / "bin"))
    dirs.append(str(ORACLE / "build" / "bin"))
    for d in filter(None, dirs):
        if all((Path(d) / n).exists() for n in names):
            return Path(d)
    pytest.skip(f"llama.cpp build with {', '.join(names)} not found ($LLAMA_BIN)")


def oracle_venv() -> Path:
    v = Path(os.environ.get("GGUFKIT_ORACLE_VENV") or ORACLE / "venv")
    if not (v / "bin" / "python").is_file():
        pytest.skip("no converter venv with torch + transformers ($GGUFKIT_ORACLE_VENV)")
    return v


def need_gpu() -> None:
    try:
        import cupy
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "no GPU"
        pytest.skip(f"no CUDA GPU: {type(e).__name__}: {e}")
    if n < 1:
        pytest.skip("no CUDA GPU")


def run_tool(name: str, *args, timeout: int = 3600) -> subprocess.CompletedProcess:
    """python -m tools.conformance.<name> ARGS from the repo root; output kept for the assertion."""
    env = {k: v for k, v in os.environ.items() if k != "GGUFKIT_CUDA_EMULATE"}
    return subprocess.run([sys.executable, "-m", f"tools.conformance.{name}", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def ok(p: subprocess.CompletedProcess) -> bool:
    return p.returncode == 0


def tail(p: subprocess.CompletedProcess) -> str:
    return (p.stdout[-3000:] + "\n" + p.stderr[-3000:]).strip()


@pytest.mark.llamacpp
def test_quant_matches_libggml_on_fresh_rows():
    """quant (numpy and Numba) == ggml_quantize_chunk, byte for byte, on rows the goldens never saw."""
    lib = llama_bin("libggml-base.so") / "libggml-base.so"
    p = run_tool("check_quant_vs_ggml", "--lib", lib, "--rows", 64)
    assert ok(p), tail(p)


@pytest.mark.llamacpp
def test_tokenizer_matches_llama_cpp_vocab_suite():
    """Every ggml-vocab-*.gguf of llama.cpp's models/ against its .inp/.out pairs."""
    models = llama_cpp_dir() / "models"
    p = run_tool("vocab_suite", models)
    assert ok(p), tail(p)


@pytest.mark.llamacpp
def test_convert_matches_convert_hf_to_gguf(tmp_path):
    """ggufkit convert writes convert_hf_to_gguf.py's bytes for every fixture and out type."""
    src, venv = llama_cpp_dir(), oracle_venv()
    p = run_tool("compare_convert", "--work", tmp_path, "--oracle-src", src, "--venv", venv)
    assert ok(p), tail(p)


@pytest.mark.llamacpp
def test_quantize_matches_llama_quantize(tmp_path):
    """ggufkit quantize writes llama-quantize's bytes (or refuses where it refuses), every file type."""
    src, bins, venv = llama_cpp_dir(), llama_bin("llama-quantize", "llama-imatrix"), oracle_venv()
    p = run_tool("compare_quantize", "--llama-cpp", src, "--bin", bins, "--converter-python",
                 venv / "bin" / "python", "--work", tmp_path)
    assert ok(p), tail(p)


@pytest.mark.gpu
def test_cuda_quant_matmul_on_gpu():
    """The quantized CUDA matvec on real kernels, on weights from quant's own quantizers: each
    activation mode within 1e-5 of sum|w*x| of its exact reference (test_cuda_quant's bound; the
    emulated run gives <= 3e-8, docs/CUDA.md)."""
    need_gpu()
    p = run_tool("cuda_quant_check", "--gpu")
    assert ok(p), tail(p)
    rows = [line.split() for line in p.stdout.splitlines()[1:] if line.strip()]
    assert rows, tail(p)
    for name, *errs in rows:
        assert all(math.isfinite(float(e)) and float(e) <= 1e-5 for e in errs[:2]), (name, errs)


@pytest.mark.gpu
def test_gpu_check(tmp_path):
    """tools/conformance/gpu_check.py: kernels, perplexity GPU vs CPU, CUDA graphs and speed targets."""
    need_gpu()
    p = run_tool("gpu_check", "--out", tmp_path / "gpu_check.json", "--dir", tmp_path / "models")
    assert ok(p), tail(p)

"""Issue 7 §6: defects found by using the CLI as a new user would; each test failed on the old code.
(The layering rules the CLI layer depends on are in tests/test_layering.py.)"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ggufkit.cli import main
from tests.helpers import REPO
from tests.helpers.quantize_cases import write_tiny_gguf


def run_main(argv, capsys):
    """ggufkit.cli.main in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *must):
    assert code in (1, 2), err          # 2: a usage error found by click
    # informational lines may come first (a first run's "compiling kernels" notice); the error is
    # one line, the last, and there is no traceback
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error") for line in lines) == 1, err
    for m in must:
        assert m in lines[-1], (m, lines[-1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("defects") / "tiny-f16.gguf")


@pytest.fixture(scope="module")
def chat_gguf(tmp_path_factory):
    from tests.helpers.tiny_models import write_chat_gguf
    return write_chat_gguf(tmp_path_factory.mktemp("defects-run") / "chat.gguf")


def no_part_files(d: Path):
    return [p.name for p in Path(d).rglob("*") if p.name.endswith(".part") or ".tmp" in p.name]


# ---------------------------------------------------------------- convert -o onto an input

@pytest.mark.parametrize("victim", ["config.json", "shard"])
def test_convert_refuses_to_overwrite_its_input(llama_ckpt, victim, capsys):
    target = llama_ckpt / "config.json" if victim == "config.json" else sorted(llama_ckpt.glob("*.safetensors"))[0]
    before = target.read_bytes()
    code, _, err = run_main(["convert", llama_ckpt, "-o", target], capsys)
    assert_one_line_error(code, err, "one of the inputs")
    assert target.read_bytes() == before


# ---------------------------------------------------------------- empty input files

@pytest.mark.parametrize("cmd", [["quantize", "{inp}", "{out}", "Q8_0"], ["dequantize", "{inp}", "{out}"]])
def test_empty_input_is_one_line_error(tmp_path, cmd, capsys):
    inp, out = tmp_path / "empty.gguf", tmp_path / "out.gguf"
    inp.write_bytes(b"")
    code, _, err = run_main([a.format(inp=inp, out=out) for a in cmd], capsys)
    assert_one_line_error(code, err, str(inp))
    assert not out.exists() and not no_part_files(tmp_path)


# ---------------------------------------------------------------- bench -r 0

def test_bench_zero_repetitions_is_an_error(chat_gguf, capsys):
    code, out, err = run_main(["bench", chat_gguf, "-p", "4", "-n", "2", "-r", "0"], capsys)
    assert_one_line_error(code, err, "-r 0")
    assert out == ""


# ---------------------------------------------------------------- SIGTERM leaves nothing behind

SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import ggufkit.quantize as q
    from ggufkit.cli import main
    real = q._write_tensor
    calls = []
    def write_then_term(*a, **k):
        calls.append(1)
        if len(calls) == 3:                       # mid-file: header and two tensors written
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    q._write_tensor = write_then_term
    main(sys.argv[1:])
""")


def test_sigterm_during_quantize_leaves_no_part_file(tiny, tmp_path):
    out = tmp_path / "out.gguf"
    r = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, "quantize", str(tiny), str(out), "Q8_0"],
                       capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 143, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


# ---------------------------------------------------------------- outputs checked before the work

def _no_work(monkeypatch):
    import ggufkit.quantize as q
    from runtime import loader

    def boom(*a, **k):
        raise AssertionError("the work started before the output was checked")
    monkeypatch.setattr(q, "_write_tensor", boom)
    monkeypatch.setattr(q, "open_source", boom)
    monkeypatch.setattr(loader, "load", boom)


@pytest.mark.parametrize("cmd", [
    ["quantize", "{inp}", "{out}", "Q8_0"],
    ["dequantize", "{inp}", "{out}"],
    ["convert", "{ckpt}", "-o", "{out}"],
    ["perplexity", "{inp}", "-f", "{inp}", "--kl-divergence-base", "{out}"],
])
def test_output_that_is_a_directory_is_refused_up_front(tiny, llama_ckpt, tmp_path, cmd, monkeypatch, capsys):
    out = tmp_path / "a-directory"
    out.mkdir()
    _no_work(monkeypatch)
    import ggufkit.convert.driver as driver
    monkeypatch.setattr(driver, "open_checkpoint", lambda *a: (_ for _ in ()).throw(AssertionError("work started")))
    code, _, err = run_main([a.format(inp=tiny, out=out, ckpt=llama_ckpt) for a in cmd], capsys)
    assert_one_line_error(code, err, str(out), "directory")
    assert os.listdir(out) == []


def test_unwritable_output_dir_names_the_users_path(tiny, tmp_path, monkeypatch, capsys):
    d = tmp_path / "ro"
    d.mkdir()
    out = d / "out.gguf"
    if os.geteuid() == 0:      # root writes anywhere: make the temp file creation fail as it would
        import tempfile

        def denied(*a, dir=None, **k):
            raise PermissionError(13, "Permission denied", os.path.join(dir, ".out.gguf.x1y2.part"))
        monkeypatch.setattr(tempfile, "mkstemp", denied)
    else:
        d.chmod(0o500)
    try:
        code, _, err = run_main(["quantize", tiny, out, "Q8_0"], capsys)
    finally:
        d.chmod(0o700)
    assert_one_line_error(code, err, str(out))
    assert ".part" not in err and not out.exists()


# ---------------------------------------------------------------- a full disk

FSIZE_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # so write() fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    from ggufkit.cli import main
    main(sys.argv[2:])
""")


@pytest.mark.parametrize("cmd", [["quantize", "{inp}", "{out}", "Q8_0"], ["dequantize", "{inp}", "{out}", "--outtype", "f32"],
                                 ["convert", "{ckpt}", "-o", "{out}"]])
def test_full_disk_is_one_line_error_and_no_partial_output(tiny, llama_ckpt, tmp_path, cmd):
    """RLIMIT_FSIZE stands in for a full disk (write() fails with EFBIG instead of ENOSPC)."""
    out = tmp_path / "out.gguf"
    argv = [a.format(inp=tiny, out=out, ckpt=llama_ckpt) for a in cmd]
    r = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, str(64 * 1024)] + argv,
                       capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and str(out) in lines[-1] and "Traceback" not in r.stderr
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- run -n

def test_run_n_minus_one_generates_until_the_context_is_full(chat_gguf, capsys):
    code, out, err = run_main(["run", chat_gguf, "-p", "Hello", "-n", "-1", "-c", "12", "--temp", "0"], capsys)
    assert code == 0, err
    assert out.startswith("Hello") and len(out.strip()) > len("Hello")
    m = re.search(r"\[(\d+) prompt tokens, (\d+) generated", err)
    n_prompt, n_gen = int(m.group(1)), int(m.group(2))
    assert n_gen >= 1 and n_prompt + n_gen <= 12


def test_run_negative_n_is_an_error_before_any_output(chat_gguf, capsys):
    code, out, err = run_main(["run", chat_gguf, "-p", "Hello", "-n", "-5"], capsys)
    assert_one_line_error(code, err, "-n -5")
    assert out == ""


# ---------------------------------------------------------------- info on a truncated file

@pytest.mark.parametrize("cut", ["header", "data"])
def test_info_on_truncated_file_is_one_line_error(tiny, tmp_path, cut, capsys):
    data = tiny.read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[:200] if cut == "header" else data[:len(data) - 1000])
    code, _, err = run_main(["info", bad], capsys)
    assert_one_line_error(code, err)
    assert "reshape" not in err


def test_set_num_threads_limits_blas():
    from threadpoolctl import threadpool_info

    from runtime import backend as B
    n0 = B.set_num_threads(None)
    try:
        B.set_num_threads(1)
        blas = [x["num_threads"] for x in threadpool_info() if x["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)
    finally:
        B.set_num_threads(n0)


# ---------------------------------------------------------------- regressions found by tools/conformance/fuzz_inputs.py

def _fuzz_tool():
    from tools.conformance import fuzz_inputs
    return fuzz_inputs


@pytest.mark.parametrize("key, value, must", [("llama.block_count", 12648449, "block_count"),
                                              ("llama.attention.head_count", 5, "hyperparameters"),
                                              ("llama.embedding_length", 3, "hyperparameters")])
def test_run_refuses_inconsistent_hparams_at_load(tmp_path, key, value, must, capsys):
    """A huge block_count allocated per-layer lists before anything was checked (fuzz seed 1 case
    6775); a head count that disagrees with the tensors failed mid-forward (seed 7 case 1036)."""
    import struct as st
    fz = _fuzz_tool()
    p = fz.write_small_llama(tmp_path / "m.gguf")
    data = bytearray(p.read_bytes())
    off = next(f[1] for f in fz.walk_gguf(bytes(data))["fields"] if f[0] == "scalar" and f[3][1] == key)
    data[off:off + 4] = st.pack("<I", value)
    p.write_bytes(bytes(data))
    code, out, err = run_main(["run", p, "-p", "hi", "-n", "1"], capsys)
    assert_one_line_error(code, err, must)
    assert out == ""


def test_q8_k_activation_of_inf_does_not_raise():
    """Garbage weights (a mutated type id) gave inf activations; 1/iscale raised ZeroDivisionError
    in Numba (fuzz seed 1 case 9881). ggml gives d = -inf there."""
    import numpy as np

    from runtime.kernels.act import quantize_q8_k
    x = np.ones((1, 256), np.float32)
    x[0, 3] = np.inf
    q, d = np.empty((1, 256), np.int8), np.empty((1, 1), np.float32)
    quantize_q8_k(x, q, d)
    assert d[0, 0] == -np.inf

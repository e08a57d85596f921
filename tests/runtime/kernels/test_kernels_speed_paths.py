"""The CPU speed work (issue 9): integer SIMD kernels on both code paths, lazy per-type kernels,
the first-run compile notice and ``ggufkit warmup``.

The x86 route (vpmaddubsw / vpmaddwd / pshufb through LLVM intrinsics) is what this machine runs in
the other kernel tests; here the generic vector IR that other hosts get is checked against the
numpy reference too, in a child process with its own Numba cache (GGUFKIT_GENERIC_SIMD=1).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import reference
from runtime.kernels import warm
from tests.helpers import REPO


_CHILD = r"""
import json, sys
import numpy as np
from tests.helpers.qtensors import random_qtensor
from runtime import backend, reference
from runtime.kernels import simd
assert not simd.HAS_AVX2
out = {}
for qt in sys.argv[1].split(","):
    w = random_qtensor(qt, 19, 512)
    x = np.random.default_rng(3).standard_normal((2, 512)).astype(np.float32)
    got = backend.CPU.matmul(w, x)
    ref = reference.matmul(w.data, qt, 512, x)
    scale = np.abs(x) @ np.abs(reference.dequantize_rows(w.data, qt, 512)).T
    out[qt] = float(np.max(np.abs(got - ref) / scale))
print(json.dumps(out))
"""

GENERIC_TYPES = "Q8_0,Q4_0,Q5_0,Q4_K,Q5_K,Q6_K,IQ4_NL,IQ4_XS,IQ2_XXS,IQ2_XS,IQ3_XXS,IQ3_S,MXFP4,TQ2_0,IQ2_S"


def test_generic_simd_ir_matches_reference(tmp_path):
    env = dict(os.environ, GGUFKIT_GENERIC_SIMD="1", NUMBA_CACHE_DIR=str(tmp_path / "nbc"),
               PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-c", _CHILD, GENERIC_TYPES], env=env,
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    errs = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(errs) == set(GENERIC_TYPES.split(","))
    for qt, e in errs.items():
        assert e <= 1e-5, (qt, e)


def test_prepare_notifies_once_then_is_silent(tmp_path, monkeypatch):
    monkeypatch.setattr(warm, "stamp_dir", lambda: tmp_path)
    monkeypatch.setenv("GGUFKIT_COMPILE_JOBS", "1")
    seen = []
    assert warm.needs_compile({"Q8_0", "F32", "Q4_K"}) == ["common", "Q4_K", "Q8_0"]
    done = warm.prepare({"Q8_0", "Q4_K", "F32"}, seen.append)
    assert done == ["common", "Q4_K", "Q8_0"]
    assert seen == ["compiling kernels for Q4_K, Q8_0 (first run only)"]
    assert warm.prepare({"Q8_0", "Q4_K"}, seen.append) == []
    assert len(seen) == 1
    assert warm.needs_compile({"Q6_K", "Q8_0"}) == ["Q6_K"]


def test_notice_without_handler_is_a_warning():
    from runtime import notices
    prev = notices.set_handler(None)
    try:
        with pytest.warns(notices.CompileNotice, match="compiling kernels for X"):
            notices.notify("compiling kernels for X (first run only)")
    finally:
        notices.set_handler(prev)


def test_per_type_kernels_are_separate_and_match_reference():
    import importlib
    mm = importlib.import_module("runtime.kernels.matmul")
    from quant.fast.blocks import F16_LUT, IQ2_S
    assert mm.kernel("rows", IQ2_S) is mm.kernel("rows", IQ2_S)
    assert mm.kernel("rows", IQ2_S) is not mm.kernel("matvec", IQ2_S)
    from tests.helpers.qtensors import random_qtensor
    w = random_qtensor("IQ2_S", 7, 512)
    got = np.empty((3, 512), np.float32)
    mm.kernel("rows", IQ2_S)(w.data, np.array([6, 0, 3]), got, F16_LUT)
    ref = reference.dequantize_rows(w.data, "IQ2_S", 512)[[6, 0, 3]]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_warmup_command(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ggufkit.cli import cli
    monkeypatch.setattr(warm, "stamp_dir", lambda: tmp_path)
    monkeypatch.setenv("GGUFKIT_COMPILE_JOBS", "1")
    r = CliRunner().invoke(cli, ["warmup", "Q8_0"])
    assert r.exit_code == 0, r.output
    assert "kernels ready for Q8_0" in r.output
    assert (tmp_path / f"warm-Q8_0.{warm._key()}").exists()
    r = CliRunner().invoke(cli, ["warmup", "NOPE"])
    assert r.exit_code != 0


def test_numba_cache_is_keyed_on_the_inlined_sources(tmp_path):
    """The kernels cache under a directory named by the hash of every source they may inline: an
    edit to any of them (a helper in another file included) makes a new key, so stale machine code
    is never found, and nothing is deleted."""
    from quant.fast import SOURCES, _cache
    from runtime import kernels
    from runtime.kernels import norm
    (tmp_path / "helper.py").write_text("X = 1\n")
    before = _cache.source_key([tmp_path])
    (tmp_path / "helper.py").write_text("X = 2\n")
    assert _cache.source_key([tmp_path]) != before
    assert kernels.SOURCE_KEY == _cache.source_key((Path(kernels.__file__).parent,) + SOURCES,
                                                   os.environ.get("GGUFKIT_GENERIC_SIMD", ""))
    where = Path(norm.rms_norm_kernel._cache._cache_path)
    assert where.name == f"src-{kernels.SOURCE_KEY}"
    assert warm.stamp_dir() == where

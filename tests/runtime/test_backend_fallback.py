"""No silent fallback: when the Numba kernels cannot load, the runtime says so once on stderr,
names no false backend, and refuses to compute (there is no numpy production path)."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO as ROOT

SCRIPT = """
import sys
sys.modules["numba"] = None          # numba cannot be imported: runtime.kernels fails to load
import numpy as np
import runtime.backend as B
import runtime.backend                # a second import says nothing more
from runtime.errors import ModelError
print("backend:", B.backend_name())
try:
    B.rms_norm(np.ones((1, 4), np.float32), None, 1e-6)
except ModelError as e:
    print("error:", e)
"""


def test_kernels_that_cannot_load_are_reported_once():
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "Numba CPU kernels did not load" in line]
    assert len(warnings) == 1 and "numba" in warnings[0]
    assert "backend: none (the Numba CPU kernels did not load)" in r.stdout
    assert "error: the Numba CPU kernels did not load (ModuleNotFoundError" in r.stdout


def test_backend_name_when_kernels_load():
    from runtime import backend as B
    assert B.backend_name() == B.BACKEND_NAME == "CPU (Numba)"
    from runtime.bench import BenchResult
    assert BenchResult.__dataclass_fields__["backend"].default_factory() == "CPU (Numba)"

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
    B.CPU.rms_norm(np.ones((1, 4), np.float32), None, 1e-6)
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
    """When the kernels load, the backend that says "CPU (Numba)" is the one computing: its results
    equal the numpy reference's, and bench reports that name."""
    import numpy as np
    from runtime import backend as B
    from runtime import reference
    assert B.backend_name() == "CPU (Numba)"
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 64)).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    np.testing.assert_allclose(B.CPU.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6), rtol=1e-6)
    from runtime.bench import BenchResult
    assert BenchResult.__dataclass_fields__["backend"].default_factory() == B.backend_name()

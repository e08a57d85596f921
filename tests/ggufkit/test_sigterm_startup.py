"""SIGTERM at many points of ``python -m ggufkit quantize IN OUT Q4_K_M``'s start-up and work.

Each run must end with status 143 (terminated, partial output removed) or 0 (it had finished),
and leave neither a ``.OUT.*.part`` temp file nor a half-written OUT behind. The one exception is
a signal that arrives before the interpreter has run any of ggufkit's code: Linux's
/proc/PID/status says whether SIGTERM is caught yet, and while it is not, nothing can have been
written, so the default handler's death (-15) is allowed then, in the first half second.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.quantize_cases import write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]
DELAYS = [0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.1, 1.4, 1.7, 2.0, 2.5]


def _catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_sigterm_during_startup_exits_143_and_leaves_no_temp(tmp_path):
    src = write_tiny_gguf(tmp_path / "in.gguf")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ggufkit", "quantize", str(src), str(out_dir / "o.gguf"), "Q4_K_M"]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    whole = (out_dir / "o.gguf").read_bytes()
    seen = set()
    for delay in DELAYS:
        for f in out_dir.iterdir():
            f.unlink()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
        time.sleep(delay)
        try:
            caught = _catches_sigterm(p.pid)
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, FileNotFoundError):
            caught = True                     # already gone: it must have finished
        _, err = p.communicate(timeout=60)
        left = sorted(f.name for f in out_dir.iterdir())
        allowed = (0, 143) if caught or delay >= 0.5 else (0, 143, -signal.SIGTERM)
        assert p.returncode in allowed, (delay, p.returncode, err.decode()[-300:])
        assert left == (["o.gguf"] if p.returncode == 0 else []), (delay, p.returncode, left)
        if p.returncode == 0:
            assert (out_dir / "o.gguf").read_bytes() == whole, delay
        seen.add(p.returncode)
    assert 143 in seen                        # the signals did land during the work


def test_sigterm_while_the_temp_file_is_created_is_cleaned_up(tmp_path, monkeypatch):
    """A SIGTERM that lands between mkstemp and atomic_path's cleanup is held back, then raised."""
    import tempfile

    import ggufkit.atomic as A
    real = tempfile.mkstemp

    def mkstemp_then_sigterm(*a, **k):
        r = real(*a, **k)
        os.kill(os.getpid(), signal.SIGTERM)
        return r

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(A.Terminated):
        with A.atomic_path(tmp_path / "o.bin"):
            raise AssertionError("the body must not run")
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == before

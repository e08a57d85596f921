"""Compile (or load from Numba's on-disk cache) only the kernels a model's weight types need.

    missing = needs_compile({"Q4_K", "Q6_K"})     # types not compiled yet on this install
    prepare({"Q4_K", "Q6_K"}, notify)              # notify("compiling kernels for Q4_K, Q6_K ...")
                                                   # once, then compile them; no-op when warm

Numba compiles on a kernel's first call and caches the machine code on disk (``cache=True``),
but it cannot tell beforehand whether a call will hit that cache. So after a type's kernels were
first called here, a small stamp file is written next to the cache (``warm-<TYPE>.<key>``, in the
source-keyed cache directory ``runtime/kernels/__pycache__/src-<SOURCE_KEY>`` or its
``$NUMBA_CACHE_DIR`` counterpart; the key hashes the kernel sources, Numba's version and the CPU):
no stamp means "will compile". Clearing the Numba cache clears the stamps with it.

Each type is warmed through the same entry points the models use (decode matvec, tiled prefill,
get_rows) on tiny zero weights, with the same array flavours (read-only uint8 weights, C-contiguous
float32 activations), so the specializations compiled here are the ones used later. "common" is
the type-independent set: RMS norm, RoPE, attention, activation quantizers, GLU.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from quant.fast import cache_dir
from quant.types import TYPES
from runtime.kernels import MATMUL_TYPES, SOURCE_KEY, attention, glu, norm, rope
from runtime.kernels import matmul as mm
from runtime.kernels.dequant import BLOCKS

HERE = Path(__file__).resolve().parent
COMMON = "common"


def stamp_dir() -> Path:
    """Where Numba caches this package's kernels (and where the stamps go)."""
    return cache_dir(HERE) or Path.home() / ".cache" / "ggufkit" / "kernel-stamps"


_KEY = None


def _key() -> str:
    global _KEY
    if _KEY is None:
        import llvmlite.binding as llvm
        import numba
        raw = f"{SOURCE_KEY}|{numba.__version__}|{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features()}"
        _KEY = hashlib.sha1(raw.encode()).hexdigest()[:16]
    return _KEY


def _stamp(name: str) -> Path:
    return stamp_dir() / f"warm-{name}.{_key()}"


def kernel_types() -> tuple[str, ...]:
    """Weight types with Numba kernels (matmul / get_rows); F32 needs none (BLAS)."""
    return tuple(t for t in MATMUL_TYPES if t != "F32")


def needs_compile(qtypes) -> list[str]:
    """Of ``qtypes`` (ggml type names) plus "common", those whose kernels are not compiled yet."""
    want = [COMMON] + sorted({q for q in qtypes if q in kernel_types()})
    return [n for n in want if not _stamp(n).exists()]


def _warm_type(name: str) -> None:
    qt = TYPES[name].id
    qk, nbytes = BLOCKS[qt]
    n_in, n_out = 256, 16
    data = np.zeros((n_out, n_in // qk * nbytes), np.uint8)
    data.flags.writeable = False                       # the GGUF memmap is read-only
    for n_tok in (1, 2, mm.PREFILL_MIN_TOKENS):
        mm.matmul(data, qt, n_in, np.ones((n_tok, n_in), np.float32))
    mm.dequantize(data, qt, n_in, np.array([0, 3]))


def _warm_common() -> None:
    x = np.ones((2, 256), np.float32)
    norm.rms_norm(x, np.ones(256, np.float32), 1e-5)
    norm.rms_norm(x, None, 1e-5)
    q = np.ones((1, 4, 8), np.float32)
    rope.rope(q, np.array([3]), 8, 1e4, 1.0, None, "norm")
    rope.rope(q, np.array([3]), 8, 1e4, 1.0, None, "neox")
    rope.rope(q, np.array([3]), 8, 1e4, 1.0, np.ones(4, np.float32), "norm")
    big = np.ones((rope.PARALLEL_MIN // 32, 4, 8), np.float32)        # the parallel (prefill) RoPE
    for ff in (None, np.ones(4, np.float32)):
        rope.rope(big, np.arange(len(big)), 8, 1e4, 1.0, ff, "norm")
    for dt in (np.float16,):             # the f32 cache (exact checks only) compiles on first use
        kc = np.zeros((4, 2, 8), dt)
        attention.attention(q, kc, kc, 2, 1.0)
        attention.attention(q, kc, kc, 2, 1.0, window=2, softcap=30.0)
    glu.swiglu(x, x)
    glu.geglu(x, x)


def compile_jobs(n: int) -> int:
    """Processes to compile n kernel sets with: $GGUFKIT_COMPILE_JOBS, else one per core (<= n)."""
    env = os.environ.get("GGUFKIT_COMPILE_JOBS")
    jobs = int(env) if env and env.isdigit() else (os.cpu_count() or 1)
    return max(1, min(jobs, n))


def _compile_in_subprocesses(names, jobs: int) -> None:
    """Numba compiles single-threaded: compile the sets in parallel child processes (they write
    Numba's on-disk cache); the parent then only loads. Failures are left to the parent's own pass."""
    import subprocess
    import sys
    root = str(HERE.parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    todo, running = list(names), []
    while todo or running:
        while todo and len(running) < jobs:
            code = f"from runtime.kernels import warm; warm.warm([{todo.pop(0)!r}], parallel=False)"
            running.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        running[0].wait()
        running.pop(0)


def warm(names, on_each=None, parallel: bool = True) -> float:
    """Compile (or load) the kernels of ``names`` (type names and/or "common"), write their
    stamps; seconds taken. on_each(name, seconds) after each. With several sets and several
    cores (``compile_jobs``) they are compiled in parallel child processes first."""
    t0 = time.perf_counter()
    names = sorted(names, key=lambda n: n == COMMON)   # the type sets take longest: start them first
    jobs = compile_jobs(len(names)) if parallel else 1
    if jobs > 1:
        _compile_in_subprocesses(names, jobs)
    for n in names:
        t = time.perf_counter()
        _warm_common() if n == COMMON else _warm_type(n)
        try:
            _stamp(n).parent.mkdir(parents=True, exist_ok=True)
            _stamp(n).write_text(f"{time.perf_counter() - t:.2f} s\n")
        except OSError:
            pass
        if on_each is not None:
            on_each(n, time.perf_counter() - t)
    return time.perf_counter() - t0


def prepare(qtypes, notify=None) -> list[str]:
    """Make sure the kernels for weight types ``qtypes`` are compiled; when some are not, call
    notify("compiling kernels for A, B (first run only)") once, then compile them. Returns the
    names that were compiled (empty when everything was cached)."""
    missing = needs_compile(qtypes)
    if missing:
        types = [n for n in missing if n != COMMON] or ["shared kernels"]
        if notify is not None:
            notify(f"compiling kernels for {', '.join(types)} (first run only)")
        warm(missing)
    return missing

"""The Python thread pool the kernels share for work that releases the GIL (BLAS GEMMs, nogil
Numba kernels, numpy ufuncs): prefill tiles, activation conversion, attention, SwiGLU."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None


def pool(n: int) -> ThreadPoolExecutor:
    """A pool of at least n threads (grown, never shrunk)."""
    global _POOL
    if _POOL is None or _POOL._max_workers < n:
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ggufkit-gemm")
    return _POOL

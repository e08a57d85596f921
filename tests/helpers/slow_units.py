"""Measurement units slowed down, so that a test can kill the process running one
(tests/ggufkit/test_fanout_ray.py)."""
from __future__ import annotations

import time


def jobs_for(base: str, imatrix: str, cache_root: str, n: int = 8) -> list[tuple]:
    """``ggufkit.measure.error_unit`` jobs: Q4_0 and Q8_0 errors on 16 rows of the first n quantized tensors."""
    from ggufkit.quantize import open_source
    s = open_source(base)
    names = [p.name for p in s.plans() if p.dst_type != p.src_type][:n]
    return [(base, imatrix, cache_root, name, list(range(16)), [(t, f"test-{name}-{t}") for t in ("Q4_0", "Q8_0")])
            for name in names]


def slow_error_unit(delay: float, *job):
    time.sleep(delay)
    from ggufkit.measure import error_unit
    return error_unit(*job)

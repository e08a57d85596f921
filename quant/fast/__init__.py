"""Numba fast paths, bit-exact with quant/ref; each module registers its kernels.

Numba's on-disk cache (cache=True) keys a kernel on its own file only, so a kernel that inlines a
helper from another module would keep stale machine code after that helper changes. The kernels
here are cached under a directory keyed on the sources they may inline (``SOURCES``: quant/fast,
quant/ref and the type table), see ``_cache.py``; ``runtime.kernels`` does the same with its own.
"""

from pathlib import Path

from ._cache import cache_by_sources, cache_dir  # noqa: F401 (runtime.kernels keys its cache the same way)

HERE = Path(__file__).resolve().parent
SOURCES = (HERE, HERE.parent / "ref", HERE.parent / "types.py")
cache_by_sources(HERE, SOURCES)

"""Numba's on-disk cache, keyed on the sources a package's kernels inline.

Numba checks only the source of the file defining each ``@njit(cache=True)`` function, not the
helpers it inlines from other files (``quant/fast/blocks.py`` into ``runtime/kernels``, the type
table's sizes, ``simd.py``'s intrinsics). ``cache_by_sources(package_dir, sources)`` makes the
functions defined in ``package_dir`` cache under ``<numba's cache dir>/src-<key>``, where key is
``source_key(sources)``: after any of those sources changes, the old entries are simply not found
(nothing is deleted; an old ``src-*`` directory can be removed by hand). Numba's own locators
still pick the base directory (``__pycache__`` beside the package, or ``$NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba.core import caching

_KEYED: dict[str, str] = {}          # package directory -> its source key
_IMPL = getattr(caching, "CacheImpl", None) or caching._CacheImpl   # _CacheImpl in older Numba


def source_key(sources, extra: str = "") -> str:
    """sha1 (16 hex digits) of every .py file under ``sources`` (directories or files), with
    their names, plus ``extra``."""
    h = hashlib.sha1(extra.encode())
    for src in sources:
        src = Path(src)
        for p in sorted(src.glob("*.py")) if src.is_dir() else [src]:
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


class _SourceKeyedLocator(caching._CacheLocator):
    """Numba's usual locator for the function, with ``src-<key>`` appended to its directory."""

    def __init__(self, inner, key: str):
        self._inner = inner
        self._path = os.path.join(inner.get_cache_path(), f"src-{key}")

    def get_cache_path(self):
        return self._path

    def get_source_stamp(self):
        return self._inner.get_source_stamp()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        key = _KEYED.get(os.path.dirname(os.path.abspath(py_file)))
        if key is None:
            return None
        for other in _IMPL._locator_classes:
            inner = None if other is cls else other.from_function(py_func, py_file)
            if inner is not None:
                self = cls(inner, key)
                try:
                    self.ensure_cache_path()
                except OSError:
                    continue
                return self
        return None


def cache_by_sources(package_dir, sources, extra: str = "") -> str:
    """Cache the Numba functions defined in ``package_dir`` under a directory keyed on
    ``source_key(sources, extra)``; returns the key. Call before the package's kernels are defined."""
    key = _KEYED[os.path.abspath(package_dir)] = source_key(sources, extra)
    if _SourceKeyedLocator not in _IMPL._locator_classes:
        _IMPL._locator_classes.insert(0, _SourceKeyedLocator)
    return key


def cache_dir(package_dir) -> Path | None:
    """Where the keyed cache of ``package_dir`` lives (None when it has none or is not writable)."""
    key = _KEYED.get(os.path.abspath(package_dir))
    if key is None:
        return None
    loc = _SourceKeyedLocator.from_function(cache_dir, str(Path(package_dir) / "__init__.py"))
    return Path(loc.get_cache_path()) if loc is not None else None

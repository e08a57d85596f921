"""Numba fast paths, bit-exact with quant/ref; each module registers its kernels.

Numba's on-disk cache (cache=True) keys a kernel on its own file only, so a kernel that
inlines a helper from another module would keep stale machine code after that helper
changes. On import we hash the sources of quant/fast and quant/ref and drop the cached
kernels when the hash differs from the one stored beside them.
"""

import glob
import hashlib
import os


def _drop_stale_numba_cache() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(here, "*.py")) +
                       glob.glob(os.path.join(here, "..", "ref", "*.py"))):
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read())
    digest = h.hexdigest()
    cache = os.path.join(here, "__pycache__")
    stamp = os.path.join(cache, "quant-fast-sources.sha1")
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return
    except OSError:
        pass
    try:
        for path in glob.glob(os.path.join(cache, "*.nbi")) + glob.glob(os.path.join(cache, "*.nbc")):
            try:
                os.remove(path)
            except OSError:
                pass
        os.makedirs(cache, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(digest)
    except OSError:           # read-only install: Numba then uses its own cache directory
        pass


_drop_stale_numba_cache()

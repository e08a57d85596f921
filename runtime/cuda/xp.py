"""Device arrays for the CUDA backend: CuPy on a GPU, numpy under emulation.

    dev = device()                       # follows GGUFKIT_CUDA_EMULATE / set_emulation
    x = dev.asarray(host_f32)            # host -> device
    y = dev.empty((n_tok, n), np.float32)
    dev.matmul(a, b, out=y)              # cuBLAS GEMM (cupy.matmul) / numpy matmul
    host = dev.asnumpy(y)                # device -> host

Kernel launchers (runtime.cuda.ops) take the arrays these return.
"""

from __future__ import annotations

import numpy as np

from runtime.cuda import module as M


class Device:
    """One device: ``xp`` is the array module (numpy when emulating, cupy on a GPU)."""

    def __init__(self, emulate: bool | None = None, index: int = 0):
        self.emulated = M.emulating() if emulate is None else bool(emulate)
        self.index = index
        if self.emulated:
            self.xp = np
            self.name = "emulated CUDA device (CPU)"
        else:
            cp = M.require_gpu()
            n = cp.cuda.runtime.getDeviceCount()
            if not 0 <= index < n:
                raise M.CudaError(f"no CUDA device {index}: {n} device(s) found")
            cp.cuda.Device(index).use()
            self.xp = cp
            props = cp.cuda.runtime.getDeviceProperties(index)
            self.name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def load(self, name: str):
        return M.load(name, emulate=self.emulated)

    def empty(self, shape, dtype=np.float32):
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype=np.float32):
        return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        """Host (or device) array -> C-contiguous device array."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def asnumpy(self, a) -> np.ndarray:
        return a if self.emulated else self.xp.asnumpy(a)

    def matmul(self, a, b, out=None):
        """a @ b (cuBLAS through cupy.matmul on a GPU; numpy's BLAS when emulating)."""
        return self.xp.matmul(a, b, out=out)

    def synchronize(self) -> None:
        if not self.emulated:
            self.xp.cuda.Device(self.index).synchronize()

    def free_memory(self) -> tuple[int, int]:
        """(free, total) bytes; under emulation the host's available memory."""
        if self.emulated:
            import os
            pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            return int(pages), int(total)
        return tuple(int(v) for v in self.xp.cuda.runtime.memGetInfo())


_DEVICES: dict = {}


def device(emulate: bool | None = None, index: int = 0) -> Device:
    """The (cached) Device for this process."""
    key = (M.emulating() if emulate is None else bool(emulate), index)
    if key not in _DEVICES:
        _DEVICES[key] = Device(*key)
    return _DEVICES[key]

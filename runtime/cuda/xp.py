"""Device arrays for the CUDA backend: CuPy on a GPU, numpy under emulation.

    dev = device()                       # follows GGUFKIT_CUDA_EMULATE / set_emulation
    x = dev.asarray(host_f32)            # host -> device
    y = dev.empty((n_tok, n), np.float32)
    dev.matmul(a, b, out=y)              # cuBLAS GEMM (cupy.matmul) / numpy matmul
    host = dev.asnumpy(y)                # device -> host

Kernel launchers (runtime.cuda.ops, runtime.cuda.qmatmul) take the arrays these return, and
run on the arrays' side: ``kernel(src, name, like)`` is the emulated kernel for numpy arrays,
the GPU's for CuPy arrays; ``workspace`` hands out reused scratch arrays on that side.
"""

from __future__ import annotations

import contextlib

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
        """Zero-filled (an asynchronous memset on the current stream, emulated: work on the default stream)."""
        if self.emulated:
            M.emu_default_work(1)
        return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        """Host (or device) array -> C-contiguous device array (a copy queued on the current stream)."""
        if self.emulated:
            M.emu_default_work(1)
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def asnumpy(self, a) -> np.ndarray:
        """Device -> host: a copy (emulated too: a replayed graph rewrites its output buffer)."""
        return np.array(a) if self.emulated else self.xp.asnumpy(a)

    def matmul(self, a, b, out=None):
        """a @ b (cuBLAS through cupy.matmul on a GPU; numpy's BLAS when emulating)."""
        return self.xp.matmul(a, b, out=out)

    def synchronize(self) -> None:
        if self.emulated:
            M.emu_host_sync()
        else:
            self.xp.cuda.Device(self.index).synchronize()

    def free_memory(self) -> tuple[int, int]:
        """(free, total) bytes; under emulation the host's available memory."""
        if self.emulated:
            import os
            pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            return int(pages), int(total)
        return tuple(int(v) for v in self.xp.cuda.runtime.memGetInfo())


# ---------------------------------------------------------------- the side of an array

def is_host(a) -> bool:
    """A numpy array (runs the emulated kernels), not a CuPy one."""
    return isinstance(a, np.ndarray)


def array_module(a):
    """numpy or cupy, whichever ``a`` belongs to."""
    if is_host(a):
        return np
    import cupy
    return cupy


def kernel(src: str, kname: str, like):
    """Kernel ``kname`` of runtime/cuda/SRC.cu on the side (and the device) of the array ``like``."""
    if is_host(like):
        return M.load(src, emulate=True).get_function(kname)
    return M.load(src, emulate=False, device=like.device.id).get_function(kname)


def poisoned(a: np.ndarray) -> np.ndarray:
    """``a`` filled with 0xFF bytes (NaN as floats, -1 / the maximum as integers)."""
    a.reshape(-1).view(np.uint8)[:] = 0xFF
    return a


WORKSPACE: dict = {}
_EMU_ALLOCATORS: list = []     # emulated memory pools in use (runtime.cuda.graph.EmuPool), innermost last


@contextlib.contextmanager
def emu_allocator(pool):
    """Emulated ``cupy.cuda.using_allocator(pool.malloc)``: new workspaces come from ``pool``."""
    _EMU_ALLOCATORS.append(pool)
    try:
        yield pool
    finally:
        _EMU_ALLOCATORS.pop()


def _new_buffer(xp, n: int, dtype):
    if xp is np and _EMU_ALLOCATORS:
        return _EMU_ALLOCATORS[-1].malloc(n * np.dtype(dtype).itemsize).view(dtype)
    return xp.empty(n, dtype)


def workspace(like, name: str, shape, dtype):
    """A scratch array reused across calls (one growing buffer per name, array module and
    device): kernels on one stream run in order, and the addresses stay put for CUDA graphs."""
    xp = array_module(like)
    dev = -1 if xp is np else like.device.id
    key = (xp.__name__, dev, name, np.dtype(dtype).str)
    n = int(np.prod(shape))
    buf = WORKSPACE.get(key)
    if buf is None or buf.size < n:
        with contextlib.nullcontext() if xp is np else like.device:
            buf = WORKSPACE[key] = _new_buffer(xp, max(n, 1), dtype)
    if xp is np and M._emu_opts().guard:
        poisoned(buf)   # no stale values from a previous call
    return buf[:n].reshape(shape)


# ---------------------------------------------------------------- devices

_DEVICES: dict = {}


def device(emulate: bool | None = None, index: int = 0) -> Device:
    """The (cached) Device for this process."""
    key = (M.emulating() if emulate is None else bool(emulate), index)
    if key not in _DEVICES:
        _DEVICES[key] = Device(*key)
    return _DEVICES[key]

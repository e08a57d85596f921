"""GPU-only hazards of the CUDA backend that the review (docs/CUDA.md, "What the emulator cannot
see") found by reading, each shown without a GPU: through the emulator, the kernel sources, or a
stand-in for CuPy that records what the backend asks of it.

- L4: MXFP4's E8M0 scales 2^-128 and 2^-127 are f32 denormals, flushed by CuPy's -ftz=true;
- L5: a kernel input its launcher lets alias the output is not ``__restrict__`` (ld.global.nc);
- L6: modules, kernels and backend calls are bound to their device, not the current one;
- L7: the f16 cuBLAS GEMM sets the pointer mode it relies on, and leaves CuPy's handle as found.
"""
from __future__ import annotations

import re
import shutil
import sys
import types

import numpy as np
import pytest

from runtime.cuda import module as M

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")


# ---------------------------------------------------------------- L4

@needs_gxx
def test_mxfp4_denormal_scales_flush_as_on_a_gpu():
    """E8M0 exponents 0 and 1 give denormal f32 scales: a GPU (-ftz=true) flushes every product
    with them, so the kernels treat them as 0 explicitly; the emulator keeps denormals and would
    otherwise compute numbers no GPU computes."""
    from runtime.cuda import qmatmul
    rng = np.random.default_rng(0)
    n_in = 64
    b = rng.integers(0, 256, (2, 2, 17), dtype=np.uint8)        # 2 rows of 2 blocks
    b[:, :, 0] = [[0, 1], [1, 127]]                               # exponents: 2^-128, 2^-127; row 1 block 1: 2^-1
    b[:, :, 1:] = 0x77                                            # nibble 7: kvalue 12 (the largest)
    w = b.reshape(2, 34)
    got = qmatmul.dequantize(w, "MXFP4", n_in, row0=0, n_rows=2, dtype=np.float32)
    assert (got[0] == 0).all() and (got[1, :32] == 0).all()      # 12 * 2^-127 would be a normal float
    assert (got[1, 32:] == np.float32(12 * 2.0 ** -128 * 2 ** 127)).all()


# ---------------------------------------------------------------- L5

# kernel -> parameters its launcher (runtime.cuda.ops) lets be the same array ("out may be x")
IN_PLACE = {("elementwise", "rope_f32"): ("x", "y"), ("elementwise", "add_f32"): ("a", "b", "y"),
            ("elementwise", "scale_f32"): ("x", "y"), ("elementwise", "softcap_f32"): ("x", "y")}


@pytest.mark.parametrize("src,kname", sorted(IN_PLACE))
def test_aliased_parameters_are_not_restrict(src, kname):
    """``const T* __restrict__ x`` lets NVRTC load x through the non-coherent read-only path
    (ld.global.nc), undefined when the kernel also writes x through y; the emulator ignores
    __restrict__, so the sources are checked."""
    text = M.source(src)
    m = re.search(r"\b" + kname + r"\s*\(([^)]*)\)", text)
    assert m, f"{kname} not found in {src}.cu"
    for decl in m.group(1).split(","):
        name = decl.split()[-1].lstrip("*")
        if name in IN_PLACE[(src, kname)]:
            assert "__restrict__" not in decl, f"{src}.cu {kname}: {decl.strip()} may alias the output"


# ---------------------------------------------------------------- a CuPy stand-in

class _Dev:
    current = 0

    def __init__(self, i=None):
        self.id = _Dev.current if i is None else i
        self._prev = []

    def __enter__(self):
        self._prev.append(_Dev.current)
        _Dev.current = self.id
        return self

    def __exit__(self, *exc):
        _Dev.current = self._prev.pop()

    def synchronize(self):
        pass


class _Arr:
    def __init__(self, shape, dtype, device=None):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.device = _Dev(device)
        self.flags = types.SimpleNamespace(c_contiguous=True)
        self.data = types.SimpleNamespace(ptr=4096)


def _fake_cupy(log: list, nvrtc=(12, 9), cc=(9, 0)):
    cp = types.ModuleType("cupy")

    class RawModule:
        def __init__(self, code, options):
            self.device = _Dev.current
            log.append(("module", self.device))

        def compile(self):
            pass

        def get_function(self, name):
            dev = self.device

            def launch(grid, block, args, shared_mem=0):
                log.append(("launch", name, dev, _Dev.current))
            return launch

    rt = types.SimpleNamespace(
        driverGetVersion=lambda: 12090, runtimeGetVersion=lambda: 12090, getDeviceCount=lambda: 2,
        getDevice=lambda: _Dev.current, getDeviceProperties=lambda i: {"major": cc[0], "minor": cc[1]},
        CUDA_R_16F=2, CUDA_R_32F=0)
    cp.cuda = types.SimpleNamespace(
        Device=_Dev, runtime=rt, nvrtc=types.SimpleNamespace(getVersion=lambda: nvrtc),
        get_current_stream=lambda: types.SimpleNamespace(ptr=77),
        device=types.SimpleNamespace(get_cublas_handle=lambda: "handle"))
    cp.RawModule, cp.ndarray = RawModule, _Arr
    cp.empty = lambda shape, dtype: _Arr(shape, dtype)
    return cp


@pytest.fixture
def fake_gpu(monkeypatch):
    log: list = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    monkeypatch.setattr(M, "_MODULES", {})
    monkeypatch.setattr(_Dev, "current", 0)
    return log


# ---------------------------------------------------------------- L6

def test_modules_and_launches_belong_to_their_device(fake_gpu):
    """A module loaded for device 1 is a separate module, and its kernels launch with device 1
    current even when the host thread's current device is 0 (another thread, a later probe(0))."""
    from runtime.cuda import xp as X
    x1 = _Arr((4,), np.float32, device=1)
    k1 = X.kernel("elementwise", "scale_f32", x1)
    k0 = X.kernel("elementwise", "scale_f32", _Arr((4,), np.float32, device=0))
    assert k1 is not k0 and k1.device == 1 and k0.device == 0
    assert ("module", 1) in fake_gpu and ("module", 0) in fake_gpu
    assert _Dev.current == 0
    k1(1, 32, (x1, x1, np.float32(2), np.int64(4)))
    assert fake_gpu[-1] == ("launch", "scale_f32", 1, 1)
    assert _Dev.current == 0


def test_backend_calls_run_on_the_backend_device():
    """Every CUDABackend method that allocates or launches enters ``on_device()`` (its _guard)."""
    from runtime.cuda.backend import CUDABackend
    from runtime.backend import Backend
    verbs = [n for n in vars(Backend) if not n.startswith("_") and callable(getattr(Backend, n))]
    for n in verbs + ["from_host", "to_host", "take_rows", "load_weights", "new_kv", "kv_write", "sample"]:
        f = getattr(CUDABackend, n, None)
        if f is None or n in ("synchronize",):
            continue
        assert hasattr(f, "__wrapped__"), f"CUDABackend.{n} does not run under on_device()"


def test_nvrtc13_refuses_old_archs_in_one_line(monkeypatch):
    """cupy-cuda13x's NVRTC rejects sm_61..sm_72: say which CuPy to install instead of
    NVRTC's 'invalid value for --gpu-architecture'."""
    log: list = []
    monkeypatch.setattr(M, "_MODULES", {})
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log, nvrtc=(13, 0), cc=(6, 1)))
    with pytest.raises(M.CudaError, match="cupy-cuda12x"):
        M.load("elementwise", emulate=False, device=0)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log, nvrtc=(13, 0), cc=(7, 5)))
    M.load("elementwise", emulate=False, device=0)


# ---------------------------------------------------------------- L7

def test_f16_gemm_sets_the_pointer_mode_and_restores_the_handle(fake_gpu, monkeypatch):
    """cublas.gemmEx gets alpha/beta as host pointers: the handle must be in HOST pointer mode,
    which CuPy's shared handle need not be; the GEMM sets it, and puts mode and stream back."""
    from runtime.cuda import qmatmul
    calls = []
    state = {"mode": "DEVICE", "stream": 5}
    cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
    cublas.CUBLAS_POINTER_MODE_HOST, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N = "HOST", 1, 0
    cublas.CUBLAS_COMPUTE_32F, cublas.CUBLAS_GEMM_DEFAULT = 68, -1
    cublas.getPointerMode = lambda h: state["mode"]
    cublas.getStream = lambda h: state["stream"]
    cublas.setPointerMode = lambda h, m: state.__setitem__("mode", m)
    cublas.setStream = lambda h, s: state.__setitem__("stream", s)
    cublas.gemmEx = lambda h, *a: calls.append((state["mode"], state["stream"]))
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = cublas
    for name, mod in (("cupy_backends", types.ModuleType("cupy_backends")),
                      ("cupy_backends.cuda", types.ModuleType("cupy_backends.cuda")),
                      ("cupy_backends.cuda.libs", libs), ("cupy_backends.cuda.libs.cublas", cublas)):
        monkeypatch.setitem(sys.modules, name, mod)
    out = qmatmul._gemm(_Arr((3, 64), np.float16), _Arr((8, 64), np.float16))
    assert out.shape == (3, 8)
    assert calls == [("HOST", 77)]
    assert state == {"mode": "DEVICE", "stream": 5}


def test_nvrtc13_archs(monkeypatch):
    """The compile checks never ask NVRTC 13 for sm_61 (it refuses it); NVRTC 12 does all."""
    from runtime.cuda import nvrtc as N
    monkeypatch.setattr(N, "nvrtc", lambda: types.SimpleNamespace(getVersion=lambda: (13, 0)))
    assert N.supported_archs() == tuple(a for a in N.ARCHS if a >= 75)
    with pytest.raises(M.CudaError, match="cannot compile for sm_61"):
        N.compile_cubin("elementwise", 61)
    monkeypatch.setattr(N, "nvrtc", lambda: types.SimpleNamespace(getVersion=lambda: (12, 9)))
    assert N.supported_archs() == N.ARCHS


def test_no_graph_for_a_step_through_the_host(monkeypatch):
    """YaRN/longrope (rope_ext, numpy) and mistral3's attention temperature go through the host:
    a capture would fail after an eager warm-up, so attach() gives such models no graph."""
    from runtime.cuda import graph
    monkeypatch.setenv("GGUFKIT_CUDA_GRAPHS", "1")
    be = object()
    for hp, want in ((types.SimpleNamespace(rope_ext=None), True), (types.SimpleNamespace(rope_ext=object()), False),
                     (types.SimpleNamespace(rope_ext=None, temp_scale=0.1), False)):
        m = types.SimpleNamespace(hp=hp, backends=[be], out_backend=be)
        graph.attach(m, be)
        assert (m.decode_graph is not None) == want

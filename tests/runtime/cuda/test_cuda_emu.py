"""The CUDA emulator itself (runtime/cuda/emu/cuda_emu.h + runtime/cuda/module.py).

These kernels (tests/runtime/cuda/emu_selftest.cu) check what the emulator promises: barriers, warp
exchanges with mask checks, thread orders, fp16/bf16 conversions, dp4a, dynamic shared memory,
the out-of-bounds guard, and argument checking. Needs only g++.
"""
from pathlib import Path
import re
import shutil

import numpy as np
import pytest

from runtime import reference as ref
from runtime.cuda import module as M
from runtime.cuda.module import CudaError, emu_options

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")

SELFTEST = str(Path(__file__).parent / "emu_selftest.cu")
ORDERS = ("forward", "reverse", "random")


@pytest.fixture(scope="module")
def mod():
    return M.load(SELFTEST, emulate=True)


def test_partial_barrier_is_an_error(mod):
    k = mod.get_function("partial_barrier")
    out = np.zeros(64, np.int32)
    k(1, 64, (out, np.int32(64)))                 # everyone reaches it: fine
    assert out.sum() == 64
    with pytest.raises(CudaError, match=r"__syncthreads reached by 40 of 64 threads"):
        k(1, 64, (out, np.int32(40)))


@pytest.mark.parametrize("order", ORDERS)
def test_missing_barrier_shows_up(mod, order):
    k = mod.get_function("rotate_shared")
    rng = np.random.default_rng(1)
    y = np.empty(64, np.float32)
    with emu_options(order=order, seed=5):
        x = rng.standard_normal(64).astype(np.float32)
        k(1, 64, (x, y, np.int32(1)))
        np.testing.assert_array_equal(y, np.roll(x, -1))
        x = rng.standard_normal(64).astype(np.float32)
        k(1, 64, (x, y, np.int32(0)))             # no barrier: some thread reads a stale value
        assert not np.array_equal(y, np.roll(x, -1))


def test_shuffles_and_ballot(mod):
    k = mod.get_function("shuffles")
    x = np.random.default_rng(2).integers(-1000, 1000, 64).astype(np.int32)
    out = np.zeros((8, 64), np.int32)
    with emu_options(order="random", seed=1):
        k(1, 64, (x, out))
    lane = np.arange(64) % 32
    base = np.arange(64) - lane
    xor5 = base + (lane ^ 5)
    up3 = np.where(lane >= 3, np.arange(64) - 3, np.arange(64))
    down3 = np.where(lane + 3 < 32, np.arange(64) + 3, np.arange(64))
    seg = lane & ~7
    xor6w8 = np.where((lane ^ 6) < seg + 8, base + (lane ^ 6), np.arange(64))
    down2w8 = np.where(lane + 2 < seg + 8, np.arange(64) + 2, np.arange(64))
    np.testing.assert_array_equal(out[0], x[xor5])
    np.testing.assert_array_equal(out[1], x[up3])
    np.testing.assert_array_equal(out[2], x[down3])
    np.testing.assert_array_equal(out[3], x[base + 7])
    np.testing.assert_array_equal(out[4], x[xor6w8])
    np.testing.assert_array_equal(out[5], x[down2w8])
    bits = (x & 1).reshape(2, 32)
    ballot = [(int(sum(int(b) << i for i, b in enumerate(w))) ^ 0x80000000) - 0x80000000 for w in bits]
    np.testing.assert_array_equal(out[6], np.repeat(ballot, 32))
    np.testing.assert_array_equal(out[7], np.repeat(x.reshape(2, 32).sum(1), 32))


def test_warp_mask_errors(mod):
    k = mod.get_function("bad_masks")
    out = np.zeros(32, np.int32)
    k(1, 32, (out, np.int32(0)))
    np.testing.assert_array_equal(out[:16], np.arange(16) ^ 1)
    with pytest.raises(CudaError, match="names lane 3, which has exited"):
        k(1, 32, (out, np.int32(1)))
    with pytest.raises(CudaError, match="names lane 16, which does not exist"):
        k(1, 16, (out, np.int32(2)))
    with pytest.raises(CudaError, match="different warp ops"):
        k(1, 32, (out, np.int32(3)))


@pytest.mark.parametrize("order", ORDERS)
def test_block_sum(mod, order):
    k = mod.get_function("row_sums")
    x = np.random.default_rng(3).standard_normal((3, 517)).astype(np.float32)
    y = np.zeros(3, np.float32)
    with emu_options(order=order, seed=9):
        k(3, 96, (x, y, np.int32(517)))
    np.testing.assert_allclose(y, x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-4)


def test_fp16_bf16_conversions_exact(mod):
    k = mod.get_function("conversions")
    rng = np.random.default_rng(4)
    x = np.concatenate([
        rng.standard_normal(4000).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, 4000),
        np.array([0.0, -0.0, 65504, 65519.99, 65520, -65520, 1e9, np.inf, -np.inf, 6e-8, 2.98e-8, 2.9802322e-08,
                  5.96e-8, 6.1e-5, 6.097e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 3.4e38], np.float32),
        # halfway cases between neighbouring halfs (ties to even)
        (np.arange(1, 2000, dtype=np.float32) * np.float32(2 ** -24) * np.float32(1.5)),
    ]).astype(np.float32)
    n = x.size
    codes = np.arange(65536, dtype=np.uint16)
    nan = np.isnan(codes.view(np.float16))
    h = np.zeros(n, np.uint16)
    b = np.zeros(n, np.uint16)
    back = np.zeros(65536, np.float32)
    bback = np.zeros(65536, np.float32)
    k(_blocks(65536), 256, (x, h, b, codes, back, codes, bback, np.int32(n), np.int32(65536)))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h, x.astype(np.float16).view(np.uint16))
    want_b = ref.quantize_activations(x[None], "BF16")[0][0].view(np.uint32) >> 16
    np.testing.assert_array_equal(b, want_b.astype(np.uint16))
    np.testing.assert_array_equal(back[~nan], codes.view(np.float16)[~nan].astype(np.float32))
    assert np.isnan(back[nan]).all()
    np.testing.assert_array_equal(bback.view(np.uint32), codes.astype(np.uint32) << 16)


def _blocks(n, t=256):
    return -(-n // t)


def test_dp4a(mod):
    rng = np.random.default_rng(5)
    a, b, c = (rng.integers(-2**31, 2**31, 500, dtype=np.int64).astype(np.int32) for _ in range(3))
    out = np.zeros(500, np.int32)
    mod.get_function("dp4a_test")(2, 256, (a, b, c, out, np.int32(500)))
    want = c.astype(np.int64) + (a.view(np.int8).reshape(-1, 4).astype(np.int64)
                                 * b.view(np.int8).reshape(-1, 4)).sum(1)
    np.testing.assert_array_equal(out, ((want + 2**31) % 2**32 - 2**31).astype(np.int32))


@pytest.mark.parametrize("order", ORDERS)
def test_dynamic_shared_memory(mod, order):
    x = np.arange(96, dtype=np.float32)
    y = np.zeros(96, np.float32)
    with emu_options(order=order):
        mod.get_function("dyn_reverse")(1, 96, (x, y), shared_mem=96 * 4)
    np.testing.assert_array_equal(y, x[::-1])


def test_guard_catches_out_of_bounds_write(mod):
    k = mod.get_function("write_past")
    y = np.zeros(40, np.float32)
    with emu_options(guard=True):
        k(1, 32, (y, np.int32(31)))             # writes 0..31: inside
        assert y[:32].sum() == 32
        with pytest.raises(CudaError, match=r"wrote outside argument 0 \(y\): 0 bytes before it, 4 bytes after"):
            k(1, 64, (y, np.int32(40)))


def test_orders_differ_and_random_is_seeded(mod):
    k = mod.get_function("run_order")

    def run(**kw):
        c, out = np.zeros(1, np.int32), np.zeros(3 * 8, np.int32)
        with emu_options(**kw):
            k(3, 8, (c, out))
        return out

    fwd = run(order="forward", blocks="forward")
    np.testing.assert_array_equal(fwd, np.arange(24))
    np.testing.assert_array_equal(run(order="reverse", blocks="reverse"), np.arange(24)[::-1])
    r1, r2, r3 = run(order="random", seed=1), run(order="random", seed=1), run(order="random", seed=2)
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(r1, r3) and sorted(r1) == list(range(24))


def test_block_order_is_random_by_default_whatever_the_thread_order(mod):
    k = mod.get_function("run_order")
    starts = set()
    for seed in range(8):
        c, out = np.zeros(1, np.int32), np.zeros(3 * 8, np.int32)
        with emu_options(order="forward", seed=seed):
            k(3, 8, (c, out))
        rows = out.reshape(3, 8)
        np.testing.assert_array_equal(rows - rows[:, :1], np.tile(np.arange(8), (3, 1)))   # threads: forward
        starts.add(tuple(rows[:, 0]))
    assert len(starts) > 2 and all(sorted(s) == [0, 8, 16] for s in starts)   # blocks: shuffled per seed


def test_argument_checks(mod):
    k = mod.get_function("write_past")
    y = np.zeros(8, np.float32)
    with pytest.raises(CudaError, match=r"argument 1 \(n\): int needs np.int32, got int"):
        k(1, 8, (y, 8))
    with pytest.raises(CudaError, match=r"float\* needs float32, got float64"):
        k(1, 8, (np.zeros(8), np.int32(7)))
    with pytest.raises(CudaError, match="1 arguments for 2 parameters"):
        k(1, 8, (y,))
    with pytest.raises(CudaError, match="more than 1024 threads"):
        k(1, 2048, (y, np.int32(7)))
    with pytest.raises(CudaError, match="no extern"):
        mod.get_function("nope")


def test_parse_kernels():
    src = '''extern "C" __global__ void __launch_bounds__(256) k1(const float * __restrict__ x, int n,
              const block_q4_K* w, unsigned long long m) {}
              // extern "C" __global__ void commented(int a) {}
              static __device__ void helper(int) {}'''
    ks = M.parse_kernels(src)
    assert list(ks) == ["k1"]
    assert [(p.name, p.base, p.pointer) for p in ks["k1"]] == [
        ("x", "float", True), ("n", "int", False), ("w", "block_q4_K", True), ("m", "unsigned long long", False)]


def test_parse_kernels_expands_macro_lists(tmp_path):
    """Kernels instantiated over an X-macro list (empty arguments, ## pasting and a macro that
    calls another included) are read from the text, and they are the ones g++ builds."""
    src = tmp_path / "xm.cu"
    src.write_text(
        '#define KINDS(X) X(, float, 1) X(_f64, double, 2)\n'
        '#define K(sfx, T, n) \\\n'
        '    extern "C" __global__ void scale##sfx(T* y, int m) { y[threadIdx.x] *= (T)(n * m); }\n'
        '#define K2(sfx, T, n) K(sfx##_twice, T, 2 * n)\n'
        'KINDS(K)\n'
        'KINDS(K2)\n')
    ks = M.parse_kernels(M.source(str(src)))
    assert sorted(ks) == ["scale", "scale_f64", "scale_f64_twice", "scale_twice"]
    assert [(p.base, p.pointer) for p in ks["scale_f64"]] == [("double", True), ("int", False)]
    y = np.ones(4, np.float64)
    M.load(str(src), emulate=True).get_function("scale_f64_twice")(1, 4, (y, np.int32(3)))
    np.testing.assert_array_equal(y, 12.0)


def test_static_shared_is_poisoned_per_block_and_barrier_counts(mod):
    y = np.zeros(2 * 64, np.float32)
    c = np.zeros(3, np.int32)
    mod.get_function("shared_poison")(1, 64, (y, c))
    np.testing.assert_array_equal(y[:63], np.arange(1, 64))
    assert np.isnan(y[63])              # s[64] was never written: 0xFF bytes read as NaN
    np.testing.assert_array_equal(c, [22, 1, 1])


class _FakeRuntime:
    def __init__(self, drv=12080, rt=12080, n=1, raise_count=False):
        self.drv, self.rt, self.n, self.raise_count = drv, rt, n, raise_count

    def driverGetVersion(self):
        return self.drv

    def runtimeGetVersion(self):
        return self.rt

    def getDeviceCount(self):
        if self.raise_count:
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return self.n

    def getDevice(self):
        return 0


def _fake_cupy(**kw):
    import contextlib
    import types
    cp = types.ModuleType("cupy")
    cp.cuda = types.SimpleNamespace(runtime=_FakeRuntime(**kw), Device=lambda i=0: contextlib.nullcontext())
    return cp


@pytest.mark.parametrize("kw,msg", [
    (None, r"needs CuPy: pip install 'ggufkit\[cuda\]'"),
    ({"drv": 0}, "no NVIDIA driver found"),
    ({"drv": 11040}, "driver supports CUDA 11.4, CuPy needs 12.x: update the driver"),
    ({"raise_count": True}, "no usable CUDA GPU: cudaErrorNoDevice"),
    ({"n": 0}, "no CUDA GPU found"),
])
def test_gpu_errors_are_one_line(monkeypatch, kw, msg):
    import sys
    monkeypatch.setitem(sys.modules, "cupy", None if kw is None else _fake_cupy(**kw))
    with pytest.raises(CudaError, match=msg) as e:
        M.require_gpu()
    assert "\n" not in str(e.value)


def test_emulation_without_gxx(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(M.shutil, "which", lambda name: None)
    with pytest.raises(CudaError, match="CUDA emulation needs g\\+\\+"):
        M._build_emu(SELFTEST, 800)


def test_compile_error_names_the_source(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }\n')
    with pytest.raises(CudaError, match=r"g\+\+ could not compile bad.cu(.|\n)*bad.cu:1"):
        M.load(str(bad), emulate=True)


def test_pascal_build(mod):
    # __CUDA_ARCH__ as seen by the emulated build: the sm_61 paths can be run too
    m = M.load(SELFTEST, emulate=True, arch=610)
    out = np.zeros(32, np.int32)
    m.get_function("bad_masks")(1, 32, (out, np.int32(0)))
    np.testing.assert_array_equal(out[:16], np.arange(16) ^ 1)


def test_barriers_at_different_lines_are_an_error(mod):
    with pytest.raises(CudaError, match=r"threads 0 and 1 wait at different __syncthreads \(emu_selftest.cu:\d+ and "
                                        r"emu_selftest.cu:\d+\)"):
        mod.get_function("split_barriers")(1, 64, (np.zeros(64, np.int32),))


def test_faults_end_the_launch_not_the_process(mod):
    k = mod.get_function("crash")
    out = np.zeros(32, np.int32)
    with pytest.raises(CudaError, match=r"thread \(3,0,0\): invalid memory access at address (0x0|\(nil\))"):
        k(1, 32, (out, np.int32(0)))
    with pytest.raises(CudaError, match=r"thread \(0,0,0\): fiber stack overflow"):
        k(1, 32, (out, np.int32(1)))
    k(1, 32, (out, np.int32(2)))          # the emulator is fine afterwards
    assert out.sum() == 32


def test_gpu_module_wrapper_with_a_fake_cupy(monkeypatch):
    """The GPU side of module.load, with CuPy replaced by a recorder: source, options, and the
    launch arguments CuPy's RawKernel would get (null pointers as 8-byte zeros)."""
    import sys

    class FakeArray:
        def __init__(self, a):
            self.a, self.dtype, self.flags = a, a.dtype, a.flags

    seen = {}

    class FakeKernel:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args, shared_mem=0):
            seen["launch"] = (self.name, grid, block, args, shared_mem)

    class FakeRawModule:
        def __init__(self, code, options):
            seen["code"], seen["options"] = code, options

        def compile(self):
            pass

        def get_function(self, name):
            return FakeKernel(name)

    cp = _fake_cupy()
    cp.ndarray = FakeArray
    cp.RawModule = FakeRawModule
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(M, "_MODULES", {})
    k = M.load("elementwise", emulate=False).get_function("rms_norm_f32")
    assert seen["options"] == ("-std=c++17",)
    assert seen["code"].startswith('#line 1 "common.cuh"') and "rms_norm_f32" in seen["code"]
    x = FakeArray(np.zeros((2, 8), np.float32))
    k(2, 32, (x, None, x, np.int32(8), np.float32(1e-5)))
    name, grid, block, args, smem = seen["launch"]
    assert (name, grid, block, smem) == ("rms_norm_f32", (2, 1, 1), (32, 1, 1), 0)
    assert args[1] == 0 and type(args[1]) is np.uint64 and args[0] is x
    with pytest.raises(CudaError, match="expected a device array, got ndarray"):
        k(2, 32, (np.zeros((2, 8), np.float32), None, x, np.int32(8), np.float32(1e-5)))


def test_emulated_device_arrays():
    from runtime.cuda import xp as X
    dev = X.device(emulate=True)
    assert dev.emulated and dev.xp is np and X.device(emulate=True) is dev
    a = dev.asarray(np.arange(6, dtype=np.float64).reshape(2, 3)[:, ::-1], dtype=np.float32)
    assert a.dtype == np.float32 and a.flags.c_contiguous
    b = dev.zeros((3, 4))
    b[:] = 1
    np.testing.assert_array_equal(dev.asnumpy(dev.matmul(a, b)), np.full((2, 4), [[3], [12]], np.float32))
    free, total = dev.free_memory()
    assert 0 < free <= total


def test_emulation_options_from_the_environment(mod, monkeypatch):
    k = mod.get_function("run_order")
    monkeypatch.setenv("GGUFKIT_CUDA_EMU_ORDER", "reverse")
    c, out = np.zeros(1, np.int32), np.zeros(8, np.int32)
    k(1, 8, (c, out))
    np.testing.assert_array_equal(out, np.arange(8)[::-1])
    monkeypatch.setenv("GGUFKIT_CUDA_EMU_ORDER", "sideways")
    with pytest.raises(CudaError, match="unknown thread order 'sideways'"):
        k(1, 8, (c, out))


def test_misaligned_access_is_an_error(mod):
    k = mod.get_function("misaligned")
    x = np.arange(16, dtype=np.uint8)
    out = np.zeros(1, np.int32)
    k(1, 1, (x, out, np.int32(4)))
    assert out[0] == int.from_bytes(bytes([4, 5, 6, 7]), "little")
    with pytest.raises(CudaError, match=r"thread \(0,0,0\): misaligned memory access"):
        k(1, 1, (x, out, np.int32(2)))


# ---------------------------------------------------------------- the stricter checks

@pytest.mark.parametrize("order", ORDERS)
def test_race_check_catches_unsynchronised_accesses(mod, order):
    k = mod.get_function("race_modes")

    def run(mode, n=64, grid=1):
        y = np.zeros(n + 1, np.float32)
        with emu_options(order=order, seed=3, race=True, guard=True):
            k(grid, n, (y, np.int32(mode)))
        return y

    np.testing.assert_array_equal(run(0)[:63], np.arange(1, 64))   # with the barrier: no race
    run(3, n=32)                                                  # __syncwarp orders one warp: no race
    with pytest.raises(CudaError, match=r"race on __shared__ s \(byte \d+\): block \(0,0,0\) "
                                        r"thread \(\d+,0,0\) (reads|writes) .* thread \(\d+,0,0\) (wrote|read)"):
        run(1)
    with pytest.raises(CudaError, match=r"race on __shared__ s .*shuffles do not order memory"):
        run(2)                                                    # a shuffle is not a fence
    with pytest.raises(CudaError, match=r"race on __shared__ s"):
        run(3, n=64)                                              # __syncwarp does not order two warps
    with pytest.raises(CudaError, match=r"race on y\[0\] \(byte 0\): .* thread \(\d+,0,0\) (wrote|read)"):
        run(4)
    with pytest.raises(CudaError, match=r"race on y\[\d+\] \(byte \d+\)"):
        run(5)
    with pytest.raises(CudaError, match=r"race on y\[0\] .* block \(\d,0,0\) wrote in the same launch; "
                                        r"blocks of a grid are not ordered"):
        run(6, grid=3)
    # without the check the same kernels run (and give order-dependent results)
    with emu_options(order=order, seed=3):
        k(1, 64, (np.zeros(65, np.float32), np.int32(1)))


def test_race_check_passes_the_selftest_kernels(mod):
    x = np.random.default_rng(4).standard_normal((3, 200)).astype(np.float32)
    y = np.zeros(3, np.float32)
    with emu_options(order="random", seed=2, race=True):
        mod.get_function("row_sums")(3, 64, (x, y, np.int32(200)))    # block_sum: shuffles + shared + barriers
        out = np.zeros((8, 64), np.int32)
        mod.get_function("shuffles")(1, 64, (np.arange(64, dtype=np.int32), out))
    np.testing.assert_allclose(y, x.sum(1), rtol=1e-5)


@pytest.mark.parametrize("order", ORDERS)
def test_activemask_reflects_divergence(mod, order):
    k = mod.get_function("activemask_test")
    out = np.zeros(64, np.uint32)
    with emu_options(order=order, seed=1):
        k(1, 64, (out, np.int32(32), np.int32(0)))
        np.testing.assert_array_equal(out, 0xFFFFFFFF)            # converged: the whole warp
        k(1, 64, (out, np.int32(12), np.int32(0)))
    lane = np.arange(64) % 32
    np.testing.assert_array_equal(out, np.where(lane < 12, 0xFFF, 0xFFFFF000))   # each branch its lanes
    with pytest.raises(CudaError, match=r"shuffle reads lane 31, outside mask"):
        with emu_options(order=order, seed=1):
            k(1, 64, (out, np.int32(12), np.int32(1)))             # assumes a full warp


def test_fma_contraction_and_flush_to_zero():
    """NVRTC's defaults (-fmad=true, CuPy's -ftz=true) are the emulator's; both can be turned off."""
    mod = M.load(SELFTEST, emulate=True)
    k = mod.get_function("fp_model")
    a, b = np.float32(1 + 2.0**-12), np.float32(1 - 2.0**-13)
    p = np.float32(a * b)
    exact_err = float(np.float64(a) * np.float64(b) - np.float64(p))
    assert exact_err != 0
    x, y = np.float32(2.0**-70), np.float32(2.0**-70)              # x*y = 2^-140: denormal
    inp = np.array([a, b, p, x, y], np.float32)

    def run(**kw):
        out = np.zeros(3, np.float32)
        with emu_options(**kw):
            k(1, 1, (inp, out))
        return out

    default = run()
    if M.cpu_has_fma():
        assert default[0] == np.float32(exact_err)                 # contracted: a*b - p in one rounding
    assert default[1] == 0 and default[2] == 0                     # __fmul_rn never fused; denormal flushed
    plain = run(fmad=False, ftz=False)
    assert plain[0] == 0 and plain[1] == 0 and plain[2] == np.float32(2.0**-140)


def test_fast_math_intrinsics_are_the_gpu_approximations(mod):
    k = mod.get_function("intrinsics")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0.01, 80, 4000), [2.0**126 * 1.5, 2.0**127, 1.0, 4.0]]).astype(np.float32)
    n = len(x)
    out = np.zeros((7, n), np.float32)
    with emu_options(seed=1):
        k((n + 127) // 128, 128, (x, out, np.int32(n)))
    xd = x.astype(np.float64)

    def ulps(got, want):
        want32 = want.astype(np.float32)
        return np.abs(got.view(np.int32).astype(np.int64) - want32.view(np.int32).astype(np.int64))

    fin = xd < 88
    e = ulps(out[0][fin], np.exp(xd[fin]))
    assert e.max() <= 2 + np.floor(1.173 * xd[fin].max()) and e.max() > 8      # error grows with |x|, as on a GPU
    d = ulps(out[1][:-4], 1 / xd[:-4])
    assert d.max() <= 2 and d.max() >= 1                           # not the correctly rounded 1/x
    np.testing.assert_array_equal(out[1][-4:-2], 0.0)              # __fdividef: 0 for 2^126 < |y| < 2^128
    r = ulps(out[2], 1 / np.sqrt(xd))
    assert r.max() <= 2 and r.max() >= 1
    near1 = (xd >= 0.5) & (xd <= 2)
    assert np.abs(out[3][near1] - np.log(xd[near1])).max() <= 2.0**-21.41 * 1.01
    small = np.abs(xd) <= np.pi
    assert np.abs(out[4][small] - np.sin(xd[small])).max() <= 2.0**-21.41
    assert np.abs(out[5][small] - np.cos(xd[small])).max() <= 2.0**-21.41
    p = out[6][fin] / (xd[fin] ** 1.5) - 1
    assert np.abs(p).max() < 1e-4
    # deterministic: the same input gives the same answer
    out2 = np.zeros_like(out)
    with emu_options(seed=1, order="reverse"):
        k((n + 127) // 128, 128, (x, out2, np.int32(n)))
    np.testing.assert_array_equal(out, out2)


def test_random_block_order_shows_a_dependence_between_blocks(mod):
    k = mod.get_function("chain_blocks")

    def run(**kw):
        y = np.zeros(9, np.int32)
        with emu_options(**kw):
            k(8, 32, (y,))
        return y

    np.testing.assert_array_equal(run(blocks="forward"), np.arange(9))    # works only in this order
    assert not np.array_equal(run(), np.arange(9))                        # the default: random blocks
    with pytest.raises(CudaError, match=r"race on y\[\d\] .* blocks of a grid are not ordered"):
        run(race=True, blocks="forward")                                  # and the race check says why


def test_race_check_finds_a_missing_syncwarp_in_attention(tmp_path):
    """attn_prefill publishes each lane's probability in shared memory and reads all 32 after a
    __syncwarp. Without it the values still flow through shuffles in the same loop, which the
    emulator used to treat as fences; the race check names the array and the threads."""
    src = (M.CUDA_DIR / "attention.cu").read_text()
    publish = re.compile(r"(pw\[warp\]\[lane\] = p;\s*)__syncwarp\(\);")
    assert len(publish.findall(src)) == 1
    broken = tmp_path / "attention_no_syncwarp.cu"
    broken.write_text(publish.sub(r"\1;", src))
    rng = np.random.default_rng(0)
    n_tok, hd = 9, 64
    q = rng.standard_normal((n_tok, 1, hd)).astype(np.float32)
    k = rng.standard_normal((n_tok, 1, hd)).astype(np.float16)
    v = rng.standard_normal((n_tok, 1, hd)).astype(np.float16)

    def run(source):
        y = np.zeros_like(q)
        with emu_options(race=True, order="random", seed=1):   # ops.attention_prefill's launch
            M.load(source, emulate=True).get_function("attn_prefill_64")(
                (3, 1), 128, (q, k, v, y, np.int32(n_tok), np.int32(1), np.int32(1), np.int32(hd), np.int32(0),
                              np.int32(0), np.float32(0.125), np.float32(0.0)))
        return y

    np.testing.assert_allclose(run(str(M.CUDA_DIR / "attention.cu")),
                               ref.attention(q, k, v, 0, 0.125, None, None), rtol=1e-4, atol=2e-5)
    with pytest.raises(CudaError, match=r"race on __shared__ pw \(byte \d+\): block \(\d,0,0\) thread "
                                        r"\(\d+,0,0\) (reads|writes) .* thread \(\d+,0,0\) (read|wrote)"):
        run(str(broken))


def test_static_shared_in_templates_is_per_block_and_limited(mod):
    """Static __shared__ inside a template lived in .bss (g++ ignores the section attribute
    there): one copy for all blocks, never poisoned. The loader now puts it in a per-launch arena."""
    y = np.zeros(2, np.float32)
    with emu_options(blocks="forward"):
        mod.get_function("tmpl_shared")(2, 1, (y,))
    assert y[0] == 1.0 and np.isnan(y[1])          # block 1 reads the poison, not block 0's value
    k = mod.get_function("big_shared")
    y = np.zeros(32, np.float32)
    k(1, 32, (y,), shared_mem=8 * 1024)            # 40 + 8 KiB: fits
    np.testing.assert_array_equal(y, 3.0)
    with pytest.raises(CudaError, match=r"__shared__ s: 40960 bytes of static shared memory with 9216 "
                                        r"dynamic exceed 48 KiB"):
        k(1, 32, (y,), shared_mem=9 * 1024)

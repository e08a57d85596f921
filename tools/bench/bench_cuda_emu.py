"""Cost of the CUDA emulator (runtime/cuda/emu/cuda_emu.h): ns per emulated thread for an
elementwise kernel without barriers, per thread for a block-reduction kernel (rms_norm: two
warp reductions and two barriers per thread), and Python overhead per launch. Medians of 5.

    python -m tools.bench.bench_cuda_emu
"""
import statistics
import time

import numpy as np

from runtime.cuda import module as M
from runtime.cuda import ops


def _median(fn, reps=5):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    M.set_emulation(True)
    rng = np.random.default_rng(0)
    for n in (4096, 1 << 20):
        g = rng.standard_normal(n).astype(np.float32)
        dt = _median(lambda: ops.swiglu(g, g))
        print(f"swiglu, {n} threads: {dt * 1e3:.2f} ms, {dt / n * 1e9:.0f} ns/thread")
    x = rng.standard_normal((64, 4096)).astype(np.float32)
    dt = _median(lambda: ops.rms_norm(x, None, 1e-5))
    print(f"rms_norm, 64 blocks x 256 threads: {dt * 1e3:.2f} ms, {dt / (64 * 256) * 1e9:.0f} ns/thread")
    k = M.load("elementwise").get_function("scale_f32")
    y = np.zeros(1, np.float32)
    dt = _median(lambda: [k(1, 1, (y, y, np.float32(1), np.int64(1))) for _ in range(200)]) / 200
    print(f"one 1-thread launch: {dt * 1e6:.1f} us")


if __name__ == "__main__":
    main()

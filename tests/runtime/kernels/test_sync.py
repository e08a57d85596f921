"""runtime/kernels/sync.py: phases of claimed items inside one parallel region give the serial
result with any thread count, including fewer threads than region iterations (no deadlock)."""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from runtime.kernels.sync import atomic_load, claim, done, fetch_add, wait_for


@njit(parallel=True)
def _phases(cnt, out, n_items, n_phase, n_thr):
    """out[p, i] = 1 + out[p - 1, i], phase by phase: wrong if a phase starts before the last ends."""
    for i in range(cnt.shape[0]):
        cnt[i] = 0
    for _w in prange(n_thr):
        for p in range(n_phase):
            while True:
                i = claim(cnt, 2 * p)
                if i >= n_items:
                    break
                out[p, (i * 7) % n_items] = 1 + (out[p - 1, (i * 7 + 3) % n_items] if p > 0 else 0)
                done(cnt, 2 * p + 1)
            wait_for(cnt, 2 * p + 1, n_items, 100)


@njit
def _counter(a):
    old = fetch_add(a, 1, 5)
    return old, atomic_load(a, 1)


def test_atomics():
    a = np.array([0, 7, 0], np.int64)
    assert _counter(a) == (7, 12) and a[1] == 12


def test_phases_any_thread_count():
    cnt = np.zeros(40, np.int64)
    before = numba.get_num_threads()
    try:
        for threads, n_thr in ((1, 1), (1, 4), (min(2, numba.config.NUMBA_NUM_THREADS), 2),
                               (min(2, numba.config.NUMBA_NUM_THREADS), 5)):
            numba.set_num_threads(threads)           # n_thr > threads: one thread runs several iterations
            out = np.zeros((20, 13), np.int64)
            _phases(cnt, out, 13, 20, n_thr)
            assert (out[-1] == 20).all(), (threads, n_thr)
            assert (cnt[1::2] == 13).all()
    finally:
        numba.set_num_threads(before)

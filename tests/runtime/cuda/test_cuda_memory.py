"""GPU memory accounting (runtime/plan.py) against what the CUDA backend allocates, under
emulation: the default budget (free memory measured after the context exists) does not count
the CUDA context a second time, the budget is enforced on CuPy's pool, and the plan's scratch
bounds the peak of what a prefill, its logits for every row and decode steps allocate (numpy
reports its buffers to tracemalloc: emulated device memory is host memory)."""
from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest

from runtime.device import DeviceOptions
from runtime.loader import load
from runtime.plan import CUBLAS_BYTES, CUDA_CONTEXT_BYTES, SCRATCH_SLACK, place_model
from tests.helpers import tiny_models as T

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")


@pytest.fixture(scope="module", autouse=True)
def emulate(cuda_emulation):
    pass


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return T.write_tiny(tmp_path_factory.mktemp("mem") / "llama.gguf", "llama", T.LLAMA_BLOCKS)


def test_context_counted_once_and_budget_enforced(model_path):
    """probe() measures free memory after creating the context (cudaSetDevice does since CUDA
    12): the default budget then leaves only cuBLAS's part to come; an explicit budget still
    holds the whole context. Either way CuPy's pool is limited to the budget less it."""
    m = load(str(model_path), with_tokenizer=False)
    p = place_model(m, DeviceOptions("cuda", "all"), 32)
    assert p.context_bytes == CUBLAS_BYTES
    assert m.out_backend.memory_limit == p.budget - CUBLAS_BYTES
    p = place_model(m, DeviceOptions("cuda", "all", "2GiB"), 32)
    assert p.context_bytes == CUDA_CONTEXT_BYTES
    assert m.out_backend.memory_limit == (2 << 30) - CUDA_CONTEXT_BYTES


@pytest.mark.parametrize("numerics", ["exact", "fast"])
def test_plan_bounds_the_emulated_peak(model_path, numerics):
    """The planned scratch (without its slack) plus the KV cache bound the bytes allocated
    during a full n_batch prefill with every row's logits, then decode steps near the end of the
    context (attention partials at their largest)."""
    from runtime.plan import scratch_parts
    n_ctx = 300
    m = load(str(model_path), with_tokenizer=False)
    p = place_model(m, DeviceOptions("cuda", "all", numerics=numerics), n_ctx, n_batch=n_ctx - 8)
    parts = scratch_parts(m.hp, n_ctx, n_ctx - 8, m.gguf.tensors)
    assert p.scratch == sum(parts.values()) + SCRATCH_SLACK
    kv = p.totals()[p.device]["kv"]
    ids = np.random.default_rng(0).integers(1, 255, n_ctx).astype(np.int32)
    warm = m.new_cache(n_ctx)                  # compiles and caches (Numba, emulator builds) first
    m.logits(m.forward(list(ids[:10]), warm), host=False)
    m.logits(m.forward([1], warm, out_rows=-1), host=False)
    del warm
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        cache = m.new_cache(n_ctx)
        h = m.forward(list(ids[:n_ctx - 8]), cache, out_rows=None)
        m.logits(h, host=False)
        del h
        for t in ids[n_ctx - 8:]:
            m.logits(m.forward([int(t)], cache, out_rows=-1), host=False)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    planned = kv + sum(parts.values())
    assert peak <= planned, f"allocated {peak} bytes at the peak, planned {planned}: {parts}"

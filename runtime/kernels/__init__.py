"""Numba CPU kernels behind ``runtime.backend.CPUBackend`` (one module per concern).

- ``matmul``:    y = x @ W.T dispatch (decode / prefill), get_rows (``dequantize``); builds the
                 per-type kernels on first use
- ``qdot``:      the integer decode kernel, one per weight type (``row_dot_of``)
- ``simd``:      LLVM vector-IR intrinsics the kernels inline (int8 block dots, f16/bf16 rows)
- ``act``:       activation quantizers (Q8_0 / Q8_1 / Q8_K, as ggml-cpu converts x)
- ``dequant``:   F16/BF16 rows; the block dequantizers of ``quant.fast.blocks``, re-exported
- ``norm``:      RMS norm (double accumulation like ggml)
- ``rope``:      RoPE with ggml's float32 theta recurrence
- ``attention``: causal GQA attention, float64 BLAS rounded once to float32
- ``glu``:       SwiGLU / GeGLU
- ``pool``:      the thread pool for GIL-free work (GEMM tiles, attention, GLU)
- ``sync``:      atomic counters and a bounded-spin wait for phases inside one parallel region
- ``warm``:      compile only what a model needs, the first-run notice, ``ggufkit warmup``

Every kernel has a numpy reference of the same name in ``runtime.reference``.
"""

import os
from pathlib import Path

from quant.fast import SOURCES as _QUANT_SOURCES
from quant.fast import cache_by_sources
from quant.types import BY_ID

# Numba caches these kernels under a directory keyed on every source they inline (this package,
# quant/fast's block functions, the type table) and on the SIMD route switch (quant/fast/_cache.py)
SOURCE_KEY = cache_by_sources(Path(__file__).resolve().parent, (Path(__file__).resolve().parent,) + _QUANT_SOURCES,
                              os.environ.get("GGUFKIT_GENERIC_SIMD", ""))

from runtime.kernels.dequant import BLOCKS  # noqa: E402 (after the cache is keyed)

# ggml type names with a Numba matmul / get_rows path (F32/F16/BF16 and the block dequantizers)
MATMUL_TYPES = tuple(BY_ID[t].name for t in sorted(BLOCKS))

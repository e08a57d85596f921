"""Launchers for the quantized-weight kernels of ``quants.cu``: y = x @ W.T with W packed.

    y = matmul(w, "Q4_K", n_out, n_in, x)    # x f32[n_tok, n_in] -> y f32[n_tok, n_out]
    y = matvec(w, "Q4_K", n_out, n_in, x)    # decode: n_tok <= 8 per launch
    e = get_rows(w, "Q6_K", n_in, ids)       # embedding rows -> f32[len(ids), n_in]

``w`` is the tensor's packed bytes on the device (u8[n_out, row_bytes] or flat), ``x`` and
``ids`` device arrays: CuPy arrays on a GPU, numpy arrays under emulation
(``GGUFKIT_CUDA_EMULATE=1``), where the cuBLAS product runs as a numpy matmul.

- Decode (n_tok <= MATVEC_MAX_TOKENS): quantize x to q8_1 blocks, then one fused
  dequantize-and-dot kernel per 8 tokens (``mmvq_<type>``: int8 lanes and __dp4a;
  ``mmv_<f32|f16|bf16>``: float dots with x as is).
- Prefill: dequantize tiles of rows to f16 (``dequant_<type>``) and multiply with cuBLAS
  (f16 inputs, f32 accumulation and output); F16 weights go to cuBLAS as they are; F32 and
  BF16 weights as f32 tiles (f16 would round or overflow them).

Numpy references: ``runtime.reference.matmul`` / ``get_rows`` and quant's Q8_1 quantizer
(tests/test_cuda_quant.py states the tolerances).
"""

from __future__ import annotations

import numpy as np

from quant.types import TYPES, get_type
from runtime.cuda.module import CudaError, emulating, load

SOURCE = "quants"
THREADS = 128              # MMVQ_THREADS in quants.cu: one CTA of 4 warps per output row
MATVEC_MAX_TOKENS = 8      # MMVQ_MAXT
Q8_1_BYTES = 36            # block_q8_1: d:2 s:2 qs:32
TILE_BYTES = 32 << 20      # f16 bytes of one dequantized weight tile

FLOAT_TYPES = ("F32", "F16", "BF16")
# ggml type name -> kernel suffix in quants.cu (QK_BLOCK_TYPES)
BLOCK_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
               "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS",
               "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0")
TYPES_SUPPORTED = FLOAT_TYPES + BLOCK_TYPES


def _xp():
    if emulating():
        return np
    import cupy
    return cupy


def _module():
    return load(SOURCE)


def _check(qtype: str, n_in: int) -> str:
    name = get_type(qtype).name
    if name not in TYPES_SUPPORTED:
        raise CudaError(f"no CUDA kernel for weight type {name}")
    if n_in % TYPES[name].block_size:
        raise CudaError(f"{name}: row length {n_in} is not a multiple of the block size {TYPES[name].block_size}")
    return name


def _flat_u8(w):
    return w.reshape(-1).view(np.uint8) if w.dtype != np.uint8 else w.reshape(-1)


def quantize_q8_1(x):
    """x f32[n_tok, n_in] (n_in % 32 == 0) -> u8[n_tok, n_in / 32 * 36] q8_1 blocks."""
    xp = _xp()
    x = xp.ascontiguousarray(x, dtype=np.float32)
    n_tok, n_in = x.shape
    if n_in % 32:
        raise CudaError(f"q8_1: row length {n_in} is not a multiple of 32")
    nb = n_tok * n_in // 32
    out = xp.empty((n_tok, n_in // 32 * Q8_1_BYTES), np.uint8)
    if nb:
        _module().get_function("quantize_q8_1")(((nb + 3) // 4,), (THREADS,), (x, out, np.int32(nb)))
    return out


def matvec(w, qtype: str, n_out: int, n_in: int, x):
    """Decode product: x f32[n_tok, n_in] -> f32[n_tok, n_out], fused dequantize-and-dot."""
    name = _check(qtype, n_in)
    xp = _xp()
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1, n_in)
    n_tok = x.shape[0]
    y = xp.empty((n_tok, n_out), np.float32)
    if n_tok == 0 or n_out == 0:
        return y
    w = _flat_u8(w)
    mod = _module()
    for t0 in range(0, n_tok, MATVEC_MAX_TOKENS):
        xt = x[t0:t0 + MATVEC_MAX_TOKENS]
        nt = xt.shape[0]
        yt = y if nt == n_tok else xp.empty((nt, n_out), np.float32)
        if name in FLOAT_TYPES:
            k = mod.get_function("mmv_" + name.lower())
            k((n_out,), (THREADS,), (w, xt, yt, np.int32(n_out), np.int32(n_in), np.int32(nt)))
        else:
            xq = quantize_q8_1(xt)
            k = mod.get_function("mmvq_" + name.lower())
            k((n_out,), (THREADS,), (w, xq, yt, np.int32(n_out), np.int32(n_in), np.int32(nt)))
        if yt is not y:
            y[t0:t0 + nt] = yt
    return y


def dequantize(w, qtype: str, n_in: int, ids=None, row0: int = 0, n_rows: int | None = None,
               dtype=np.float16):
    """Rows ``ids`` (i32 device array) or ``row0 .. row0 + n_rows`` -> f16|f32[n, n_in]."""
    name = _check(qtype, n_in)
    xp = _xp()
    n = int(ids.shape[0]) if ids is not None else int(n_rows)
    out = xp.empty((n, n_in), dtype)
    if n == 0 or n_in == 0:
        return out
    if ids is not None:
        ids = xp.ascontiguousarray(ids, dtype=np.int32)
    per_thread = 1 if name in FLOAT_TYPES else 32
    ny = (n_in // per_thread + THREADS - 1) // THREADS
    k = _module().get_function("dequant_" + name.lower())
    k((n, ny), (THREADS,), (_flat_u8(w), ids, np.int32(row0), np.int32(n_in), out,
                            np.int32(1 if np.dtype(dtype) == np.float16 else 0)))
    return out


def get_rows(w, qtype: str, n_in: int, ids):
    """Embedding lookup: f32[len(ids), n_in] (bit-equal to the numpy dequantization)."""
    return dequantize(w, qtype, n_in, ids=ids, dtype=np.float32)


def _gemm(x, wt):
    """x f16|f32[n_tok, n_in] @ wt[n_rows, n_in].T -> f32[n_tok, n_rows]; f32 accumulation."""
    if emulating():
        return x.astype(np.float32) @ wt.astype(np.float32).T
    import cupy
    if wt.dtype == np.float32:
        return cupy.matmul(x, wt.T)
    from cupy_backends.cuda.libs import cublas
    n_tok, n_in = x.shape
    n_rows = wt.shape[0]
    out = cupy.empty((n_tok, n_rows), np.float32)
    handle = cupy.cuda.device.get_cublas_handle()
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    # column-major view: out.T[n_rows, n_tok] = wt[n_rows, n_in] @ x.T[n_in, n_tok]
    cublas.gemmEx(handle, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, n_rows, n_tok, n_in,
                  one.ctypes.data, wt.data.ptr, cupy.cuda.runtime.CUDA_R_16F, n_in,
                  x.data.ptr, cupy.cuda.runtime.CUDA_R_16F, n_in,
                  zero.ctypes.data, out.data.ptr, cupy.cuda.runtime.CUDA_R_32F, n_rows,
                  cublas.CUBLAS_COMPUTE_32F, cublas.CUBLAS_GEMM_DEFAULT)
    return out


def matmul_tiled(w, qtype: str, n_out: int, n_in: int, x):
    """Prefill: f16 (F32/BF16: f32) tiles of dequantized rows times x with cuBLAS."""
    name = _check(qtype, n_in)
    xp = _xp()
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1, n_in)
    wide = name in ("F32", "BF16")
    xa = x if wide else x.astype(np.float16)
    if name == "F16":
        return _gemm(xa, _flat_u8(w).view(np.float16).reshape(n_out, n_in))
    if name == "F32":
        return _gemm(xa, _flat_u8(w).view(np.float32).reshape(n_out, n_in))
    y = xp.empty((x.shape[0], n_out), np.float32)
    tile = max(64, TILE_BYTES // (2 * max(1, n_in)))
    for r0 in range(0, n_out, tile):
        r1 = min(n_out, r0 + tile)
        wt = dequantize(w, name, n_in, row0=r0, n_rows=r1 - r0, dtype=np.float32 if wide else np.float16)
        y[:, r0:r1] = _gemm(xa, wt)
    return y


def matmul(w, qtype: str, n_out: int, n_in: int, x):
    """y = x @ W.T: matvec for n_tok <= 8, dequantized tiles and cuBLAS above."""
    x2 = x.reshape(-1, n_in)
    if x2.shape[0] <= MATVEC_MAX_TOKENS:
        return matvec(w, qtype, n_out, n_in, x2)
    return matmul_tiled(w, qtype, n_out, n_in, x2)

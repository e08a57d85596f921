"""Launchers for the quantized-weight kernels of ``quants.cu``: y = x @ W.T with W packed.

    y = matmul(w, "Q4_K", n_out, n_in, x)    # x f32[n_tok, n_in] -> y f32[n_tok, n_out]
    y = matvec(w, "Q4_K", n_out, n_in, x)    # decode: n_tok <= 8 per launch
    e = get_rows(w, "Q6_K", n_in, ids)       # embedding rows -> f32[len(ids), n_in]

``w`` is the tensor's packed bytes on the device (u8[n_out, row_bytes] or flat), ``x`` and
``ids`` device arrays. As in runtime.cuda.ops, the side is the arrays': CuPy arrays run on
the GPU, numpy arrays run the emulated kernels (g++, runtime.cuda.module), where the cuBLAS
product is a numpy matmul.

- Decode (n_tok <= MATVEC_MAX_TOKENS): quantize x to int8 blocks of 32, then one fused
  dequantize-and-dot kernel per 8 tokens (``mmvq_<type>``: int8 lanes and __dp4a;
  ``mmv_<f32|f16|bf16>``: float dots).
- Prefill: dequantize tiles of rows (``dequant_<type>``) and multiply with cuBLAS.

``numerics`` (CUDA_NUMERICS) says how x is converted, as in the two ggml backends:
- "fast" (default): decode as ggml-cuda: ggml's block_q8_1 (quantize_q8_1) for every quantized
  type, x as is for float weights; prefill: x as "exact" converts it, then f16 tiles and that x
  rounded to f16 through cuBLAS (tensor cores), f32 accumulation (F32/BF16: f32 tiles).
- "exact": as ggml-cpu and this project's CPU backend (runtime.reference.
  activations_as_seen): Q8_0 blocks (AVX rounding) or Q8_K (per 256) for the weight type,
  x rounded to f16/bf16 for F16/BF16 weights; prefill: f32 tiles times that x, f32 GEMM.
  The result is the CPU backend's up to float summation order.

Numpy references: ``runtime.reference.matmul`` / ``get_rows`` and quant's Q8_1 quantizer
(tests/runtime/cuda/test_cuda_quant.py states the tolerances).
"""

from __future__ import annotations

import numpy as np

from quant.ref.float import bf16_bits
from quant.types import KERNEL_TYPES, TYPES, get_type, vec_dot_type
from runtime.backend import NUMERICS
from runtime.cuda.module import CudaError
from runtime.cuda.xp import array_module, is_host, kernel, workspace

SOURCE = "quants"
THREADS = 128              # MMVQ_THREADS / DEQ_THREADS in quants.cu: CTAs of 4 warps
MATVEC_MAX_TOKENS = 8      # MMVQ_MAXT
TILE_BYTES = 32 << 20      # f16 bytes of one dequantized weight tile

# The activation blocks the int8 kernels read: ggml's block_q8_1 {d:2 s:2 qs:32}, or the
# CPU-exact blocks {d:4 (f32) qs:32} of quantize_act_cpu, of the same size (QK_ACT_BYTES in
# quants.cu)
ACT_BLOCK = TYPES["Q8_1"].block_size
Q8_1_BYTES = TYPES["Q8_1"].type_size

# Every type with a runtime kernel (quant/types.py's kernel column), by kernel suffix
# name.lower(): quants.cu instantiates mmv_/dequant_ for FLOAT_TYPES (its QK_FLOAT_TYPES list)
# and mmvq_/dequant_ for BLOCK_TYPES (QK_BLOCK_TYPES); tests/runtime/cuda/test_cuda_quant.py checks the lists.
TYPES_SUPPORTED = KERNEL_TYPES
FLOAT_TYPES = tuple(n for n in KERNEL_TYPES if not TYPES[n].is_quantized)
BLOCK_TYPES = tuple(n for n in KERNEL_TYPES if TYPES[n].is_quantized)
CUDA_NUMERICS = tuple(n for n in NUMERICS if n != "float")   # runtime.backend.NUMERICS: exact, fast
# "fast" by default: ggml-cuda's choice (q8_1 activations with finer scales, f16 prefill GEMM on
# tensor cores; CUDABackend adds float attention and silu), perplexity within 1e-3 of the CPU's;
# "exact" gives the CPU backend's results up to float summation order (within 1e-4) at the cost
# of an f32 prefill GEMM and FP64 attention.
DEFAULT_NUMERICS = "fast"


def _check(qtype: str, n_in: int) -> str:
    name = get_type(qtype).name
    if name not in TYPES_SUPPORTED:
        raise CudaError(f"no CUDA kernel for weight type {name}")
    if n_in % TYPES[name].block_size:
        raise CudaError(f"{name}: row length {n_in} is not a multiple of the block size {TYPES[name].block_size}")
    return name


def _flat_u8(w):
    return w.reshape(-1).view(np.uint8) if w.dtype != np.uint8 else w.reshape(-1)


# Activation formats (common.cuh's ACT_*): what a decode matvec's int8 kernel reads, and what the
# fused producers (runtime.cuda.ops: norm, GLU, attention output) write beside their f32 output
ACT_NONE, ACT_Q8_1, ACT_Q8_0_CPU, ACT_Q8_K_CPU = 0, 1, 2, 3
ACT_UNIT = {ACT_Q8_1: 32, ACT_Q8_0_CPU: 32, ACT_Q8_K_CPU: 256}


def act_mode(qtype: str, numerics: str) -> int:
    """The activation format the decode matvec of a ``qtype`` weight reads under ``numerics``:
    ACT_NONE for float weights (they take the f32 activations), ACT_Q8_1 ("fast"), or ggml-cpu's
    format for the type's vec_dot_type ("exact": ACT_Q8_0_CPU per 32 or ACT_Q8_K_CPU per 256)."""
    name = _check(qtype, TYPES[get_type(qtype).name].block_size)
    if name in FLOAT_TYPES:
        return ACT_NONE
    if not check_numerics(numerics):
        return ACT_Q8_1
    return ACT_Q8_K_CPU if vec_dot_type(name) == "Q8_K" else ACT_Q8_0_CPU


def quantize_act(x, mode: int, out=None):
    """x f32[n_tok, n_in] -> u8[n_tok, act_row_bytes(n_in)] in activation format ``mode``."""
    if mode == ACT_Q8_1:
        return quantize_q8_1(x, out)
    return quantize_act_cpu(x, "Q8_K" if mode == ACT_Q8_K_CPU else "Q8_0", out)


def act_row_bytes(n_in: int) -> int:
    """Bytes of one token's activation blocks (q8_1 or CPU-exact)."""
    return n_in // ACT_BLOCK * Q8_1_BYTES


def quantize_q8_1(x, out=None):
    """x f32[n_tok, n_in] (n_in % 32 == 0) -> u8[n_tok, act_row_bytes(n_in)] q8_1 blocks."""
    xp = array_module(x)
    x = xp.ascontiguousarray(x, dtype=np.float32)
    n_tok, n_in = x.shape
    if n_in % ACT_BLOCK:
        raise CudaError(f"q8_1: row length {n_in} is not a multiple of {ACT_BLOCK}")
    nb = n_tok * n_in // ACT_BLOCK
    if out is None:
        out = xp.empty((n_tok, act_row_bytes(n_in)), np.uint8)
    if nb:
        kernel(SOURCE, "quantize_q8_1", x)(((nb + 3) // 4,), (THREADS,), (x, out, np.int32(nb)))
    return out


def quantize_act_cpu(x, vtype: str, out=None):
    """x f32[n_tok, n_in] -> u8[n_tok, act_row_bytes(n_in)] blocks {d:4 (f32) qs:32}: the
    activations exactly as ggml-cpu quantizes them for vec_dot_type ``vtype`` (Q8_0, Q8_1: per
    32, AVX rounding; Q8_K: per 256); runtime.reference.quantize_activations is the reference."""
    xp = array_module(x)
    x = xp.ascontiguousarray(x, dtype=np.float32)
    n_tok, n_in = x.shape
    if vtype not in ("Q8_0", "Q8_1", "Q8_K"):
        raise CudaError(f"no int8 activation format {vtype}")
    per = TYPES[vtype].block_size
    if n_in % per:
        raise CudaError(f"{vtype}: row length {n_in} is not a multiple of {per}")
    if out is None:
        out = xp.empty((n_tok, act_row_bytes(n_in)), np.uint8)
    nu = n_tok * n_in // per
    if nu:
        mode = np.int32(2 if vtype == "Q8_K" else 0)
        kernel(SOURCE, "quantize_q8_cpu", x)(((nu + 3) // 4,), (THREADS,), (x, out, np.int32(nu), mode))
    return out


def act_blocks_to_float(xq, n_in: int, d_f32: bool):
    """Activation blocks (q8_1, or quantize_act_cpu's) -> f32[n_tok, n_in] = q * d."""
    xp = array_module(xq)
    b = xq.reshape(-1, n_in // ACT_BLOCK, Q8_1_BYTES)
    d = xp.ascontiguousarray(b[..., 0:4]).view(np.float32) if d_f32 else \
        xp.ascontiguousarray(b[..., 0:2]).view(np.float16).astype(np.float32)
    q = xp.ascontiguousarray(b[..., 4:]).view(np.int8).astype(np.float32)
    return (q * d).reshape(-1, n_in)


def _cpu_float_act(x, name: str):
    """x as ggml-cpu converts it for F16 / BF16 weights (rounded to that type), else x."""
    if name == "F16":
        return x.astype(np.float16).astype(np.float32)
    if name == "BF16":
        return (bf16_bits(x, array_module(x)).astype(np.uint32) << 16).view(np.float32)
    return x


def rows_per_cta(n_in: int) -> int:
    """Output rows per 128-thread CTA: 4 (a warp per row) for rows of at most 32 chunks of 32
    weights, 2 up to 64 chunks, else 1 (the 128 threads of the CTA share the row)."""
    n = n_in // 32
    return 4 if n <= 32 else 2 if n <= 64 else 1


def check_numerics(numerics: str) -> bool:
    """True for "exact" (the CPU backend's activations), False for "fast" (ggml-cuda's)."""
    if numerics not in CUDA_NUMERICS:
        raise CudaError(f"unknown CUDA numerics {numerics!r} ({', '.join(CUDA_NUMERICS)})")
    return numerics == "exact"


def matvec(w, qtype: str, n_out: int, n_in: int, x, numerics: str = DEFAULT_NUMERICS, out=None, xq=None):
    """Decode product: x f32[n_tok, n_in] -> f32[n_tok, n_out], fused dequantize-and-dot.

    numerics "fast": activations as ggml-cuda quantizes them (q8_1 per 32; float weights
    use x as is). "exact": as ggml-cpu (and this project's CPU backend) converts them for the
    weight type (Q8_0/Q8_K int8 blocks, x rounded to f16/bf16 for F16/BF16 weights), so the
    result is the CPU backend's up to float summation order. ``out``: an f32[n_tok, n_out] to
    write into; the activation blocks live in a reused workspace, so a decode step allocates
    nothing (CUDA-graph friendly). ``xq``: x already in the weight's activation format
    (``act_mode``; u8[n_tok, act_row_bytes(n_in)], n_tok <= MATVEC_MAX_TOKENS, written by a
    fused producer): no quantize launch."""
    name = _check(qtype, n_in)
    exact = check_numerics(numerics)
    xp = array_module(w)
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1, n_in)
    n_tok = x.shape[0]
    if out is not None and (tuple(out.shape) != (n_tok, n_out) or out.dtype != np.float32
                            or not out.flags.c_contiguous):
        raise CudaError(f"out is {out.dtype}{tuple(out.shape)}, expected contiguous float32{(n_tok, n_out)}")
    y = xp.empty((n_tok, n_out), np.float32) if out is None else out
    if n_tok == 0 or n_out == 0:
        return y
    w = _flat_u8(w)
    rows = rows_per_cta(n_in)
    grid = ((n_out + rows - 1) // rows,)
    for t0 in range(0, n_tok, MATVEC_MAX_TOKENS):
        xt = x[t0:t0 + MATVEC_MAX_TOKENS]
        nt = xt.shape[0]
        yt = y if nt == n_tok else xp.empty((nt, n_out), np.float32)
        if name in FLOAT_TYPES:
            xround = {"F16": 1, "BF16": 2}.get(name, 0) if exact else 0
            k = kernel(SOURCE, "mmv_" + name.lower(), w)
            k(grid, (THREADS,), (w, xt, yt, np.int32(n_out), np.int32(n_in), np.int32(nt), np.int32(rows),
                                 np.int32(xround)))
        else:
            if xq is not None and nt == n_tok:
                xb = xq
            else:
                ws = workspace(xt, "q8_act", (nt, act_row_bytes(n_in)), np.uint8)
                xb = quantize_act_cpu(xt, vec_dot_type(name), ws) if exact else quantize_q8_1(xt, ws)
            k = kernel(SOURCE, "mmvq_" + name.lower(), w)
            k(grid, (THREADS,), (w, xb, yt, np.int32(n_out), np.int32(n_in), np.int32(nt), np.int32(rows),
                                 np.int32(exact)))
        if yt is not y:
            y[t0:t0 + nt] = yt
    return y


def dequantize(w, qtype: str, n_in: int, ids=None, row0: int = 0, n_rows: int | None = None,
               dtype=np.float16):
    """Rows ``ids`` (i32 device array) or ``row0 .. row0 + n_rows`` -> f16|f32[n, n_in]."""
    name = _check(qtype, n_in)
    xp = array_module(w)
    n = int(ids.shape[0]) if ids is not None else int(n_rows)
    out = xp.empty((n, n_in), dtype)
    if n == 0 or n_in == 0:
        return out
    if ids is not None:
        ids = xp.ascontiguousarray(ids, dtype=np.int32)
    per_thread = 1 if name in FLOAT_TYPES else 32
    ny = (n_in // per_thread + THREADS - 1) // THREADS
    k = kernel(SOURCE, "dequant_" + name.lower(), w)
    k((n, ny), (THREADS,), (_flat_u8(w), ids, np.int32(row0), np.int32(n_in), out,
                            np.int32(1 if np.dtype(dtype) == np.float16 else 0)))
    return out


def get_rows(w, qtype: str, n_in: int, ids):
    """Embedding lookup: f32[len(ids), n_in] (bit-equal to the numpy dequantization)."""
    return dequantize(w, qtype, n_in, ids=ids, dtype=np.float32)


def _gemm(x, wt):
    """x f16|f32[n_tok, n_in] @ wt[n_rows, n_in].T -> f32[n_tok, n_rows]; f32 accumulation."""
    if is_host(x):
        return x.astype(np.float32) @ wt.astype(np.float32).T
    import cupy
    if wt.dtype == np.float32:
        return cupy.matmul(x, wt.T)
    from cupy_backends.cuda.libs import cublas
    n_tok, n_in = x.shape
    n_rows = wt.shape[0]
    out = cupy.empty((n_tok, n_rows), np.float32)
    handle = cupy.cuda.device.get_cublas_handle()      # CuPy's shared handle: leave it as found
    stream, mode = cublas.getStream(handle), cublas.getPointerMode(handle)
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)    # alpha and beta are host scalars
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    try:
        # column-major view: out.T[n_rows, n_tok] = wt[n_rows, n_in] @ x.T[n_in, n_tok]
        cublas.gemmEx(handle, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, n_rows, n_tok, n_in,
                      one.ctypes.data, wt.data.ptr, cupy.cuda.runtime.CUDA_R_16F, n_in,
                      x.data.ptr, cupy.cuda.runtime.CUDA_R_16F, n_in,
                      zero.ctypes.data, out.data.ptr, cupy.cuda.runtime.CUDA_R_32F, n_rows,
                      cublas.CUBLAS_COMPUTE_32F, cublas.CUBLAS_GEMM_DEFAULT)
    finally:
        cublas.setPointerMode(handle, mode)
        cublas.setStream(handle, stream)
    return out


def matmul_tiled(w, qtype: str, n_out: int, n_in: int, x, numerics: str = DEFAULT_NUMERICS):
    """Prefill: tiles of dequantized rows times x with cuBLAS.

    Both numerics take x as ggml-cpu converts it for the weight type (int8 blocks of its
    vec_dot_type, f16/bf16 rounding), as the CPU backend's matmul_tiled. "exact": f32 tiles and
    an f32 GEMM. "fast" (ggml-cuda's cuBLAS path, tensor cores): f16 tiles and that x rounded to
    f16, f32 accumulation; F32 and BF16 weights as f32 tiles. (ggml-cuda rounds x itself to f16;
    the CPU's conversion costs three elementwise passes over x and moved the tiny test models'
    perplexity less: Q4_K_M 6e-4 from the CPU's instead of 1.5e-3, docs/CUDA.md.)"""
    name = _check(qtype, n_in)
    exact = check_numerics(numerics)
    xp = array_module(w)
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1, n_in)
    if name in FLOAT_TYPES:
        xa = _cpu_float_act(x, name)
    else:
        xa = act_blocks_to_float(quantize_act_cpu(x, vec_dot_type(name)), n_in, True)
    wide = exact or name in ("F32", "BF16")
    if not wide:
        xa = xa.astype(np.float16)
    if name == "F32":
        return _gemm(xa, _flat_u8(w).view(np.float32).reshape(n_out, n_in))
    if name == "F16" and not wide:
        return _gemm(xa, _flat_u8(w).view(np.float16).reshape(n_out, n_in))
    y = xp.empty((x.shape[0], n_out), np.float32)
    tile = max(64, TILE_BYTES // ((4 if wide else 2) * max(1, n_in)))
    for r0 in range(0, n_out, tile):
        r1 = min(n_out, r0 + tile)
        wt = dequantize(w, name, n_in, row0=r0, n_rows=r1 - r0, dtype=np.float32 if wide else np.float16)
        y[:, r0:r1] = _gemm(xa, wt)
    return y


def matmul(w, qtype: str, n_out: int, n_in: int, x, numerics: str = DEFAULT_NUMERICS, out=None):
    """y = x @ W.T: matvec for n_tok <= 8, dequantized tiles and cuBLAS above (see ``numerics``
    in matvec / matmul_tiled). ``out``: f32[n_tok, n_out] to write into (decode only
    avoids every allocation)."""
    x2 = x.reshape(-1, n_in)
    if x2.shape[0] <= MATVEC_MAX_TOKENS:
        return matvec(w, qtype, n_out, n_in, x2, numerics, out)
    y = matmul_tiled(w, qtype, n_out, n_in, x2, numerics)
    if out is None:
        return y
    out[...] = y
    return out

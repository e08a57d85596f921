"""Matmul dispatch: y = x @ W.T with W kept packed, and the per-type kernels it builds.

Decode (few tokens): with ggml's activations (numerics "exact"), the weight types of
``qdot.TYPES`` run the integer kernel of ``qdot.make_kernel`` on x quantized to the type's
``vec_dot_type`` (``quantize_act``); F16/BF16 (and every type with float activations) run a
float kernel (``matvec_f16``/``matvec_bf16``, the per-type ``matvec`` that dequantizes one block
into an L1-resident buffer and dots it with every token's slice of x). Parallel over chunks of
output rows.

Prefill (many tokens): ``matmul_tiled`` dequantizes a tile of rows to float32 once (the per-type
``tile`` kernel) and multiplies it with BLAS (numpy ``@``), so each weight is dequantized once
per call and reused by every token. ``dequantize`` (get_rows) uses the per-type ``rows`` kernel.

Numpy reference: ``runtime.reference.matmul`` (dequantize whole, float64 matmul).
"""

import numba
import numpy as np
from numba import njit, prange

from runtime.kernels import qdot
from runtime.kernels.pool import pool
from runtime.kernels.simd import rowdot_bf16, rowdot_f16
from runtime.kernels.act import q8_0_float, q8_k_float, quantize_q8_0_bs, quantize_q8_k_bs
from quant.fast.blocks import BF16, F16, F16_LUT, F32, deq_block_of, per_type_kernel
from runtime.kernels.dequant import BLOCKS, dequant_rows_bf16, dequant_rows_f16
from quant.types import BY_ID

# reassociation lets LLVM vectorize the float reductions; no nnan/ninf, so NaN/inf propagate
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

ROW_CHUNK = 16          # output rows per parallel work item
DECODE_MAX_TOKENS = 8   # up to this many tokens the decode kernels, whose rows are independent (so a
                        # step of up to 8 sequences gives each row the floats it gets alone)
PREFILL_MIN_TOKENS = DECODE_MAX_TOKENS + 1  # from this many tokens on, dequantize tiles and use BLAS
ACT_PARALLEL_MIN = 1 << 17  # activation elements from which act_float splits the tokens over threads
TILE_BYTES = 1 << 22    # f32 bytes of one dequantized tile (4 MiB), but at least TILE_MIN_ROWS rows:
TILE_MIN_ROWS = 512     # OpenBLAS repacks all of x for every tile, so narrow tiles of long rows lose
                        # up to 25% (K = 5632: 93-row tiles 156 GFLOP/s, 512 rows 186; tools/bench/bench_kernels.py --gemm)


# ---------------------------------------------------------------- per-type kernels, built lazily
#
# Each kernel is a closure over one constant type id calling an ``@overload`` resolved on that
# literal (``deq_block_of``, ``qdot.row_dot_of``), so it inlines only its own type's code: it
# compiles in 1-3 s, and a model compiles only its own types. Numba caches closures on disk keyed
# by the captured constants (ints only here: a captured dispatcher would miss the cache in every
# new process); each gets its own qualname, hence its own cache index file.

_KERNELS: dict = {}


def _make_matvec(qt, qk):
    def matvec_blocks(data, x, out, lut):
        """out[t, r] = sum_k deq(data[r])[k] * x[t, k] (one block type; float).

        data: uint8 [n_out, row_bytes]; x: f32 [n_tok, n_in]; out: f32 [n_tok, n_out]
        """
        n_out = data.shape[0]
        n_tok, n_in = x.shape
        nb = n_in // qk
        n_chunks = (n_out + ROW_CHUNK - 1) // ROW_CHUNK
        for c in prange(n_chunks):
            buf = np.empty(qk, np.float32)
            acc = np.empty(n_tok, np.float32)
            for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
                row = data[r]
                acc[:] = 0.0
                for b in range(nb):
                    deq_block_of(qt, row, b, buf, lut)
                    off = b * qk
                    for t in range(n_tok):
                        s = np.float32(0.0)
                        for j in range(qk):
                            s += buf[j] * x[t, off + j]
                        acc[t] += s
                for t in range(n_tok):
                    out[t, r] = acc[t]
    return per_type_kernel(matvec_blocks, qt, parallel=True, cache=True, fastmath=FASTMATH)


def _make_rows(qt, qk):
    def dequant_rows_t(data, rows, out, lut):
        """out[i] = dequantized data[rows[i]] (one block type). rows: int64 [n]; out f32 [n, n_in].
        Single-threaded: an embedding lookup is a few MB at most, less than a parallel region costs
        for one decode token (0.16-0.25 ms of a 15 ms deci-mid token when it was parallel)."""
        nb = out.shape[1] // qk
        for i in range(rows.shape[0]):
            row = data[rows[i]]
            dst = out[i].reshape((nb, qk))
            for b in range(nb):
                deq_block_of(qt, row, b, dst[b], lut)
    return per_type_kernel(dequant_rows_t, qt, cache=True, nogil=True)


def _make_tile(qt, qk):
    def dequant_tile(data, r0, out, lut):
        """out[i] = dequantized data[r0 + i], single-threaded and without the GIL, so the
        prefill's worker threads each dequantize their own tiles (one block type)."""
        nb = out.shape[1] // qk
        for i in range(out.shape[0]):
            row = data[r0 + i]
            dst = out[i].reshape((nb, qk))
            for b in range(nb):          # straight into the tile (a copy from a block buffer cost 10-40%)
                deq_block_of(qt, row, b, dst[b], lut)
    return per_type_kernel(dequant_tile, qt, nogil=True, cache=True)


@njit(nogil=True, cache=True)
def dequant_tile_f16(data, r0, out, lut):
    """F16 rows r0 .. r0 + len(out) -> f32 (single-threaded, no GIL). data: uint16 [n_rows, n_in]."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = lut[data[r0 + i, j]]


@njit(nogil=True, cache=True)
def dequant_tile_bf16(data, r0, out):
    """BF16 rows -> f32 bits (single-threaded, no GIL); out viewed as uint32."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.uint32(data[r0 + i, j]) << np.uint32(16)


_MAKERS = {"matvec": _make_matvec, "rows": _make_rows, "tile": _make_tile,
           "qdot": lambda qt, qk: qdot.make_kernel(qt)}


def kernel(kind: str, qt: int):
    """The per-type Numba kernel ``kind`` ("matvec" | "rows" | "tile" | "qdot") for block type id qt
    (built once)."""
    key = (kind, qt)
    k = _KERNELS.get(key)
    if k is None:
        k = _KERNELS[key] = _MAKERS[kind](qt, BLOCKS[qt][0])
    return k


def matvec_blocks(data, qt, qk, x, out, lut):
    """out[t, r] = sum_k deq(data[r])[k] * x[t, k] for block-quantized types (per-type kernel)."""
    kernel("matvec", qt)(data, x, out, lut)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_f16(w, x, out, lut):
    """F16 weights. w: uint16 [n_out, n_in] (fp16 bits); x f32 [n_tok, n_in]."""
    n_out, n_in = w.shape
    n_tok = x.shape[0]
    nvec = n_in // 16
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = w[r]
            for t in range(n_tok):
                s = rowdot_f16(row, 0, x[t], nvec)
                for k in range(16 * nvec, n_in):
                    s += lut[row[k]] * x[t, k]
                out[t, r] = s


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_bf16(w, x, out):
    """BF16 weights. w: uint16 [n_out, n_in] (bf16 bits); x f32 [n_tok, n_in]."""
    n_out, n_in = w.shape
    n_tok = x.shape[0]
    nvec = n_in // 16
    for c in prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        tail = np.empty(16, np.uint32)
        tv = tail.view(np.float32)
        for r in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            row = w[r]
            for t in range(n_tok):
                s = rowdot_bf16(row, 0, x[t], nvec)
                for k in range(16 * nvec, n_in):
                    tail[0] = np.uint32(row[k]) << np.uint32(16)
                    s += tv[0] * x[t, k]
                out[t, r] = s


def dequantize(data: np.ndarray, qt: int, n_in: int, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a packed tensor -> f32 [len(rows), n_in] (Numba)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if qt == F32:
        return data.view(np.float32)[rows]
    if qt == F16:
        out = np.empty((len(rows), n_in), np.float32)
        dequant_rows_f16(data.view(np.uint16), rows, out, F16_LUT)
        return out
    if qt == BF16:
        out = np.empty((len(rows), n_in), np.uint32)
        dequant_rows_bf16(data.view(np.uint16), rows, out)
        return out.view(np.float32)
    out = np.empty((len(rows), n_in), np.float32)
    kernel("rows", qt)(data, rows, out, F16_LUT)
    return out


def quantize_act(x: np.ndarray, vtype: str):
    """x f32 [n_tok, n_in] -> (xq int8, xd f32 [n_tok, n_blocks], xs int16 [n_tok, n_in/16]) like
    ggml: the int8 blocks, their scales and their 16-sums (ggml's bsums), in one Numba call."""
    n_tok, n_in = x.shape
    xq = np.empty((n_tok, n_in), np.int8)
    xs = np.empty((n_tok, n_in // 16), np.int16)
    if vtype == "Q8_K":
        xd = np.empty((n_tok, n_in // 256), np.float32)
        quantize_q8_k_bs(x, xq, xd, xs)
    else:
        xd = np.empty((n_tok, n_in // 32), np.float32)
        quantize_q8_0_bs(x, xq, xd, xs)
    return xq, xd, xs


def act_float(x: np.ndarray, qt: int) -> np.ndarray:
    """f32 [n_tok, n_in]: x as ggml converts it for weight type qt (reference.activations_as_seen)."""
    vtype = BY_ID[qt].vec_dot_type
    if vtype == "F32":
        return x
    if vtype in ("F16", "BF16"):     # rounded as ggml's fp32 -> fp16/bf16 conversion
        import quant
        return quant.dequantize(quant.quantize(x, vtype), vtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    f = q8_k_float if vtype == "Q8_K" else q8_0_float
    n_tok, n = x.shape[0], numba.get_num_threads()
    if n == 1 or x.size < ACT_PARALLEL_MIN:
        f(x, out, 0, n_tok)
    else:                                   # nogil kernel: token ranges on the GEMM threads
        step = -(-n_tok // n)
        list(pool(n).map(lambda t0: f(x, out, t0, min(n_tok, t0 + step)), range(0, n_tok, step)))
    return out


def matmul(data: np.ndarray, qt: int, n_in: int, x: np.ndarray, numerics: str = "exact") -> np.ndarray:
    """y = x @ W.T. data: uint8 [n_out, row_bytes]; x: f32 [n_tok, n_in] -> f32 [n_tok, n_out].

    numerics (``runtime.backend.NUMERICS``): "exact" converts x the way ggml-cpu does for this
    weight type (int8 blocks or fp16/bf16), which is what llama.cpp computes; "float" multiplies
    with x as is.
    """
    if numerics not in ("exact", "float"):
        raise ValueError(f"CPU numerics {numerics!r}: expected exact or float")
    exact = numerics == "exact"
    n_out = data.shape[0]
    n_tok = x.shape[0]
    if qt == F32:     # BLAS (single-threaded under our pool) on the rows split over the threads
        return gemm_nt(x, data.view(np.float32))
    if n_tok >= PREFILL_MIN_TOKENS:
        return matmul_tiled(data, qt, n_in, act_float(x, qt) if exact else x)
    out = np.empty((n_tok, n_out), np.float32)
    if exact and qt in qdot.TYPES:
        kernel("qdot", qt)(data, *quantize_act(x, BY_ID[qt].vec_dot_type), out, F16_LUT)
        return out
    xa = np.ascontiguousarray(act_float(x, qt) if exact else x)
    if qt == F16:
        matvec_f16(data.view(np.uint16), xa, out, F16_LUT)
    elif qt == BF16:
        matvec_bf16(data.view(np.uint16), xa, out)
    else:
        matvec_blocks(data, qt, BLOCKS[qt][0], xa, out, F16_LUT)
    return out


PARALLEL_GEMM_FLOPS = 1 << 24   # below this a GEMM stays on the calling thread

def gemm_nt(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T (f32) on Numba's thread count: OpenBLAS runs single-threaded (backend.set_num_threads)
    and the rows of w are split over Python threads. OpenBLAS's own pool spins while idle, which on
    shared cores cost 5x the wall time of a prefill (deci-tiny pp512 at 2 threads: 5-7 s vs 1.3 s)."""
    n = numba.get_num_threads()
    n_out = w.shape[0]
    if n == 1 or 2.0 * x.shape[0] * x.shape[1] * n_out < PARALLEL_GEMM_FLOPS or n_out < 2 * n:
        return x @ w.T
    step = (n_out + n - 1) // n
    parts = list(pool(n).map(lambda r0: x @ w[r0:r0 + step].T, range(0, n_out, step)))
    return np.concatenate(parts, axis=1)


def dequantize_tile(data: np.ndarray, qt: int, n_in: int, r0: int, r1: int) -> np.ndarray:
    """Rows r0 .. r1 of a packed tensor -> f32 [r1 - r0, n_in] on the calling thread, without
    holding the GIL where a Numba kernel does it (so several threads dequantize at once)."""
    if qt == F32:
        return data.view(np.float32)[r0:r1]
    if qt == BF16:
        out = np.empty((r1 - r0, n_in), np.uint32)
        dequant_tile_bf16(data.view(np.uint16), r0, out)
        return out.view(np.float32)
    out = np.empty((r1 - r0, n_in), np.float32)
    if qt == F16:
        dequant_tile_f16(data.view(np.uint16), r0, out, F16_LUT)
    else:
        kernel("tile", qt)(data, r0, out, F16_LUT)
    return out


def matmul_tiled(data: np.ndarray, qt: int, n_in: int, x: np.ndarray) -> np.ndarray:
    """Prefill: y = x @ W.T with W dequantized tile by tile and each tile multiplied with BLAS.

    The output rows are split into one contiguous range per thread (Numba's thread count);
    each Python thread dequantizes its own tiles (Numba, no GIL) and multiplies them with
    single-threaded OpenBLAS (no GIL), so dequantization runs in parallel with the products
    and a tile is used while it is still in cache. Every weight is dequantized once per call."""
    n_out = data.shape[0]
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_tok = x.shape[0]
    n = numba.get_num_threads()
    if n == 1 or 2.0 * n_tok * n_in * n_out < PARALLEL_GEMM_FLOPS or n_out < 2 * n:
        n = 1
    tile = max(TILE_MIN_ROWS, TILE_BYTES // (4 * n_in))
    out = np.empty((n_tok, n_out), np.float32)
    step = (n_out + n - 1) // n

    def work(a: int) -> None:
        b = min(n_out, a + step)
        for r0 in range(a, b, tile):
            r1 = min(b, r0 + tile)
            w = dequantize_tile(data, qt, n_in, r0, r1)
            if r0 == 0 and r1 == n_out:
                np.matmul(x, w.T, out=out)
            else:
                out[:, r0:r1] = x @ w.T     # (np.matmul into a strided out= would skip BLAS)

    if n == 1:
        work(0)
    else:
        list(pool(n).map(work, range(0, n_out, step)))
    return out

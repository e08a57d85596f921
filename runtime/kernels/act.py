"""Activation quantizers: x as ggml-cpu converts it before a dot with a quantized weight.

Numpy reference: ``runtime.reference.quantize_activations`` (bit-exact).

Q8_0 / Q8_1 (x86 AVX quantize_row_q8_0): blocks of 32, d = fp16(amax/127),
  q = round_half_even(x * (127/amax)).
Q8_K (quantize_row_q8_K_ref): blocks of 256, iscale = -127/max (max = signed value
  with the largest |x|), q = min(127, round_half_even(iscale*x)), d = 1/iscale.
"""

import math

import numpy as np
from numba import njit


@njit(inline="always")
def round_fp16(v):
    """float32 -> nearest fp16 value (ties to even), returned as float32; v >= 0."""
    if v == 0.0:
        return np.float32(0.0)
    m, e = math.frexp(np.float64(v))                 # v = m 2^e, 0.5 <= m < 1
    scale = 2.0 ** (max(e, -13) - 11)                # fp16: 11 significant bits, min exp 2^-14
    r = round(np.float64(v) / scale) * scale         # Python round(): ties to even
    if r > 65504.0:
        return np.float32(np.inf)
    return np.float32(r)


@njit(inline="always")
def _q8_0_scale(x, t, b):
    """Block b (32 values) of token t: (d, 127/amax) as quantize_row_q8_0 computes them."""
    amax = np.float32(0.0)
    for j in range(32):
        a = abs(x[t, 32 * b + j])
        if a > amax:
            amax = a
    return round_fp16(amax / np.float32(127.0)), (np.float32(127.0) / amax if amax != 0 else np.float32(0.0))


@njit(inline="always")
def _q8_k_scale(x, t, b):
    """Block b (256 values) of token t: (d, iscale) as quantize_row_q8_K_ref; iscale 0: all zero."""
    amax = np.float32(0.0)
    mx = np.float32(0.0)
    for j in range(256):
        v = x[t, 256 * b + j]
        if abs(v) > amax:
            amax = abs(v)
            mx = v
    if amax == 0:
        return np.float32(0.0), np.float32(0.0)
    iscale = np.float32(-127.0) / mx
    # max |x| = inf makes iscale +-0: ggml's 1/iscale is then -+inf (Numba would raise)
    d = np.float32(1.0) / iscale if iscale != 0 else (np.float32(-np.inf) if mx > 0 else np.float32(np.inf))
    return d, iscale


@njit(cache=True)
def quantize_q8_0(x, q, d):
    """x f32 [n_tok, n_in] -> q int8 [n_tok, n_in], d f32 [n_tok, n_in/32]."""
    n_tok, n_in = x.shape
    for t in range(n_tok):
        for b in range(n_in // 32):
            d[t, b], iscale = _q8_0_scale(x, t, b)
            for j in range(32):
                q[t, 32 * b + j] = np.int8(np.rint(x[t, 32 * b + j] * iscale))


@njit(cache=True)
def quantize_q8_k(x, q, d):
    """x f32 [n_tok, n_in] -> q int8 [n_tok, n_in], d f32 [n_tok, n_in/256]."""
    n_tok, n_in = x.shape
    for t in range(n_tok):
        for b in range(n_in // 256):
            dt, iscale = _q8_k_scale(x, t, b)
            d[t, b] = dt
            for j in range(256):
                q[t, 256 * b + j] = 0 if dt == 0 else np.int8(min(127.0, np.rint(iscale * x[t, 256 * b + j])))


@njit(cache=True, nogil=True)
def q8_0_float(x, out, t0, t1):
    """out[t] = x[t] through Q8_0 (or Q8_1) and back, float32(q) * d, for tokens t0 .. t1
    (the prefill's activations as ggml's int8 dots see them, without the int8 array)."""
    for t in range(t0, t1):
        for b in range(x.shape[1] // 32):
            d, iscale = _q8_0_scale(x, t, b)
            for j in range(32):
                out[t, 32 * b + j] = np.float32(np.int8(np.rint(x[t, 32 * b + j] * iscale))) * d


@njit(cache=True, nogil=True)
def q8_k_float(x, out, t0, t1):
    """out[t] = x[t] through Q8_K and back, float32(q) * d, for tokens t0 .. t1."""
    for t in range(t0, t1):
        for b in range(x.shape[1] // 256):
            d, iscale = _q8_k_scale(x, t, b)
            for j in range(256):
                out[t, 256 * b + j] = np.float32(0.0) if d == 0 else \
                    np.float32(np.int8(min(127.0, np.rint(iscale * x[t, 256 * b + j])))) * d


@njit(cache=True)
def bsums16(q, s):
    """s[t, i] = sum_{j<16} q[t, 16 i + j] (int8 -> int16; ggml's bsums)."""
    n_tok, n_in = q.shape
    for t in range(n_tok):
        for i in range(n_in // 16):
            a = 0
            for j in range(16):
                a += q[t, 16 * i + j]
            s[t, i] = a


@njit(cache=True)
def quantize_q8_k_bs(x, q, d, s):
    """quantize_q8_k and its 16-sums in one call (decode: one Numba call per activation)."""
    quantize_q8_k(x, q, d)
    bsums16(q, s)


@njit(cache=True)
def quantize_q8_0_bs(x, q, d, s):
    """quantize_q8_0 and its 16-sums in one call."""
    quantize_q8_0(x, q, d)
    bsums16(q, s)

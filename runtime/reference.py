"""Plain numpy references for every runtime kernel.

These are the obvious-but-slow versions: each Numba kernel in ``runtime.kernels``
is tested against the function of the same name here. They follow ggml's CPU
code (``ggml/src/ggml-cpu/ops.cpp`` and ``vec.h``) step by step where the order
of float operations is visible in the result (RMS norm, RoPE's theta recurrence,
the fp16 GELU table); elsewhere they compute in float64 and round once.

Shapes use math order: a weight is [n_out, n_in] (ggml's ne = [n_in, n_out]),
activations are [n_tok, n].
"""

from __future__ import annotations

import numpy as np
from quant import dequantize as _quant_dequantize
from quant.types import get_type
from quant.types import vec_dot_type as _table_vec_dot_type


# ---------------------------------------------------------------- dequantize

def dequantize_rows(data: np.ndarray, qtype: str, n_in: int) -> np.ndarray:
    """Packed rows -> float32.

    data: uint8 [n_rows, row_bytes] (row_bytes = n_in / block_size * type_size)
    returns f32 [n_rows, n_in]
    """
    data = np.ascontiguousarray(data)
    if qtype == "F32":
        out = data.view(np.float32)
    elif qtype == "F16":
        out = data.view(np.float16).astype(np.float32)
    elif qtype == "BF16":
        out = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        out = _quant_dequantize(data, qtype, backend="numpy")   # quant/ref: numpy, block by block
    return np.asarray(out, dtype=np.float32).reshape(data.shape[0], n_in)


def row_bytes(qtype: str, n_in: int) -> int:
    return get_type(qtype).row_size(n_in)


# ---------------------------------------------------------------- activations as ggml's vec_dot sees them

def vec_dot_type(qtype: str) -> str:
    """ggml-cpu's vec_dot_type (from the type table, quant.types)."""
    return _table_vec_dot_type(qtype)


def _fp16(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float32).astype(np.float16).astype(np.float32)


def quantize_activations(x: np.ndarray, vtype: str) -> tuple[np.ndarray, np.ndarray]:
    """x f32 [n_tok, n_in] -> (q, d): x as ggml's vec_dot sees it is q * d (per block).

    Q8_0 / Q8_1 (x86 AVX path of quantize_row_q8_0/q8_1): blocks of 32,
      d = fp16(amax / 127), q = round_half_even(x * (127 / amax)); d kept as f32.
    Q8_K (quantize_row_q8_K_ref): blocks of 256, max = the signed value of largest
      |x| (first one), iscale = -127 / max, q = min(127, nearest_int(iscale * x)),
      d = 1 / iscale (float32).
    F16 / BF16: q = x rounded to that type (as f32), d = 1.  F32: q = x, d = 1.
    Returns q int8 [n_tok, n_in] (or f32 for float types) and d f32 [n_tok, n_blocks].
    """
    x = np.asarray(x, dtype=np.float32)
    n_tok, n_in = x.shape
    one = np.ones((n_tok, 1), np.float32)
    if vtype == "F32":
        return x, one
    if vtype == "F16":
        return _fp16(x), one
    if vtype == "BF16":
        u = x.view(np.uint32).astype(np.uint64)
        b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32)
        b = np.where(np.isnan(x), (u >> 16).astype(np.uint32) | 64, b)
        return (b << 16).astype(np.uint32).view(np.float32), one
    if vtype in ("Q8_0", "Q8_1"):
        xb = x.reshape(n_tok, n_in // 32, 32)
        amax = np.abs(xb).max(axis=-1)
        d = _fp16(amax / np.float32(127.0))
        with np.errstate(divide="ignore"):
            iscale = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
        q = np.rint(xb * iscale[..., None]).astype(np.int8)
        return q.reshape(n_tok, n_in), d
    if vtype == "Q8_K":
        xb = x.reshape(n_tok, n_in // 256, 256)
        idx = np.abs(xb).argmax(axis=-1)                      # first index of the largest |x|
        mx = np.take_along_axis(xb, idx[..., None], axis=-1)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = np.where(mx != 0, np.float32(-127.0) / mx, np.float32(0.0)).astype(np.float32)
            d = np.where(mx != 0, np.float32(1.0) / iscale, np.float32(0.0)).astype(np.float32)
        q = np.minimum(127, np.rint(iscale[..., None] * xb)).astype(np.int8)
        return q.reshape(n_tok, n_in), d
    raise ValueError(f"no activation format {vtype}")


def activations_as_seen(x: np.ndarray, qtype: str) -> np.ndarray:
    """float64 [n_tok, n_in]: the activations a ``qtype`` weight is multiplied with in ggml."""
    q, d = quantize_activations(x, vec_dot_type(qtype))
    n_tok, n_in = q.shape
    nb = d.shape[1]
    return (q.astype(np.float64).reshape(n_tok, nb, -1) * d.astype(np.float64)[..., None]).reshape(n_tok, n_in)


# ---------------------------------------------------------------- matmul

def matmul(data: np.ndarray, qtype: str, n_in: int, x: np.ndarray, numerics: str = "exact") -> np.ndarray:
    """y = x @ W.T with W dequantized whole; float64 accumulation, f32 result.

    numerics "exact": first convert x the way ggml-cpu does for this weight type
    (``activations_as_seen``: Q8_0/Q8_1/Q8_K int8 blocks, or fp16/bf16 rounding),
    so the result is what llama.cpp computes up to float summation order; "float": x as is.
    data: uint8 [n_out, row_bytes]; x: f32 [n_tok, n_in] -> f32 [n_tok, n_out]
    """
    w = dequantize_rows(data, qtype, n_in).astype(np.float64)
    xa = activations_as_seen(x, qtype) if numerics == "exact" else np.asarray(x, dtype=np.float64)
    return (xa @ w.T).astype(np.float32)


def get_rows(data: np.ndarray, qtype: str, n_in: int, ids: np.ndarray) -> np.ndarray:
    """Embedding lookup: dequantize only rows ``ids`` -> f32 [n, n_in]."""
    ids = np.asarray(ids, dtype=np.int64)
    return dequantize_rows(data[ids], qtype, n_in)


# ---------------------------------------------------------------- norms

def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    """ggml_compute_forward_rms_norm_f32, then ggml_mul by w.

    sum of float32 squares accumulated in double; mean and scale in float32;
    y = (x * scale) * w in float32.
    """
    x = np.asarray(x, dtype=np.float32)
    sq = (x * x).astype(np.float64)                       # float products, double sum
    mean = (sq.sum(axis=-1) / x.shape[-1]).astype(np.float32)
    scale = (np.float32(1.0) / np.sqrt(mean + np.float32(eps))).astype(np.float32)
    y = x * scale[..., None]
    if w is not None:
        y = y * np.asarray(w, dtype=np.float32)
    return y.astype(np.float32)


# ---------------------------------------------------------------- rope

def rope_cache(pos: np.ndarray, head_dim: int, n_rot: int, freq_base: float,
               freq_scale: float = 1.0, freq_factors: np.ndarray | None = None,
               attn_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin per (token, pair) as ggml_rope_cache_init with ext_factor = 0.

    theta starts at float(p) and is multiplied by theta_scale = powf(base, -2/n_rot)
    in float32 once per pair (a running product, not base**(-2i/n)).
    returns (cos, sin), each f32 [n_tok, head_dim // 2]
    """
    pos = np.asarray(pos)
    n_pairs = head_dim // 2
    theta_scale = np.float32(np.float64(np.float32(freq_base)) ** np.float64(np.float32(-2.0) / np.float32(n_rot)))
    theta = pos.astype(np.float32)
    cos = np.empty((len(pos), n_pairs), np.float32)
    sin = np.empty((len(pos), n_pairs), np.float32)
    for i in range(n_pairs):
        ff = np.float32(1.0) if freq_factors is None or i >= len(freq_factors) else np.float32(freq_factors[i])
        t = np.float32(freq_scale) * (theta / ff)
        cos[:, i] = np.cos(t.astype(np.float64)).astype(np.float32) * np.float32(attn_factor)
        sin[:, i] = np.sin(t.astype(np.float64)).astype(np.float32) * np.float32(attn_factor)
        theta = (theta * theta_scale).astype(np.float32)
    return cos, sin


def rope(x: np.ndarray, pos: np.ndarray, n_rot: int, freq_base: float, freq_scale: float = 1.0,
         freq_factors: np.ndarray | None = None, mode: str = "norm",
         attn_factor: float = 1.0) -> np.ndarray:
    """ggml_compute_forward_rope_flt (forward, ext_factor = 0).

    x: f32 [n_tok, n_head, head_dim]; pos: i32 [n_tok]
    mode "norm": rotate adjacent pairs (x[2i], x[2i+1]) with theta_i
    mode "neox": rotate (x[i], x[i + n_rot/2]) with theta_i
    dims >= n_rot pass through unchanged.
    """
    x = np.asarray(x, dtype=np.float32)
    head_dim = x.shape[-1]
    cos, sin = rope_cache(pos, head_dim, n_rot, freq_base, freq_scale, freq_factors, attn_factor)
    half = n_rot // 2
    c = cos[:, None, :half]
    s = sin[:, None, :half]
    y = x.copy()
    if mode == "norm":
        x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        y[..., 0:n_rot:2] = x0 * c - x1 * s
        y[..., 1:n_rot:2] = x0 * s + x1 * c
    elif mode == "neox":
        x0, x1 = x[..., :half], x[..., half:n_rot]
        y[..., :half] = x0 * c - x1 * s
        y[..., half:n_rot] = x0 * s + x1 * c
    else:
        raise ValueError(f"unknown rope mode {mode!r}")
    return y


# ---------------------------------------------------------------- activations

GELU_COEF_A = np.float32(0.044715)
SQRT_2_OVER_PI = np.float32(0.79788456080286535587989211986876)


def gelu_f32(x: np.ndarray) -> np.ndarray:
    """ggml_gelu_f32: 0.5x(1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))), float32 math."""
    x = np.asarray(x, dtype=np.float32)
    inner = SQRT_2_OVER_PI * x * (np.float32(1.0) + GELU_COEF_A * x * x)
    return (np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner.astype(np.float64)).astype(np.float32))).astype(np.float32)


def gelu(x: np.ndarray) -> np.ndarray:
    """ggml_vec_gelu_f32 with GGML_GELU_FP16 (ggml-cpu default).

    x <= -10 -> 0; x >= 10 -> x; else table lookup: fp16(gelu_f32(fp32(fp16(x)))).
    """
    x = np.asarray(x, dtype=np.float32)
    xh = x.astype(np.float16).astype(np.float32)
    table = gelu_f32(xh).astype(np.float16).astype(np.float32)
    return np.where(x <= -10.0, np.float32(0.0), np.where(x >= 10.0, x, table)).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    """x / (1 + exp(-x)) (ggml_silu_f32), float64 then rounded."""
    x64 = np.asarray(x, dtype=np.float64)
    return (x64 / (1.0 + np.exp(-x64))).astype(np.float32)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up (ggml_swiglu_split)."""
    return (silu(gate) * np.asarray(up, dtype=np.float32)).astype(np.float32)


def geglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """gelu(gate) * up with ggml's fp16-table GELU (ggml_vec_geglu_f32)."""
    return (gelu(gate) * np.asarray(up, dtype=np.float32)).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------- attention

def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_past: int, scale: float,
              window: int | None = None, softcap: float | None = None) -> np.ndarray:
    """Causal GQA attention over a KV cache, float64 math.

    q: f32 [n_tok, n_head, hd]; k_cache, v_cache: f16|f32 [n_ctx_max, n_kv, hd]
    query i is at position n_past + i and sees key positions p with
    p <= n_past + i and (window is None or n_past + i - p < window).
    head h reads kv head h // (n_head // n_kv).
    returns f32 [n_tok, n_head, hd]
    """
    n_tok, n_head, hd = q.shape
    n_kv = k_cache.shape[1]
    group = n_head // n_kv
    n_keys = n_past + n_tok
    k = np.asarray(k_cache[:n_keys], dtype=np.float64)        # [n_keys, n_kv, hd]
    v = np.asarray(v_cache[:n_keys], dtype=np.float64)
    kv_head = np.arange(n_head) // group
    kh = k[:, kv_head, :]                                      # [n_keys, n_head, hd]
    vh = v[:, kv_head, :]
    s = np.einsum("thd,khd->thk", np.asarray(q, dtype=np.float64), kh) * np.float64(np.float32(scale))
    if softcap:
        c = np.float64(np.float32(softcap))        # the constants as the kernels take them (float32)
        s = c * np.tanh(s / c)
    qpos = n_past + np.arange(n_tok)[:, None]
    kpos = np.arange(n_keys)[None, :]
    masked = kpos > qpos
    if window is not None:
        masked |= (qpos - kpos) >= window
    s = np.where(masked[:, None, :], -np.inf, s)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("thk,khd->thd", p, vh).astype(np.float32)

"""Python launchers for the non-quantized CUDA kernels (elementwise.cu, attention.cu, sampling.cu),
and the fused decode kernels (``add_rms_norm``, ``glu``, ``rope_kv``; attention's combine with its
output quantized), each bit-equal to the chain of launchers it replaces.

Each takes device arrays and sizes and knows nothing about models. The side is the arrays':
numpy arrays run the emulated kernels (runtime.cuda.module, g++), CuPy arrays the real ones.
Outputs are allocated with the input's array module unless ``out`` is given. Shapes are in math
order and match the numpy references in runtime/reference.py, which each kernel is tested
against (tests/runtime/cuda/test_cuda_kernels.py).
"""

from __future__ import annotations

import numpy as np

from runtime.cuda import module as M
from runtime.cuda.module import CudaError
from runtime.cuda.xp import array_module, is_host, kernel, poisoned, workspace

ELEM_THREADS = 256    # elementwise.cu's ELEM_THREADS
ROPE_MAX_PAIRS = 256


def _f32(a, what):
    if a.dtype != np.float32:
        raise CudaError(f"{what}: expected float32, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise CudaError(f"{what}: array is not C-contiguous")
    return a


def _out(out, like, shape, dtype=np.float32):
    if out is None:
        if is_host(like) and M._emu_opts().guard:
            # emulated with the guard: an output element the kernel never writes stays 0xFF bytes
            # (NaN as floats, -1 / the maximum as integers)
            return poisoned(np.empty(shape, dtype=dtype))
        return array_module(like).empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise CudaError(f"out is {out.dtype}{tuple(out.shape)}, expected {np.dtype(dtype)}{tuple(shape)}")
    return out


def _row_threads(n: int, per_thread: int = 8) -> int:
    """Threads for a one-block-per-row kernel: about per_thread elements each, a multiple of
    32, at most ELEM_THREADS (short rows get one warp instead of 256 mostly idle threads)."""
    return min(ELEM_THREADS, max(32, -(-int(n) // per_thread + 31) // 32 * 32))


def _blocks(n: int, threads: int = ELEM_THREADS) -> int:
    return max(1, -(-int(n) // threads))


# ---------------------------------------------------------------- norms and elementwise

def rms_norm(x, w, eps: float, out=None):
    """ggml rms_norm over the last axis, times w (f32 [n] or None). x: f32 [..., n]."""
    _f32(x, "rms_norm x")
    n = x.shape[-1]
    if w is not None and (_f32(w, "rms_norm w").size != n):
        raise CudaError(f"rms_norm: weight has {w.size} elements, rows have {n}")
    y = _out(out, x, x.shape)
    rows = x.size // n if n else 0
    if rows:
        kernel("elementwise", "rms_norm_f32", x)(rows, _row_threads(n), (x, w, y, np.int32(n), np.float32(eps)))
    return y


def rope_theta_scale(freq_base: float, n_rot: int) -> np.float32:
    """base^(-2/n_rot) as ggml computes it (powf), the ratio of the running theta product."""
    return np.float32(np.float64(np.float32(freq_base)) ** np.float64(np.float32(-2.0) / np.float32(n_rot)))


def rope(x, pos, n_rot: int, freq_base: float, freq_scale: float = 1.0, freq_factors=None,
         mode: str = "norm", out=None):
    """ggml RoPE (ext_factor 0). x: f32 [n_tok, n_head, head_dim]; pos: i32 [n_tok];
    freq_factors: f32 [>= n_rot/2] or None. out may be x (in place)."""
    _f32(x, "rope x")
    if mode not in ("norm", "neox"):
        raise CudaError(f"unknown rope mode {mode!r}")
    n_tok, n_head, hd = x.shape
    if n_rot % 2 or not 0 < n_rot <= hd or n_rot // 2 > ROPE_MAX_PAIRS:
        raise CudaError(f"rope: n_rot {n_rot} must be even, <= head_dim {hd} and <= {2 * ROPE_MAX_PAIRS}")
    if pos.dtype != np.int32 or pos.shape != (n_tok,):
        raise CudaError(f"rope: pos must be int32 [{n_tok}], got {pos.dtype}{tuple(pos.shape)}")
    if freq_factors is not None and _f32(freq_factors, "rope freq_factors").size < n_rot // 2:
        raise CudaError(f"rope: {freq_factors.size} freq factors for {n_rot // 2} pairs")
    y = _out(out, x, x.shape)
    if n_tok:
        kernel("elementwise", "rope_f32", x)(
            n_tok, ELEM_THREADS,
            (x, y, pos, freq_factors, np.int32(n_head), np.int32(hd), np.int32(n_rot),
             rope_theta_scale(freq_base, n_rot), np.float32(freq_scale), np.int32(mode == "neox")))
    return y


def _binary(kname, a, b, out, what):
    _f32(a, what)
    _f32(b, what)
    if a.shape != b.shape:
        raise CudaError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    y = _out(out, a, a.shape)
    if a.size:
        kernel("elementwise", kname, a)(_blocks(a.size), ELEM_THREADS, (a, b, y, np.int64(a.size)))
    return y


def swiglu(gate, up, out=None, f64: bool = False):
    """silu(gate) * up, f32, same shapes. f64: silu in double rounded once (runtime.reference.
    swiglu and the CPU backend bit for bit); else in float with expf."""
    return _binary("swiglu_f64" if f64 else "swiglu_f32", gate, up, out, "swiglu")


def geglu(gate, up, out=None):
    """gelu(gate) * up with ggml-cpu's fp16-table GELU (runtime.reference.gelu)."""
    return _binary("geglu_f32", gate, up, out, "geglu")


def add(a, b, out=None):
    """a + b, f32, same shapes (out may be a or b)."""
    return _binary("add_f32", a, b, out, "add")


def scale(x, s: float, out=None):
    """x * s, f32 (out may be x)."""
    _f32(x, "scale")
    y = _out(out, x, x.shape)
    if x.size:
        kernel("elementwise", "scale_f32", x)(_blocks(x.size), ELEM_THREADS, (x, y, np.float32(s), np.int64(x.size)))
    return y


def softcap(x, cap: float, out=None):
    """cap * tanh(x / cap), f32 (out may be x): x * float32(1 / cap), tanh in double rounded to
    float, * cap, as the CPU backend's softcap (bit-equal)."""
    _f32(x, "softcap")
    y = _out(out, x, x.shape)
    if x.size:
        kernel("elementwise", "softcap_f32", x)(_blocks(x.size), ELEM_THREADS,
                                             (x, y, np.float32(cap), np.float32(1.0 / cap), np.int64(x.size)))
    return y


def kv_write(src, cache, pos):
    """cache[pos[t]] = fp16(src[t]). src: f32 [n_tok, n_kv, hd]; cache: f16 [n_ctx, n_kv, hd];
    pos: i32 [n_tok] (each < n_ctx: checked by the caller, who knows the positions)."""
    _f32(src, "kv_write src")
    n_tok = src.shape[0]
    if cache.dtype != np.float16 or tuple(cache.shape[1:]) != tuple(src.shape[1:]):
        raise CudaError(f"kv_write: cache {cache.dtype}{tuple(cache.shape)} does not hold f16 rows of {tuple(src.shape[1:])}")
    if pos.dtype != np.int32 or pos.shape != (n_tok,):
        raise CudaError(f"kv_write: pos must be int32 [{n_tok}], got {pos.dtype}{tuple(pos.shape)}")
    row = int(np.prod(src.shape[1:]))
    if n_tok and row:
        t = min(ELEM_THREADS, -(-row // 32) * 32)
        kernel("elementwise", "kv_write_f16", src)((_blocks(row, t), n_tok), t, (src, cache, pos, np.int32(row)))
    return cache


# ---------------------------------------------------------------- fused decode kernels
# Each is a chain of the launchers above (and qmatmul's activation quantizers) in one launch,
# with the same floats and bytes (tests/runtime/cuda/test_cuda_fused.py). qmode: a
# runtime.cuda.qmatmul ACT_* format to also write the output in, for the next matvec.

def _act_out(like, n_tok: int, n: int, qmode: int, yq, what: str):
    from runtime.cuda.qmatmul import ACT_NONE, ACT_UNIT, act_row_bytes
    if qmode == ACT_NONE:
        return None
    if qmode not in ACT_UNIT:
        raise CudaError(f"{what}: unknown activation format {qmode}")
    if n % ACT_UNIT[qmode]:
        raise CudaError(f"{what}: row length {n} is not a multiple of {ACT_UNIT[qmode]}")
    if yq is None:
        return _out(None, like, (n_tok, act_row_bytes(n)), np.uint8)
    if yq.dtype != np.uint8 or yq.size != n_tok * act_row_bytes(n) or not yq.flags.c_contiguous:
        raise CudaError(f"{what}: yq must be contiguous u8 [{n_tok}, {act_row_bytes(n)}]")
    return yq


def add_rms_norm(a, b, w, eps: float, qmode: int = 0, s=None, out=None, yq=None, keep_sum: bool = True):
    """(s, y, yq): s = a + b (b None: s is a, not copied), y = rms_norm(s) * w (as ``add`` then
    ``rms_norm``), yq = y in activation format qmode (None for ACT_NONE). a, b: f32 [n_rows, n]."""
    _f32(a, "add_rms_norm a")
    if b is not None:
        _f32(b, "add_rms_norm b")
        if b.shape != a.shape:
            raise CudaError(f"add_rms_norm: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    n = a.shape[-1]
    if w is not None and _f32(w, "add_rms_norm w").size != n:
        raise CudaError(f"add_rms_norm: weight has {w.size} elements, rows have {n}")
    rows = a.size // n if n else 0
    s = None if b is None or not keep_sum else _out(s, a, a.shape)
    y = _out(out, a, a.shape)
    yq = _act_out(a, rows, n, qmode, yq, "add_rms_norm")
    if rows:
        kernel("elementwise", "add_rms_norm_q8", a)(
            rows, _row_threads(n), (a, b, w, s, y, yq, np.int32(n), np.float32(eps), np.int32(qmode)))
    return (a if b is None else s), y, yq


GLU_KINDS = {"silu": 0, "silu_f64": 1, "gelu": 2}


def glu(gate, up, kind: str = "silu", qmode: int = 0, out=None, yq=None):
    """(y, yq): y = act(gate) * up as swiglu (kind "silu", "silu_f64": swiglu(f64=True)) or
    geglu ("gelu"), yq = y in activation format qmode (None for ACT_NONE). gate, up: f32 [n_tok, n]."""
    _f32(gate, "glu gate")
    _f32(up, "glu up")
    if gate.shape != up.shape or gate.ndim != 2:
        raise CudaError(f"glu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must be the same [n_tok, n]")
    if kind not in GLU_KINDS:
        raise CudaError(f"glu: unknown kind {kind!r}")
    n_tok, n = gate.shape
    from runtime.cuda.qmatmul import ACT_UNIT
    y = _out(out, gate, gate.shape)
    yq = _act_out(gate, n_tok, n, qmode, yq, "glu")
    if n_tok and n:
        per_block = 4 * ACT_UNIT.get(qmode, 32)
        kernel("elementwise", "glu_q8", gate)(
            (-(-n // per_block), n_tok), 128, (gate, up, y, yq, np.int32(n), np.int32(GLU_KINDS[kind]), np.int32(qmode)))
    return y, yq


def rope_kv(q, k, v, k_cache, v_cache, pos, n_rot: int, freq_base: float, freq_scale: float = 1.0,
            freq_factors=None, mode: str = "norm", q_scale: float = 1.0, out=None):
    """rope(q) * q_scale -> returned f32 [n_tok, n_head, hd]; rope(k) and v written to the f16
    caches at positions pos (i32 [n_tok], each < n_ctx: the caller checks): ``rope`` twice,
    ``scale`` and ``kv_write`` twice in one launch. k, v: f32 [n_tok, n_kv, hd]."""
    _f32(q, "rope_kv q")
    _f32(k, "rope_kv k")
    _f32(v, "rope_kv v")
    if mode not in ("norm", "neox"):
        raise CudaError(f"unknown rope mode {mode!r}")
    n_tok, n_head, hd = q.shape
    n_kv = k.shape[1]
    if k.shape != (n_tok, n_kv, hd) or v.shape != k.shape:
        raise CudaError(f"rope_kv: k {tuple(k.shape)} and v {tuple(v.shape)} must be [{n_tok}, n_kv, {hd}]")
    for c in (k_cache, v_cache):
        if c.dtype != np.float16 or tuple(c.shape[1:]) != (n_kv, hd) or not c.flags.c_contiguous:
            raise CudaError(f"rope_kv: cache {c.dtype}{tuple(c.shape)} does not hold f16 rows of {(n_kv, hd)}")
    if n_rot % 2 or not 0 < n_rot <= hd or n_rot // 2 > ROPE_MAX_PAIRS:
        raise CudaError(f"rope: n_rot {n_rot} must be even, <= head_dim {hd} and <= {2 * ROPE_MAX_PAIRS}")
    if pos.dtype != np.int32 or pos.shape != (n_tok,):
        raise CudaError(f"rope_kv: pos must be int32 [{n_tok}], got {pos.dtype}{tuple(pos.shape)}")
    if freq_factors is not None and _f32(freq_factors, "rope freq_factors").size < n_rot // 2:
        raise CudaError(f"rope: {freq_factors.size} freq factors for {n_rot // 2} pairs")
    y = _out(out, q, q.shape)
    if n_tok:
        kernel("elementwise", "rope_kv_f32", q)(
            n_tok, ELEM_THREADS,
            (q, k, v, y, k_cache, v_cache, pos, freq_factors, np.int32(n_head), np.int32(n_kv), np.int32(hd),
             np.int32(n_rot), rope_theta_scale(freq_base, n_rot), np.float32(freq_scale), np.int32(mode == "neox"),
             np.float32(q_scale)))
    return y


# ---------------------------------------------------------------- attention

ATT_HD_MAX = 256
ATT_THREADS = 128
ATT_SPLIT_MAX = 512
ATT_ROWS = 4
DECODE_MAX_TOK = 8      # attention() uses flash-decoding up to this many query tokens


def _attn_check(q, k_cache, v_cache, n_past):
    _f32(q, "attention q")
    n_tok, n_head, hd = q.shape
    for c, what in ((k_cache, "k cache"), (v_cache, "v cache")):
        if c.dtype != np.float16 or c.ndim != 3 or c.shape[2] != hd or not c.flags.c_contiguous:
            raise CudaError(f"attention: {what} must be contiguous f16 [n_ctx, n_kv, {hd}], "
                            f"got {c.dtype}{tuple(c.shape)}")
    if k_cache.shape != v_cache.shape:
        raise CudaError(f"attention: k cache {tuple(k_cache.shape)} and v cache {tuple(v_cache.shape)} differ")
    n_kv = k_cache.shape[1]
    if hd > ATT_HD_MAX:
        raise CudaError(f"attention: head_dim {hd} > {ATT_HD_MAX}")
    if n_head % n_kv:
        raise CudaError(f"attention: {n_head} query heads do not group over {n_kv} kv heads")
    if n_past < 0 or n_past + n_tok > k_cache.shape[0]:
        raise CudaError(f"context overflow: {n_past + n_tok} tokens > cache size {k_cache.shape[0]}")
    return n_tok, n_head, n_kv, hd


def _attn_common(window, softcap):
    return np.int32(window or 0), np.float32(softcap or 0.0)


def decode_splits(n_keys: int, window: int | None = None, split_keys: int = 256) -> int:
    """Chunks of split_keys a decode query row needs when it sees up to n_keys keys."""
    seen = int(n_keys) if not window else min(int(window), int(n_keys))
    return max(1, -(-seen // split_keys))


def fused_rows(qmode: int, n_head: int, hd: int) -> int:
    """Rows (heads) per combine block when it writes activation format qmode (0: it cannot):
    1 for q8_1 / Q8_0 (hd a multiple of 32), 256 / hd for Q8_K (hd divides 256 and the heads
    of a token make whole units of 256)."""
    from runtime.cuda.qmatmul import ACT_Q8_0_CPU, ACT_Q8_1, ACT_Q8_K_CPU
    if qmode in (ACT_Q8_1, ACT_Q8_0_CPU):
        return 1 if hd % 32 == 0 else 0
    if qmode == ACT_Q8_K_CPU and hd % 32 == 0 and 256 % hd == 0 and n_head * hd % 256 == 0:
        return 256 // hd
    return 0


def attention_decode(q, k_cache, v_cache, n_past: int, scale: float, window: int | None = None,
                     softcap: float | None = None, out=None, split_keys: int = 256, f64: bool = False,
                     pos=None, n_split: int | None = None, qmode: int = 0, yq=None):
    """Flash-decoding: each query row's keys in chunks of split_keys (one block each), then a
    combine kernel. Shapes and ``f64`` as ``attention``.

    pos: i32 device array whose pos[0] is n_past (the kernels read it there; None: made from
    n_past). n_split: the chunks launched (None: what n_past needs); more are allowed, e.g.
    ``decode_splits(n_ctx)`` so one launch serves every position of a captured graph (the extra
    blocks exit at once). qmode (runtime.cuda.qmatmul.ACT_Q8_1 or ACT_Q8_0_CPU; hd % 32 == 0):
    the combine kernel also writes the output as activation blocks into yq u8[n_tok,
    n_head * hd / 32 * 36] for the next matvec."""
    n_tok, n_head, n_kv, hd = _attn_check(q, k_cache, v_cache, n_past)
    if not 0 < split_keys <= ATT_SPLIT_MAX:
        raise CudaError(f"attention: split_keys {split_keys} not in 1..{ATT_SPLIT_MAX}")
    y = _out(out, q, q.shape)
    if not n_tok:
        return y
    need = decode_splits(n_past + n_tok, window, split_keys)
    n_split = need if n_split is None else int(n_split)
    if n_split < need:
        raise CudaError(f"attention: {n_split} splits for {need} chunks of keys")
    rpb = 1
    if qmode:
        from runtime.cuda.qmatmul import act_row_bytes
        rpb = fused_rows(qmode, n_head, hd)
        if not rpb:
            raise CudaError(f"attention: no fused output format {qmode} for {n_head} heads of {hd}")
        if yq is None or yq.dtype != np.uint8 or yq.size != n_tok * act_row_bytes(n_head * hd):
            raise CudaError("attention: yq must be u8 activation blocks of the output")
    if pos is None:
        pos = array_module(q).asarray(np.array([n_past], np.int32))
    rows = n_tok * n_head
    acc = np.float64 if f64 else np.float32
    sfx = "_f64" if f64 else ""
    part_o = workspace(q, "attn_part_o" + sfx, (rows, n_split, hd), acc)
    part_ml = workspace(q, "attn_part_ml" + sfx, (rows, n_split, 2), acc)
    w, cap = _attn_common(window, softcap)
    kernel("attention", "attn_decode_partial" + sfx, q)(
        (rows, n_split), ATT_THREADS,
        (q, k_cache, v_cache, part_o, part_ml, np.int32(n_head), np.int32(n_kv), np.int32(hd), pos,
         w, np.int32(split_keys), np.float32(scale), cap))
    kernel("attention", "attn_decode_combine" + sfx, q)(
        rows // rpb, ATT_THREADS, (part_o, part_ml, y, yq if qmode else None, np.int32(n_split), np.int32(hd),
                            np.int32(qmode)))
    return y


def reserve_attention(like, n_tok: int, n_head: int, head_dim: int, n_ctx: int, f64: bool = False,
                      split_keys: int = 256) -> None:
    """Grow decode attention's workspaces to their size at a full context of n_ctx now, so no
    later call allocates (a captured CUDA graph needs fixed addresses, and an allocation after
    a capture may come from memory the graph still uses: runtime.cuda.graph)."""
    rows, n_split = n_tok * n_head, -(-int(n_ctx) // split_keys)
    acc, sfx = (np.float64, "_f64") if f64 else (np.float32, "")
    workspace(like, "attn_part_o" + sfx, (rows, n_split, head_dim), acc)
    workspace(like, "attn_part_ml" + sfx, (rows, n_split, 2), acc)


def attention_prefill(q, k_cache, v_cache, n_past: int, scale: float, window: int | None = None,
                      softcap: float | None = None, out=None, f64: bool = False):
    """Causal attention for a batch of query tokens (ATT_ROWS rows of a head per block, K/V
    tiles in shared memory, online softmax). Shapes and ``f64`` as ``attention``."""
    n_tok, n_head, n_kv, hd = _attn_check(q, k_cache, v_cache, n_past)
    y = _out(out, q, q.shape)
    if not n_tok:
        return y
    w, cap = _attn_common(window, softcap)
    variant = next(v for v in (64, 128, 256) if hd <= v)   # shared memory sized for the head
    kernel("attention", f"attn_prefill_{variant}" + ("_f64" if f64 else ""), q)(
        (-(-n_tok // ATT_ROWS), n_head), 32 * ATT_ROWS,
        (q, k_cache, v_cache, y, np.int32(n_tok), np.int32(n_head), np.int32(n_kv), np.int32(hd), np.int32(n_past),
         w, np.float32(scale), cap))
    return y


def attention(q, k_cache, v_cache, n_past: int, scale: float, window: int | None = None,
              softcap: float | None = None, out=None, f64: bool = False, **decode):
    """Causal GQA attention (runtime.reference.attention). q: f32 [n_tok, n_head, hd];
    caches: f16 [n_ctx, n_kv, hd] already holding keys 0..n_past+n_tok-1; returns f32
    [n_tok, n_head, hd]. Query t is at position n_past + t; window: sliding window (keys p with
    qpos - p < window); softcap: cap * tanh(score / cap).

    f64=False: float accumulators (scores, online softmax, p·V), a few ulps from the exact
    result. f64=True: the same kernels in double, one rounding to float at the end: the exact
    attention (scale and softcap as float32) rounded to float, up to ~2^-45, whatever the
    summation order, so equal to the CPU backend's float64 attention bit for bit in all but
    about one element in a million (the CUDA backend's default, see docs/CUDA.md).
    ``decode``: attention_decode's pos, n_split, qmode, yq (decode only: n_tok <= DECODE_MAX_TOK)."""
    if q.shape[0] <= DECODE_MAX_TOK:
        return attention_decode(q, k_cache, v_cache, n_past, scale, window, softcap, out, f64=f64, **decode)
    return attention_prefill(q, k_cache, v_cache, n_past, scale, window, softcap, out, f64=f64)


# ---------------------------------------------------------------- sampling

SAMPLE_THREADS = 256
TOPK_MAX = 256
TOPK_CHUNK_MAX = 8192
TOPK_CAND_MAX = 4096


# the most dynamic shared memory each launcher asks for (tests/runtime/cuda/test_cuda_compile.py adds the
# kernel's static shared memory and checks the sum against the 48 KiB every arch allows)
DYNAMIC_SHARED_MAX = {
    "repeat_penalty_f32": M.MAX_SHARED_PER_BLOCK - 1024,
    "topk_chunks_f32": TOPK_CHUNK_MAX * 4,
    "topk_sample_f32": TOPK_CAND_MAX * 8,
}


def _logits(x):
    _f32(x, "logits")
    if x.ndim != 1 or not x.size:
        raise CudaError(f"logits must be f32 [n_vocab], got {tuple(x.shape)}")
    return x


def repeat_penalty(logits, ids, penalty: float):
    """In place: logits[t] = v * penalty if v <= 0 else v / penalty, once for each distinct id
    in ids (i32 device array, e.g. the last repeat_last_n tokens; repeats allowed)."""
    _logits(logits)
    if ids.dtype != np.int32 or ids.ndim != 1:
        raise CudaError(f"repeat_penalty: ids must be int32 [n], got {ids.dtype}{tuple(ids.shape)}")
    if ids.size * 4 > M.MAX_SHARED_PER_BLOCK - 1024:
        raise CudaError(f"repeat_penalty: {ids.size} ids is too many for one block")
    if ids.size:
        kernel("sampling", "repeat_penalty_f32", logits)(
            1, SAMPLE_THREADS, (logits, ids, np.int32(ids.size), np.float32(penalty)), shared_mem=ids.size * 4)
    return logits


def argmax(logits, out=None):
    """Greedy: i32 device array [1] holding argmax(logits) (the first of equal maxima)."""
    _logits(logits)
    out = _out(out, logits, (1,), np.int32)
    threads = min(1024, -(-logits.size // 32) * 32)   # sampling.cu's ARGMAX_THREADS
    kernel("sampling", "argmax_f32", logits)(1, threads, (logits, np.int32(logits.size), out))
    return out


def top_k_plan(n: int, k: int) -> tuple[int, int]:
    """(blocks, chunk) for the first top-k stage; CudaError when the device cannot do k of n."""
    if not 1 <= k <= TOPK_MAX:
        raise CudaError(f"device sampling supports top_k 1..{TOPK_MAX}, got {k}")
    blocks = max(1, min(-(-n // 1024), TOPK_CAND_MAX // k))
    chunk = -(-n // blocks)
    if chunk > TOPK_CHUNK_MAX:
        raise CudaError(f"device sampling: top_k {k} is too large for a vocabulary of {n}")
    return -(-n // chunk), chunk


def sample_top_k(logits, top_k: int, top_p: float, min_p: float, temp: float, u, out=None):
    """runtime.generate.sample's chain after the penalty, on the device: top-k, softmax,
    top-p, min-p, softmax(x / temp), then the token whose cdf first exceeds u (u from the
    host's rng.random(), as numpy's Generator.choice draws). Returns i32 device array [1].
    top_k must be 1..TOPK_MAX (callers fall back to the host otherwise); temp > 0. u: a float,
    or an f64 device array [1] holding it (what a captured graph reads)."""
    _logits(logits)
    if not temp > 0:
        raise CudaError("sample_top_k needs temp > 0 (use argmax for greedy)")
    n = logits.size
    k = min(int(top_k), n)
    blocks, chunk = top_k_plan(n, k)
    u_dev = u if not np.isscalar(u) else array_module(logits).asarray(np.array([u], np.float64))
    if u_dev.dtype != np.float64 or u_dev.size != 1:
        raise CudaError(f"sample_top_k: u must be a float or an f64 device array [1], got {u_dev.dtype}")
    cand_v = workspace(logits, "topk_v", (blocks * k,), np.float32)
    cand_i = workspace(logits, "topk_i", (blocks * k,), np.int32)
    out = _out(out, logits, (1,), np.int32)
    kernel("sampling", "topk_chunks_f32", logits)(
        blocks, SAMPLE_THREADS, (logits, np.int32(n), np.int32(chunk), np.int32(k), cand_v, cand_i),
        shared_mem=chunk * 4)
    kernel("sampling", "topk_sample_f32", logits)(
        1, SAMPLE_THREADS, (cand_v, cand_i, np.int32(blocks * k), np.int32(k), np.float64(top_p), np.float64(min_p),
                            np.float32(temp), u_dev, out), shared_mem=blocks * k * 8)
    return out


def penalty_ids(params, history, n_vocab: int, length: int | None = None):
    """The ids the repetition penalty applies to (runtime.generate.sample's chain), an i32 host
    array, or None when it applies to none. length: padded to exactly that many ids by repeating
    the first (the kernel penalises a repeated id once), as a captured graph's fixed buffer."""
    if params.repeat_penalty == 1.0 or params.repeat_last_n == 0 or not len(history):
        return None
    h = list(history)[-params.repeat_last_n:] if params.repeat_last_n > 0 else list(history)
    if min(h) < 0 or max(h) >= n_vocab:
        raise CudaError(f"repeat penalty: token id out of range 0..{n_vocab - 1}")
    if length is not None:
        h = [h[0]] * (length - len(h)) + h
    return np.asarray(h, np.int32)


def sample_device(logits, params, ids=None, u=None, out=None):
    """The sampling chain's kernels with every varying input in device memory (what a graph
    captures): the penalty over ``ids`` (i32 device array, or None), then argmax (temp <= 0) or
    top-k/top-p/min-p/temperature with the draw ``u`` (an f64 device array [1], or a float).
    Returns i32 device array [1]."""
    if ids is not None:
        repeat_penalty(logits, ids, params.repeat_penalty)
    if params.temp <= 0:
        return argmax(logits, out)
    return sample_top_k(logits, params.top_k, params.top_p, params.min_p, params.temp, u, out)


def sample(logits, params, rng: np.random.Generator, history=()):
    """One token id as runtime.generate.sample(logits, params, rng, history) picks it, computed
    on the device (logits is modified in place by the repetition penalty). Only the id comes
    back. Raises CudaError for top_k outside 1..TOPK_MAX: sample on the host then."""
    xp = array_module(logits)
    if params.temp > 0:
        top_k_plan(logits.size, min(int(params.top_k), logits.size))    # before the penalty changes logits
    h = penalty_ids(params, history, logits.size)
    tid = sample_device(logits, params, None if h is None else xp.asarray(h),
                        rng.random() if params.temp > 0 else None)
    return int(tid[0]) if xp is np else int(tid.get()[0])

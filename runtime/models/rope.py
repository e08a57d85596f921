"""RoPE scaling variants beyond plain/linear/llama3 (ggml_rope_ext with ext_factor / attn_factor).

    yarn      ext_factor 1: per pair, theta mixes interpolated (freq_scale * theta) and
              extrapolated theta by a ramp over the "correction dims" (beta_fast, beta_slow);
              cos/sin scaled by mscale = attn_factor * (1 + 0.1 ln(1/freq_scale)); llama.cpp sets
              attn_factor = get_mscale(factor) / (1 + 0.1 ln factor) * rope.scaling.attn_factor
              (llama_context: the two cancel, leaving 1 + 0.1 ln factor)
    longrope  (phi3) per-pair divisors rope_factors_long / rope_factors_short (long when the
              context exceeds rope.scaling.original_context_length), cos/sin scaled by
              rope.scaling.attn_factor

numpy, float32 as ggml_rope_cache_init / rope_yarn (ggml-cpu/ops.cpp); the plain case stays on
backend.rope (the fast kernel).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RopeExt:
    ext_factor: float = 0.0
    attn_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    n_ctx_orig: int = 0
    longrope: bool = False

    def factors(self, w, n_ctx: int):
        """llama_model::get_rope_factors: rope_freqs, else long/short by context size (llama.cpp's
        n_ctx_seq, which it pads to a multiple of 256)."""
        if "rope_freqs.weight" in w.vecs:
            return w.vecs["rope_freqs.weight"]
        if "rope_factors_long.weight" in w.vecs:
            n_ctx_seq = -(-int(n_ctx) // 256) * 256
            return w.vecs.get("rope_factors_long.weight" if n_ctx_seq > self.n_ctx_orig else "rope_factors_short.weight")
        return None


def from_gguf(fields: dict, arch: str, n_ctx_train: int, tensors=()) -> RopeExt | None:
    """The hparams + llama_context logic that sets ext_factor / attn_factor; None for plain RoPE.
    phi3's converter writes the longrope factors as tensors and only ``rope.scaling.attn_factor``
    (the scaling type stays llama.cpp's default, linear with factor 1)."""
    kind = str(fields.get(f"{arch}.rope.scaling.type", "linear"))
    factor = float(fields.get(f"{arch}.rope.scaling.factor", fields.get(f"{arch}.rope.scale_linear", 0.0)) or 0.0)
    rope_attn = float(fields.get(f"{arch}.rope.scaling.attn_factor", 1.0))
    n_orig = int(fields.get(f"{arch}.rope.scaling.original_context_length", n_ctx_train))
    if kind == "yarn":
        f = np.float32(factor if factor else 1.0)
        freq_scale = np.float32(1.0) / f
        factor32 = np.float32(1.0) / freq_scale
        log_mul = float(fields.get(f"{arch}.rope.scaling.yarn_log_multiplier", 0.0))
        def mscale(sc, m):
            return np.float32(1.0) if sc <= 1 else np.float32(0.1) * np.float32(m) * np.float32(math.log(sc)) + np.float32(1.0)
        attn = mscale(factor32, 1.0) / mscale(factor32, log_mul) if log_mul else mscale(factor32, 1.0)
        attn = np.float32(attn) * (np.float32(1.0) / (np.float32(1.0) + np.float32(0.1) * np.float32(math.log(factor32))))
        attn = float(np.float32(attn) * np.float32(rope_attn))
        return RopeExt(1.0, attn, float(fields.get(f"{arch}.rope.scaling.yarn_beta_fast", 32.0)),
                       float(fields.get(f"{arch}.rope.scaling.yarn_beta_slow", 1.0)), n_orig)
    longrope = kind == "longrope" or "rope_factors_long.weight" in tensors
    if longrope or rope_attn != 1.0:
        return RopeExt(0.0, rope_attn, n_ctx_orig=n_orig, longrope=longrope)
    return None


def _corr_dims(n_dims: int, n_ctx_orig: int, base: float, beta_fast: float, beta_slow: float) -> tuple[float, float]:
    def dim(n_rot):
        return np.float32(n_dims) * np.float32(math.log(np.float32(n_ctx_orig) / (np.float32(n_rot) * 2 * np.float32(math.pi)))) \
            / (2 * np.float32(math.log(np.float32(base))))
    start, end = math.floor(dim(beta_fast)), math.ceil(dim(beta_slow))
    return float(max(0, start)), float(min(n_dims - 1, end))


def rope_cache(pos, n_rot: int, base: float, freq_scale: float, ff, r: RopeExt):
    pos = np.asarray(pos)
    n_pairs = n_rot // 2
    theta_scale = np.float32(np.float64(np.float32(base)) ** np.float64(np.float32(-2.0) / np.float32(n_rot)))
    low, high = _corr_dims(n_rot, r.n_ctx_orig, base, r.beta_fast, r.beta_slow) if r.ext_factor else (0.0, 0.0)
    fs = np.float32(freq_scale)
    ms = np.float32(r.attn_factor)
    if r.ext_factor:
        ms = ms * (np.float32(1.0) + np.float32(0.1) * np.float32(math.log(np.float32(1.0) / fs)))
    theta = pos.astype(np.float32)
    cos = np.empty((len(pos), n_pairs), np.float32)
    sin = np.empty((len(pos), n_pairs), np.float32)
    for i in range(n_pairs):
        f = np.float32(1.0) if ff is None else np.float32(ff[i])
        extrap = (theta / f).astype(np.float32)
        t = (fs * extrap).astype(np.float32)
        if r.ext_factor:
            y = np.float32((i - low) / max(0.001, high - low))
            mix = np.float32(1 - min(1.0, max(0.0, float(y)))) * np.float32(r.ext_factor)
            t = (t * (np.float32(1) - mix) + extrap * mix).astype(np.float32)
        cos[:, i] = np.cos(t.astype(np.float64)).astype(np.float32) * ms
        sin[:, i] = np.sin(t.astype(np.float64)).astype(np.float32) * ms
        theta = (theta * theta_scale).astype(np.float32)
    return cos, sin


def rope_ext(x, pos, n_rot: int, base: float, freq_scale: float, ff, mode: str, r: RopeExt) -> np.ndarray:
    """x: f32 [n_tok, n_head, head_dim] -> rotated, as ggml_rope_ext (modes norm / neox)."""
    x = np.asarray(x, dtype=np.float32)
    cos, sin = rope_cache(pos, n_rot, base, freq_scale, ff, r)
    c, s = cos[:, None, :], sin[:, None, :]
    y = x.copy()
    half = n_rot // 2
    if mode == "neox":
        x0, x1 = x[..., :half], x[..., half:n_rot]
        y[..., :half] = x0 * c - x1 * s
        y[..., half:n_rot] = x0 * s + x1 * c
    else:
        x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        y[..., 0:n_rot:2] = x0 * c - x1 * s
        y[..., 1:n_rot:2] = x0 * s + x1 * c
    return y

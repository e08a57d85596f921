"""CPU decode as one compiled call per layer: the layer programs.

A decode step (up to ``DECODE_MAX_TOKENS`` rows: one sequence's next tokens, or one token of each
sequence of a ``models.base.SeqBatch``) runs each layer as a single Numba call instead of the ~20
backend verbs of ``BaseModel.block``. One call per layer *signature*: the layer's kinds
(attention none | linear | gqa, FFN none | dense), its style (llama/deci: pre-norm, SiLU; gemma3:
per-head Q/K norms, post-norms, GELU, neox RoPE) and the weight type of each matrix. The kernel
is a closure over those constants (so a model compiles one kernel per distinct signature, cached
on disk); the kernels it calls know nothing about models.

The whole layer is ONE parallel region (a prange over the thread count): its phases below are
items that threads claim from atomic counters (``kernels/sync.py``), and a thread that runs out of
items in a phase waits for the phase's last item (a bounded spin, then sched_yield). Nothing
waits for a thread that never started, so fewer threads than expected cannot deadlock. How many
threads a layer runs on is measured, not assumed: its first 2 x ``TUNE_RUNS`` calls (per row
count) alternate all the threads allowed and one thread, and the faster median is kept, since a
thin layer's parallel region (waking a sleeping thread, the waits between phases) can cost more
than splitting its rows saves; the result does not depend on the count (every row's dot is the
same function wherever it runs). It
replaced one region per matvec group (4 a layer), which was slower in every alternation measured
(docs/PERFORMANCE.md).

    llama / deci gqa + dense, per row t (pos[t], that row's cache); phase: items
        h = rms_norm(x) * attn_norm, quantized           1    norm.rms_norm_kernel, act.py (per format)
        q|k|v = W_q h | W_k h | W_v h                     the row chunks of all three (qdot.row_dot)
        q, k = rope(q), rope(k); q *= scale; K/V stored   1    rope.rope_kernel_serial, f16 at pos[t]
        o = attention over row t's cache                  a row each   attention.attn_rows (float64)
        o quantized                                       1
        y = W_o o                                         row chunks
        x += y; m = rms_norm(x) * ffn_norm, quantized     1
        g|u = W_gate m | W_up m                           row chunks
        silu(g) * u, quantized                            1    glu.silu_mul
        y = W_down (.)                                    row chunks
        x += y                                            1
    deci linear attention: x += W_o rms_norm(x) * attn_norm;  deci FFN "none": the layer is skipped
    gemma3: q, k per-head rms-normed before RoPE; x += post_norm(W_o o); x += post_norm(W_down geglu)

Attention is ``attn_rows`` (float64, rounded once) for every row. The per-op path takes the
same kernel for up to ``attention.ROWS_MAX_TOKENS`` (4) query rows on a short cache, and BLAS
tiles beyond: so one sequence's steps of 5-8 tokens stay on the per-op path (``BaseModel.
decode_step``), and on a long cache (``PARALLEL_MIN_WORK``) the two paths compute the same
float64 attention in another order, equal unless a float64 result lies within its rounding
error of a float32 rounding boundary. An attention row runs on one thread (a long context
leaves the other threads waiting).

The numerics are the per-op path's, bit for bit (tests/runtime/test_step.py): the row dots are
``qdot.row_dot_of`` compiled with ``qdot.FASTMATH`` as in the per-type decode kernels, and every
other op is the same non-fastmath Numba function the CPU backend calls (a separately compiled
function keeps its own floating-point flags). SiLU uses the same ``glu.silu_mul`` on both paths.

``DecodeStep.supported(model)`` says why a model cannot use it (then ``BaseModel.forward`` runs
the per-op path): layers or the output head off the CPU, numerics other than exact, a weight type
outside ``qdot.TYPES``, biases, rope scaling (``rope_ext``), KQ softcapping, a non-f16 cache,
an imatrix observer, or an architecture without a layer program. All buffers are allocated once
per model (``Workspace``, sized for ``DECODE_MAX_TOKENS`` rows), so a step allocates no numpy
arrays after the first.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from quant.fast import SOURCES as _QUANT_SOURCES
from quant.fast import cache_by_sources, cache_dir

# the layer programs link the kernels' compiled code into their own cache entries: key them on
# this file, runtime/kernels and quant/fast (before any kernel here is defined; quant/fast/_cache.py)
_HERE = Path(__file__).resolve()
cache_by_sources(_HERE.parent, (_HERE, _HERE.parent / "kernels") + _QUANT_SOURCES,
                 os.environ.get("GGUFKIT_GENERIC_SIMD", ""))

from quant.fast._common import f16_bits  # noqa: E402 (after the cache is keyed)
from quant.fast.blocks import F16_LUT  # noqa: E402
from quant.types import BY_ID, TYPES  # noqa: E402
from runtime import backend as B  # noqa: E402
from runtime.kernels import qdot  # noqa: E402
from runtime.kernels.act import quantize_q8_0_bs, quantize_q8_k_bs  # noqa: E402
from runtime.kernels.attention import attn_rows  # noqa: E402
from runtime.kernels.glu import gelu_table, silu_mul  # noqa: E402
from runtime.kernels.matmul import DECODE_MAX_TOKENS, kernel  # noqa: E402
from runtime.kernels.norm import rms_norm_kernel  # noqa: E402
from runtime.kernels.rope import rope_kernel_serial  # noqa: E402
from runtime.kernels.sync import claim, done, wait_for  # noqa: E402

CH = qdot.ROW_CHUNK
STYLES = ("llama", "gemma3")        # the layer programs (BaseModel subclasses name theirs: step_style)
ATTN = {"none": 0, "linear": 1, "gqa": 2}


# ---------------------------------------------------------------- the small ops (no fastmath)

@njit(cache=True)
def add_into(x, y):
    """x += y, float32 (the residual add)."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = x[i, j] + y[i, j]


@njit(cache=True)
def scale_into(x, s):
    """x *= s, float32."""
    f = x.reshape(-1)
    for i in range(f.shape[0]):
        f[i] = f[i] * s


@njit(cache=True)
def kv_store(kc, vc, p, k, v):
    """Row p of the f16 caches (uint16 bits [n_ctx, n_kv, hd]) = k, v f32 [n_kv, hd], rounded to
    nearest even (numpy's float32 -> float16 assignment)."""
    for h in range(k.shape[0]):
        for d in range(k.shape[1]):
            kc[p, h, d] = f16_bits(k[h, d])
            vc[p, h, d] = f16_bits(v[h, d])


@njit(cache=True)
def gelu_mul(g, u, out, table):
    """ggml_vec_geglu_f32 (glu.geglu): table[fp16(g)] * u with the +-10 cut-offs."""
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            a = g[i, j]
            if a <= -10.0:
                e = np.float32(0.0)
            elif a >= 10.0:
                e = a
            else:
                e = table[f16_bits(a)]
            out[i, j] = e * u[i, j]


@njit(cache=True)
def quantize_into(x, fmt, q, d, s):
    """x f32 [n, k] -> the activation blocks of format fmt (0: Q8_0/Q8_1 by 32, 1: Q8_K) in the
    flat buffers q, d, s (as matmul.quantize_act)."""
    n, k = x.shape
    if fmt == 1:
        quantize_q8_k_bs(x, q[:n * k].reshape((n, k)), d[:n * (k // 256)].reshape((n, k // 256)),
                         s[:n * (k // 16)].reshape((n, k // 16)))
    else:
        quantize_q8_0_bs(x, q[:n * k].reshape((n, k)), d[:n * (k // 32)].reshape((n, k // 32)),
                         s[:n * (k // 16)].reshape((n, k // 16)))


# ---------------------------------------------------------------- the layer kernel


def _fmt(qt: int) -> int:
    return 1 if BY_ID[qt].vec_dot_type == "Q8_K" else 0


def _make_layer(sig: tuple):
    """The layer program of one signature as ONE parallel region: its phases (norm, Q|K|V rows,
    RoPE and KV store, attention rows, W_o rows, FFN norm, gate|up rows, GLU, W_down rows, the
    residual) are items claimed through ``sync`` counters, with a bounded-spin wait between phases."""
    attn, ffn, gemma, neox, tq, tk, tv, to, tg, tu, td = sig
    # absent matrices (-1) get Q8_0 and format 0: their code is never reached, but the closure
    # needs literal type ids and views that fit the buffers
    tq, tk, tv, to, tg, tu, td = (t if t >= 0 else TYPES["Q8_0"].id for t in (tq, tk, tv, to, tg, tu, td))
    fq, fk, fv, fo, fg, fu, fd = (_fmt(t) for t in (tq, tk, tv, to, tg, tu, td))
    need_a0, need_a1 = 0 in (fq, fk, fv), 1 in (fq, fk, fv)
    need_f0, need_f1 = 0 in (fg, fu), 1 in (fg, fu)
    bo = 256 if fo == 1 else 32
    bd = 256 if fd == 1 else 32

    def layer_step(x, pos, kcs, vcs, wq, wk, wv, wo, wg, wu, wd, n_attn, n_ffn, n_q, n_k, n_pa, n_pf,
                   f32s, q8s, xd, xs, lut, ff, gtab, eps, theta_scale, freq_scale, attn_scale,
                   n_head, n_kv, hd, n_rot, window, cnt, n_thr, spin):
        n, E = x.shape
        nq, nk = n_head * hd, n_kv * hd
        nff = wg.shape[0] if ffn == 1 else 1
        kin = nq if attn == 2 else E
        h = f32s[0][:n * E].reshape((n, E))
        y = f32s[1][:n * E].reshape((n, E))
        q = f32s[2][:n * nq].reshape((n, nq))
        k = f32s[3][:n * nk].reshape((n, nk))
        v = f32s[4][:n * nk].reshape((n, nk))
        qr = f32s[5][:n * nq].reshape((n, n_head, hd))
        kr = f32s[6][:n * nk].reshape((n, n_kv, hd))
        qn = f32s[7][:n * nq].reshape((n * n_head, hd))
        kn = f32s[8][:n * nk].reshape((n * n_kv, hd))
        g = f32s[9][:n * nff].reshape((n, nff))
        u = f32s[10][:n * nff].reshape((n, nff))
        m = f32s[11][:n * nff].reshape((n, nff))
        qf, of = f32s[5], f32s[2]
        src = of[:n * nq].reshape((n, nq)) if attn == 2 else h
        a0 = (q8s[0][:n * E].reshape((n, E)), xd[0][:n * (E // 32)].reshape((n, E // 32)),
              xs[0][:n * (E // 16)].reshape((n, E // 16)))
        a1 = (q8s[1][:n * E].reshape((n, E)), xd[1][:n * (E // 256)].reshape((n, E // 256)),
              xs[1][:n * (E // 16)].reshape((n, E // 16)))
        aq = a1 if fq == 1 else a0
        ak = a1 if fk == 1 else a0
        av = a1 if fv == 1 else a0
        ag = a1 if fg == 1 else a0
        au = a1 if fu == 1 else a0
        ao = (q8s[fo][:n * kin].reshape((n, kin)), xd[fo][:n * (kin // bo)].reshape((n, kin // bo)),
              xs[fo][:n * (kin // 16)].reshape((n, kin // 16)))
        ad = (q8s[fd][:n * nff].reshape((n, nff)), xd[fd][:n * (nff // bd)].reshape((n, nff // bd)),
              xs[fd][:n * (nff // 16)].reshape((n, nff // 16)))
        cq, ck, ce, cf = (nq + CH - 1) // CH, (nk + CH - 1) // CH, (E + CH - 1) // CH, (nff + CH - 1) // CH
        for i in range(cnt.shape[0]):                   # (a plain loop: cnt[:] = 0 would be a region)
            cnt[i] = 0
        for _w in prange(n_thr):
            if attn >= 1:                                   # 0/1: attention norm, h quantized
                if claim(cnt, 0) == 0:
                    rms_norm_kernel(x, n_attn, True, eps, h)
                    if attn == 2:
                        if need_a0:
                            quantize_into(h, 0, q8s[0], xd[0], xs[0])
                        if need_a1:
                            quantize_into(h, 1, q8s[1], xd[1], xs[1])
                    else:
                        quantize_into(h, fo, q8s[fo], xd[fo], xs[fo])
                    done(cnt, 1)
                wait_for(cnt, 1, 1, spin)
            if attn == 2:
                while True:                                 # 2/3: Q|K|V rows
                    c = claim(cnt, 2)
                    if c >= cq + 2 * ck:
                        break
                    if c < cq:
                        for r in range(c * CH, min(nq, (c + 1) * CH)):
                            row = wq[r]
                            for t in range(n):
                                q[t, r] = qdot.row_dot(tq, row, aq[0], aq[1], aq[2], t, lut)
                    elif c < cq + ck:
                        c2 = c - cq
                        for r in range(c2 * CH, min(nk, (c2 + 1) * CH)):
                            row = wk[r]
                            for t in range(n):
                                k[t, r] = qdot.row_dot(tk, row, ak[0], ak[1], ak[2], t, lut)
                    else:
                        c2 = c - cq - ck
                        for r in range(c2 * CH, min(nk, (c2 + 1) * CH)):
                            row = wv[r]
                            for t in range(n):
                                v[t, r] = qdot.row_dot(tv, row, av[0], av[1], av[2], t, lut)
                    done(cnt, 3)
                wait_for(cnt, 3, cq + 2 * ck, spin)
                if claim(cnt, 4) == 0:                      # 4/5: (Q/K norms), RoPE, scale, KV store
                    if gemma:
                        rms_norm_kernel(q.reshape((n * n_head, hd)), n_q, True, eps, qn)
                        rms_norm_kernel(k.reshape((n * n_kv, hd)), n_k, True, eps, kn)
                        rope_kernel_serial(qn.reshape((n, n_head, hd)), pos, n_rot, theta_scale, freq_scale, ff,
                                           neox, qr)
                        rope_kernel_serial(kn.reshape((n, n_kv, hd)), pos, n_rot, theta_scale, freq_scale, ff,
                                           neox, kr)
                    else:
                        rope_kernel_serial(q.reshape((n, n_head, hd)), pos, n_rot, theta_scale, freq_scale, ff,
                                           neox, qr)
                        rope_kernel_serial(k.reshape((n, n_kv, hd)), pos, n_rot, theta_scale, freq_scale, ff,
                                           neox, kr)
                    scale_into(qr, attn_scale)
                    v3 = v.reshape((n, n_kv, hd))
                    for t in range(n):                       # every row's K/V first: row t sees rows < t
                        kv_store(kcs[t], vcs[t], pos[t], kr[t], v3[t])
                    done(cnt, 5)
                wait_for(cnt, 5, 1, spin)
                while True:                                 # 6/7: attention, a row each
                    t = claim(cnt, 6)
                    if t >= n:
                        break
                    attn_rows(qf[t * nq:(t + 1) * nq].reshape((1, n_head, hd)), kcs[t], vcs[t], lut,
                              of[t * nq:(t + 1) * nq].reshape((1, n_head, hd)), pos[t], 1.0, window, 0.0)
                    done(cnt, 7)
                wait_for(cnt, 7, n, spin)
                if claim(cnt, 8) == 0:                      # 8/9: attention output quantized
                    quantize_into(src, fo, q8s[fo], xd[fo], xs[fo])
                    done(cnt, 9)
                wait_for(cnt, 9, 1, spin)
            if attn >= 1:
                while True:                                 # 10/11: W_o rows
                    c = claim(cnt, 10)
                    if c >= ce:
                        break
                    for r in range(c * CH, min(E, (c + 1) * CH)):
                        row = wo[r]
                        for t in range(n):
                            y[t, r] = qdot.row_dot(to, row, ao[0], ao[1], ao[2], t, lut)
                    done(cnt, 11)
                wait_for(cnt, 11, ce, spin)
            if claim(cnt, 12) == 0:                         # 12/13: residual, FFN norm, quantized
                if attn >= 1:
                    if gemma:
                        rms_norm_kernel(y, n_pa, True, eps, h)
                        add_into(x, h)
                    else:
                        add_into(x, y)
                if ffn == 1:
                    rms_norm_kernel(x, n_ffn, True, eps, h)
                    if need_f0:
                        quantize_into(h, 0, q8s[0], xd[0], xs[0])
                    if need_f1:
                        quantize_into(h, 1, q8s[1], xd[1], xs[1])
                done(cnt, 13)
            if ffn == 1:
                wait_for(cnt, 13, 1, spin)
                while True:                                 # 14/15: gate|up rows
                    c = claim(cnt, 14)
                    if c >= 2 * cf:
                        break
                    if c < cf:
                        for r in range(c * CH, min(nff, (c + 1) * CH)):
                            row = wg[r]
                            for t in range(n):
                                g[t, r] = qdot.row_dot(tg, row, ag[0], ag[1], ag[2], t, lut)
                    else:
                        c2 = c - cf
                        for r in range(c2 * CH, min(nff, (c2 + 1) * CH)):
                            row = wu[r]
                            for t in range(n):
                                u[t, r] = qdot.row_dot(tu, row, au[0], au[1], au[2], t, lut)
                    done(cnt, 15)
                wait_for(cnt, 15, 2 * cf, spin)
                if claim(cnt, 16) == 0:                     # 16/17: GLU, quantized
                    if gemma:
                        gelu_mul(g, u, m, gtab)
                    else:
                        silu_mul(g.reshape(-1), u.reshape(-1), m.reshape(-1), 0, n * nff)
                    quantize_into(m, fd, q8s[fd], xd[fd], xs[fd])
                    done(cnt, 17)
                wait_for(cnt, 17, 1, spin)
                while True:                                 # 18/19: W_down rows
                    c = claim(cnt, 18)
                    if c >= ce:
                        break
                    for r in range(c * CH, min(E, (c + 1) * CH)):
                        row = wd[r]
                        for t in range(n):
                            y[t, r] = qdot.row_dot(td, row, ad[0], ad[1], ad[2], t, lut)
                    done(cnt, 19)
                wait_for(cnt, 19, ce, spin)
                if claim(cnt, 20) == 0:                     # 20: the residual (the region's end joins)
                    if gemma:
                        rms_norm_kernel(y, n_pf, True, eps, h)
                        add_into(x, h)
                    else:
                        add_into(x, y)

    names = [BY_ID[t].name if t >= 0 else "x" for t in sig[4:]]
    layer_step.__qualname__ = (f"layer_step_{'NLG'[attn]}{'ND'[ffn]}{'G' if gemma else 'L'}{int(neox)}_"
                               + "_".join(names))
    return njit(parallel=True, cache=True)(layer_step)


_LAYER_KERNELS: dict = {}


def _stamp(kernel) -> Path:
    """A file beside the layer programs' Numba cache that says ``kernel`` was compiled on this
    install (Numba cannot tell beforehand whether a call will hit its cache; as runtime.kernels.warm)."""
    import llvmlite.binding as llvm
    key = f"{numba.__version__}|{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features()}"
    base = cache_dir(_HERE.parent) or Path.home() / ".cache" / "ggufkit" / "kernel-stamps"
    return base / f"warm-{kernel.py_func.__qualname__}.{hashlib.sha1(key.encode()).hexdigest()[:16]}"


SPIN = 2000          # looks at a counter before a waiting thread starts yielding its core
TUNE_RUNS = 8        # timed runs of each thread count before a layer's count is chosen (DecodeStep)


# A model whose ``step_background`` is set (the interactive commands: run, chat, serve) has the
# layer programs not yet compiled on disk compiled by a child process (``runtime.loader.warm_decode``)
# while the per-op path serves the first tokens, so a first run's time to the first token does not
# wait for them. Otherwise (the library, tests, bench) they compile in the process, at the first
# decode step.
_CHILDREN: dict = {}      # model path -> the compiling child process


def ready(step: "DecodeStep", path: str) -> bool:
    """Whether ``step`` can run now without compiling here: yes unless some of its layer programs
    are not compiled on disk; then a child process compiles them (started once per file; it
    finishes even if this process ends first) and this is False until the child has ended (if it
    failed, the programs compile here at the first call)."""
    if not step.unstamped or not path:
        return True
    p = _CHILDREN.get(path)
    if p is None:
        # its own session and a lower priority: it outlives a short run (a later run then finds the
        # programs compiled) and is bounded work; Numba writes its cache files atomically
        p = _CHILDREN[path] = subprocess.Popen(
            [sys.executable, "-c", "import os, sys; os.nice(10); from runtime.loader import warm_decode; "
             "warm_decode(sys.argv[1])", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
    return p.poll() is not None


def layer_kernel(sig: tuple):
    """The compiled layer program of a signature (built once per process)."""
    k = _LAYER_KERNELS.get(sig)
    if k is None:
        k = _LAYER_KERNELS[sig] = _make_layer(sig)
    return k


# ---------------------------------------------------------------- the model side


@dataclass
class Workspace:
    """Every buffer a step uses, flat, sized once for ``DECODE_MAX_TOKENS`` rows."""
    x: np.ndarray          # f32 [rows, n_embd]: the residual stream
    f32s: tuple            # f32 scratch (h, y, q, k, v, q roped, k roped, q normed, k normed, gate, up, glu)
    q8s: tuple             # int8 activations: blocks of 32, Q8_K
    xd: tuple              # their block scales
    xs: tuple              # their 16-sums
    ids: np.ndarray        # int64 [rows]: token ids
    pos: np.ndarray        # int64 [rows]: positions
    out: np.ndarray        # f32 [rows, n_embd]: the final-normed hidden states


def _dummy_u8():
    return np.zeros((1, 1), np.uint8)


def supported(model) -> str | None:
    """None if ``model``'s decode can run as layer programs, else the reason it cannot."""
    hp = model.hp
    style = getattr(model, "step_style", None)
    if style not in STYLES:
        return f"no layer program for {type(model).__module__}"
    if B.KERNEL_ERROR is not None:
        return "the Numba kernels did not load"
    for be in (*model.backends, model.out_backend):
        if not isinstance(be, B.CPUBackend) or be.numerics != "exact":
            return f"a layer runs on {be!r}"
    if hp.rope_ext is not None or hp.attn_softcap:
        return "rope scaling or KQ softcapping"
    if any(n.endswith(".bias") for n in (*model.w.mats, *model.w.vecs)):
        return "biases"
    for name, t in model.w.mats.items():
        if name.startswith("blk.") and TYPES[t.qtype].id not in qdot.TYPES:
            return f"{name} is {t.qtype}"
    if model.w.mat("token_embd.weight").qtype in ("F32", "F16", "BF16"):
        return "a float token embedding"
    if hp.rope_mode != ("neox" if style == "gemma3" else "norm"):
        return "rope mode"
    return None


class DecodeStep:
    """The layer programs of one model and their workspace. ``run(tokens, caches)`` runs a
    decode step (row i: tokens[i] at caches[i].n_past + offset) and returns the final-normed
    hidden states, a view of the workspace (valid until the next step)."""

    def __init__(self, model):
        self.model = model
        hp, w = model.hp, model.w
        E, hd, R = hp.n_embd, hp.head_dim, DECODE_MAX_TOKENS
        gemma = model.step_style == "gemma3"
        nq = max((s.n_head * hd for s in hp.layers if s.attn == "gqa"), default=1)
        nk = max((s.n_head_kv * hd for s in hp.layers if s.attn == "gqa"), default=1)
        nff = max((s.n_ff for s in hp.layers if s.ffn == "dense"), default=1)
        k_in = max(E, nq, nff)
        sizes = (E, E, nq, nk, nk, nq, nk, nq, nk, nff, nff, nff)
        self.ws = Workspace(x=np.zeros((R, E), np.float32),
                            f32s=tuple(np.zeros(R * s, np.float32) for s in sizes),
                            q8s=(np.zeros(R * k_in, np.int8), np.zeros(R * k_in, np.int8)),
                            xd=(np.zeros(R * k_in // 32, np.float32), np.zeros(R * k_in // 256, np.float32)),
                            xs=(np.zeros(R * k_in // 16, np.int16), np.zeros(R * k_in // 16, np.int16)),
                            ids=np.zeros(R, np.int64), pos=np.zeros(R, np.int64), out=np.zeros((R, E), np.float32))
        self.one = np.ones(1, np.float32)
        self.cnt = np.zeros(32, np.int64)       # the phases' claim/done counters (sync)
        self.threads: dict = {}     # (layer, rows, threads allowed) -> the count it runs on
        self.trials: dict = {}      # the same key -> {count: [ns of the timed runs]} until chosen
        ff = model.rope_freqs
        self.ff = np.ones(hp.n_rot // 2, np.float32) if ff is None else np.ascontiguousarray(ff, np.float32)
        self.gtab = gelu_table() if gemma else self.one
        self.dummy_kv = np.zeros((1, 1, 1), np.uint16)
        self.emb = w.mat("token_embd.weight")
        self.emb_rows = kernel("rows", TYPES[self.emb.qtype].id)
        self.out_norm = np.ascontiguousarray(w.vec("output_norm.weight"), np.float32)
        self.layers = []            # (il, kernel, arguments after the caches) or None (skipped)
        for il, spec in enumerate(hp.layers):
            p = f"blk.{il}."
            if spec.ffn == "none" and not gemma:      # deci: the whole layer leaves x unchanged
                self.layers.append(None)
                continue

            def mat(name, p=p):
                t = w.mats.get(p + name + ".weight")
                return (t.data, TYPES[t.qtype].id) if t is not None else (_dummy_u8(), -1)

            def vec(name, p=p):
                v = w.vecs.get(p + name + ".weight")
                return self.one if v is None else np.ascontiguousarray(v, np.float32)

            mats = [mat(n) for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
            sig = (ATTN[spec.attn], int(spec.ffn == "dense"), gemma, gemma, *(t for _, t in mats))
            theta_scale = np.float32(np.float64(np.float32(spec.rope_base))
                                     ** np.float64(np.float32(-2.0) / np.float32(hp.n_rot)))
            args = (*(d for d, _ in mats), vec("attn_norm"), vec("ffn_norm"), vec("attn_q_norm"),
                    vec("attn_k_norm"), vec("post_attention_norm"), vec("post_ffw_norm"),
                    self.ws.f32s, self.ws.q8s, self.ws.xd, self.ws.xs, F16_LUT, self.ff, self.gtab,
                    np.float32(hp.eps), theta_scale, np.float32(spec.rope_scale), np.float32(hp.attn_scale),
                    spec.n_head, spec.n_head_kv, hd, hp.n_rot, int(spec.window or 0))
            self.layers.append((il, layer_kernel(sig), args))
        kernels = {e[1] for e in self.layers if e is not None}
        self.unstamped = [k for k in kernels if not _stamp(k).exists()]
        if self.unstamped:
            from runtime import notices
            n = len(self.unstamped)
            notices.notify(f"compiling decode layer programs for {n} layer kind{'s' * (n > 1)} (first run only)")

    def kv_args(self, caches):
        """Per layer, (K, V) tuples of DECODE_MAX_TOKENS uint16 views: row t's cache (padded)."""
        pad = (self.dummy_kv,) * (DECODE_MAX_TOKENS - len(caches))
        out = []
        for il, spec in enumerate(self.model.hp.layers):
            if spec.has_kv:
                out.append((tuple(c.k[il].view(np.uint16) for c in caches) + pad,
                            tuple(c.v[il].view(np.uint16) for c in caches) + pad))
            else:
                out.append(((self.dummy_kv,) * DECODE_MAX_TOKENS,) * 2)
        return out

    def _trial(self, key, n_max: int) -> int:
        """The thread count the next timed run of a layer tries: all, then one, alternating."""
        runs = self.trials.setdefault(key, {n_max: [], 1: []})
        return n_max if len(runs[n_max]) <= len(runs[1]) else 1

    def _record(self, key, nt: int, ns: int) -> None:
        """Keep a timed run; after TUNE_RUNS of each count, fix the layer's count to the faster
        median (a thin layer's parallel region can cost more than it saves)."""
        runs = self.trials[key]
        runs[nt].append(ns)
        if min(len(v) for v in runs.values()) >= TUNE_RUNS:
            self.threads[key] = min(runs, key=lambda c: (float(np.median(runs[c])), -c))
            del self.trials[key]

    def run(self, tokens, kv, positions) -> np.ndarray:
        """tokens [n] at positions [n] with ``kv`` from ``kv_args`` (row t's cache) -> the
        final-normed hidden states f32 [n, n_embd], a view of the workspace."""
        ws, n, hp = self.ws, len(tokens), self.model.hp
        ids, pos, x = ws.ids[:n], ws.pos[:n], ws.x[:n]
        ids[:] = tokens
        pos[:] = positions
        n_max = numba.get_num_threads()
        self.emb_rows(self.emb.data, ids, x, F16_LUT)
        if hp.emb_scale != 1.0:
            scale_into(x, np.float32(hp.emb_scale))
        cur = n_max
        for entry in self.layers:
            if entry is not None:
                il, k, args = entry
                key = (il, n, n_max)
                nt = self.threads.get(key)
                timed = nt is None
                if timed:
                    nt = self._trial(key, n_max)
                if nt != cur:
                    numba.set_num_threads(nt)
                    cur = nt
                t0 = time.perf_counter_ns() if timed else 0
                k(x, pos, kv[il][0], kv[il][1], *args, self.cnt, nt, SPIN)
                if timed:
                    self._record(key, nt, time.perf_counter_ns() - t0)
        if cur != n_max:
            numba.set_num_threads(n_max)
        out = ws.out[:n]
        rms_norm_kernel(x, self.out_norm, True, np.float32(hp.eps), out)
        if self.unstamped:                      # compiled now: later processes load them quietly
            for k in self.unstamped:
                try:
                    _stamp(k).parent.mkdir(parents=True, exist_ok=True)
                    _stamp(k).write_text("compiled\n")
                except OSError:
                    pass
            self.unstamped = []
        return out

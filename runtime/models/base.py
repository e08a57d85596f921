"""What every architecture shares: hyperparameters as per-layer data, the KV cache, the forward skeleton.

An architecture file (one per ``models.ARCHS`` entry: llama, deci, gemma2, gemma3, qwen2, qwen3,
phi3, mistral3) supplies
    read_hparams(fields, tensors) -> Hparams     one LayerSpec per layer: its kinds and shapes
    class Model(BaseModel) with block(il, x, pos, cache) -> x    one transformer layer
and may override ``embed`` (gemma scales) and ``logits`` (softcapping).

Layers call ``self.backend(il)`` (a ``runtime.device.Backend``: CPU, or CUDA for offloaded
layers) for every op; ``forward`` moves the activations only where two consecutive layers (or
the last layer and the output head) sit on different devices. ``place`` sets the placement.

Shapes: x is f32 [n_tok, n_embd]; a weight QTensor is [n_out, n_in]; the KV cache of an
attention layer is f16 [n_ctx, n_head_kv, head_dim] (llama.cpp's default cache type).

Several sequences: ``forward(tokens, SeqBatch([c0, .., c_{n-1}]))`` runs row i as the next token
of sequence i (at position caches[i].n_past, into caches[i]); every op but attention treats the
rows as one batch (each weight read once per step), and each row's result equals that token run
alone on its cache (the backends keep up to ``MAX_SEQS`` rows on their decode kernels, whose
rows are independent).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from runtime import backend as B
from runtime.backend import CPU, Backend
from runtime.device import move
from runtime.qtensor import QTensor
from runtime.errors import ModelError

MAX_LAYERS = 512                       # LLAMA_MAX_LAYERS (src/llama-hparams.h)
MAX_SEQS = 8                           # sequences per SeqBatch step: the CPU's and CUDA's decode kernels
                                       # take up to 8 rows (kernels.matmul.DECODE_MAX_TOKENS, MATVEC_MAX_TOKENS)


ATTN_KINDS = ("none", "linear", "gqa")
FFN_KINDS = ("none", "dense")


@dataclass(frozen=True)
class LayerSpec:
    """One layer's kinds and shape, checked on construction.

    attn  "gqa"     self-attention, n_head query and n_head_kv KV heads (n_head_kv divides n_head);
                    its KV cache is [n_ctx, n_head_kv, head_dim]
          "linear"  DeciLM's linear attention: x + W_o rmsnorm(x), attn_output [n_embd, n_embd]
                    (n_head as the file gives it, n_head_kv 0)
          "none"    no attention (DeciLM no-op; n_head 0)
    ffn   "dense"   x + W_down(act(W_gate m) * W_up m), n_ff > 0 rows
          "none"    no FFN (n_ff 0)
    """
    attn: str
    ffn: str
    n_head: int
    n_head_kv: int
    n_ff: int
    rope_base: float
    rope_scale: float = 1.0
    window: int | None = None          # sliding-window size for SWA layers (gemma local layers)

    def __post_init__(self):
        if self.attn not in ATTN_KINDS or self.ffn not in FFN_KINDS:
            raise ModelError(f"bad layer kinds: attention {self.attn!r} (one of {', '.join(ATTN_KINDS)}), "
                             f"FFN {self.ffn!r} (one of {', '.join(FFN_KINDS)})")
        ok = {"gqa": self.n_head > 0 and self.n_head_kv > 0 and self.n_head % self.n_head_kv == 0,
              "linear": self.n_head > 0 and self.n_head_kv == 0,
              "none": self.n_head == 0 and self.n_head_kv >= 0}.get(self.attn, False)
        ok = ok and {"dense": self.n_ff > 0, "none": self.n_ff == 0}.get(self.ffn, False)
        if not ok:
            raise ModelError(f"bad layer: attention {self.attn!r} with {self.n_head}/{self.n_head_kv} heads, "
                             f"FFN {self.ffn!r} of size {self.n_ff}")
        if self.window is not None and self.window <= 0:
            raise ModelError(f"bad sliding window {self.window}")

    @property
    def has_kv(self) -> bool:
        return self.attn == "gqa"


@dataclass(frozen=True)
class Hparams:
    arch: str
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    head_dim: int                      # attention.key_length (== value_length here)
    n_rot: int
    eps: float
    rope_mode: str                     # "norm" (llama, deci) | "neox" (gemma3)
    layers: tuple[LayerSpec, ...]
    attn_scale: float                  # kq scale applied to Q
    emb_scale: float = 1.0             # gemma3: sqrt(n_embd)
    final_softcap: float = 0.0         # gemma3 final_logit_softcapping (0: none)
    attn_softcap: float = 0.0          # gemma2 attn_logit_softcapping on KQ (0: none)
    rope_ext: object = None            # rope.RopeExt (yarn / longrope attn factor), None: plain RoPE

    @property
    def n_layer(self) -> int:
        return len(self.layers)


class KVCache:
    """Per-layer K/V, f16 [n_ctx, n_head_kv, head_dim]; None for layers without attention KV.
    Each layer's pair lives on the device of the backend that runs the layer."""

    def __init__(self, hp: Hparams, n_ctx: int, dtype=np.float16, backends=None):
        self.n_ctx = int(n_ctx)
        self.n_past = 0
        self.k: list = []
        self.v: list = []
        for il, spec in enumerate(hp.layers):
            be = backends[il] if backends is not None else CPU
            k, v = be.new_kv(self.n_ctx, spec.n_head_kv, hp.head_dim, dtype) if spec.has_kv else (None, None)
            self.k.append(k)
            self.v.append(v)

    def clear(self) -> None:
        self.n_past = 0

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k + self.v if a is not None)


class SeqBatch:
    """One decode step of several independent sequences: ``caches[i]`` (distinct KVCache objects)
    holds sequence i, whose next token is row i of the tokens given to ``BaseModel.forward``."""

    def __init__(self, caches):
        self.caches = list(caches)
        if not 1 <= len(self.caches) <= MAX_SEQS:
            raise ModelError(f"a batch holds 1 to {MAX_SEQS} sequences, got {len(self.caches)}")
        if len({id(c) for c in self.caches}) != len(self.caches):
            raise ModelError("the same KV cache appears twice in one batch of sequences")

    def __len__(self) -> int:
        return len(self.caches)

    def positions(self) -> np.ndarray:
        """i32 [n]: the position of each sequence's next token."""
        return np.array([c.n_past for c in self.caches], dtype=np.int32)

    @property
    def n_ctx(self) -> int:
        """The context size of every sequence (rope scaling by context needs one)."""
        sizes = {c.n_ctx for c in self.caches}
        if len(sizes) != 1:
            raise ModelError(f"this model's rope scaling needs one context size for a batch, got {sorted(sizes)}")
        return sizes.pop()


class Residual(NamedTuple):
    """A layer's output not yet added up: x + delta. A block may return one, and the next block
    (``takes_residual``), or the output head, adds it together with its first norm
    (``Backend.add_rms_norm``: one pass on a GPU instead of two)."""
    x: object
    delta: object


@dataclass
class Weights:
    """Tensors by GGUF name: 2-D as QTensor (quantized, memory-mapped), 1-D as f32 arrays."""
    mats: dict = field(default_factory=dict)
    vecs: dict = field(default_factory=dict)

    def mat(self, name: str) -> QTensor:
        try:
            return self.mats[name]
        except KeyError:
            raise ModelError(f"missing tensor {name}") from None

    def vec(self, name: str) -> np.ndarray:
        try:
            return self.vecs[name]
        except KeyError:
            raise ModelError(f"missing tensor {name}") from None


class BaseModel(ABC):
    """Token ids -> hidden states -> logits, with a KV cache. Subclasses define ``block``."""

    step_style: str | None = None      # the decode layer program of runtime.step ("llama", "gemma3"), if any
    fused_decode = True                # run decode steps as layer programs where runtime.step can
    step_background = False            # compile missing layer programs in a child process (runtime.step.ready)

    def __init__(self, hp: Hparams, w: Weights, tokenizer=None, path: str = ""):
        self.hp, self.w, self.tokenizer, self.path = hp, w, tokenizer, path
        self.output = w.mats.get("output.weight") or w.mat("token_embd.weight")   # tied if absent
        self.rope_freqs = w.vecs.get("rope_freqs.weight")
        self.check()
        # placement: token_embd is looked up on the CPU (as llama.cpp does); each layer and the
        # output head run on their own backend (runtime.plan chooses; all CPU by default)
        self.backends: list[Backend] = [CPU] * hp.n_layer
        self.out_backend: Backend = CPU
        self.decode_graph = None       # runtime.cuda.graph.DecodeGraph when fully on a GPU
        self.step = None               # runtime.step.DecodeStep, built on the first decode step that can use it
        self.step_refused = None       # why runtime.step cannot run this model (None: not asked yet)
        self.step_pending = True       # runtime.step.ready not yet true for self.step

    def backend(self, il: int) -> Backend:
        """The backend that runs layer il."""
        return self.backends[il]

    def place(self, backends: list[Backend], out_backend: Backend) -> None:
        """Run layer il on backends[il] and the output head on out_backend (weights uploaded now)."""
        if len(backends) != self.hp.n_layer:
            raise ModelError(f"placement has {len(backends)} layers for a model of {self.hp.n_layer} layers")
        for il, be in enumerate(backends):
            be.load_weights(*self.layer_weights(il), groups=self.weight_groups(il))
        out_vecs = {"output_norm.weight": self.w.vec("output_norm.weight")}
        out_backend.load_weights({"output": self.output}, out_vecs)
        self.backends, self.out_backend = list(backends), out_backend
        self.decode_graph = None
        self.step = self.step_refused = None
        self.step_pending = True       # runtime.step.ready not yet true for self.step

    def weight_groups(self, il: int) -> list[tuple]:
        """The weights of layer il that ``matmuls`` takes together (Q/K/V, gate/up), for
        ``Backend.load_weights``."""
        p, mats = f"blk.{il}.", self.w.mats
        groups = [tuple(mats.get(p + n + ".weight") for n in names)
                  for names in (("attn_q", "attn_k", "attn_v"), ("ffn_gate", "ffn_up"))]
        return [g for g in groups if all(t is not None for t in g)]

    def layer_weights(self, il: int) -> tuple[dict, dict]:
        """(2-D QTensors, 1-D vectors) of layer il, by GGUF name (``blk.{il}.``)."""
        p = f"blk.{il}."
        return ({k: v for k, v in self.w.mats.items() if k.startswith(p)},
                {k: v for k, v in self.w.vecs.items() if k.startswith(p)})

    # -------------------------------------------------------------- checks

    def check(self) -> None:
        """Every tensor the graph will use exists with the right shape."""
        hp, w = self.hp, self.w
        emb = w.mat("token_embd.weight")
        if emb.shape != (hp.n_vocab, hp.n_embd):
            raise ModelError(f"token_embd.weight is {emb.shape}, expected {(hp.n_vocab, hp.n_embd)}")
        for name, t in w.mats.items():
            if t.qtype not in B.KERNEL_TYPES:
                raise ModelError(f"{name}: unsupported tensor type {t.qtype}")
        for il in range(hp.n_layer):
            self.check_layer(il)
        self.check_shapes()

    def check_layer(self, il: int) -> None:
        pass

    ffn_up_rows = 1    # ffn_up is [ffn_up_rows * n_ff, n_embd]: 2 where gate and up are fused (phi3)

    def check_shapes(self) -> None:
        """The hparams are sane and every standard tensor present has the shape they imply
        (a file whose header disagrees with itself is refused at load, not mid-forward)."""
        hp, w, hd, E = self.hp, self.w, self.hp.head_dim, self.hp.n_embd
        if min(E, hd, hp.n_vocab, hp.n_layer) <= 0 or hp.n_rot <= 0 or hp.n_rot > hd or hp.n_rot % 2:
            raise ModelError(f"bad hyperparameters: n_embd {E}, head_dim {hd}, n_rot {hp.n_rot}, "
                             f"n_vocab {hp.n_vocab}, n_layer {hp.n_layer}")
        if not (math.isfinite(hp.eps) and hp.eps >= 0):
            raise ModelError(f"bad rms norm epsilon {hp.eps}")
        want = {"output.weight": (hp.n_vocab, E), "output_norm.weight": (E,)}
        if self.rope_freqs is not None:
            want["rope_freqs.weight"] = (hp.n_rot // 2,)
        for il, spec in enumerate(hp.layers):        # LayerSpec checked its own kinds and counts
            p = f"blk.{il}."
            if spec.attn == "gqa":
                want.update({p + "attn_q.weight": (spec.n_head * hd, E), p + "attn_k.weight": (spec.n_head_kv * hd, E),
                             p + "attn_v.weight": (spec.n_head_kv * hd, E),
                             p + "attn_output.weight": (E, spec.n_head * hd),
                             p + "attn_q_norm.weight": (hd,), p + "attn_k_norm.weight": (hd,)})
            elif spec.attn == "linear":
                want[p + "attn_output.weight"] = (E, E)
            if spec.ffn == "dense":
                want.update({p + "ffn_gate.weight": (spec.n_ff, E), p + "ffn_up.weight": (self.ffn_up_rows * spec.n_ff, E),
                             p + "ffn_down.weight": (E, spec.n_ff)})
            for n in ("attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm"):
                want[p + n + ".weight"] = (E,)
        for name, shape in want.items():
            t = w.mats.get(name) if len(shape) == 2 else w.vecs.get(name)
            got = None if t is None else tuple(t.shape)
            if t is None and len(shape) == 1 and name in w.mats:
                got = tuple(w.mats[name].shape)
            if t is None and len(shape) == 2 and name in w.vecs:
                got = tuple(w.vecs[name].shape)
            if got is not None and got != shape:
                raise ModelError(f"{name} is {list(got)}, the hyperparameters imply {list(shape)}")

    def new_cache(self, n_ctx: int, dtype=np.float16) -> KVCache:
        """A KV cache for n_ctx positions; f16 like llama.cpp's default, f32 for exact checks."""
        if n_ctx <= 0:
            raise ModelError(f"context size must be positive, got {n_ctx}")
        return KVCache(self.hp, n_ctx, dtype, self.backends)

    # -------------------------------------------------------------- forward

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """Token embeddings on the CPU (llama.cpp keeps token_embd in host memory), f32 [n, n_embd]."""
        x = CPU.get_rows(self.w.mat("token_embd.weight"), tokens)
        if self.hp.emb_scale != 1.0:
            x = CPU.scale(x, self.hp.emb_scale)
        return x

    def forward(self, tokens, cache: KVCache | SeqBatch, out_rows=None) -> np.ndarray:
        """Run tokens at positions cache.n_past.. and return the final-normed hidden states of
        rows ``out_rows`` (None: all, -1: last) as f32 [n_out, n_embd]; advances the cache.
        With a ``SeqBatch`` of n caches, token i is the next token of sequence i (one each)."""
        tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
        n = len(tokens)
        if n == 0:
            raise ModelError("no tokens to evaluate")
        if isinstance(cache, SeqBatch):
            if n != len(cache):
                raise ModelError(f"{n} tokens for a batch of {len(cache)} sequences (one token each)")
            for i, c in enumerate(cache.caches):
                if c.n_past + 1 > c.n_ctx:
                    raise ModelError(f"context overflow in sequence {i}: {c.n_past} + 1 tokens > context size {c.n_ctx}")
            pos = cache.positions()
        else:
            if cache.n_past + n > cache.n_ctx:
                raise ModelError(f"context overflow: {cache.n_past} + {n} tokens > context size {cache.n_ctx}")
            pos = np.arange(cache.n_past, cache.n_past + n, dtype=np.int32)
        if tokens.min() < 0 or tokens.max() >= self.hp.n_vocab:
            raise ModelError(f"token id out of range 0..{self.hp.n_vocab - 1}")
        step = self.decode_step(cache, n)
        if step is not None:
            h = step.run(tokens, self.step_kv(step, cache, n), pos)
            for c in cache.caches if isinstance(cache, SeqBatch) else (cache,):
                c.n_past += 1 if isinstance(cache, SeqBatch) else n
            return h.copy() if out_rows is None else h[[-1]] if isinstance(out_rows, int) and out_rows == -1 \
                else h[out_rows]
        x, on = self.embed(tokens), CPU
        for il in range(self.hp.n_layer):
            be = self.backends[il]
            if isinstance(x, Residual) and be is not on:
                x = on.add(x.x, x.delta)
            x, on = move(x, on, be), be             # activations cross only between devices
            x = self.block(il, x, pos, cache)
        for c in cache.caches if isinstance(cache, SeqBatch) else (cache,):
            c.n_past += 1 if isinstance(cache, SeqBatch) else n
        out = self.out_backend
        if isinstance(x, Residual) and out is not on:
            x = on.add(x.x, x.delta)
        a, d = x if isinstance(x, Residual) else (move(x, on, out), None)
        if out_rows is not None:
            a, d = out.take_rows(a, out_rows), None if d is None else out.take_rows(d, out_rows)
        return out.add_rms_norm(a, d, self.w.vec("output_norm.weight"), self.hp.eps, consumers=(self.output,))[1]

    takes_residual = False    # block(il, x) accepts a Residual x (and may return one)

    def layer(self, il: int, x, pos: np.ndarray, cache: KVCache):
        """``block`` with its output as one array (a returned Residual added up)."""
        y = self.block(il, x, pos, cache)
        return self.backend(il).add(y.x, y.delta) if isinstance(y, Residual) else y

    def norm_in(self, il: int, x, w_name: str, consumers=()):
        """A block's first step: (x, rmsnorm(x) * w) for x an array or a Residual (added here,
        in the same pass on a GPU). consumers: the weights that take the normed rows."""
        a, d = x if isinstance(x, Residual) else (x, None)
        return self.backend(il).add_rms_norm(a, d, self.w.vec(w_name), self.hp.eps, consumers)

    def decode_step(self, cache, n: int):
        """The compiled layer programs (runtime.step.DecodeStep) for a step of n rows, or None
        where the per-op path runs (see runtime.step.supported; more than ROWS_MAX_TOKENS (4)
        tokens of one sequence, an f32 cache, an imatrix collection)."""
        from runtime import step as S
        if not self.fused_decode or n > S.DECODE_MAX_TOKENS or B.MATMUL_OBSERVERS:
            return None
        from runtime.kernels.attention import ROWS_MAX_TOKENS
        if not isinstance(cache, SeqBatch) and n > ROWS_MAX_TOKENS:
            return None     # the per-op path's attention takes its BLAS tiles from here: keep its floats
        caches = cache.caches if isinstance(cache, SeqBatch) else (cache,)
        if any(k is not None and k.dtype != np.float16 for c in caches for k in c.k):
            return None
        if self.step is None and self.step_refused is None:
            self.step_refused = S.supported(self) or ""
            if not self.step_refused:
                self.step = S.DecodeStep(self)
        if self.step is not None and self.step_pending:
            if self.step_background and not S.ready(self.step, self.path):
                return None         # compiled by a child process meanwhile (runtime.step.ready)
            self.step_pending = False
        return self.step

    @staticmethod
    def step_kv(step, cache, n: int) -> list:
        """The caches' per-layer arrays as the layer programs take them, kept on the cache (or
        batch) object: they do not change while it lives."""
        key = (id(step), n)
        memo = cache.__dict__.setdefault("_step_kv", {})
        if key not in memo:
            memo[key] = step.kv_args(list(cache.caches) if isinstance(cache, SeqBatch) else [cache] * n)
        return memo[key]

    def logits(self, h, host: bool = True):
        """Hidden [n, n_embd] (from ``forward``) -> logits f32 [n, n_vocab] (with final
        softcapping if set); a host array, or with host=False an array of the output backend."""
        out = self.out_backend
        y = out.matmul(self.output, h)
        if self.hp.final_softcap:
            y = out.softcap(y, self.hp.final_softcap)
        return out.to_host(y) if host else y

    @abstractmethod
    def block(self, il: int, x: np.ndarray, pos: np.ndarray, cache: KVCache) -> np.ndarray:
        """One layer: x f32 [n, n_embd] at positions pos -> x after the layer (each arch file)."""

    # -------------------------------------------------------------- shared pieces

    def attention(self, il: int, h: np.ndarray, pos: np.ndarray, cache: KVCache | SeqBatch,
                  q_norm: np.ndarray | None = None, k_norm: np.ndarray | None = None) -> np.ndarray:
        """GQA self-attention of layer il on normed input h [n, n_embd] -> [n, n_embd] (after W_o).

        Q/K/V projections (separate, or one fused attn_qkv [(n_head + 2 n_head_kv) hd, n_embd] as
        phi3; optional biases as qwen2), optional per-head RMS norms (gemma3, qwen3), RoPE
        (``rope_qk``), Q scaled, K/V appended to the f16 cache, causal (and sliding-window)
        attention over the cache with optional KQ softcapping (gemma2), output projection."""
        hp, spec, p, be = self.hp, self.hp.layers[il], f"blk.{il}.", self.backend(il)
        n, hd = h.shape[0], hp.head_dim
        nq, nk = spec.n_head * hd, spec.n_head_kv * hd
        if p + "attn_qkv.weight" in self.w.mats:
            qkv = self._proj(il, p + "attn_qkv", h)
            q, k, v = qkv[:, :nq], qkv[:, nq:nq + nk], qkv[:, nq + nk:]
        else:
            q, k, v = self._projs(il, [p + "attn_q", p + "attn_k", p + "attn_v"], h)
        q, k, v = q.reshape(n, spec.n_head, hd), k.reshape(n, spec.n_head_kv, hd), v.reshape(n, spec.n_head_kv, hd)
        if q_norm is not None:
            q = be.rms_norm(q.reshape(-1, hd), q_norm, hp.eps).reshape(n, spec.n_head, hd)
        if k_norm is not None:
            k = be.rms_norm(k.reshape(-1, hd), k_norm, hp.eps).reshape(n, spec.n_head_kv, hd)
        if isinstance(cache, SeqBatch):             # each sequence attends over its own cache
            q, k = self.rope_qk(il, q, k, pos, cache)
            q = be.scale(q, hp.attn_scale)
            os = []
            for i, c in enumerate(cache.caches):
                r = slice(i, i + 1)
                be.kv_write(c.k[il], c.v[il], c.n_past, k[r], v[r])
                os.append(be.attention(q[r], c.k[il], c.v[il], c.n_past, 1.0, window=spec.window,
                                       softcap=hp.attn_softcap or None))
            o = os[0] if len(os) == 1 else np.concatenate(os)    # (cupy arrays too: NEP 18)
            return self._proj(il, p + "attn_output", o.reshape(n, spec.n_head * hd))
        s = cache.n_past
        if hp.rope_ext is None and type(self).rope_qk is BaseModel.rope_qk:   # rope, scale, KV write: one verb
            q = be.rope_kv(q, k, v, cache.k[il], cache.v[il], pos, s, hp.n_rot, spec.rope_base, spec.rope_scale,
                           self.rope_freqs, hp.rope_mode, hp.attn_scale)
        else:
            q, k = self.rope_qk(il, q, k, pos, cache)
            q = be.scale(q, hp.attn_scale)
            be.kv_write(cache.k[il], cache.v[il], s, k, v)
        wo = p + "attn_output"
        o = be.attention_for(self.w.mat(wo + ".weight"), q, cache.k[il], cache.v[il], s, 1.0, window=spec.window,
                             softcap=hp.attn_softcap or None)
        return self._proj(il, wo, o.reshape(n, spec.n_head * hd))

    def _projs(self, il: int, names: list, x) -> list:
        """``_proj`` of several weights on one input (``Backend.matmuls``: one conversion of x,
        one launch for a group uploaded together)."""
        be = self.backend(il)
        ys = be.matmuls([self.w.mat(n + ".weight") for n in names], x)
        bs = [self.w.vecs.get(n + ".bias") for n in names]
        return [y if b is None else be.add(y, b) for y, b in zip(ys, bs)]

    def _proj(self, il: int, name: str, x):
        """W x (+ b when the GGUF has ``name.bias``) on layer il's backend."""
        be = self.backend(il)
        y = be.matmul(self.w.mat(name + ".weight"), x)
        b = self.w.vecs.get(name + ".bias")
        return y if b is None else be.add(y, b)

    def rope_qk(self, il: int, q, k, pos: np.ndarray, cache: KVCache):
        """RoPE on Q [n, n_head, hd] and K [n, n_head_kv, hd]: the backend's (llama3 ``rope_freqs``
        divisors), or rope.rope_ext for YaRN / longrope (hp.rope_ext; numpy, through the host)."""
        hp, spec, be = self.hp, self.hp.layers[il], self.backend(il)
        if hp.rope_ext is not None:
            from runtime.models.rope import rope_ext
            ff = hp.rope_ext.factors(self.w, cache.n_ctx)
            return tuple(be.from_host(rope_ext(be.to_host(t), pos, hp.n_rot, spec.rope_base, spec.rope_scale, ff,
                                               hp.rope_mode, hp.rope_ext)) for t in (q, k))
        return (be.rope(q, pos, hp.n_rot, spec.rope_base, spec.rope_scale, self.rope_freqs, hp.rope_mode),
                be.rope(k, pos, hp.n_rot, spec.rope_base, spec.rope_scale, self.rope_freqs, hp.rope_mode))


def default_attn_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


def per_layer(fields: dict, key: str, n_layer: int, default=None) -> list[int]:
    """A per-layer hparam: GGUF array (DeciLM) or scalar broadcast to every layer."""
    v = fields.get(key, default)
    if v is None:
        raise ModelError(f"missing GGUF key {key}")
    if np.ndim(v) == 0:
        return [int(v)] * n_layer
    v = [int(a) for a in v]
    if len(v) != n_layer:
        raise ModelError(f"{key} has {len(v)} entries for {n_layer} layers")
    return v


def rope_scale(fields: dict, arch: str) -> float:
    """freq_scale = 1/{arch}.rope.scaling.factor (or the old rope.scale_linear), 1 if absent
    (llama_model::load_hparams; llama3-style scaling comes as the rope_freqs tensor instead)."""
    f = fields.get(f"{arch}.rope.scaling.factor", fields.get(f"{arch}.rope.scale_linear", 0.0))
    return 1.0 if not f else 1.0 / float(f)


def common(fields: dict, tensors: dict, arch: str) -> dict:
    """The scalar hparams every arch reads: n_embd, n_layer, vocab, context, head dim, rope, eps."""
    def need(key):
        if f"{arch}.{key}" not in fields:
            raise ModelError(f"missing GGUF key {arch}.{key}")
        return fields[f"{arch}.{key}"]
    n_embd, n_layer = int(need("embedding_length")), int(need("block_count"))
    if not 0 < n_layer <= MAX_LAYERS:       # before any per-layer list is built
        raise ModelError(f"{arch}.block_count {n_layer} is outside 1..{MAX_LAYERS} (llama.cpp's LLAMA_MAX_LAYERS)")
    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise ModelError("missing tensor token_embd.weight")
    n_vocab = int(fields.get(f"{arch}.vocab_size", emb.shape[1]))
    heads = fields.get(f"{arch}.attention.head_count", 0)
    n_head0 = int(np.max(heads)) if np.ndim(heads) else int(heads)
    head_dim = int(fields.get(f"{arch}.attention.key_length", n_embd // max(n_head0, 1)))
    n_rot = int(fields.get(f"{arch}.rope.dimension_count", head_dim))
    if n_embd <= 0 or head_dim <= 0 or not 0 <= n_rot <= head_dim or n_rot % 2:
        raise ModelError(f"inconsistent {arch} hyperparameters: embedding_length {n_embd}, head dimension "
                         f"{head_dim}, rope dimension {n_rot}")
    return dict(arch=arch, n_embd=n_embd, n_layer=n_layer, n_vocab=n_vocab,
                n_ctx_train=int(fields.get(f"{arch}.context_length", 2048)), head_dim=head_dim,
                n_rot=n_rot,
                eps=float(need("attention.layer_norm_rms_epsilon")),
                rope_base=float(fields.get(f"{arch}.rope.freq_base", 10000.0)),
                rope_scale=rope_scale(fields, arch))

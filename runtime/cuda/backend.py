"""The CUDA backend: the layer verbs of ``runtime.backend.Backend`` as CUDA kernels.

    be = CUDABackend(0)                   # a GPU through CuPy, or emulated (GGUFKIT_CUDA_EMULATE=1)
    be.load_weights(mats, vecs)           # a layer's packed QTensor bytes uploaded once
    y = be.matmul(w, be.from_host(x))     # q8_1 + mmvq for decode, f16 tiles + cuBLAS for prefill

Activations are f32 device arrays (CuPy; numpy arrays under emulation, where every kernel runs
through the g++-compiled emulator). Weights stay packed exactly as in the GGUF (u8 [n_out,
row_bytes]) and are dequantized inside the kernels. Norm vectors and rope factors are small f32
device copies. The KV cache is f16 device memory, one [n_ctx, n_head_kv, head_dim] pair per
attention layer sized by that layer's own KV heads (``new_kv``). Kernels: ``runtime.cuda.ops``
(norms, rope, elementwise, KV write, attention) and ``runtime.cuda.qmatmul`` (quantized matmul).

The fused verbs (``add_rms_norm``, ``matmuls``, ``rope_kv``, ``attention_for``, ``glu``) run
``runtime.backend.Backend``'s chains in one launch each, and a decode input is converted once
to its consumers' int8 activation format, by the kernel that produced it where it can: a llama
layer is at most 12 launches (docs/CUDA.md, "Launches"). Q/K/V and gate/up of one type are
uploaded as one matrix (``load_weights(groups=...)``) and multiplied in one launch. Decode
attention reads n_past from device memory (``_positions``), so a captured graph
(runtime.cuda.graph) serves every position.

Out of memory on the device (an upload, a cache, an activation) raises ``CudaError`` naming
what was being allocated, never a hang or a CuPy traceback.
"""
from __future__ import annotations

import contextlib
import functools
import os
from collections import OrderedDict

import numpy as np

from runtime.cuda import ops
from runtime.cuda import xp as X
from runtime.cuda.module import CudaError
from runtime.backend import Backend

MIN_CC = (6, 1)          # Pascal with __dp4a (sm_61)
EMULATED_MEMORY = "8GiB"


def probe(index: int = 0) -> tuple[str, int, int]:
    """(name, free bytes, total bytes) of CUDA device ``index``; one-line CudaError when there is
    no CuPy, no driver or one too old, no GPU, or a GPU older than sm_61. Under emulation the
    device has $GGUFKIT_CUDA_EMULATE_MEMORY (default 8GiB) free, so plans do not depend on the
    host's load."""
    dev = X.device(index=index)
    if dev.emulated:
        from quant.units import parse_size
        mem = parse_size(os.environ.get("GGUFKIT_CUDA_EMULATE_MEMORY", "") or EMULATED_MEMORY)
        return dev.name, mem, mem
    if not dev.emulated:
        props = dev.xp.cuda.runtime.getDeviceProperties(index)
        cc = (int(props["major"]), int(props["minor"]))
        if cc < MIN_CC:
            raise CudaError(f"{dev.name} has compute capability {cc[0]}.{cc[1]}; the CUDA kernels need "
                            f"{MIN_CC[0]}.{MIN_CC[1]} (Pascal) or newer")
    free, total = dev.free_memory()
    return dev.name, int(free), int(total)


def _oom_types():
    types = [MemoryError]
    try:
        import cupy
        types.append(cupy.cuda.memory.OutOfMemoryError)
    except Exception:  # noqa: BLE001 - no CuPy: only emulation, whose arrays are numpy
        pass
    return tuple(types)


def _guard(what):
    """Run ``fn`` with the backend's device current (the current device is per host thread and
    anyone may change it: cuda:N must not depend on it), and turn a device out-of-memory error
    into a CudaError naming ``what``."""
    def deco(fn):
        @functools.wraps(fn)
        def f(self, *a, **kw):
            try:
                with self.on_device():
                    return fn(self, *a, **kw)
            except self._oom as e:
                raise CudaError(f"out of GPU memory in {what} on {self.name} ({self.resident / 2**20:.0f} MiB "
                                f"of weights and caches resident): use a smaller GPU memory budget or "
                                f"context ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        return f
    return deco


class CUDABackend(Backend):
    """``numerics`` (runtime.cuda.qmatmul.CUDA_NUMERICS; ``--numerics`` on the command line).
    "fast" (default): ggml-cuda's choices, no FP64 (consumer cards run it at 1/32-1/64 rate):
    q8_1 activations, f16 tiles and x through cuBLAS (tensor cores) for prefill, attention and
    silu in float; perplexity within 1e-3 of the CPU's. "exact": what the CPU backend computes:
    activations converted for each weight type as ggml-cpu does, an f32 prefill GEMM, attention
    and silu in float64 rounded once (the *_f64 kernels); the two backends then agree bit for
    bit in all but rare ties. rms_norm sums in double in both."""

    def __init__(self, index: int = 0, numerics: str | None = None):
        self.dev = X.device(index=index)
        self.xp = self.dev.xp
        self.emulated = self.dev.emulated
        self.index = index
        self.device = f"cuda:{index}"
        self.name = f"CUDA{index}" + (" (emulated)" if self.emulated else "")
        self._mats: dict = {}        # id(QTensor) -> (QTensor, device u8 [n_out, row_bytes])
        self._vecs: dict = {}        # id(host f32 vector) -> (vector, device f32 copy)
        self._pos: dict = {}         # (first position, n) -> device i32 positions
        self._groups: dict = {}      # tuple of id(QTensor) -> (device u8 [rows, row_bytes], row ranges)
        self._acts: OrderedDict = OrderedDict()   # (address, nbytes) -> (f32 rows, blocks, ACT_* format)
        self.resident = 0            # bytes of weights and KV caches this backend allocated
        self._oom = _oom_types()
        self.recording = None        # a runtime.cuda.graph._Recording while a step is captured
        self.numerics = numerics or self._q.DEFAULT_NUMERICS
        self._q.check_numerics(self.numerics)
        self._stream = self._graph_pool = None
        self.memory_limit = None     # bytes CuPy's pool may hold (limit_memory), None: no limit

    def on_device(self):
        """``with be.on_device():`` this backend's GPU is the current device (a no-op emulated)."""
        if self.emulated:
            return contextlib.nullcontext()
        return self.xp.cuda.Device(self.index)

    def limit_memory(self, nbytes: int, measured: bool = False) -> None:
        """The plan, enforced: CuPy's memory pool on this device may hold ``nbytes`` for this
        model (what would grow it further is an out-of-memory CudaError naming the allocation).
        measured: nbytes came from the free memory, which excluded what the pool already held
        for arrays still alive (another model in this process): those come on top."""
        limit = int(nbytes)
        if not self.emulated:
            import gc
            with self.on_device():
                pool = self.xp.get_default_memory_pool()
                if measured:
                    gc.collect()                 # earlier placements' arrays (graphs hold cycles)
                    pool.free_all_blocks()
                    limit += pool.used_bytes()
                pool.set_limit(size=max(0, limit))
        self.memory_limit = limit

    def _on_device(self, emulated, make):
        """emulated() under the emulator, else make(cupy) with this backend's device current."""
        if self.emulated:
            return emulated()
        with self.on_device():
            return make(self.xp)

    @property
    def stream(self):
        """The stream decode graphs are captured and replayed on (emulated: runtime.cuda.graph.EmuStream)."""
        if self._stream is None:
            from runtime.cuda.graph import EmuStream
            self._stream = self._on_device(EmuStream, lambda cp: cp.cuda.Stream(non_blocking=True))
        return self._stream

    @property
    def graph_pool(self):
        """A private memory pool for graph capture and replay (see runtime.cuda.graph)."""
        if self._graph_pool is None:
            from runtime.cuda.graph import EmuPool
            self._graph_pool = self._on_device(EmuPool, lambda cp: cp.cuda.MemoryPool())
        return self._graph_pool

    @property
    def _q(self):
        from runtime.cuda import qmatmul      # the quantized matmul launchers (quants.cu)
        return qmatmul

    # ------------------------------------------------------------ data
    @_guard("a host-to-device copy")
    def from_host(self, x):
        if self.recording is not None:           # graph capture: the step's input buffer
            if tuple(np.shape(x)) != tuple(self.recording.inp.shape):
                raise CudaError(f"graph capture: input {np.shape(x)} is not one token")
            return self.recording.inp
        return self.dev.asarray(np.asarray(x, dtype=np.float32))

    @_guard("a device-to-host copy")
    def to_host(self, x) -> np.ndarray:
        return np.asarray(self.dev.asnumpy(x))

    @_guard("take_rows")
    def take_rows(self, x, rows):
        if isinstance(rows, int) and rows == -1:
            return x[-1:]
        rows = np.asarray(rows, dtype=np.int64)
        return self.xp.ascontiguousarray(x[self.xp.asarray(rows)])

    @_guard("uploading weights")
    def load_weights(self, mats: dict, vecs: dict, groups=()) -> int:
        """Uploads each weight once. A group (Q/K/V, gate/up) whose members share type and row
        length becomes one device matrix, its members row ranges of it: ``matmuls`` then
        multiplies the group in one launch."""
        before = self.resident
        for g in groups:
            self._group(tuple(g))
        for w in mats.values():
            self._mat(w)
        for v in vecs.values():
            self._vec(v)
        return self.resident - before

    def _mat(self, w):
        hit = self._mats.get(id(w))
        if hit is None:
            if w.qtype not in self._q.TYPES_SUPPORTED:
                raise CudaError(f"{w.name}: no CUDA kernel for weight type {w.qtype}")
            hit = self._mats[id(w)] = (w, self.dev.asarray(np.ascontiguousarray(w.data)))
            self.resident += w.data.nbytes
        return hit[1]

    def _group(self, ws):
        if len(ws) < 2 or any(id(w) in self._mats for w in ws) or len({(w.qtype, w.shape[1]) for w in ws}) != 1 \
                or ws[0].qtype not in self._q.TYPES_SUPPORTED:
            return
        dev = self.dev.asarray(np.concatenate([np.asarray(w.data) for w in ws]))
        r0, ranges = 0, []
        for w in ws:
            ranges.append((r0, r0 + w.shape[0]))
            self._mats[id(w)] = (w, dev[r0:r0 + w.shape[0]])
            r0 += w.shape[0]
        self._groups[tuple(id(w) for w in ws)] = (dev, ranges)
        self.resident += dev.nbytes

    def _vec(self, v):
        if v is None:
            return None
        hit = self._vecs.get(id(v))
        if hit is None:
            hit = self._vecs[id(v)] = (v, self.dev.asarray(np.asarray(v, dtype=np.float32)))
            self.resident += hit[1].nbytes
        return hit[1]

    def _positions(self, pos):
        pos = np.asarray(pos, dtype=np.int32)
        if self.recording is not None:           # graph capture: written before each replay
            return self.recording.pos
        key = (int(pos[0]), len(pos)) if len(pos) and np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))) \
            else None
        if key is None:
            return self.dev.asarray(pos)
        d = self._pos.get(key)
        if d is None:
            if len(self._pos) > 64:
                self._pos.clear()
            d = self._pos[key] = self.dev.asarray(pos)
        return d

    # ------------------------------------------------------------ KV cache
    @_guard("allocating the KV cache")
    def new_kv(self, n_ctx, n_head_kv, head_dim, dtype=np.float16):
        if np.dtype(dtype) != np.float16:
            raise CudaError(f"the CUDA KV cache is f16 (asked for {np.dtype(dtype)})")
        shape = (int(n_ctx), int(n_head_kv), int(head_dim))
        k, v = self.dev.zeros(shape, np.float16), self.dev.zeros(shape, np.float16)
        self.resident += k.nbytes + v.nbytes
        return k, v

    @_guard("a KV cache write")
    def kv_write(self, k_cache, v_cache, pos, k, v):
        n = k.shape[0]
        if pos + n > k_cache.shape[0]:
            raise CudaError(f"context overflow: {pos + n} tokens > cache size {k_cache.shape[0]}")
        p = self._positions(np.arange(pos, pos + n, dtype=np.int32))
        ops.kv_write(self.xp.ascontiguousarray(k), k_cache, p)
        ops.kv_write(self.xp.ascontiguousarray(v), v_cache, p)

    # ------------------------------------------------------------ compute
    @_guard("a matmul")
    def matmul(self, w, x):
        x = self._act(x)
        if x.shape[1] != w.shape[1]:
            raise CudaError(f"matmul {w.name}: x has {x.shape[1]} columns, weight expects {w.shape[1]}")
        xq = self._converted(x, self._mode([w])) if x.shape[0] <= self._q.MATVEC_MAX_TOKENS else None
        if xq is not None:
            return self._q.matvec(self._mat(w), w.qtype, w.shape[0], w.shape[1], x, self.numerics, xq=xq)
        return self._q.matmul(self._mat(w), w.qtype, w.shape[0], w.shape[1], x, self.numerics)

    # -- the fused verbs (runtime.backend.Backend's chains in fewer launches). A decode input is
    # converted once to its consumers' activation format, by the kernel that produced it where
    # that kernel can (norm, GLU, attention output), and the matvecs read the blocks from
    # ``_acts``: keyed by the f32 rows' address (a reshape keeps it) and holding the rows, so
    # the address cannot be reused while the entry lives.
    def _mode(self, ws) -> int:
        """The activation format all of ``ws`` read at decode (ACT_NONE when they differ)."""
        modes = {self._q.act_mode(w.qtype, self.numerics) for w in ws}
        return modes.pop() if len(modes) == 1 else self._q.ACT_NONE

    @staticmethod
    def _addr(x) -> tuple[int, int]:
        return (int(x.ctypes.data) if isinstance(x, np.ndarray) else int(x.data.ptr)), int(x.nbytes)

    def _remember(self, x, xq, mode: int) -> None:
        if xq is None or not mode:
            return
        self._acts[self._addr(x)] = (x, xq, mode)
        while len(self._acts) > 8:
            self._acts.popitem(last=False)

    def _converted(self, x, mode: int):
        hit = self._acts.get(self._addr(x)) if mode else None
        return hit[1] if hit is not None and hit[2] == mode else None

    def _fused_mode(self, consumers, n_tok: int, n: int) -> int:
        """The format a fused producer of [n_tok, n] rows writes for ``consumers`` (decode only)."""
        mode = self._mode(consumers) if consumers and n_tok <= self._q.MATVEC_MAX_TOKENS else self._q.ACT_NONE
        return mode if mode and n % self._q.ACT_UNIT[mode] == 0 else self._q.ACT_NONE

    def forget_activations(self) -> None:
        """Drop the remembered activation blocks (a graph capture's end: nothing may keep its
        intermediates alive from the outside)."""
        self._acts.clear()

    @_guard("add_rms_norm")
    def add_rms_norm(self, a, b, w, eps, consumers=()):
        a = self._act(a)
        b = None if b is None else self._act(b)
        mode = self._fused_mode(consumers, a.shape[0] if a.ndim > 1 else 1, a.shape[-1])
        s, y, yq = ops.add_rms_norm(a, b, self._vec(w), eps, mode)
        self._remember(y, yq, mode)
        return s, y

    @_guard("matmuls")
    def matmuls(self, ws, x):
        x = self._act(x)
        ws = list(ws)
        if x.shape[0] > self._q.MATVEC_MAX_TOKENS or len(ws) < 2:
            return [self.matmul(w, x) for w in ws]
        for w in ws:
            if x.shape[1] != w.shape[1]:
                raise CudaError(f"matmul {w.name}: x has {x.shape[1]} columns, weight expects {w.shape[1]}")
        mode = self._mode(ws)
        if mode and self._converted(x, mode) is None:       # one conversion for the group
            self._remember(x, self._q.quantize_act(x, mode), mode)
        grp = self._groups.get(tuple(id(w) for w in ws))
        if grp is None:
            return [self.matmul(w, x) for w in ws]
        dev, ranges = grp
        w0 = ws[0]
        y = self._q.matvec(dev, w0.qtype, ranges[-1][1], w0.shape[1], x, self.numerics, xq=self._converted(x, mode))
        return [y[:, r0:r1] for r0, r1 in ranges]

    @_guard("rope_kv")
    def rope_kv(self, q, k, v, k_cache, v_cache, pos, n_past, n_rot, freq_base, freq_scale=1.0,
                freq_factors=None, mode="norm", q_scale=1.0):
        n = q.shape[0]
        if n_past + n > k_cache.shape[0]:
            raise CudaError(f"context overflow: {n_past + n} tokens > cache size {k_cache.shape[0]}")
        return ops.rope_kv(self._act(q), self._act(k), self._act(v), k_cache, v_cache, self._positions(pos), n_rot,
                           freq_base, freq_scale, self._vec(freq_factors), mode, q_scale)

    @_guard("attention")
    def attention_for(self, consumer, q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
        return self._attention(q, k_cache, v_cache, n_past, scale, window, softcap, consumer)

    @_guard("glu")
    def glu(self, kind, gate, up, consumer=None):
        if kind not in ("silu", "gelu"):
            raise CudaError(f"unknown gated activation {kind!r}")
        gate, up = self._act(gate), self._act(up)
        mode = self._fused_mode((consumer,) if consumer is not None else (), gate.shape[0], gate.shape[-1]) \
            if gate.ndim == 2 else self._q.ACT_NONE
        k = "gelu" if kind == "gelu" else "silu_f64" if self.attn_f64 else "silu"
        y, yq = ops.glu(gate.reshape(-1, gate.shape[-1]), up.reshape(-1, up.shape[-1]), k, mode)
        self._remember(y, yq, mode)
        return y.reshape(gate.shape)

    @_guard("get_rows")
    def get_rows(self, w, ids):
        ids = np.asarray(ids, dtype=np.int32).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
            raise CudaError(f"get_rows {w.name}: token id out of range 0..{w.shape[0] - 1}")
        return self._q.get_rows(self._mat(w), w.qtype, w.shape[1], self.dev.asarray(ids))

    @_guard("rms_norm")
    def rms_norm(self, x, w, eps):
        return ops.rms_norm(self._act(x), self._vec(w), eps)

    @_guard("rope")
    def rope(self, x, pos, n_rot, freq_base, freq_scale=1.0, freq_factors=None, mode="norm"):
        return ops.rope(self._act(x), self._positions(pos), n_rot, freq_base, freq_scale,
                        self._vec(freq_factors), mode)

    @_guard("attention")
    def attention(self, q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
        return self._attention(q, k_cache, v_cache, n_past, scale, window, softcap, None)

    def _attention(self, q, k_cache, v_cache, n_past, scale, window, softcap, consumer):
        """Decode reads n_past from device memory (``_positions``: while a graph is captured the
        recording's buffer, written before each replay) with a split grid sized for the whole
        cache, so the capture serves every later position; with ``consumer`` the combine kernel
        also writes its activation blocks."""
        q = self._act(q)
        n_tok, n_head, hd = q.shape
        if n_tok > ops.DECODE_MAX_TOK:
            return ops.attention(q, k_cache, v_cache, n_past, scale, window, softcap, f64=self.attn_f64)
        pos = self._positions(np.arange(n_past, n_past + n_tok, dtype=np.int32))
        n_split = ops.decode_splits(k_cache.shape[0], window) if self.recording is not None else None
        mode = self._fused_mode((consumer,) if consumer is not None else (), n_tok, n_head * hd)
        if not ops.fused_rows(mode, n_head, hd):
            mode = self._q.ACT_NONE
        yq = self.xp.empty((n_tok, self._q.act_row_bytes(n_head * hd)), np.uint8) if mode else None
        y = ops.attention(q, k_cache, v_cache, n_past, scale, window, softcap, f64=self.attn_f64, pos=pos,
                          n_split=n_split, qmode=mode, yq=yq)
        self._remember(y, yq, mode)
        return y

    @property
    def attn_f64(self) -> bool:
        """Attention and silu in double (the CPU backend's results) with numerics "exact"."""
        return self.numerics == "exact"

    @_guard("swiglu")
    def swiglu(self, gate, up):
        return ops.swiglu(self._act(gate), self._act(up), f64=self.attn_f64)

    @_guard("geglu")
    def geglu(self, gate, up):
        return ops.geglu(self._act(gate), self._act(up))

    @_guard("add")
    def add(self, a, b):
        a = self._act(a)
        if isinstance(b, np.ndarray) and b.ndim == 1 and a.shape[-1] == b.shape[0]:   # a host bias
            return self.xp.add(a, self._vec(b), dtype=np.float32)
        return ops.add(a, self._act(b))

    @_guard("scale")
    def scale(self, x, s):
        return ops.scale(self._act(x), s)

    @_guard("softcap")
    def softcap(self, x, c):
        return ops.softcap(self._act(x), c)

    @_guard("sampling")
    def sample(self, logits, params, rng, history=()):
        """Greedy / top-k, top-p, min-p, temperature and the repetition penalty on the device;
        only the token id crosses back. None when the chain needs the host (top_k 0 = the whole
        vocabulary, or more than the kernel's limit)."""
        if params.temp > 0 and not 1 <= params.top_k <= ops.TOPK_MAX:
            return None
        try:
            return ops.sample(self._act(logits), params, rng, history)
        except CudaError as e:
            if "device sampling" in str(e):
                return None
            raise

    def synchronize(self) -> None:
        self.dev.synchronize()

    def _act(self, x):
        """A C-contiguous f32 device array (reshapes of contiguous arrays stay views)."""
        if isinstance(x, np.ndarray) and not self.emulated:
            raise CudaError("a host array was passed to the CUDA backend (missing device move)")
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = self.xp.ascontiguousarray(x, dtype=np.float32)
        return x

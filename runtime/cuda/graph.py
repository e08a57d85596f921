"""CUDA graphs of the one-token decode step (opt-in: GGUFKIT_CUDA_GRAPHS=1).

A decode step of a small model is hundreds of kernel launches, each costing Python and driver
time; replaying captured graphs costs one launch per segment. What changes from step to step
is kept out of the graphs:

    token embedding  copied (host -> device) into a fixed input buffer before the replay
    position         written into a fixed int32 [1] buffer (rope and the KV-cache write read it)
    attention        launched eagerly between graph segments: its kernels take n_past (and the
                     split count) as launch parameters, so the step is captured as segments
                     [norms, QKV, rope, KV write] | attention | [W_o, FFN, next layer ...] | ...
                     with each attention reading and writing buffers recorded at capture

Everything runs on the backend's own stream and from a private CuPy memory pool, so the
addresses the graphs hold are never handed to other code. The first decode step of a cache runs
eagerly on that stream (so the pool holds every block the step needs: the capture then
allocates nothing new), the second is captured and replayed, later ones replay. A graph belongs
to one KV cache and is captured again if a reused workspace moved (a bigger prefill grew it).
Any failure while capturing turns graphs off for the model (``DecodeGraph.error``) and the step
runs eagerly: never a wrong result, at worst no speed-up. Unproven until tools/conformance/gpu_check.py has
run on a GPU (it compares graph and eager tokens and speeds).

Under emulation ``EmuStream`` stands in for the stream: while capturing, emulated kernel
launches are recorded instead of run (their array arguments by reference, as a graph holds
device pointers) and a "graph" replays them; host-side numpy work done during the capture is
not recorded, so the emulation is stricter than a GPU (where such work is CuPy kernels and is
captured). tests/runtime/cuda/test_cuda_model.py checks graph and eager tokens are equal this way.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np


class EmuGraph:
    def __init__(self, calls):
        self.calls = calls

    def launch(self, stream=None):
        for fn, a, kw in self.calls:
            fn(*a, **kw)


class EmuStream:
    """begin_capture / end_capture / synchronize for emulated kernels (see the module docstring)."""

    def __init__(self):
        self._calls = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self):
        from runtime.cuda import module as M
        if self._calls is not None:
            raise RuntimeError("capture already running")
        calls, real = [], M._EmuFunction.__call__
        self._calls, self._real = calls, real

        def record(fn, grid, block, args, shared_mem=0, **opts):
            calls.append((lambda *a, **k: real(fn, *a, **k), (grid, block, tuple(args), shared_mem), opts))
        M._EmuFunction.__call__ = record

    def end_capture(self):
        from runtime.cuda import module as M
        if self._calls is None:
            raise RuntimeError("no capture running")
        M._EmuFunction.__call__ = self._real
        calls, self._calls = self._calls, None
        return EmuGraph(calls)

    def synchronize(self):
        pass


def enabled() -> bool:
    return os.environ.get("GGUFKIT_CUDA_GRAPHS", "0") not in ("", "0")


class _Recording:
    """The backend's state while a step is being captured: fixed buffers and the segments."""

    def __init__(self, be, n_embd: int):
        self.be = be
        self.inp = be.xp.empty((1, n_embd), np.float32)
        self.pos = be.xp.zeros((1,), np.int32)
        self.items: list = []          # cupy Graph | ("attn", q, k, v, scale, window, softcap, out)

    def cut(self, eager: tuple):
        """End the segment being captured, then the eager call, then start the next segment."""
        self.items.append(self.be.stream.end_capture())
        self.items.append(eager)
        self.be.stream.begin_capture()


class DecodeGraph:
    """``model.decode_graph(cache, tid)`` -> logits device array [1, n_vocab], or None when the
    step must run eagerly (the caller then does)."""

    def __init__(self, model, be):
        self.model, self.be = model, be
        self.error: str | None = None
        self._cache = None            # the KV cache the graph writes (held: an id could be reused)
        self._rec: _Recording | None = None
        self._logits = None
        self._steps = 0
        self._ws = None
        self.replays = 0

    def _pool(self):
        if self.be.emulated:
            return contextlib.nullcontext()
        return self.be.xp.cuda.using_allocator(self.be.graph_pool.malloc)

    def _workspaces(self):
        from runtime.cuda.xp import WORKSPACE
        return {k: int(v.ctypes.data if isinstance(v, np.ndarray) else v.data.ptr) for k, v in WORKSPACE.items()}

    def __call__(self, cache, tid: int):
        if self.error is not None:
            return None
        try:
            with self.be.stream, self._pool():
                if self._cache is not cache or (self._rec is not None and self._ws != self._workspaces()):
                    self._cache, self._rec, self._steps = cache, None, 0
                if self._rec is None and self._steps == 0:        # warm-up: eager, on the graph stream/pool
                    self._steps = 1
                    y = self.model.logits(self.model.forward([tid], cache, out_rows=-1), host=False)
                    self.be.stream.synchronize()
                    return y
                if self._rec is None:
                    self._capture(cache, tid)
                return self._replay(cache, tid)
        except Exception as e:  # noqa: BLE001 - any capture/replay failure: eager from now on
            self.error = f"{type(e).__name__}: {e}"
            self.be.recording = None
            try:
                self.be.stream.end_capture()
            except Exception:  # noqa: BLE001
                pass
            return None

    def _capture(self, cache, tid):
        m, be = self.model, self.be
        rec = be.recording = _Recording(be, m.hp.n_embd)
        n_past = cache.n_past
        be.stream.begin_capture()
        try:
            h = m.forward([tid], cache, out_rows=-1)
            self._logits = m.logits(h, host=False)
            rec.items.append(be.stream.end_capture())
        finally:
            be.recording = None
            cache.n_past = n_past          # nothing ran: the replay does the step
        self._rec = rec
        self._ws = self._workspaces()

    def _replay(self, cache, tid):
        from runtime.cuda import ops
        m, be, rec = self.model, self.be, self._rec
        if cache.n_past + 1 > cache.n_ctx:
            from runtime.errors import ModelError
            raise ModelError(f"context overflow: {cache.n_past} + 1 tokens > context size {cache.n_ctx}")
        x = np.ascontiguousarray(m.embed(np.array([tid], np.int32)), np.float32)
        p = np.array([cache.n_past], np.int32)
        if be.emulated:
            rec.inp[...], rec.pos[...] = x, p
        else:
            rec.inp.set(x)
            rec.pos.set(p)
        for it in rec.items:
            if isinstance(it, tuple):
                _, q, k, v, scale, window, softcap, out = it
                ops.attention(q, k, v, cache.n_past, scale, window, softcap, out=out, f64=be.attn_f64)
            else:
                it.launch(be.stream)
        cache.n_past += 1
        be.stream.synchronize()
        self.replays += 1
        return self._logits


def attach(model, be) -> None:
    """Give a model placed wholly on ``be`` its decode graph, when enabled."""
    if enabled() and all(b is be for b in model.backends) and model.out_backend is be:
        model.decode_graph = DecodeGraph(model, be)
    else:
        model.decode_graph = None

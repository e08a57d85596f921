"""CUDA graphs of the one-token decode step (opt-in: GGUFKIT_CUDA_GRAPHS=1; never under emulation).

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
runs eagerly: never a wrong result, at worst no speed-up. Unproven until tools/gpu_check.py has
run on a GPU (it compares graph and eager tokens and speeds).
"""
from __future__ import annotations

import os

import numpy as np


def enabled() -> bool:
    return os.environ.get("GGUFKIT_CUDA_GRAPHS", "0") not in ("", "0")


class _Recording:
    """The backend's state while a step is being captured: fixed buffers and the segments."""

    def __init__(self, be, n_embd: int):
        self.be = be
        self.inp = be.xp.empty((1, n_embd), np.float32)
        self.pos = be.xp.zeros((1,), np.int32)
        self.items: list = []          # cupy Graph | ("attn", q, k, v, scale, window, softcap, out)

    def cut(self):
        """End the capture running now (a segment), start the next one."""
        self.items.append(self.be.stream.end_capture())
        self.be.stream.begin_capture()


class DecodeGraph:
    """``model.decode_graph(cache, tid)`` -> logits device array [1, n_vocab], or None when the
    step must run eagerly (the caller then does)."""

    def __init__(self, model, be):
        self.model, self.be = model, be
        self.error: str | None = None
        self._cache_id = None
        self._rec: _Recording | None = None
        self._logits = None
        self._steps = 0
        self._ws = None

    def _workspaces(self):
        from runtime.cuda import ops
        return {k: int(v.data.ptr) for k, v in ops._WORKSPACE.items() if hasattr(v, "data")}

    def __call__(self, cache, tid: int):
        if self.error is not None:
            return None
        cp = self.be.xp
        try:
            with self.be.stream, cp.cuda.using_allocator(self.be.graph_pool.malloc):
                if self._cache_id != id(cache) or (self._rec is not None and self._ws != self._workspaces()):
                    self._cache_id, self._rec, self._steps = id(cache), None, 0
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
        rec.inp.set(np.ascontiguousarray(m.embed(np.array([tid], np.int32)), np.float32))
        rec.pos.set(np.array([cache.n_past], np.int32))
        for it in rec.items:
            if isinstance(it, tuple):
                _, q, k, v, scale, window, softcap, out = it
                ops.attention(q, k, v, cache.n_past, scale, window, softcap, out=out)
            else:
                it.launch(be.stream)
        cache.n_past += 1
        be.stream.synchronize()
        return self._logits


def attach(model, be) -> None:
    """Give a model placed wholly on ``be`` (a real GPU) its decode graph, when enabled."""
    if enabled() and not be.emulated and all(b is be for b in model.backends) and model.out_backend is be:
        model.decode_graph = DecodeGraph(model, be)
    else:
        model.decode_graph = None

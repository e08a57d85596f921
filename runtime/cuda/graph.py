"""CUDA graphs of the one-token decode step: ONE graph per token (the default; GGUFKIT_CUDA_GRAPHS=0
turns them off).

A decode step of a small model is hundreds of kernel launches, each costing Python and driver
time; replaying a captured graph is one launch. The whole step is captured: every layer, the
output norm and head, and (``DecodeGraph.step``, what generation calls) the sampling chain. What
changes from step to step lives in device memory, written before each replay:

    token embedding  copied (host -> device) into a fixed input buffer
    position         a fixed int32 [1] buffer: rope, the KV-cache write and attention read it
                     (attention's split grid is sized for the cache's whole context, and the
                     splits past the keys exit at once: runtime.cuda.ops.attention_decode)
    sampling         the draw u (f64 [1]) and the penalty's last repeat_last_n ids (i32, padded
                     by repeating the first: the kernel penalises a repeated id once)

Everything runs on the backend's own (non-blocking) stream, which first waits for an event
recorded on the current stream, so uploads, the KV cache's memset and a prefill queued there
come first. The warm-up and the capture allocate from a private CuPy memory pool, and every block
the capture allocates stays referenced by the recording (``_Recording.keep``): CuPy's pools know
nothing of graphs and would hand a captured intermediate out again. Attention's workspaces are
sized for the cache's full context before the warm-up, so a replay allocates nothing and nothing
is captured again as the context grows. The first decode step of a cache runs eagerly on that
stream (so the pool holds every block the step needs), the second is captured and replayed,
later ones replay. A graph belongs to one KV cache and one sampling chain, and is captured again
if either changes or a reused workspace moved (a bigger prefill grew it). Any failure while
capturing turns graphs off for the model (``DecodeGraph.error``) and the step runs eagerly: never
a wrong result, at worst no speed-up. Unproven on a GPU until tools/conformance/gpu_check.py has
run on one (it compares graph tokens with eager and CPU tokens past 600 positions).

Under emulation ``EmuStream`` stands in for the stream: while capturing, emulated kernel
launches are recorded instead of run (their array arguments by reference, as a graph holds
device pointers) and a "graph" replays them; host-side numpy work done during the capture is
not recorded, so the emulation is stricter than a GPU (where such work is CuPy kernels and is
captured). Two GPU hazards are modelled: a launch inside ``with stream`` that did not wait for
the default stream's work is a CudaError (runtime.cuda.module.emu_default_work), and
``EmuPool`` treats the captured arrays nothing else references as free blocks, poisoning them
all when the pool allocates after a capture. tests/runtime/cuda/test_cuda_graphs.py checks graph,
eager and CPU tokens are equal this way past 600 positions.
"""
from __future__ import annotations

import os

import numpy as np


class EmuGraph:
    def __init__(self, calls):
        self.calls = calls

    def launch(self, stream=None):
        from runtime.cuda import module as M
        prev = M.count_kernels(False)        # a GPU replays these without Python
        try:
            for fn, a, kw in self.calls:
                fn(*a, **kw)
        finally:
            M.count_kernels(prev)


class EmuEvent:
    """An event recorded on the emulated default stream: the work queued there so far."""

    def __init__(self):
        from runtime.cuda import module as M
        self.mark = M.emu_default_work()


class EmuPool:
    """The graph's private memory pool as CuPy's pool behaves after a capture: the arrays the
    captured launches use that nothing else references are free blocks to the pool (CuPy's pools
    know nothing of graphs), and an allocation from the pool may be carved from any of them. The
    emulator cannot know which one CuPy's best fit picks, so an allocation poisons them all
    (0xFF bytes: NaN as floats) and hands out new memory: a replay that still needs a value in
    such a block then computes NaNs instead of silently wrong numbers."""

    def __init__(self):
        self.free: list = []
        self.allocations_after_capture = 0

    def malloc(self, nbytes: int) -> np.ndarray:
        from runtime.cuda.xp import poisoned
        if self.free:
            self.allocations_after_capture += 1
            for b in self.free:
                poisoned(b)
        return np.empty(max(int(nbytes), 1), np.uint8)


def _unreferenced(calls) -> list:
    """Root arrays of the recorded launches' array arguments that only the recording references
    (CPython reference counts: what a device pointer in a graph is to CuPy's pool)."""
    import sys
    uses: dict = {}                 # id -> [array, references from the recorded argument tuples]
    for _, a, _ in calls:
        for x in a[2]:
            if isinstance(x, np.ndarray):
                uses.setdefault(id(x), [x, 0])[1] += 1
    views: dict = {}                # id(root) -> recorded views of it
    for x, _ in list(uses.values()):
        if isinstance(x.base, np.ndarray):
            uses.setdefault(id(x.base), [x.base, 0])
            views.setdefault(id(x.base), []).append(id(x))
        elif x.base is not None:
            uses[id(x)][1] = -1     # memory not owned by numpy (a mapped file): never pool memory

    def outside(e):                 # references beyond the recording's and ours
        return sys.getrefcount(e[0]) - e[1]
    base = outside([np.empty(1), 0])
    free = []
    for i, e in uses.items():
        if e[1] < 0 or isinstance(e[0].base, np.ndarray):
            continue
        vs = views.get(i, [])
        if outside(e) - base - len(vs) == 0 and all(outside(uses[v]) - base == 0 for v in vs):
            free.append(e[0])
    return free


class EmuStream:
    """A second stream for emulated kernels: begin_capture / end_capture / synchronize, and the
    ordering check (``with stream:`` launches fail unless the stream waited for the default
    stream's work: runtime.cuda.module.emu_default_work). See the module docstring."""

    def __init__(self):
        self._calls = None
        self.seen = 0               # default-stream work this stream is ordered after
        self._prev = []

    def __enter__(self):
        from runtime.cuda import module as M
        self._prev.append(M.emu_current_stream(self, enter=True))
        return self

    def __exit__(self, *exc):
        from runtime.cuda import module as M
        M.emu_current_stream(self._prev.pop(), enter=False)
        return False

    def wait_event(self, event: EmuEvent) -> None:
        self.seen = max(self.seen, event.mark)

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
    """Graphs are on unless GGUFKIT_CUDA_GRAPHS is 0 (or empty)."""
    return os.environ.get("GGUFKIT_CUDA_GRAPHS", "1") not in ("", "0")


class _Recording:
    """The backend's state while a step is being captured: the fixed input buffers and the graph."""

    def __init__(self, be, n_embd: int, sampling):
        self.be = be
        self.inp = be.xp.empty((1, n_embd), np.float32)
        self.pos = be.xp.zeros((1,), np.int32)
        self.sampling = sampling       # _sampling(...) key, or None: the graph ends at the logits
        self.u = be.xp.zeros((1,), np.float64)
        n_ids = sampling[1] if sampling is not None else 0
        self.ids = be.xp.zeros((n_ids,), np.int32) if n_ids else None
        self.graph = None
        self.logits = None
        self.token = None
        self.keep: list = []           # the pool blocks allocated while capturing (GPU)


def _sampling(params, history, n_vocab: int):
    """The key of a sampling chain a graph can capture: (params, number of penalty ids), or None
    when it needs the host (top_k 0 or above the kernel's limit, a penalty over the whole
    history, no history yet for a penalty)."""
    from runtime.cuda import ops
    if params.temp > 0:
        try:
            ops.top_k_plan(n_vocab, min(int(params.top_k), n_vocab))
        except Exception:  # noqa: BLE001 - not on the device: the host samples
            return False
    if params.repeat_penalty == 1.0 or params.repeat_last_n == 0:
        return params, 0
    if params.repeat_last_n < 0 or not len(history):
        return False
    return params, int(params.repeat_last_n)


class DecodeGraph:
    """``graph(cache, tid)`` -> logits device array [1, n_vocab]; ``graph.step(cache, tid, params,
    rng, history)`` -> the next token id (sampled inside the graph when the chain allows). Either
    returns None when the step must run eagerly (the caller then does)."""

    def __init__(self, model, be):
        self.model, self.be = model, be
        self.error: str | None = None
        self._cache = None            # the KV cache the graph writes (held: an id could be reused)
        self._rec: _Recording | None = None
        self._key = None              # the sampling chain of the warm-up / the graph
        self._steps = 0
        self._ws = None
        self.replays = 0
        self.captures = 0

    def _pool(self, keep: list | None = None):
        """Allocations from the graph's private pool; ``keep`` collects every block allocated (a
        capture's blocks must stay allocated while the graph lives: CuPy's pool would otherwise
        hand them out again)."""
        if self.be.emulated:
            from runtime.cuda.xp import emu_allocator
            return emu_allocator(self.be.graph_pool)
        pool = self.be.graph_pool
        if keep is None:
            return self.be.xp.cuda.using_allocator(pool.malloc)

        def malloc(n):
            ptr = pool.malloc(n)
            keep.append(ptr)
            return ptr
        return self.be.xp.cuda.using_allocator(malloc)

    def _order_after_default(self):
        """The graph stream waits for what the current (default) stream queued: weight uploads,
        the KV cache's memset, a prefill (a non-blocking stream is not ordered after it)."""
        be = self.be
        if be.emulated:
            be.stream.wait_event(EmuEvent())
        else:
            be.stream.wait_event(be.xp.cuda.get_current_stream().record())

    def _reserve(self, cache):
        """Attention workspaces at their full-context size before the warm-up: the captured
        launch's split grid covers the whole context, and nothing moves later."""
        from runtime.cuda import ops
        hp = self.model.hp
        n_head = max((s.n_head for s in hp.layers if s.has_kv), default=0)
        if n_head:
            ops.reserve_attention(self.be.xp.empty(1, np.float32), 1, n_head, hp.head_dim, cache.n_ctx,
                                  f64=self.be.attn_f64)

    def _workspaces(self):
        from runtime.cuda.xp import WORKSPACE
        return {k: int(v.ctypes.data if isinstance(v, np.ndarray) else v.data.ptr) for k, v in WORKSPACE.items()}

    def __call__(self, cache, tid: int):
        out = self._run(cache, tid, None, None, ())
        return None if out is None else out[0]

    def step(self, cache, tid: int, params, rng, history=()):
        """Decode ``tid`` and sample the next token: one graph replay when the sampling chain can
        be captured, else the logits graph and the device's (or host's) eager sampling."""
        from runtime.generate import sample_on
        key = _sampling(params, history, self.model.hp.n_vocab)
        if key is False:
            y = self(cache, tid)
            return None if y is None else sample_on(self.be, y[0], params, rng, history)
        out = self._run(cache, tid, key, rng, history)
        return None if out is None else out[1]

    def _run(self, cache, tid, key, rng, history):
        if self.error is not None:
            return None
        try:
            with self.be.on_device():
                return self._step(cache, tid, key, rng, history)
        except Exception as e:  # noqa: BLE001 - any capture/replay failure: eager from now on
            self.error = f"{type(e).__name__}: {e}"
            self.be.recording = None
            try:
                self.be.stream.end_capture()
            except Exception:  # noqa: BLE001
                pass
            return None

    def _step(self, cache, tid, key, rng, history):
        """One decode step on the graph stream: warm-up, capture or replay. Returns (logits,
        token id or None)."""
        self._order_after_default()
        with self.be.stream:
            if self._cache is not cache or self._key != key or \
                    (self._rec is not None and self._ws != self._workspaces()):
                self._cache, self._key, self._rec, self._steps = cache, key, None, 0
                if self.be.emulated:
                    self.be.graph_pool.free = []      # the old graph's blocks: unused from now
                self._reserve(cache)
            if self._rec is None and self._steps == 0:        # warm-up: eager, on the graph stream/pool
                self._steps = 1
                with self._pool():
                    y = self.model.logits(self.model.forward([tid], cache, out_rows=-1), host=False)
                    tok = None
                    if key is not None:
                        from runtime.cuda import ops
                        tok = self._sample_eager(ops, y, key, rng, history)
                self.be.stream.synchronize()
                return y, tok
            if self._rec is None:
                self._capture(cache, tid, key)
            return self._replay(cache, tid, rng, history)      # outside the pool: it allocates nothing

    def _sample_eager(self, ops, y, key, rng, history):
        params, n_ids = key
        ids = ops.penalty_ids(params, history, y.shape[-1], n_ids or None) if n_ids else None
        tok = ops.sample_device(y[0], params, None if ids is None else self.be.dev.asarray(ids),
                                rng.random() if params.temp > 0 else None)
        return int(self.be.to_host(tok)[0])

    def _capture(self, cache, tid, key):
        from runtime.cuda import ops
        m, be = self.model, self.be
        rec = be.recording = _Recording(be, m.hp.n_embd, key)
        self.captures += 1
        n_past = cache.n_past
        be.stream.begin_capture()
        try:
            with self._pool(rec.keep):
                h = m.forward([tid], cache, out_rows=-1)
                rec.logits = m.logits(h, host=False)
                if key is not None:
                    rec.token = ops.sample_device(rec.logits[0], key[0], rec.ids, rec.u)
            rec.graph = be.stream.end_capture()
        finally:
            be.recording = None
            be.forget_activations()        # nothing outside the graph keeps its intermediates
            cache.n_past = n_past          # nothing ran: the replay does the step
        self._rec = rec
        self._ws = self._workspaces()
        if be.emulated:       # what CuPy's pool considers free once the capture is over
            be.graph_pool.free = _unreferenced(rec.graph.calls)

    def _replay(self, cache, tid, rng, history):
        from runtime.cuda import module as M
        from runtime.cuda import ops
        m, be, rec = self.model, self.be, self._rec
        if cache.n_past + 1 > cache.n_ctx:
            from runtime.errors import ModelError
            raise ModelError(f"context overflow: {cache.n_past} + 1 tokens > context size {cache.n_ctx}")
        inputs = [(rec.inp, np.ascontiguousarray(m.embed(np.array([tid], np.int32)), np.float32)),
                  (rec.pos, np.array([cache.n_past], np.int32))]
        if rec.sampling is not None:
            params, n_ids = rec.sampling
            if params.temp > 0:
                inputs.append((rec.u, np.array([rng.random()], np.float64)))
            if n_ids:
                inputs.append((rec.ids, ops.penalty_ids(params, history, m.hp.n_vocab, n_ids)))
        for dst, src in inputs:
            if be.emulated:
                dst[...] = src
            else:
                dst.set(src)
        rec.graph.launch(be.stream)
        M.LAUNCHES["graph"] += 1
        cache.n_past += 1
        be.stream.synchronize()
        self.replays += 1
        return rec.logits, (None if rec.token is None else int(be.to_host(rec.token)[0]))


def host_in_step(model) -> bool:
    """The decode step goes through the host (YaRN / longrope rope_ext in numpy, mistral3's
    attention temperature): a capture cannot succeed, so no graph is tried."""
    hp = model.hp
    return getattr(hp, "rope_ext", None) is not None or bool(getattr(hp, "temp_scale", 0))


def attach(model, be) -> None:
    """Give a model placed wholly on ``be`` its decode graph, when enabled and capturable."""
    if enabled() and all(b is be for b in model.backends) and model.out_backend is be and not host_in_step(model):
        model.decode_graph = DecodeGraph(model, be)
    else:
        model.decode_graph = None

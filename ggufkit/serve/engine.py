"""The serving engine: ``parallel`` slots stepped by one scheduler thread.

Each slot owns a KV cache of ``n_ctx_total // parallel`` positions (as llama-server splits -c),
its position, the tokens its cache holds (for the prefix cache), and the sampling state of the
request it runs (seeded rng, token history). One thread owns the model and loops:

    admit    waiting requests take free slots; a slot whose cached tokens share the longest
             prefix with the prompt is chosen, and only the rest of the prompt is evaluated
    step     every slot still prefilling evaluates one chunk (``prefill_chunk`` tokens), so a long
             prompt never stalls the streams already decoding; all decoding slots decode their next
             token together in one forward pass (``decode_step``, a ``SeqBatch`` of their caches:
             every weight read once per step); then each slot samples with its own parameters and
             rng and emits its text
    cancel   a request whose client went away is dropped at the start of the next step

Requests reach the engine through ``submit`` (any thread); their events come back through the
``emit`` callable they carry, called on the scheduler thread: ("text", str) pieces and one final
("done", Result) or ("error", message).
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from runtime.generate import SamplingParams, decode_one, sample, sample_on
from runtime.models.base import MAX_SEQS, SeqBatch


class QueueFull(Exception):
    """The wait queue is full (the app answers 429)."""


class ContextTooSmall(Exception):
    """The prompt leaves no room in a slot's context (the app answers 400 with the counts)."""

    def __init__(self, n_prompt: int, n_ctx: int):
        super().__init__(f"the prompt is {n_prompt} tokens, more than this server's context of {n_ctx} tokens "
                         f"per slot leaves room for (at least 1 token must be generated)")
        self.n_prompt, self.n_ctx = n_prompt, n_ctx


@dataclass
class Result:
    finish_reason: str            # "stop" | "length" | "cancelled"
    n_prompt: int
    n_cached: int
    n_gen: int
    text: str


@dataclass
class Job:
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int | None
    stop: list[str]
    emit: Callable
    ignore_eos: bool = False
    json_mode: bool = False            # the reply is constrained to one JSON object (jsonmode.py)
    cancelled: bool = False
    t_submit: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        """Safe from any thread: the scheduler drops the job at its next step."""
        self.cancelled = True

    def send(self, ev) -> None:
        """Hand an event to the request's side; a receiver that is gone cancels the job."""
        try:
            self.emit(ev)
        except Exception:
            self.cancelled = True


class Slot:
    def __init__(self, idx: int, cache):
        self.idx, self.cache = idx, cache
        self.tokens: list[int] = []        # the ids whose K/V the cache holds (cache.n_past of them)
        self.job: Job | None = None
        self.last_used = 0.0
        self.reset_job_state()

    def reset_job_state(self):
        self.pending: list[int] = []       # prompt ids still to evaluate
        self.next_tid: int | None = None   # sampled, emitted, not yet evaluated
        self.rng = None
        self.history: list[int] = []
        self.decoder = None
        self.text = ""
        self.sent = 0                      # chars of text already emitted
        self.n_gen = 0
        self.n_cached = 0
        self.budget = 0
        self.json = None                   # jsonmode.JsonState of a json_object request


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Metrics:
    """Counters and gauges for /metrics (updated on the scheduler thread, read anywhere)."""

    def __init__(self):
        self.requests = collections.Counter()     # by endpoint
        self.rejected = collections.Counter()     # by reason
        self.finished = collections.Counter()     # by finish reason
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.gen_tokens = 0
        self.steps = 0
        self.step_seconds = 0.0
        self.last_step_seconds = 0.0
        self.batch_tokens = 0                     # sum over steps of the sequences decoded
        self.last_batch = 0


class Engine:
    """Slots and the scheduler thread over one loaded model (``start`` / ``stop``)."""

    def __init__(self, model, n_ctx_total: int, parallel: int = 1, max_queue: int = 64,
                 prefill_chunk: int = 256):
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        self.model, self.parallel, self.max_queue, self.chunk = model, parallel, max_queue, prefill_chunk
        self.n_ctx = min(n_ctx_total // parallel, model.hp.n_ctx_train)
        if self.n_ctx < 2:
            raise ValueError(f"a context of {n_ctx_total} is too small for {parallel} slots")
        self.slots = [Slot(i, model.new_cache(self.n_ctx)) for i in range(parallel)]
        self.waiting: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self.metrics = Metrics()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._json_vocab = None                    # jsonmode.Vocab, built at the first json_object request
        self.log = lambda msg: None

    # -------------------------------------------------------------- public, any thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ggufkit-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self.cv:
            self._stop = True
            self.cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue a job (QueueFull when the queue is full, ContextTooSmall when it cannot fit)."""
        if len(job.prompt_ids) + 1 > self.n_ctx:
            raise ContextTooSmall(len(job.prompt_ids), self.n_ctx)
        with self.cv:
            if len(self.waiting) >= self.max_queue:
                self.metrics.rejected["queue_full"] += 1
                raise QueueFull(f"the server is busy: {len(self.waiting)} requests are waiting (queue limit "
                                f"{self.max_queue}); retry later")
            self.waiting.append(job)
            self.cv.notify_all()

    def queue_depth(self) -> int:
        return len(self.waiting)

    def busy_slots(self) -> int:
        return sum(s.job is not None for s in self.slots)

    # -------------------------------------------------------------- scheduler thread

    def _bind_devices(self) -> None:
        """CuPy's current device is per thread: make the GPU the model sits on current here too."""
        for be in {*getattr(self.model, "backends", ()), getattr(self.model, "out_backend", None)}:
            idx = getattr(be, "index", None)
            if idx is not None and not getattr(be, "emulated", True):
                try:
                    import cupy
                    cupy.cuda.Device(idx).use()
                except Exception as e:                  # one line, the first step will say more
                    self.log(f"cannot select cuda:{idx} on the scheduler thread: {e}")

    def _loop(self) -> None:
        self._bind_devices()
        while True:
            try:
                with self.cv:
                    while not self._stop and not self.waiting and not any(s.job for s in self.slots):
                        self.cv.wait(1.0)
                    if self._stop:
                        break
                    self._admit()
                self.step()
            except Exception as e:                       # keep serving; fail the jobs of this step
                self.log(f"engine step failed: {type(e).__name__}: {e}")
                for s in self.slots:
                    if s.job is not None:
                        self._finish(s, None, error=f"internal error: {type(e).__name__}")
        for s in self.slots:
            if s.job is not None:
                self._finish(s, "cancelled")
        for job in list(self.waiting):
            job.send(("error", "the server is shutting down"))
        self.waiting.clear()

    def _admit(self) -> None:
        """Waiting jobs (FIFO) into free slots; under the lock."""
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft()
                self.metrics.finished["cancelled"] += 1
                continue
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            self.waiting.popleft()
            best = max(free, key=lambda s: (common_prefix(s.tokens, job.prompt_ids[:-1]), -s.last_used))
            try:
                self._assign(best, job)
            except Exception as e:                       # this job only; the slot stays free
                self.log(f"cannot start a request: {type(e).__name__}: {e}")
                best.job = None
                best.tokens, best.cache.n_past = [], 0
                job.send(("error", f"internal error: {type(e).__name__}"))

    def _assign(self, s: Slot, job: Job) -> None:
        s.reset_job_state()
        k = common_prefix(s.tokens, job.prompt_ids[:-1])   # the last prompt token is always evaluated
        s.tokens = s.tokens[:k]
        s.cache.n_past = k
        s.job, s.pending, s.n_cached = job, list(job.prompt_ids[k:]), k
        s.rng = np.random.default_rng(job.params.seed)
        s.history = list(job.prompt_ids)
        s.decoder = self.model.tokenizer.stream_decoder()
        if job.json_mode:
            from ggufkit.serve.jsonmode import JsonState, Vocab
            if self._json_vocab is None:
                self._json_vocab = Vocab(self.model.tokenizer)
            s.json = JsonState(self._json_vocab)
        room = self.n_ctx - len(job.prompt_ids)
        s.budget = room if job.max_tokens is None else min(job.max_tokens, room)
        m = self.metrics
        m.prompt_tokens += len(job.prompt_ids)
        m.cached_tokens += k

    def step(self) -> None:
        """One scheduler step over every busy slot (see the module docstring)."""
        t0 = time.perf_counter()
        for s in self.slots:
            if s.job is not None and s.job.cancelled:
                self._finish(s, "cancelled")
        busy = [s for s in self.slots if s.job is not None]
        if not busy:
            return
        out = self.model.out_backend
        ready = []                                          # (slot, logits) to sample from
        for s in busy:
            if s.pending:
                if s.budget <= 0:
                    self._finish(s, "length")
                    continue
                logits = self._prefill_chunk(s)
                if logits is not None:
                    ready.append((s, logits))
        decoding = [s for s in busy if s.job is not None and s.next_tid is not None]
        if decoding:
            ready.extend(zip(decoding, self.decode_step(decoding)))
        for s, logits in ready:
            tid = sample_on(out, logits, s.job.params, s.rng, s.history)
            if s.json is not None and not s.json.accepts(tid):
                tid = self._sample_json(s, logits)
                if tid is None:
                    self._finish(s, "stop")
                    continue
            self._accept(s, tid)
        dt = time.perf_counter() - t0
        m = self.metrics
        m.steps += 1
        m.step_seconds += dt
        m.last_step_seconds = dt
        m.last_batch = len(decoding)
        m.batch_tokens += len(decoding)

    def _prefill_chunk(self, s: Slot):
        """Evaluate the next chunk of the slot's prompt; the last token's logits once it is done."""
        chunk, s.pending = s.pending[:self.chunk], s.pending[self.chunk:]
        h = self.model.forward(chunk, s.cache, out_rows=-1)
        s.tokens.extend(chunk)
        if s.pending:
            return None
        return self.model.logits(h, host=False)[0]

    def decode_step(self, slots: list[Slot]) -> list:
        """One token for each slot (its ``next_tid``) at its own position, in one forward pass over
        the weights per ``MAX_SEQS`` slots (``runtime.models.base.SeqBatch``: row i is slot i's
        token on its own cache, equal to decoding it alone); the logits, one row per slot, where the
        output head ran. One slot alone goes through ``decode_one`` (which may replay a captured
        CUDA graph)."""
        out = []
        for g in range(0, len(slots), MAX_SEQS):
            group = slots[g:g + MAX_SEQS]
            if len(group) == 1:
                out.append(decode_one(self.model, group[0].cache, group[0].next_tid, host=False))
            else:
                h = self.model.forward([s.next_tid for s in group], SeqBatch([s.cache for s in group]))
                logits = self.model.logits(h, host=False)
                out.extend(logits[i] for i in range(len(group)))
        for s in slots:
            s.tokens.append(s.next_tid)
            s.next_tid = None
        return out

    def _sample_json(self, s: Slot, logits) -> int | None:
        """The sampled token broke the JSON text: sample again with every token that would break it
        at -inf (as llama.cpp's grammar sampler does on a rejected token); None if none fits."""
        ok = s.json.mask()
        if not ok.any():
            return None
        x = np.array(self.model.out_backend.to_host(logits), dtype=np.float32)
        x[~ok] = -np.inf
        return sample(x, s.job.params, s.rng, s.history)

    def _accept(self, s: Slot, tid: int) -> None:
        """A sampled token: stop on end of generation, else emit its text (stop strings held back)."""
        tok = self.model.tokenizer
        s.history.append(tid)
        self.metrics.gen_tokens += 1
        if s.json is not None:
            s.json.advance(tid)
        if tok.is_eog(tid) and not s.job.ignore_eos:
            s.n_gen += 1
            self._finish(s, "stop")
            return
        s.n_gen += 1
        s.text += s.decoder(tid)
        job = s.job
        for st in job.stop:
            i = s.text.find(st, max(0, s.sent - len(st)))
            if i >= 0:
                s.text = s.text[:i]
                self._flush(s, len(s.text))
                self._finish(s, "stop")
                return
        if s.json is not None and s.json.done:          # the object closed: that is the whole reply
            self._flush(s, len(s.text))
            self._finish(s, "stop")
            return
        hold = max((_overlap(s.text, st) for st in job.stop), default=0)
        self._flush(s, len(s.text) - hold)
        if s.n_gen >= s.budget or s.cache.n_past + 1 >= s.cache.n_ctx:
            self._flush(s, len(s.text))
            self._finish(s, "length")
            return
        s.next_tid = tid

    def _flush(self, s: Slot, upto: int) -> None:
        if upto > s.sent:
            s.job.send(("text", s.text[s.sent:upto]))
            s.sent = upto

    def _finish(self, s: Slot, reason: str | None, error: str | None = None) -> None:
        job = s.job
        s.job, s.next_tid, s.pending = None, None, []
        s.last_used = time.perf_counter()
        if error is not None:
            s.tokens, s.cache.n_past = [], 0          # the cache may be half written: forget it
            job.send(("error", error))
            return
        self.metrics.finished[reason] += 1
        job.send(("done", Result(reason, len(job.prompt_ids), s.n_cached, s.n_gen, s.text)))


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop (held back from streaming)."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0

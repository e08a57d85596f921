"""Prompt-processing (pp) and generation (tg) speed, measured like llama-bench.

    pp N: N random tokens evaluated as one prompt from an empty cache (logits of the last one)
    tg N: N tokens decoded one at a time from an empty cache (logits for each)
    tg N with n_seq > 1 (``parallel``): n_seq independent sequences, each with its own cache,
          decoded N steps together (``SeqBatch``: one forward of n_seq rows per step); the speed is
          the aggregate, n_seq * N tokens over the time, like llama-batched-bench -npl's S_TG

One warm-up run per test (also pays Numba's compile / cache load), then ``reps`` timed runs;
``avg_ts``/``stddev_ts`` are the mean and sample standard deviation of tokens/s over the runs,
as llama-bench reports them. Built on the same verbs as generation (prefill, decode_one).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from runtime import backend as B
from runtime.errors import ModelError
from runtime.generate import decode_one, prefill
from runtime.models.base import MAX_SEQS, SeqBatch


@dataclass
class BenchResult:
    model_filename: str
    model_type: str
    model_size: int
    model_n_params: int
    n_batch: int
    n_threads: int
    n_prompt: int
    n_gen: int
    test_time: str
    avg_ns: int
    stddev_ns: int
    avg_ts: float
    stddev_ts: float
    samples_ns: list = field(default_factory=list)
    samples_ts: list = field(default_factory=list)
    backend: str = field(default_factory=B.backend_name)   # the backend that actually ran
    kernel_launches_per_token: float | None = None        # CUDA: kernels launched from Python per token
    graph_launches_per_token: float | None = None         # CUDA: CUDA graphs launched per token
    n_gpu_layers: int = 0
    n_seq: int = 1                                         # sequences decoded together (tg only)

    @property
    def test(self) -> str:
        return f"pp{self.n_prompt}" if self.n_prompt else f"tg{self.n_gen}"


def _model_info(model) -> tuple[str, int, int]:
    g = model.gguf
    size = sum(t.data.nbytes for t in g.tensors.values())
    params = sum(int(np.prod(t.shape)) for t in g.tensors.values())
    types = {t.qtype for t in g.tensors.values() if len(t.shape) > 1}
    name = f"{model.hp.arch} {g.get('general.size_label', '')} {'/'.join(sorted(types))}".replace("  ", " ")
    return name, size, params


def _run_once(model, n_prompt: int, n_gen: int, rng, n_batch: int, n_seq: int = 1) -> float:
    if n_seq > 1:
        return _run_parallel(model, n_gen, rng, n_seq)
    cache = model.new_cache(max(n_prompt + n_gen, 1))
    ids = rng.integers(0, model.hp.n_vocab, size=max(n_prompt, 1))
    t0 = time.perf_counter_ns()
    if n_prompt:
        prefill(model, cache, ids[:n_prompt], n_batch)
    for i in range(n_gen):
        decode_one(model, cache, int(ids[0]) if i == 0 else int(rng.integers(0, model.hp.n_vocab)))
    return time.perf_counter_ns() - t0


def _run_parallel(model, n_gen: int, rng, n_seq: int) -> float:
    """n_gen steps of n_seq sequences decoded together from empty caches (random tokens)."""
    batch = SeqBatch([model.new_cache(max(n_gen, 1)) for _ in range(n_seq)])
    toks = rng.integers(0, model.hp.n_vocab, size=(n_gen, n_seq))
    t0 = time.perf_counter_ns()
    for i in range(n_gen):
        model.out_backend.to_host(model.logits(model.forward(toks[i], batch), host=False))
    return time.perf_counter_ns() - t0


def bench_one(model, n_prompt: int, n_gen: int, reps: int = 5, n_threads: int = 1,
              n_batch: int = 512, seed: int = 0, n_seq: int = 1) -> BenchResult:
    """One pp or tg test (tg of n_seq sequences together); ``n_threads`` is the count in use,
    for the record."""
    if reps < 1:
        raise ModelError(f"bench needs at least 1 repetition, got {reps}")
    rng = np.random.default_rng(seed)
    _run_once(model, n_prompt, n_gen, rng, n_batch, n_seq)          # warm-up
    launches = _launches()
    ns = [_run_once(model, n_prompt, n_gen, rng, n_batch, n_seq) for _ in range(reps)]
    n_tok = n_prompt + n_gen * n_seq
    per_tok = {k: (v2 - v1) / (reps * n_tok) for (k, v1), v2 in zip(launches.items(), _launches().values())} \
        if launches and _uses_cuda(model) else {}
    ts = [n_tok * 1e9 / t for t in ns]
    name, size, params = _model_info(model)
    return BenchResult(model_filename=model.path, model_type=name, model_size=size, model_n_params=params,
                       n_batch=n_batch, n_threads=n_threads, n_prompt=n_prompt, n_gen=n_gen,
                       test_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       avg_ns=int(statistics.mean(ns)), stddev_ns=int(statistics.stdev(ns)) if reps > 1 else 0,
                       avg_ts=statistics.mean(ts), stddev_ts=statistics.stdev(ts) if reps > 1 else 0.0,
                       samples_ns=ns, samples_ts=ts, n_seq=n_seq,
                       kernel_launches_per_token=per_tok.get("kernel"), graph_launches_per_token=per_tok.get("graph"))


def _launches() -> dict:
    """runtime.cuda.module.LAUNCHES so far (empty when the CUDA side was never imported)."""
    import sys
    mod = sys.modules.get("runtime.cuda.module")
    return dict(mod.LAUNCHES) if mod is not None else {}


def _uses_cuda(model) -> bool:
    plan = getattr(model, "plan", None)
    return plan is not None and plan.uses_gpu


def bench(model, n_prompt: int = 512, n_gen: int = 128, reps: int = 5, n_threads: int | None = None,
          n_batch: int = 512, dev=None, parallel=(1,)) -> list[BenchResult]:
    """Run the pp and tg tests (a size of 0 skips one); ``ggufkit bench`` prints the results.
    ``parallel``: one tg test per sequence count (aggregate t/s of that many sequences decoded
    together). ``dev`` (runtime.device.DeviceOptions) places the layers; each result names the
    backend and n_gpu_layers as llama-bench does."""
    parallel = list(parallel)
    if not parallel or any(not 1 <= int(p) <= MAX_SEQS for p in parallel):
        raise ModelError(f"sequence counts must be 1..{MAX_SEQS}, got {parallel}")
    if reps < 1:
        raise ModelError(f"bench needs at least 1 repetition, got {reps}")
    if n_prompt < 0 or n_gen < 0:
        raise ModelError(f"token counts must be >= 0 (prompt {n_prompt}, generation {n_gen})")
    if n_batch < 1:
        raise ModelError(f"batch size must be positive, got {n_batch}")
    if isinstance(model, str):
        from runtime.loader import load
        model = load(model, with_tokenizer=False)
    if dev is not None:
        from runtime.plan import place_model
        place_model(model, dev, max(n_prompt, n_gen, 1), n_batch)
    n_threads = B.set_num_threads(n_threads)     # once, for all the tests (None: all cores, as llama-bench)
    results = []
    tests = [(n_prompt, 0, 1)] if n_prompt else []
    tests += [(0, n_gen, int(p)) for p in parallel] if n_gen else []
    for np_, ng, ns in tests:
        r = bench_one(model, np_, ng, reps, n_threads, n_batch, n_seq=ns)
        r.backend, r.n_gpu_layers = backend_name(model)
        results.append(r)
    return results


def backend_name(model) -> tuple[str, int]:
    """llama-bench's backend column ("CUDA", or "CUDA,CPU" when split) and n_gpu_layers."""
    plan = getattr(model, "plan", None)
    if plan is None or not plan.uses_gpu:
        return B.backend_name(), 0
    gpu = "CUDA (emulated)" if any(getattr(b, "emulated", False) for b in (*model.backends, model.out_backend)) \
        else "CUDA"
    return (gpu if all(plan.on_gpu) and plan.output_on_gpu else f"{gpu},CPU"), plan.n_gpu_layers

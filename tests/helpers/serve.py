"""Driving ggufkit.serve's Engine in tests: a job's events collected, and a batch of greedy jobs."""
import threading

from ggufkit.serve.engine import Job
from runtime.generate import GREEDY


class Sink:
    """A job's events collected; ``wait`` blocks until done."""

    def __init__(self):
        self.text, self.result, self.error, self.done = [], None, None, threading.Event()

    def __call__(self, ev):
        kind, val = ev
        if kind == "text":
            self.text.append(val)
        else:
            self.result, self.error = (val, None) if kind == "done" else (None, val)
            self.done.set()

    def wait(self, t=60):
        assert self.done.wait(t), "job did not finish"
        return self


def run_jobs(engine, prompts, n=6, timeout=60, **kw):
    """Greedy jobs of n tokens for token-id prompts, submitted at once; their Sinks once all are done."""
    sinks = [Sink() for _ in prompts]
    for p, s in zip(prompts, sinks):
        engine.submit(Job(list(p), GREEDY, n, [], s, **kw))
    return [s.wait(timeout) for s in sinks]

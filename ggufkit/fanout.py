"""Where the measurement units of ``ggufkit.measure`` run: in this process, in a local process pool
(the default, ``workers`` processes), or as Ray tasks (``RayRunner``: ``--ray [ADDRESS]``).

Every unit caches its own result (``ggufkit.measure.Cache``) before it returns, so a run can move
between local and Ray, and a lost worker costs only its unit: Ray retries it (``max_retries``), a
rerun of a killed driver finds every finished unit in the cache.

Ray is the optional extra ``[ray]`` (``pip install 'ggufkit[ray]'``) and is imported only here,
only when a ``RayRunner`` is made. Workers open the source GGUF, the imatrix, the calibration text
and the cache directory by path: on a cluster these must be on a filesystem every node sees at the
same path (NFS, a shared volume); ``docs/ALLOCATION.md`` says so.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

from ggufkit.errors import GGUFKitError

RAY_RETRIES = 3        # a task whose worker process or node died is run again this many times


class RayRunner:
    """Runs units as Ray tasks: on a new local Ray (``address=None``; ``num_cpus`` CPUs) or on the
    cluster at ``address`` (``host:port`` of a running ``ray start --head``, or ``"auto"``)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise GGUFKitError("fanning out on Ray needs the ray extra: pip install 'ggufkit[ray]'") from None
        self.ray = ray
        self.started = False
        if address and address != "auto":
            _check_reachable(address)            # ray.init retries an unreachable address for minutes
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
                else:
                    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR")
            except Exception as e:           # ray raises ConnectionError, RuntimeError, ValueError, ...
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise GGUFKitError(f"cannot start or reach {where}: {msg}") from None
            self.started = True

    def map(self, fn: Callable, jobs: Sequence[tuple]) -> Iterator:
        """fn(*job) for every job as Ray tasks; results in the order they finish."""
        ray = self.ray
        remote = ray.remote(max_retries=RAY_RETRIES)(fn)
        pending = [remote.remote(*j) for j in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """One TCP connection to a cluster's ``[ray://]host[:port]`` (GCS port 6379, Ray Client 10001)."""
    import socket

    a = address
    client = a.startswith("ray://")
    a = a[len("ray://"):] if client else a
    host, _, port = a.rpartition(":") if ":" in a else (a, "", "")
    try:
        port_n = int(port) if port else (10001 if client else 6379)
        socket.create_connection((host or "127.0.0.1", port_n), timeout=timeout).close()
    except ValueError:
        raise GGUFKitError(f"invalid Ray address {address!r} (expected host:port)") from None
    except OSError as e:
        raise GGUFKitError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def run_units(fn: Callable, jobs: Sequence[tuple], *, workers: int = 1, ray: RayRunner | None = None,
              progress: bool = True, desc: str = "", unit: str = "unit") -> Iterator:
    """fn(*job) for every job, results as they finish (order not kept): on Ray when ``ray`` is
    given, else in ``workers`` spawned processes (more than one), else here; a tqdm bar with an
    ETA counts them."""
    from tqdm import tqdm

    if not jobs:
        return
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        if ray is not None:
            for r in ray.map(fn, jobs):
                bar.update(1)
                yield r
        elif workers > 1 and len(jobs) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed
            ex = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn"))
            try:
                for f in as_completed([ex.submit(fn, *j) for j in jobs]):
                    bar.update(1)
                    yield f.result()
            except BaseException:        # Ctrl-C, SIGTERM, a failed unit: drop the queued units now
                ex.shutdown(wait=False, cancel_futures=True)
                raise
            ex.shutdown()
        else:
            for j in jobs:
                r = fn(*j)
                bar.update(1)
                yield r

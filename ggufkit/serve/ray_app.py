"""``ggufkit serve --ray [--replicas N]``: the same Starlette app as a Ray Serve deployment with N
replicas behind one HTTP endpoint (Ray's proxy on --host:--port, requests spread over the replicas).

Each replica is a Ray actor that loads the whole model and runs its own engine (``app.build``): the
replicas multiply throughput, they do not split a model. Without $RAY_ADDRESS a local Ray cluster is
started for the process (and stopped with it); with it, the deployment goes to that cluster, whose
nodes must each see MODEL at the same path. Needs the [ray] extra (``ray[serve]``), imported only here.
"""
from __future__ import annotations

import logging
import logging.config
import os
import signal
import time

import ray
from ray import serve as ray_serve
from starlette.applications import Starlette
from starlette.routing import Mount

from ggufkit.errors import GGUFKitError
from ggufkit.serve.app import LOG_CONFIG, build, warn_open

log = logging.getLogger("ggufkit.serve")
APP_NAME = "ggufkit"
_REPLICA_APP: dict = {}         # in each replica process: the app its constructor built


async def _forward(scope, receive, send):
    """The ingress: hand every request to the app this replica built."""
    await _REPLICA_APP["app"](scope, receive, send)


class Replica:
    """One replica: the model, a started engine and the app (``app.build``'s arguments)."""

    def __init__(self, build_kwargs: dict):
        import ggufkit.serve.ray_app as here          # this module as the replica process imported it
        logging.config.dictConfig(LOG_CONFIG)
        name = f"{os.uname().nodename}:{os.getpid()}"
        app, self.engine, model_id, _ = build(replica=name, **build_kwargs)
        self.engine.start()
        here._REPLICA_APP["app"] = app
        log.info("replica %s serving %s (%d slots of %d tokens)", name, model_id, self.engine.parallel,
                 self.engine.n_ctx)

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.stop()


def deployment(replicas: int, cpus_per_replica: float):
    """Replica wrapped as a Ray Serve deployment with ``replicas`` copies behind the ingress."""
    ingress = Starlette(routes=[Mount("/", app=_forward)])
    return ray_serve.deployment(ray_serve.ingress(ingress)(Replica), name="ggufkit-serve", num_replicas=replicas,
                                ray_actor_options={"num_cpus": cpus_per_replica})


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve_ray(model_path: str, host: str = "127.0.0.1", port: int = 8080, replicas: int = 2, **build_kwargs) -> None:
    """Start (or join) Ray, deploy ``replicas`` replicas, serve until SIGINT / SIGTERM, then tear down."""
    logging.config.dictConfig(LOG_CONFIG)
    cpus = float(build_kwargs.get("n_threads") or 1)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:                                  # a local cluster with room for every replica's threads
        ray.init(num_cpus=max(os.cpu_count() or 1, int(cpus * replicas + 0.999)), include_dashboard=False,
                 logging_level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        app = deployment(replicas, cpus).bind(dict(model_path=model_path, **build_kwargs))
        try:
            ray_serve.run(app, name=APP_NAME, route_prefix="/")
        except Exception as e:             # a replica that cannot start: Ray's message, first line
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise GGUFKitError(f"Ray Serve could not start the replicas: {msg}") from None
        warn_open(host, build_kwargs.get("api_key"))
        log.info("serving %s on http://%s:%d through Ray Serve: %d replicas%s", os.path.basename(model_path), host,
                 port, replicas, ", API key required" if build_kwargs.get("api_key") else "")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            ray_serve.shutdown()
        finally:
            ray.shutdown()

"""Serving checkpoints from this process until Ctrl-C (``seqgen serve``)."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

from seqgen.serve.api_keys import ApiKeys
from seqgen.serve.config import ServeConfig

#: how long `run` may take to shut its own local Ray down after Ctrl-C before it cuts it short
SHUTDOWN_DEADLINE_S = 30.0


def run(checkpoint_urls: str | list[str], config: ServeConfig = ServeConfig(), *, host: str = "127.0.0.1", port: int = 8000,
        storage: str | None = None, blocking: bool = True, name: str = "seqgen", route_prefix: str = "/",
        api_keys: ApiKeys = ApiKeys(), address: str | None = None) -> str:
    """Start Serve (HTTP on ``host:port``, loopback by default) with these checkpoints' app
    (`seqgen.serve.app.build_app`), on the Ray at ``address`` (`seqgen.runtime.ensure_ray`).

    Returns the base URL; with ``blocking`` waits until Ctrl-C, then shuts Serve down (with the
    local Ray this call started, if it started one; `cut_short_after` bounds how long that takes).
    What listens on ``host:port`` (Serve's proxy or HAProxy) was chosen before Ray started
    (`seqgen.serve.ingress`).
    """
    import ray
    from ray import serve

    from seqgen.runtime import ensure_ray, stop_local_ray
    from seqgen.serve.app import build_app
    from seqgen.serve.ingress import stop_leftover_haproxy

    local_ray = ensure_ray(address)
    node_id = ray.get_runtime_context().get_node_id()
    url = f"http://{host}:{port}{route_prefix.rstrip('/')}"
    app = build_app(checkpoint_urls, config, storage=storage, api_keys=api_keys)
    if not blocking:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
        return url
    try:  # from here on Ctrl-C, even during start-up, shuts down what was started
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
        served = checkpoint_urls if isinstance(checkpoint_urls, str) else ", ".join(checkpoint_urls)
        print(f"serving {served} at {url} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        # A Ctrl-C in a terminal reaches every process of the group, Ray's own too: Serve's HAProxy
        # manager may die before it stops HAProxy (which runs in a session of its own), and
        # serve.shutdown() then waits 30 s for a controller that is gone. So HAProxy is stopped at
        # once (the port is free when Ctrl-C returns), and again after the shutdown, for a reload
        # that was under way. Serve on a local Ray of ours goes down with that Ray, in seconds (the
        # sweep after it once every process of that Ray is gone); on a cluster (whose processes
        # the Ctrl-C did not reach) Serve is shut down.
        deadline = cut_short_after(SHUTDOWN_DEADLINE_S, node_id) if local_ray else None
        stop_leftover_haproxy(node_id)
        try:
            stop_local_ray() if local_ray else serve.shutdown()
        finally:
            stop_leftover_haproxy(node_id)
            if deadline is not None:
                deadline.cancel()
    return url


def cut_short_after(seconds: float, node_id: str) -> threading.Timer:
    """A started timer that, unless cancelled within ``seconds``, ends this process the hard way:
    every thread's stack on stderr (where the orderly shutdown is stuck), SIGKILL to every process
    this one started and to this node's HAProxy, exit status 1. Under heavy load the shutdown of a
    local Ray has been seen to hang past a minute without a sign of where; a user's Ctrl-C must
    still end `seqgen serve` and free its port."""
    import psutil

    from seqgen.serve.ingress import stop_leftover_haproxy

    def cut_short():
        print(f"seqgen serve: the shutdown did not finish within {seconds:g} s; stopping its processes. "
              "It was stuck here:", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for process in psutil.Process().children(recursive=True):
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        stop_leftover_haproxy(node_id)
        os._exit(1)

    timer = threading.Timer(seconds, cut_short)
    timer.daemon = True
    timer.start()
    return timer

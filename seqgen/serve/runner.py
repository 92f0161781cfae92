"""Serving checkpoints from this process until Ctrl-C (``seqgen serve``)."""

from __future__ import annotations

import time

from seqgen.serve.api_keys import ApiKeys
from seqgen.serve.config import ServeConfig


def run(checkpoint_urls: str | list[str], config: ServeConfig = ServeConfig(), *, host: str = "127.0.0.1", port: int = 8000,
        storage: str | None = None, blocking: bool = True, name: str = "seqgen", route_prefix: str = "/",
        api_keys: ApiKeys = ApiKeys(), address: str | None = None) -> str:
    """Start Serve (HTTP on ``host:port``, loopback by default) with these checkpoints' app
    (`seqgen.serve.app.build_app`), on the Ray at ``address`` (`seqgen.runtime.ensure_ray`).

    Returns the base URL; with ``blocking`` waits until Ctrl-C, then shuts Serve down (with the
    local Ray this call started, if it started one).
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

    def start() -> None:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=name, route_prefix=route_prefix, blocking=False)

    if not blocking:
        start()
        return url
    try:  # from here on Ctrl-C, even during start-up, shuts down what was started
        start()
        served = checkpoint_urls if isinstance(checkpoint_urls, str) else ", ".join(checkpoint_urls)
        print(f"serving {served} at {url} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        # HAProxy is stopped at once (the port is free when Ctrl-C returns) and again after the
        # shutdown: Serve stops HAProxy's current process, but a reload under way at that moment
        # starts one more that nobody stops. Serve on a local Ray of ours goes down with that Ray
        # in seconds (serve.shutdown() waited 30 s there for its controller); on a cluster Serve
        # is shut down and the cluster stays.
        stop_leftover_haproxy(node_id)
        try:
            stop_local_ray() if local_ray else serve.shutdown()
        finally:
            stop_leftover_haproxy(node_id)
    return url

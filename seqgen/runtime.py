"""Connecting to Ray (a local one started on demand, or a cluster) and fanning out tasks."""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator

# Settings of the local default Ray, applied when seqgen starts one (never at import): every Ray
# socket on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray take 127.0.0.1 as the node's
# address), no usage stats, no token auth on a Ray nobody else can reach. Defaults only: the
# caller's environment wins. On a cluster the nodes' own environment decides.
LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_AUTH_MODE": "disabled",
    # Serve's HTTP servers replace a malformed X-Request-Id before echoing it (seqgen.serve.request_ids)
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "seqgen.serve.request_ids:proxy_middlewares",
}


def apply_local_env() -> None:
    """Set ``LOCAL_ENV`` in ``os.environ`` (where it is not set) before a local Ray starts; the
    processes Ray starts inherit them.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported, into
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``. Whoever imported Ray first (a user's
    script, a test module, ``seqgen.train.loop``), the local Ray must still bind loopback, so a
    Ray imported earlier gets that constant re-read from the environment here."""
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = constants.env_bool(constants.ENABLE_RAY_CLUSTERS_ENV_VAR,
                                                          not constants.IS_WINDOWS_OR_OSX)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, e.g. inside ``ray job submit``), else start a
    local Ray bound to 127.0.0.1. Idempotent. True when this call started a local Ray (which then
    lives as long as this process, or until ``ray.shutdown()``)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    apply_local_env()  # after `import ray` is fine: it brings an imported Ray in line
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {k: os.environ[k] for k in LOCAL_ENV}},
    )
    return True


def stop_local_ray(timeout_s: float = 10.0) -> None:
    """Shut down the local Ray this process started (`ensure_ray`) and wait until every process it
    started is gone, SIGKILL after ``timeout_s``: ``ray.shutdown()`` returns while Ray's workers are
    still exiting, and until they have, one could still start a process of its own (Serve's
    HAProxy manager reloading HAProxy)."""
    import ray
    import psutil  # noqa: I001 - after ray, which puts the psutil it vendors on sys.path (not a seqgen dependency)

    started = psutil.Process().children(recursive=True)
    ray.shutdown()
    _, alive = psutil.wait_procs(started, timeout=timeout_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def map_tasks(fn: Callable, args: Iterable[tuple], use_ray: bool = True, max_in_flight: int = 0) -> Iterator:
    """``fn(*a)`` for every ``a`` in ``args``, results in order.

    With Ray each call is a task (1 CPU); at most ``max_in_flight`` (default: cluster CPUs) run at
    once, so the driver's memory stays bounded however many chunks a corpus has. The tasks read and
    write shared storage, so any node can run any of them: they ask to be spread over the nodes
    (Ray's default would pack short tasks onto one node). Without Ray (``memory://`` storage, which
    other processes cannot see) the calls run here, one by one.
    """
    args = list(args)
    if not use_ray:
        for a in args:
            yield fn(*a)
        return
    import ray

    ensure_ray()
    remote = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(fn)
    limit = max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: list = []
    next_arg = 0
    try:
        while next_arg < len(args) or pending:
            while next_arg < len(args) and len(pending) < limit:
                pending.append(remote.remote(*args[next_arg]))
                next_arg += 1
            yield ray.get(pending.pop(0))
    finally:
        # Stopped early (a task failed, Ctrl-C): the caller is about to remove what the tasks
        # wrote, so none may still be writing. Cancel the rest and wait until every one has ended.
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(pending, num_returns=len(pending), fetch_local=False)

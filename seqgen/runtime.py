"""Connecting to Ray (a local one started on demand, or a cluster) and fanning out tasks."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator

# Local-default settings (ENVIRONMENT.md): keep every Ray socket on loopback, no usage stats.
# They are defaults only: a cluster's own environment wins.
LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_AUTH_MODE": "disabled",
}


def apply_local_env() -> None:
    """Must run before ``import ray``: Ray reads these when it is imported (``seqgen`` does it
    on import unless $RAY_ADDRESS points at a cluster)."""
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, e.g. inside ``ray job submit``), else start a
    local Ray bound to 127.0.0.1. Idempotent."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    apply_local_env()
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {k: os.environ[k] for k in LOCAL_ENV}},
    )


def map_tasks(fn: Callable, args: Iterable[tuple], use_ray: bool = True, max_in_flight: int = 0) -> Iterator:
    """``fn(*a)`` for every ``a`` in ``args``, results in order.

    With Ray each call is a task (1 CPU); at most ``max_in_flight`` (default: cluster CPUs) run at
    once, so the driver's memory stays bounded however many chunks a corpus has. Without Ray
    (``memory://`` storage, which other processes cannot see) the calls run here, one by one.
    """
    args = list(args)
    if not use_ray:
        for a in args:
            yield fn(*a)
        return
    import ray

    ensure_ray()
    remote = ray.remote(num_cpus=1)(fn)
    limit = max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: list = []
    next_arg = 0
    while next_arg < len(args) or pending:
        while next_arg < len(args) and len(pending) < limit:
            pending.append(remote.remote(*args[next_arg]))
            next_arg += 1
        yield ray.get(pending.pop(0))

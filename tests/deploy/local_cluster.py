"""A real multi-node Ray cluster on this machine, started with cluster/start-head.sh and
cluster/start-worker.sh, token authentication on, stopped by process group (never `ray stop`,
which would end every Ray on the machine, other agents' included).

Ray cannot join nodes on loopback (`ray start --address` refuses or rewrites 127.0.0.1), so these
nodes advertise the machine's own address; its GCS and raylet then listen on all interfaces, which
is why the token is on. Dashboards, and so the Jobs API, stay on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from seqgen.runtime import LOCAL_ENV
from tests.processes import free_port

REPO = Path(__file__).resolve().parents[2]
START_HEAD = REPO / "cluster" / "start-head.sh"
START_WORKER = REPO / "cluster" / "start-worker.sh"


def machine_ip() -> str:
    """The address Ray itself would advertise (the source address of the default route; a UDP
    connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 53))
        except OSError:
            pytest.skip("no network interface besides loopback: Ray cannot join nodes on loopback")
        return s.getsockname()[0]


def auth_env(token_file: Path, bin_dir: Path) -> dict:
    """Environment for nodes and clients of one test cluster: its own token, `ray` from
    ``bin_dir``, and none of the local-only defaults (they would keep Ray on loopback and turn
    authentication off)."""
    if not token_file.exists():
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_ENV and k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               # On SIGTERM a node otherwise drains for 30 s (for Serve upgrades); tests stop at once.
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    return env


def agent_ports() -> list[str]:
    """Own ports for every per-node agent: the defaults may be held by other Rays here."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


@dataclass
class LocalCluster:
    """Nodes started by one test; ``dashboard`` is the head's Jobs API / State API URL."""

    env: dict
    log_dir: Path
    gcs: str = ""
    dashboard: str = ""
    procs: list = field(default_factory=list)
    temp_dirs: list = field(default_factory=list)

    def start_head(self, num_cpus: int, *extra: str, node_ip: str | None = None) -> None:
        """``node_ip``: what SEQGEN_NODE_IP says (default: the machine's address, so that
        workers can join)."""
        ip, gcs_port, dash_port = node_ip or machine_ip(), free_port(), free_port()
        env = {**self.env, "SEQGEN_NODE_IP": ip, "SEQGEN_RAY_PORT": str(gcs_port),
               "SEQGEN_DASHBOARD_PORT": str(dash_port), "SEQGEN_CLIENT_PORT": str(free_port())}
        self._spawn([str(START_HEAD), *agent_ports(), f"--num-cpus={num_cpus}", "--block", *extra], env)
        self.gcs, self.dashboard = f"{ip}:{gcs_port}", f"http://127.0.0.1:{dash_port}"

    def start_worker(self, num_cpus: int, *extra: str, env: dict | None = None) -> None:
        self._spawn([str(START_WORKER), self.gcs, *agent_ports(), f"--num-cpus={num_cpus}", "--block", *extra],
                    env or self.env)

    def _spawn(self, cmd: list[str], env: dict) -> None:
        # Every node its own --temp-dir: nodes sharing one would share its runtime_resources/ and
        # one node's runtime-env agent would delete the environments that another is using. Short,
        # because Ray's Unix sockets live under it and their paths must fit in 107 bytes.
        temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        self.temp_dirs.append(temp_dir)
        cmd = [*cmd, f"--temp-dir={temp_dir}"]
        log = self.log_dir / f"{Path(cmd[0]).stem}-{len(self.procs)}.log"
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            # Own session: the node's processes share one process group that stop() can signal.
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        self.procs.append(proc)

    def alive_nodes(self) -> list[dict]:
        """ALIVE nodes from the State API (`ray list nodes`), asked with this cluster's token."""
        out = subprocess.run(["ray", "list", "nodes", "--address", self.dashboard, "--format", "json",
                              "--filter", "state=ALIVE"],
                             env=self.env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "ray list failed")
        return json.loads(out.stdout)

    def wait_for_nodes(self, n: int, timeout: float = 180) -> list[dict]:
        deadline, last = time.time() + timeout, "no answer"
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    tail = p.log.read_text()[-3000:]
                    raise RuntimeError(f"{Path(p.args[0]).name} exited with {p.returncode}:\n{tail}")
            try:
                nodes = self.alive_nodes()
                if len(nodes) >= n:
                    return nodes
                last = f"{len(nodes)} node(s) alive"
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                last = str(e)
            time.sleep(2)
        raise RuntimeError(f"the cluster did not reach {n} alive nodes in {timeout:.0f} s ({last})")

    def listening(self) -> set[str]:
        """The IP addresses on which this cluster's processes accept connections."""
        import psutil

        groups = {p.pid for p in self.procs}
        addresses = set()
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.pid and _pgid(conn.pid) in groups:
                addresses.add(conn.laddr.ip.removeprefix("::ffff:"))
        return addresses

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node's process group (`ray start --block` then stops its own
        processes), SIGKILL whatever is left after ``timeout``, remove the nodes' temp dirs."""
        groups = [p.pid for p in reversed(self.procs)]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and any(_group_alive(g) for g in groups):
            for p in self.procs:
                p.poll()  # reap the `ray start` process: a zombie still counts in its group
            time.sleep(0.5)
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=10)
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False

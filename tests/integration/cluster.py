"""Multi-node Ray clusters of our own on this machine: the one helper for every test that starts
`ray start` nodes (tests/integration, tests/deploy).

Nodes start one of two ways, because the tests check two different things:

* ``Cluster(tmp)``: every socket on 127.0.0.1 and authentication off, like the local default (the
  machine is shared). Ray refuses to join nodes on loopback, so `ray start` runs with that guard
  lifted (``_RAY_START_ON_LOOPBACK``).
* ``Cluster(tmp, scripts=True)``: nodes started by cluster/start-head.sh and start-worker.sh as a
  user starts them: token authentication on, a head on the machine's own address.

Every worker node gets a custom resource named after it ({"node_a": 1}), which pins work to it and
names it in ``alive_nodes()``. Every node runs `ray start --block` in its own process group, with
its own temp dir and ports, and is stopped by signalling that group: never `ray stop` or a kill by
name, which would hit the other Rays and servers on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from seqgen.runtime import LOCAL_ENV
from tests.processes import free_port, listening, wait_until

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
START_HEAD = REPO / "cluster" / "start-head.sh"
START_WORKER = REPO / "cluster" / "start-worker.sh"

# Settings every node of a test cluster gets.
TEST_NODE_ENV = {
    "OMP_NUM_THREADS": "1",
    # On SIGTERM a node otherwise drains for 30 s (for Serve upgrades); tests stop at once.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    # The GCS declares a node dead after `failure_threshold` failed health checks `period_ms`
    # apart (Ray's default: 5 x 3 s). A killed node refuses the check at once, so it is declared
    # dead after ~5 x 1 s here; a live but busy node still has the default 10 s per answer, so a
    # loaded machine does not turn into a false node death.
    "RAY_health_check_period_ms": "1000",
    # A finished task's worker is handed back to its node instead of being kept for the next task
    # of the same function (Ray keeps it up to 500 ms): every task gets a lease of its own, placed
    # by its scheduling strategy. With SPREAD, placement over the nodes is then deterministic
    # instead of depending on how fast the first task ended.
    "RAY_worker_lease_timeout_milliseconds": "0",
    # Ray Train's default report interval (tests/conftest.py shortens it for the local Ray): the
    # node-kill test's training then spends ~2 s between checkpoints, ample time for the kill to
    # land between the first checkpoint and the end of the run.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2",
}

# `ray start` with the join guard lifted: Ray 2.60 binds its servers to 127.0.0.1 only while
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (LOCAL_ENV), but then `ray start` refuses to join a cluster;
# with =1 it swaps --node-ip-address=127.0.0.1 for the machine's network address and its servers
# listen on every interface. This runs the real `ray start` with the guard lifted and the given
# address kept, so worker nodes, like the head, listen on 127.0.0.1 only.
_RAY_START_ON_LOOPBACK = (
    "import sys, ray._private.ray_constants as k, ray._private.services as s; "
    "k.ENABLE_RAY_CLUSTER = True; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)
_RAY = "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"  # `ray` of any venv


def machine_ip() -> str:
    """The address Ray itself would advertise (the source address of the default route; a UDP
    connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 53))
        except OSError:
            pytest.skip("no network interface besides loopback: Ray cannot join nodes on loopback")
        return s.getsockname()[0]


def auth_env(token_file: Path, bin_dir: Path = BIN) -> dict:
    """Environment for the nodes and clients of a cluster with token authentication: its own
    token, `ray` from ``bin_dir``, and none of the local-only defaults (they would keep Ray on
    loopback and turn authentication off)."""
    if not token_file.exists():
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_ENV and k != "RAY_ADDRESS"}
    env.update(TEST_NODE_ENV, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
               RAY_USAGE_STATS_ENABLED="0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return env


def loopback_env(bin_dir: Path = BIN) -> dict:
    """Environment for the nodes of a loopback cluster: the local defaults, `ray` and `python` (a
    job's entrypoint) from ``bin_dir``."""
    env = {**os.environ, **LOCAL_ENV, **TEST_NODE_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


class NodeExited(RuntimeError):
    """A node's `ray start` exited before the cluster counted the node alive."""


class Cluster:
    """Nodes started by a test (a context manager: leaving it stops them all); ``dashboard`` is
    the head's Jobs API / State API URL, ``gcs`` the address worker nodes join."""

    def __init__(self, tmp: Path, scripts: bool = False, env: dict | None = None):
        """``env``: extra settings for every node (e.g. how to reach an S3 server)."""
        self.tmp, self.scripts = Path(tmp), scripts
        token = self.tmp / "token"
        self.env = {**(auth_env(token) if scripts else loopback_env()), **(env or {})}
        self.headers = {"Authorization": f"Bearer {token.read_text()}"} if scripts else {}
        self.gcs = self.dashboard = ""
        self.nodes: dict[str, subprocess.Popen] = {}  # name -> `ray start --block` (own process group)
        self.temp_dirs: list[str] = []  # one per node started, in that order

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def node_env(self, bin_dir: Path) -> dict:
        """This cluster's node environment with `ray` and `python` taken from ``bin_dir``."""
        return {**self.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    # nodes ---------------------------------------------------------------------------------
    def start_head(self, num_cpus: int = 0, *extra: str, node_ip: str | None = None, bin_dir: Path = BIN,
                   env: dict | None = None) -> None:
        """The head (by default with no CPUs: it runs job drivers and Ray Train controllers, and
        no task lands there by chance), its Python from ``bin_dir``, ``env`` added to its
        environment. ``node_ip``: what the head advertises, with ``scripts`` the machine's address
        by default so that workers can join."""
        gcs_port, dash_port = free_port(), free_port()
        node_env = {**self.node_env(bin_dir), **(env or {})}
        if self.scripts:
            ip = node_ip or machine_ip()
            node_env.update(SEQGEN_NODE_IP=ip, SEQGEN_RAY_PORT=str(gcs_port),
                            SEQGEN_DASHBOARD_PORT=str(dash_port), SEQGEN_CLIENT_PORT=str(free_port()))
            cmd = [str(START_HEAD)]
        else:
            ip = "127.0.0.1"
            cmd = [str(bin_dir / "python"), "-c", _RAY, "start", "--head",
                   "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                   f"--ray-client-server-port={free_port()}", "--disable-usage-stats"]
        self.gcs, self.dashboard = f"{ip}:{gcs_port}", f"http://127.0.0.1:{dash_port}"
        self._spawn("head", [*cmd, f"--num-cpus={num_cpus}", *extra], node_env)
        self.wait_for("head")

    def start_node(self, name: str, num_cpus: int = 1, *extra: str, bin_dir: Path = BIN,
                   env: dict | None = None, wait: bool = True, attempts: int = 1) -> None:
        """Worker node ``name`` (resource {name: 1}), its Python from ``bin_dir``, ``env`` added to
        its environment; with ``wait``, return once the cluster counts it alive, starting it up to
        ``attempts`` times if it exits first (`ray start` gives up when the GCS does not confirm the
        new raylet within 30 s, which a head busy with a node's death can miss; an autoscaler
        would start another node)."""
        args = [f"--num-cpus={num_cpus}", f"--resources={json.dumps({name: 1})}", *extra]
        if self.scripts:
            cmd = [str(START_WORKER), self.gcs]
        else:
            cmd = [str(bin_dir / "python"), "-c", _RAY_START_ON_LOOPBACK, "start", f"--address={self.gcs}",
                   "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        for attempt in range(1, attempts + 1):
            self._spawn(name, [*cmd, *args], {**self.node_env(bin_dir), **(env or {})})
            if not wait:
                return
            try:
                self.wait_for(name)
                return
            except NodeExited:
                if attempt == attempts:
                    raise
                self.nodes.pop(name).wait(timeout=30)

    def _spawn(self, name: str, cmd: list[str], env: dict) -> None:
        # Every node its own --temp-dir, as on separate machines: nodes sharing one would share its
        # runtime_resources/, and one node's runtime-env agent would delete a job's working_dir
        # while another node's driver runs in it. Short, because Ray's Unix sockets live under it
        # and their paths must fit in 107 bytes. Own agent ports: the defaults are shared by every
        # Ray on the machine; worker processes on ports the OS picks.
        temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
        self.temp_dirs.append(temp_dir)
        cmd = [*cmd, "--block", f"--temp-dir={temp_dir}", "--object-store-memory=100000000",
               f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
               "--min-worker-port=0", "--max-worker-port=0"]
        log = self.tmp / f"node-{name}.log"
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        self.nodes[name] = proc

    def wait_for(self, name: str, timeout: float = 180) -> dict:
        """Wait until node ``name`` is alive; fail at once, with its log, if it exits."""
        def alive():
            for node, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise NodeExited(f"node {node} exited with {proc.returncode}:\n{proc.log.read_text()[-3000:]}")
            try:
                return self.alive_nodes().get(name)
            except Exception:  # noqa: BLE001 - the dashboard is not up yet
                return None

        return wait_until(alive, timeout, f"node {name} to join", 1)

    def kill_node(self, name: str) -> None:
        """A node failure: SIGKILL to the node's whole process group (raylet, its agents, its workers)."""
        proc = self.nodes.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM every node's process group at once (`ray start --block` then stops its own
        processes, usually within a few seconds), SIGKILL whatever is left after ``timeout`` s
        (nothing of a test node needs to outlive it), remove the nodes' temp dirs."""
        groups = [p.pid for p in self.nodes.values()]
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and any(_group_alive(g) for g in groups):
            for p in self.nodes.values():
                p.poll()  # reap the `ray start` process: a zombie still counts in its group
            time.sleep(0.2)
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        for p in self.nodes.values():
            p.wait(timeout=10)
        self.nodes.clear()
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.temp_dirs.clear()

    # State API -----------------------------------------------------------------------------
    def _state(self):
        from ray.util.state import StateApiClient

        return StateApiClient(address=self.dashboard, headers={"Content-Type": "application/json", **self.headers})

    def _list(self, resource: str, *filters) -> list:
        from ray.util.state.common import ListApiOptions, StateResource

        return self._state().list(StateResource(resource),
                                  options=ListApiOptions(limit=10_000, detail=True, filters=list(filters)),
                                  raise_on_missing_output=False)

    def alive_nodes(self) -> dict[str, object]:
        """{node name ("head" for the head): its NodeState} of the nodes the GCS counts alive."""
        out = {}
        for n in self._list("nodes", ("state", "=", "ALIVE")):
            names = [k for k in (n.resources_total or {}) if k in self.nodes]
            out["head" if n.is_head_node else names[0] if names else n.node_id] = n
        return out

    def placed(self, *names: str, actors: bool = False) -> dict[str, set[str]]:
        """{task or actor class name: names of the nodes it ran on}."""
        where = {n.node_id: name for name, n in self.alive_nodes().items()}
        out: dict[str, set[str]] = {n: set() for n in names}
        for r in self._list("actors" if actors else "tasks"):
            short = (r.class_name if actors else (r.func_or_class_name or r.name or "")).rsplit(".", 1)[-1]
            if short in out and r.node_id:
                out[short].add(where.get(r.node_id, r.node_id))  # a dead node: its id
        return out

    def listening(self) -> set[str]:
        """The IP addresses on which this cluster's processes accept connections."""
        groups = {p.pid for p in self.nodes.values()}
        return {ip for ip, _, _ in listening(lambda pid: _pgid(pid) in groups)}

    # Jobs API ------------------------------------------------------------------------------
    def jobs(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard, headers=self.headers or None)

    def submit(self, entrypoint: str, timeout: float = 300, wait: bool = True, **job):
        """Submit ``entrypoint`` with the repository as working_dir (or ``runtime_env=``); with
        ``wait``, return its logs once it succeeded (fail with the log tail otherwise), else its id."""
        client = self.jobs()
        job.setdefault("runtime_env", {
            "working_dir": str(REPO), "excludes": [".venv", ".git", ".pytest_cache", "seqgen-storage", "*.png", "*.svg"],
            "env_vars": {**LOCAL_ENV, "OMP_NUM_THREADS": "1"}})

        def submitted():
            try:
                return client.submit_job(entrypoint=entrypoint, **job)
            except RuntimeError as e:  # the job agent may start a little after the dashboard answers
                if "No available agent" not in str(e):
                    raise
                return None

        job_id = wait_until(submitted, 60, "a job agent to accept the job", 1)
        return self.wait_job(job_id, entrypoint, timeout) if wait else job_id

    def wait_job(self, job_id: str, entrypoint: str, timeout: float = 300) -> str:
        from ray.job_submission import JobStatus

        client = self.jobs()
        done = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
        try:
            status = wait_until(lambda: (s := client.get_job_status(job_id)) in done and s, timeout,
                                f"job {entrypoint!r}", 1)
        except TimeoutError:
            client.stop_job(job_id)
            raise AssertionError(f"{entrypoint} did not finish in {timeout} s:\n{client.get_job_logs(job_id)[-3000:]}")
        logs = client.get_job_logs(job_id)
        message = client.get_job_info(job_id).message  # why a job failed before its entrypoint ran
        assert status == JobStatus.SUCCEEDED, f"{entrypoint} ended {status} ({message}):\n{logs[-4000:]}"
        return logs


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

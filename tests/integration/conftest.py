"""Integration fixtures: an S3-compatible server on 127.0.0.1 (moto's server mode) and a multi-node
Ray cluster of our own on this machine (a head and worker nodes started with ``ray start``).

Every process here is started in its own process group and stopped by signalling that group:
never ``ray stop`` or a kill by name, which would hit the other Rays and servers on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from seqgen.runtime import LOCAL_ENV
from tests.processes import free_port, stop_group, wait_for_url, wait_until

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# a multi-node Ray cluster on one machine
@dataclass
class Cluster:
    """A head (no CPUs: it runs job drivers and Ray Train controllers) and worker nodes of 1 CPU,
    each with a custom resource naming it ({"node_a": 1}); every port is a free one of our own."""

    address: str  # GCS, for `ray start --address`
    dashboard: str  # http://127.0.0.1:PORT: Jobs API and state API
    temp_dir: str
    env: dict
    nodes: dict = field(default_factory=dict)  # name -> Popen of `ray start --block`

    def _ports(self) -> list[str]:
        # Own agent ports on every node: the defaults are shared by every Ray on the machine.
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                "--min-worker-port=0", "--max-worker-port=0"]  # workers: ports the OS picks

    def start_node(self, name: str, num_cpus: int = 1, timeout: float = 120) -> None:
        """Start worker node ``name`` (resource {name: 1}) and wait until the cluster counts it."""
        self.nodes[name] = _ray_start(name, ["--address", self.address, f"--num-cpus={num_cpus}",
                                       f"--resources={json.dumps({name: 1})}", *self._ports()], self)
        wait_until(lambda: self.alive_nodes().get(name), timeout, f"worker node {name} to join")

    def kill_node(self, name: str) -> None:
        """A node failure: SIGKILL to the node's whole process group (raylet, its agents, its workers)."""
        proc = self.nodes.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def alive_nodes(self) -> dict[str, str]:
        """{custom node name or 'head': node id} of the nodes the GCS counts alive."""
        from ray.util.state import list_nodes

        out = {}
        for n in list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], detail=True,
                            raise_on_missing_output=False):
            names = [k for k in (n.resources_total or {}) if k.startswith("node_")]
            out[names[0] if names else "head"] = n.node_id
        return out

    def stop(self) -> None:
        """SIGTERM every node's process group at once, then SIGKILL what is left after 10 s (a
        node's `ray start --block` can take half a minute to wind down; nothing of it persists)."""
        procs = list(self.nodes.values())
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        for proc in procs:
            stop_group(proc, timeout=max(deadline - time.time(), 0.1))
        self.nodes.clear()

    # Jobs API -----------------------------------------------------------------------------
    wait_until = staticmethod(wait_until)

    def submit(self, entrypoint: str, timeout: float = 300, wait: bool = True):
        """Submit ``entrypoint`` with the repository as working_dir; with ``wait``, return its logs
        once it succeeded (fail with the log tail otherwise), else return (client, job id)."""
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(self.dashboard)
        runtime_env = {"working_dir": str(REPO), "excludes": [".venv", ".git", "seqgen-storage", "*.png", "*.svg"],
                       "env_vars": {**LOCAL_ENV, "OMP_NUM_THREADS": "1"}}

        def submitted():
            try:
                return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
            except RuntimeError as e:  # the job agent may start a little after the dashboard answers
                if "No available agent" not in str(e):
                    raise
                return None

        job = wait_until(submitted, 60, "a job agent to accept the job", 2)
        return self.wait_job(client, job, entrypoint, timeout) if wait else (client, job)

    @staticmethod
    def wait_job(client, job: str, entrypoint: str, timeout: float = 300) -> str:
        from ray.job_submission import JobStatus

        done = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
        try:
            status = wait_until(lambda: (s := client.get_job_status(job)) in done and s, timeout,
                                f"job {entrypoint!r}", 1)
        except TimeoutError:
            client.stop_job(job)
            raise AssertionError(f"{entrypoint} did not finish in {timeout} s:\n{client.get_job_logs(job)[-3000:]}")
        logs = client.get_job_logs(job)
        message = client.get_job_info(job).message  # why a job failed before its entrypoint ran
        assert status == JobStatus.SUCCEEDED, f"{entrypoint} ended {status} ({message}):\n{logs[-4000:]}"
        return logs


# `ray start --address` on loopback. Ray 2.60 binds its servers to 127.0.0.1 only while
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (LOCAL_ENV), but then `ray start` refuses to join a cluster;
# with =1 it swaps --node-ip-address=127.0.0.1 for the machine's network address and its servers
# listen on every interface. This runs the real `ray start` with the join guard lifted and the
# given address kept, so worker nodes, like the head, listen on 127.0.0.1 only.
_RAY_START_ON_LOOPBACK = (
    "import sys, ray._private.ray_constants as k, ray._private.services as s; "
    "k.ENABLE_RAY_CLUSTER = True; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)


def _ray_start(name: str, args: list[str], cluster: Cluster) -> subprocess.Popen:
    ray = [str(BIN / "ray")] if "--head" in args else [sys.executable, "-c", _RAY_START_ON_LOOPBACK]
    # A temp dir per node, as on separate machines: nodes sharing one would share the runtime-env
    # cache, and one node's agent deletes a job's working_dir while another node's driver runs in it.
    temp = Path(cluster.temp_dir) / name
    temp.mkdir(exist_ok=True)
    return subprocess.Popen([*ray, "start", "--block", "--node-ip-address=127.0.0.1",
                             "--object-store-memory=100000000", f"--temp-dir={temp}",
                             "--disable-usage-stats", *args],
                            env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """Head + two worker nodes (node_a, node_b), all on 127.0.0.1, nodes reaching the S3 server."""
    # Short temp dir: Ray's socket paths must stay under the 107-byte AF_UNIX limit.
    temp = Path(f"/tmp/rc-{uuid.uuid4().hex[:8]}")
    temp.mkdir()
    # `python` in a job's entrypoint is this environment's; S3 settings reach every worker process.
    env = {**os.environ, **LOCAL_ENV, **s3.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    c = Cluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", str(temp), env)
    c.nodes["head"] = _ray_start("head", ["--head", f"--port={gcs}", "--num-cpus=0", "--dashboard-host=127.0.0.1",
                                  f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
                                  *c._ports()], c)
    try:
        wait_for_url(f"{c.dashboard}/api/version", c.nodes["head"], 120, f"the Ray dashboard at {c.dashboard}", 1)
        c.start_node("node_a")
        c.start_node("node_b")
        yield c
    finally:
        c.stop()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)

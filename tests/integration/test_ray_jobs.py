"""The jobs run unchanged under the Ray Jobs API: a real head (`ray start --head` on 127.0.0.1),
preprocess and train submitted as jobs, artefacts checked on storage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqgen.runtime import LOCAL_ENV
from seqgen import checkpoint as ckpt
from tests.processes import free_port, stop_group, wait_for_url

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A head node of our own: `ray start --head --block` in its own process group, stopped by
    signalling that group (never `ray stop`, which would kill every Ray on the machine)."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp = tmp_path_factory.mktemp("ray")
    # `python` in a job's entrypoint is the head's python: this environment's.
    env = {**os.environ, **LOCAL_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    # Own ports for the per-node agents too: another local Ray (the tests' shared session) holds
    # the defaults, and a head whose job agent cannot bind accepts no jobs.
    agent_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    proc = subprocess.Popen([ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                             *agent_ports,
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2",
                             f"--temp-dir={temp}", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_for_url(f"{url}/api/version", proc, 120, f"the Ray Jobs API at {url}", 1)
        yield url
    finally:
        stop_group(proc, timeout=30)


def _run_job(client, entrypoint: str, timeout: float = 300) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while True:  # the job agent may start a little after the dashboard answers
        try:
            job = client.submit_job(
                entrypoint=entrypoint,
                runtime_env={"working_dir": str(REPO), "excludes": [".venv", ".git", "seqgen-storage"],
                             "env_vars": dict(LOCAL_ENV)},
            )
            break
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, f"{entrypoint} ended {status}:\n{logs[-3000:]}"
    return logs


def test_submit_preprocess_and_train(head, tmp_path):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head)
    store = str(tmp_path / "store")
    logs = _run_job(client, f"python jobs/preprocess.py shakespeare --storage {store}")
    assert "dataset shakespeare" in logs
    assert (tmp_path / "store" / "datasets" / "shakespeare" / "manifest.json").exists()

    logs = _run_job(client, f"python jobs/train.py --storage {store} run_name=job-run model.hidden_size=16 "
                            "train.max_steps=4 train.eval_every=2 train.eval_tokens=1000 train.batch_size=8 "
                            "train.seq_len=20 train.num_workers=1 train.cpus_per_worker=1 train.progress=false")
    run_dir = tmp_path / "store" / "runs" / "job-run"
    found = ckpt.list_checkpoints(str(run_dir))
    assert [Path(u).name for u in found][-1] == "checkpoint_00000004", logs[-2000:]
    assert (run_dir / "metrics.csv").exists() and (run_dir / "curves.png").exists()
    shutil.rmtree(tmp_path / "store")

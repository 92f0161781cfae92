"""deploy/runtime_env.yaml ships seqgen to a stock Ray node: a worker node whose Python has only
ray[default], torch, numpy and pyarrow runs `jobs/preprocess.py` + `jobs/train.py` submitted with
`ray job submit --runtime-env deploy/runtime_env.yaml`, and the run's artefacts land on storage.

The minimal environment is built once per (Python, Ray, torch) version and cached in pytest's cache
directory (`.pytest_cache/d/`); the runtime environment's own pip install happens on every run
(a new cluster has an empty cache), from PyPI.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from tests.deploy.local_cluster import REPO, LocalCluster, auth_env

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

RAY_VERSION = md.version("ray")
TORCH_VERSION = md.version("torch").split("+")[0]  # 2.13.0+cpu -> 2.13.0: pip finds the build
RESOURCE = "minimal_env"  # custom resource that only the minimal node has: pins the job there


@pytest.fixture(scope="module")
def minimal_bin(request, tmp_path_factory) -> Path:
    """bin/ of a venv with ray[default], torch, numpy, pyarrow and nothing of seqgen's own (kept in
    pytest's cache between runs; in a temporary directory when the cache plugin is off)."""
    key = f"minimal-venv-py{sys.version_info[0]}{sys.version_info[1]}-ray{RAY_VERSION}-torch{TORCH_VERSION}"
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir(key) if cache is not None else tmp_path_factory.mktemp(key)
    venv, ready = root / "venv", root / "ready"
    with FileLock(str(root / "lock"), timeout=1200):  # one builder at a time
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                  f"ray[default]=={RAY_VERSION}", f"torch=={TORCH_VERSION}", "numpy", "pyarrow"],
                                 capture_output=True, text=True, timeout=900)
            assert pip.returncode == 0, f"building the minimal venv failed:\n{pip.stderr[-3000:]}"
            ready.write_text(f"ray {RAY_VERSION}, torch {TORCH_VERSION}\n")  # last: a complete venv
    # Minimal indeed: what the runtime environment must bring is missing here.
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import typer"], capture_output=True, timeout=60)
    assert probe.returncode != 0, "the minimal venv has typer: it would hide a missing runtime_env package"
    return venv / "bin"


@pytest.fixture(scope="module")
def cluster(minimal_bin, tmp_path_factory):
    """Head from this environment with no CPUs (nothing of the job can run there), one worker node
    from the minimal environment with 2 CPUs and the pinning resource."""
    tmp = tmp_path_factory.mktemp("runtime-env")
    c = LocalCluster(auth_env(tmp / "token", Path(sys.executable).parent), log_dir=tmp)
    try:
        c.start_head(num_cpus=0)
        c.wait_for_nodes(1)
        c.start_worker(2, f'--resources={{"{RESOURCE}": 1}}', env=auth_env(tmp / "token", minimal_bin))
        c.wait_for_nodes(2)
        yield c
    finally:
        c.stop()


def test_job_with_runtime_env_runs_on_a_minimal_node(cluster, tmp_path):
    store = tmp_path / "store"
    entrypoint = (f"python jobs/preprocess.py shakespeare --storage {store} && "
                  f"python jobs/train.py --storage {store} run_name=env-run model.hidden_size=16 "
                  "train.max_steps=4 train.eval_every=2 train.eval_tokens=1000 train.batch_size=8 train.seq_len=20 "
                  "train.num_workers=1 train.cpus_per_worker=1 train.progress=false")
    submit = ["ray", "job", "submit", "--address", cluster.dashboard, "--submission-id", "runtime-env-test",
              "--runtime-env", "deploy/runtime_env.yaml", "--entrypoint-resources", json.dumps({RESOURCE: 1}),
              "--", "bash", "-c", entrypoint]
    try:  # blocking submit: tails the job's logs, exits 1 if the job fails
        out = subprocess.run(submit, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        subprocess.run(["ray", "job", "stop", "--address", cluster.dashboard, "runtime-env-test"],
                       env=cluster.env, capture_output=True, timeout=120)
        raise
    logs = out.stdout + out.stderr
    assert out.returncode == 0, f"the job failed:\n{logs[-4000:]}"

    # Everything ran on the minimal node: the driver (pinned by the resource) and, since the head
    # has no CPUs, the preprocessing tasks and the Ray Train worker.
    jobs = _ray_list(cluster, "jobs")
    driver_node = next(j["driver_node_id"] for j in jobs if j["submission_id"] == "runtime-env-test")
    node = next(n for n in cluster.alive_nodes() if n["node_id"] == driver_node)
    assert node["resources_total"].get(RESOURCE) == 1

    assert (store / "datasets" / "shakespeare" / "manifest.json").exists(), logs[-2000:]
    run = store / "runs" / "env-run"
    assert (run / "checkpoint_00000004" / "manifest.json").exists(), logs[-2000:]
    assert (run / "metrics.csv").exists()


def _ray_list(cluster, kind: str) -> list[dict]:
    out = subprocess.run(["ray", "list", kind, "--address", cluster.dashboard, "--format", "json", "--detail"],
                         env=cluster.env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)

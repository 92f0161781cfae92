"""A real multi-node Ray cluster on one machine, storage on a real S3-compatible server: the jobs are
submitted with the Jobs API, spread over the nodes, and training survives the loss of a node.

    head (0 CPUs: job drivers, Train controllers) + node_a, node_b (1 CPU each), all on 127.0.0.1
    storage: s3://<bucket>/<root> on moto's server (the ``s3`` fixture); every node reaches it
    through AWS_ENDPOINT_URL

Test A: preprocess job (tasks on both nodes) -> 2-worker training job (one worker per node,
train.max_failures=3) -> SIGKILL to node_b's process group after the first checkpoint is on S3 ->
a replacement node joins -> Ray Train rebuilds the worker group, which resumes from the last
checkpoint -> the run finishes with the loss curve of an uninterrupted run (whose checkpoint holds
each DDP worker's own state) -> sample from s3://.
Test B: a Tune search with 2 trials running at once on the two nodes.
"""

from __future__ import annotations

import json
import time

import fsspec
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seqgen import checkpoint as ckpt
from seqgen.cli import app
from seqgen.config import load
from seqgen.data.presets import BUNDLED_SHAKESPEARE
from seqgen.storage import Storage
from tests.ddp import train_ddp
from tests.processes import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.cluster, pytest.mark.s3]

# 2 x 16 LSTM; steps slow enough (~50 ms) that a node can be killed between checkpoints. Dropout
# and weight noise make every step depend on each worker's RNG, which a restart must restore.
TINY = ["dataset=shakes", "model.hidden_size=16", "model.num_layers=2", "train.batch_size=16", "train.seq_len=50",
        "train.eval_every=10", "train.eval_tokens=2000", "train.max_steps=60", "train.progress=false",
        "model.dropout=0.2", "reg.kind=weight_noise", "reg.std=0.01"]
CLUSTER = ["train.num_workers=2", "train.cpus_per_worker=1", "train.max_failures=3"]


@pytest.fixture(scope="module")
def root(cluster, s3):
    """A storage root on S3 with the dataset ``shakes`` preprocessed by a job (module-wide)."""
    url = s3.url("cluster")
    raw = f"{url}/raw/shakespeare.txt"
    with open(BUNDLED_SHAKESPEARE, "rb") as src, fsspec.open(raw, "wb") as dst:
        dst.write(src.read()[:300_000])
    t0 = time.time()
    logs = cluster.submit(f"python jobs/preprocess.py shakes -i {raw} --preset shakespeare --chunk-mb 0.05 "
                               f"--storage {url}", timeout=300)
    assert "dataset shakes" in logs, logs[-2000:]
    print(f"preprocess job: {time.time() - t0:.1f} s")
    return url


def test_preprocess_tasks_spread_over_nodes(cluster, root):
    # Deterministic, not luck: map_tasks asks for SPREAD (round robin over the nodes with a free
    # CPU; the head has none) and the test cluster caches no leased workers
    # (RAY_worker_lease_timeout_milliseconds=0, tests/integration/cluster.py), so a task never runs
    # on the worker its predecessor just finished on: of any two tasks the second goes to the
    # other node.
    placed = cluster.placed("_count_task", "_encode_task")
    for name, where in placed.items():
        assert where == {"node_a", "node_b"}, f"{name} ran on {where}"
    m = Storage.from_url(root).read_json(Storage.from_url(root).path("datasets", "shakes", "manifest.json"))
    assert len(m["splits"]["train"]["shards"]) >= 4 and all(sh["sha256"] for sh in m["splits"]["train"]["shards"])


def _progress(storage: Storage, run: str) -> dict:
    latest = ckpt.list_checkpoints(storage.url_of(storage.run_dir(run)))[-1]
    with fsspec.open(f"{latest}/progress.json", "rb") as f:
        return json.load(f)


def test_training_survives_a_node_kill(cluster, root, tmp_path):
    st = Storage.from_url(root)
    run_url = st.url_of(st.run_dir("crash"))
    job = cluster.submit(" ".join(["python jobs/train.py", f"--storage {root}", "run_name=crash", *TINY, *CLUSTER]),
                         wait=False)
    t0 = time.time()
    # both workers up, one per node (the only two nodes with CPUs, one each)
    workers = wait_until(lambda: (w := cluster.placed("RayTrainWorker", actors=True)["RayTrainWorker"])
                         and len(w) == 2 and w, 180, "two Ray Train workers", 1)
    assert workers == {"node_a", "node_b"}
    first = wait_until(lambda: ckpt.list_checkpoints(run_url), 180, "the first checkpoint on S3", 0.2)
    cluster.kill_node("node_b")  # the node dies: its raylet, agents and the worker on it
    t_kill = time.time()
    with fsspec.open(f"{first[-1]}/progress.json", "rb") as f:
        at_kill = json.load(f)  # what the restarted worker group has to continue from
    killed_at = at_kill["step"]
    cluster.start_node("node_c", attempts=2)  # the replacement the autoscaler would bring
    logs = cluster.wait_job(job, "train job", timeout=400)
    print(f"train job: {time.time() - t0:.1f} s (kill at {t_kill - t0:.1f} s, after checkpoint {killed_at})")

    progress = _progress(st, "crash")
    step, losses = progress["step"], progress["losses"]
    assert step == 60 and killed_at < 60, (step, killed_at)
    # the new worker group resumed from a checkpoint at or after the one seen at the kill, not from 0
    assert progress["starts"][0] == 0 and len(progress["starts"]) >= 2 and progress["starts"][1] >= killed_at, progress["starts"]
    after = cluster.placed("RayTrainWorker", actors=True)["RayTrainWorker"]
    assert "node_c" in after, "no worker ran on the replacement node: no restart happened"
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert losses[:killed_at] == at_kill["losses"]  # the history before the checkpoint is kept, nothing repeated

    # Exact continuation: the same training, uninterrupted (two DDP workers, tests/ddp.py: the same
    # loop in two local processes joined by torch.distributed, reading the same dataset on S3),
    # gives the same loss curve.
    reference = train_ddp(load(None, [*TINY, *CLUSTER, "run_name=calm"]), st, 2, tmp_path / "calm")
    assert losses == _progress(st, "calm")["losses"]  # bit for bit: nothing lost, repeated or reseeded
    assert [r["step"] for r in reference[0]] == [e["step"] for e in progress["evals"]]

    # what a DDP checkpoint holds: the bare model (not DDP's wrapper), and each worker's own state
    latest = ckpt.list_checkpoints(run_url)[-1]
    workers = [ckpt.load(latest, with_trainer=True, rank=r) for r in (0, 1)]
    assert not any(k.startswith("module.") for k in workers[0].model_state)
    states = [w.trainer_state["worker"]["task"]["state"][0][0] for w in workers]
    assert states[0].shape == states[1].shape == (8, 16)  # each worker: batch_size / world streams
    assert not torch.equal(states[0], states[1])  # ... of its own share of the corpus

    out = CliRunner().invoke(app, ["sample", "crash", "--storage", root, "--prompt", "KING:", "--length", "40",
                                   "--seed", "1"])
    assert out.exit_code == 0 and out.output.startswith("KING:"), out.output
    assert "restart" in logs.lower() or "fail" in logs.lower(), logs[-3000:]


def test_tune_two_trials_on_the_cluster(cluster, root):
    st = Storage.from_url(root)
    t0 = time.time()
    logs = cluster.submit(" ".join([
        "SEQGEN_PROGRESS_EVERY=0 python jobs/tune.py search", f"--storage {root}", "--space optim.lr=grid:0.002,0.004", "--num-samples 1",
        "--max-concurrent 2", *TINY, "train.max_steps=20", "train.num_workers=0", "train.cpus_per_worker=1"]),
        timeout=400)
    print(f"tune job: {time.time() - t0:.1f} s")
    assert "best checkpoint" in logs, logs[-3000:]
    # the job's log shows the search's progress, as `ray job logs` shows it to its user
    assert "[tune search] 0/2 trials (0%)" in logs and "[tune search] done: 2/2 trials (100%)" in logs, logs[-3000:]
    results = st.fs.cat_file(st.path("tune", "search", "results.csv")).decode()
    assert len(results.strip().splitlines()) == 3, results  # header + 2 trials
    trial_runs = [p for p in st.fs.ls(st.runs_dir(), detail=False) if "search-trial" in p]
    assert len(trial_runs) == 2
    for run in trial_runs:
        assert ckpt.list_checkpoints(st.url_of(run))
    # The two trials trained on the two worker nodes (node_b's replacement, if the node-kill test
    # ran first), not by luck: each trial (its function trainable trains in its own actor)
    # reserves 1 CPU, the head has none and each worker node one, and Tune reserves both trials'
    # resources at once (--max-concurrent 2) before either starts.
    placed = cluster.placed("ImplicitFunc", actors=True)["ImplicitFunc"]
    assert placed == set(cluster.alive_nodes()) - {"head"}, placed

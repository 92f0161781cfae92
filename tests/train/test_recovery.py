"""Recovery: Ray Train restarts a killed worker group and the run continues exactly from its last
checkpoint; a damaged latest checkpoint is skipped with a warning; a run cannot resume on another
number of workers."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
import torch
from fsspec.core import url_to_fs

from seqgen import checkpoint as ckpt
from seqgen import config
from seqgen.checkpoint import resume_conflict
from seqgen.train.run import train
from tests.tiny_storage import shakespeare_storage

pytestmark = pytest.mark.ray

TINY = ["model.hidden_size=16", "train.batch_size=8", "train.seq_len=20", "train.eval_tokens=500",
        "train.progress=false", "train.keep_checkpoints=10",
        "model.dropout=0.2", "reg.kind=weight_noise", "reg.std=0.01"]  # RNG-dependent: resume restores RNG


def _cfg(*overrides: str) -> config.ExperimentConfig:
    return config.load(None, [*TINY, *overrides])


def _final(result):
    loaded = ckpt.load(result.latest_checkpoint)
    return loaded.progress["losses"], loaded.model_state


def test_damaged_latest_checkpoint_falls_back_to_the_one_before(ray_session, caplog):
    st = shakespeare_storage("memory://recovery-damaged")
    steps = ["train.max_steps=12", "train.eval_every=4"]
    expected_losses, expected_params = _final(train(_cfg("run_name=ref", *steps), st))

    first = train(_cfg("run_name=dmg", "train.max_steps=8", "train.eval_every=4"), st)
    fs, path = url_to_fs(first.latest_checkpoint)  # checkpoint_00000008: same size, one byte changed
    data = bytearray(fs.cat_file(f"{path}/model.pt"))
    data[-100] ^= 0xFF
    with fs.open(f"{path}/model.pt", "wb") as f:
        f.write(bytes(data))

    with caplog.at_level("WARNING", logger="seqgen.checkpoint"):
        resumed = train(_cfg("run_name=dmg", *steps), st)
    assert "checkpoint_00000008 is damaged: model.pt does not match its sha256" in caplog.text
    losses, params = _final(resumed)
    assert losses == expected_losses  # steps 5-8 redone exactly, then 9-12
    assert all(torch.equal(params[k], expected_params[k]) for k in params)
    ckpt.verify(f"{resumed.run_url}/checkpoint_00000008")  # rewritten, valid again


def test_resuming_on_another_number_of_workers_is_a_clear_error(ray_session, tmp_path):
    st = shakespeare_storage(str(tmp_path))
    done = train(_cfg("run_name=w1", "train.max_steps=2", "train.eval_every=2"), st)
    with pytest.raises(ValueError, match=r"written by 1 worker\(s\), but train.num_workers=2 now; resume with "
                                         r"train.num_workers=0 or 1"):
        train(_cfg("run_name=w1", "train.max_steps=4", "train.eval_every=2", "train.num_workers=2",
                   "train.cpus_per_worker=1"), st)  # refused in the driver: no worker is started

    # the training loop's own check, for the checkpoint it actually resumes from
    saved = ckpt.load(done.latest_checkpoint).config
    why = resume_conflict(_cfg("run_name=w1", "train.num_workers=1"), saved, 2, done.latest_checkpoint)
    assert "written by 2 worker(s), but train.num_workers=1 now; resume with train.num_workers=2" in why
    assert resume_conflict(_cfg("run_name=w1", "train.num_workers=2"), saved, 2, done.latest_checkpoint) is None
    assert "hidden_size" in resume_conflict(_cfg("run_name=w1", "model.hidden_size=8"), saved, 1, "x")


def _train_workers() -> list[psutil.Process]:
    """Ray Train worker processes of *this* test session's Ray: ray.init started its raylet as a
    child of this process, and the raylet starts the workers."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.cmdline() and p.cmdline()[0].startswith("ray::RayTrainWorker"):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def test_killed_worker_is_replaced_and_the_run_continues_exactly(ray_session, tmp_path):
    st = shakespeare_storage(str(tmp_path))
    two = ["train.num_workers=2", "train.cpus_per_worker=1", "train.max_steps=60", "train.eval_every=10"]
    tick = time.time()
    reference = train(_cfg("run_name=ref2", *two), st)
    reference_seconds = time.time() - tick
    expected_losses, expected_params = _final(reference)

    outcome = {}

    def run():
        try:
            outcome["result"] = train(_cfg("run_name=killed", *two), st)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = e

    tick = time.time()
    thread = threading.Thread(target=run)
    thread.start()
    first = os.path.join(tmp_path, "runs", "killed", ckpt.checkpoint_name(10), "manifest.json")
    while not os.path.exists(first) and thread.is_alive():
        time.sleep(0.01)
    workers = _train_workers()
    assert len(workers) == 2, f"expected this run's 2 Ray Train workers, found {len(workers)}"
    victim = workers[-1]
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait(timeout=30)
    run_url = st.url_of(st.run_dir("killed"))
    last = ckpt.list_checkpoints(run_url)[-1]
    assert not last.endswith("00000060"), "the run finished before the worker was killed"
    # no checkpoint can complete without the dead worker (barrier): the next one is the new group's
    while thread.is_alive() and ckpt.list_checkpoints(run_url)[-1] == last:
        time.sleep(0.05)
    next_checkpoint_s = time.time() - killed_at

    thread.join(timeout=500)
    assert not thread.is_alive(), "the run did not finish after the worker was killed"
    assert "error" not in outcome, f"the run did not recover: {outcome.get('error')!r}"
    killed_seconds = time.time() - tick
    losses, params = _final(outcome["result"])
    assert len(losses) == 60 and losses == expected_losses  # no step lost, repeated or changed
    # ... because the new group resumed from the last checkpoint, not from step 0 (which would give
    # the same losses here: training is deterministic)
    starts = ckpt.load(outcome["result"].latest_checkpoint).progress["starts"]
    assert starts[0] == 0 and len(starts) == 2 and starts[1] >= 10 and starts[1] % 10 == 0, starts
    assert all(torch.equal(params[k], expected_params[k]) for k in params)
    times = [e["wall_time"] for e in ckpt.load(reference.latest_checkpoint).progress["evals"]]
    interval = (times[-1] - times[0]) / (len(times) - 1)
    print(f"\nworker kill {killed_at - tick:.1f} s into the run; the restarted group's first checkpoint "
          f"{next_checkpoint_s:.1f} s after the kill (uninterrupted: one every {interval:.1f} s); run "
          f"{killed_seconds:.1f} s vs {reference_seconds:.1f} s uninterrupted")

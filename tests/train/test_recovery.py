"""Recovery: a damaged latest checkpoint is skipped with a warning; a run cannot resume on another
number of workers. (Ray Train restarting a worker group that lost a worker, and the run continuing
exactly from its last checkpoint, RNG included, is tested where a whole node dies:
tests/integration/test_cluster.py::test_training_survives_a_node_kill; in one process:
tests/train/test_loop.py::test_exact_resume_after_kill.)"""

from __future__ import annotations


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

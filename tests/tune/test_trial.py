"""seqgen.tune.trial without Ray: where a trial restarted with a Tune checkpoint goes on (its own
checkpoint: its latest run, resumed from storage; another trial's: a new segment run from a copy
of it; one at the last step: nowhere), and what a Tune checkpoint of a trial says."""

from __future__ import annotations

import json

import pytest

from seqgen.config import load
from seqgen.storage import Storage, join
from seqgen.tune.report import SEGMENT_FILE
from seqgen.tune.trial import PBT_INIT, _continue

TRIAL = "abcde_00001"
BASE = ["train.max_steps=100", "train.eval_every=20", "train.num_workers=0"]


def _tune_checkpoint(tmp_path, owner: str, offset: int):
    """A Tune checkpoint as a trial's report makes one: a copy of a seqgen checkpoint (here a
    minimal complete one) and segment.json."""
    from ray import tune

    d = tmp_path / f"tune-ckpt-{owner}-{offset}"
    d.mkdir()
    (d / "model.pt").write_bytes(b"weights")
    (d / "manifest.json").write_text(json.dumps({"format": 2, "workers": 1,
                                                 "files": {"model.pt": {"size": 7, "sha256": None}}}))
    (d / SEGMENT_FILE).write_text(json.dumps({"offset": offset, "trial_id": owner}))
    return tune.Checkpoint.from_directory(str(d))


@pytest.fixture
def storage(tmp_path):
    st = Storage.from_url(str(tmp_path / "store"))
    st.write_json_atomic(join(st.run_dir("s-trial-001"), "config.json"), {})  # the trial's first run exists
    return st


def test_another_trials_checkpoint_starts_a_new_segment(storage, tmp_path):
    cfg, offset = _continue(load(None, BASE), storage, "s", TRIAL, _tune_checkpoint(tmp_path, "fghij_00000", 40))
    assert (cfg.run_name, offset) == ("s-trial-001-r1", 40)
    assert cfg.train.max_steps == 60  # the trial's remaining budget
    assert cfg.train.init_from == storage.url_of(join(storage.run_dir("s-trial-001-r1"), PBT_INIT))
    assert storage.exists(join(cfg.train.init_from, "manifest.json")) and storage.exists(join(cfg.train.init_from,
                                                                                               "model.pt"))
    assert storage.read_json(join(storage.run_dir("s-trial-001-r1"), SEGMENT_FILE)) == {"offset": 40}


def test_its_own_checkpoint_goes_on_in_its_latest_run(storage, tmp_path):
    """PBT paused the trial (or its process died): no new segment, the same run resumes."""
    cfg, offset = _continue(load(None, BASE), storage, "s", TRIAL, _tune_checkpoint(tmp_path, TRIAL, 20))
    assert (cfg.run_name, offset, cfg.train.max_steps, cfg.train.init_from) == ("s-trial-001", 0, 100, "")
    # after a segment from another trial, its own checkpoint resumes that segment, with its budget
    _continue(load(None, BASE), storage, "s", TRIAL, _tune_checkpoint(tmp_path, "fghij_00000", 40))
    cfg, offset = _continue(load(None, BASE), storage, "s", TRIAL, _tune_checkpoint(tmp_path, TRIAL, 60))
    assert (cfg.run_name, offset, cfg.train.max_steps) == ("s-trial-001-r1", 40, 60)
    assert cfg.train.init_from.endswith(f"s-trial-001-r1/{PBT_INIT}")


def test_a_copy_at_the_last_step_leaves_nothing_to_train(storage, tmp_path):
    cfg, offset = _continue(load(None, BASE), storage, "s", TRIAL, _tune_checkpoint(tmp_path, "fghij_00000", 100))
    assert cfg is None and offset == 100
    assert not storage.exists(storage.run_dir("s-trial-001-r1"))

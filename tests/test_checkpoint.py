"""The checkpoint format (seqgen.checkpoint): manifest with sizes and sha256 written last, checked on
every load; damaged checkpoints are named in the error, and resuming falls back past them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid

import pytest
import torch
from fsspec.core import url_to_fs

from seqgen import checkpoint as ckpt
from seqgen.config import ExperimentConfig


def _save(run_url: str, step: int, workers: int = 2) -> str:
    url = f"{run_url}/{ckpt.checkpoint_name(step)}"
    for r in range(workers):
        ckpt.save_worker_state(url, r, {"task": {"window": step + r}, "rng": torch.get_rng_state()})
    ckpt.save(url, ExperimentConfig(), {"kind": "text"}, {"w": torch.full((3,), float(step))},
              {"optimizer": {}, "schedule": {}, "regularizer": {}},
              {"step": step, "evals": [{"step": step, "score": 10.0 - step}]}, workers)
    return url


@pytest.fixture(params=["memory", "local"])
def run_url(request, tmp_path):
    return f"memory://ckpt-{uuid.uuid4().hex}/run" if request.param == "memory" else str(tmp_path / "run")


def _write(url: str, name: str, data: bytes) -> None:
    fs, path = url_to_fs(url)
    with fs.open(f"{path}/{name}", "wb") as f:
        f.write(data)


def _flip_byte(url: str, name: str) -> None:
    """Same size, other content: only the hash can tell."""
    fs, path = url_to_fs(url)
    data = bytearray(fs.cat_file(f"{path}/{name}"))
    data[len(data) // 2] ^= 0xFF
    _write(url, name, bytes(data))


def test_manifest_has_sizes_and_hashes_and_loads(run_url):
    url = _save(run_url, 5)
    manifest = ckpt.read_manifest(url)
    assert manifest["workers"] == 2 and manifest["format"] == 2
    assert set(manifest["files"]) == {"config.json", "meta.json", "model.pt", "trainer.pt", "progress.json",
                                      "worker-0.pt", "worker-1.pt"}
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in manifest["files"].values())
    loaded = ckpt.load(url, with_trainer=True, rank=1)
    assert torch.equal(loaded.model_state["w"], torch.full((3,), 5.0))
    assert loaded.trainer_state["worker"]["task"] == {"window": 6} and loaded.workers == 2
    assert not [p for p in url_to_fs(url)[0].ls(url_to_fs(url)[1], detail=False) if ".tmp-" in p]


@pytest.mark.parametrize("name", ["model.pt", "worker-1.pt", "progress.json"])
def test_same_size_corruption_is_caught_by_the_hash(run_url, name):
    url = _save(run_url, 5)
    _flip_byte(url, name)
    with pytest.raises(ckpt.CheckpointError, match=rf"checkpoint .*checkpoint_00000005 is damaged: {name} "
                                                   r"does not match its sha256"):
        ckpt.load(url, with_trainer=True, rank=1)
    with pytest.raises(ckpt.CheckpointError, match=name):
        ckpt.verify(url)


def test_missing_file_and_unreadable_manifest(run_url):
    url = _save(run_url, 5)
    fs, path = url_to_fs(url)
    fs.rm(f"{path}/trainer.pt")
    with pytest.raises(ckpt.CheckpointError, match="trainer.pt is missing"):
        ckpt.load(url, with_trainer=True)
    _write(url, "manifest.json", b'{"format": 2, "fil')  # torn write of an old, non-atomic writer
    with pytest.raises(ckpt.CheckpointError, match="manifest.json is unreadable"):
        ckpt.load(url)


def test_a_manifest_of_another_format_is_refused_by_name(run_url):
    """Format 1 (sizes, no hashes) is no longer read: nothing writes it and nothing ships in it."""
    url = _save(run_url, 5)
    manifest = ckpt.read_manifest(url)
    old = {"format": 1, "files": {name: e["size"] for name, e in manifest["files"].items()}}
    _write(url, "manifest.json", json.dumps(old).encode())
    with pytest.raises(ckpt.CheckpointError, match="manifest of format 1; this seqgen reads format 2 only"):
        ckpt.load(url)
    _write(url, "manifest.json", json.dumps({**manifest, "files": {"model.pt": {"size": 3}}}).encode())
    with pytest.raises(ckpt.CheckpointError, match="is damaged: manifest.json is unreadable"):
        ckpt.load(url)


def test_a_file_torch_cannot_read_is_named(run_url):
    """Garbage that its manifest vouches for (size and sha256 agree): torch.load is the last check."""
    url = _save(run_url, 5)
    manifest = ckpt.read_manifest(url)
    garbage = b"x" * 64
    manifest["files"]["model.pt"] = {"size": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
    _write(url, "model.pt", garbage)
    _write(url, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(ckpt.CheckpointError, match="model.pt cannot be read by torch.load"):
        ckpt.load(url)


def test_resume_falls_back_past_damaged_checkpoints_with_a_warning(run_url, caplog):
    first, second, third = (_save(run_url, s) for s in (2, 4, 6))
    _flip_byte(third, "worker-0.pt")  # another worker's file: every rank must reject it alike
    fs, path = url_to_fs(second)
    fs.rm(f"{path}/meta.json")
    with caplog.at_level(logging.WARNING, logger="seqgen.checkpoint"):
        loaded, damaged = ckpt.load_latest(run_url, rank=1)
    assert loaded.url == first and damaged == [third, second]
    assert "checkpoint_00000006 is damaged: worker-0.pt" in caplog.text
    assert "checkpoint_00000004 is damaged: meta.json is missing" in caplog.text
    for url in damaged:
        ckpt.discard(url)
    assert ckpt.list_checkpoints(run_url) == [first]
    assert fs.exists(f"{path}/model.pt")  # kept for inspection; the next save of step 4 overwrites it


def test_every_checkpoint_damaged_is_an_error_and_no_checkpoint_is_a_fresh_start(run_url):
    assert ckpt.load_latest(run_url) == (None, [])
    url = _save(run_url, 2)
    _flip_byte(url, "config.json")
    with pytest.raises(ckpt.CheckpointError, match="every checkpoint under .* is damaged"):
        ckpt.load_latest(run_url)


def test_resume_refuses_an_inference_only_checkpoint_and_keeps_it(run_url):
    _save(run_url, 2)
    inference = _save(run_url, 4, workers=0)
    with pytest.raises(ckpt.CheckpointError, match="saved for inference only .*train.init_from="):
        ckpt.load_latest(run_url)
    assert ckpt.list_checkpoints(run_url)[-1] == inference  # intact: not skipped, not discarded


def test_resume_conflict_names_what_to_change():
    """Asked by the driver and by every worker before resuming: other model settings, a checkpoint
    saved for inference only, or another number of workers."""
    from seqgen.config import load

    saved = load(None, ["run_name=r", "model.hidden_size=16"])
    assert ckpt.resume_conflict(saved, saved, 1, "u") is None
    assert "other model settings (hidden_size)" in ckpt.resume_conflict(
        load(None, ["run_name=r", "model.hidden_size=32"]), saved, 1, "u")
    assert ckpt.resume_conflict(saved, saved, 0, "u").startswith(
        "run 'r': its latest checkpoint u was saved for inference only")
    two = load(None, ["run_name=r", "model.hidden_size=16", "train.num_workers=2"])
    assert "resume with train.num_workers=0 or 1" in ckpt.resume_conflict(two, saved, 1, "u")
    assert ckpt.resume_conflict(two, saved, 2, "u") is None


def test_a_rank_the_checkpoint_has_no_state_for_gets_none(run_url):
    url = _save(run_url, 2, workers=1)
    loaded, damaged = ckpt.load_latest(run_url, rank=1)  # resumed on 2 workers: the caller refuses it
    assert loaded.url == url and loaded.workers == 1 and loaded.trainer_state is None and damaged == []


def test_rewriting_a_step_replaces_the_manifest(run_url):
    url = _save(run_url, 3)
    _flip_byte(url, "model.pt")
    url = _save(run_url, 3)
    ckpt.verify(url)
    assert ckpt.list_checkpoints(run_url) == [url]


def test_listing_needs_no_torch():
    """Listing checkpoints (`seqgen runs`, keep-best, resume) must not cost a torch import (seconds)."""
    import subprocess
    import sys

    code = ("import sys, seqgen.checkpoint as c, seqgen.tune, seqgen.train.run; "
            "c.list_checkpoints('memory://none'); assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "RAY_ADDRESS": ""}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)

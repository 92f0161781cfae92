"""seqgen.tune.search: a real local Ray, 3 tiny trials under ASHA and the progress `seqgen tune` shows;
requests refused up front."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest

from seqgen.config import ConfigError, load
from seqgen.progress import Progress, tune_callback
from seqgen.storage import Storage, join
from seqgen.tune import run_search, trial_run_name

TINY = [
    "model.hidden_size=16", "model.num_layers=1", "train.max_steps=6", "train.eval_every=2",
    "train.eval_tokens=2000", "train.batch_size=8", "train.seq_len=20", "train.progress=false",
    "train.num_workers=0", "train.cpus_per_worker=1",
]


def test_trial_run_names():
    assert trial_run_name("s" * 128, "ab12c_00003") == "s" * 118 + "-trial-003"
    assert trial_run_name("s" * 128, "ab12c_00003", segment=2) == "s" * 115 + "-trial-003-r2"
    assert trial_run_name("tiny-s2", "ab12c_00011") == "tiny-s2-trial-011"


@pytest.mark.ray
def test_search_three_trials(tmp_path, ray_session):
    from ray import tune

    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.catalog import load_model

    storage = Storage.from_url(str(tmp_path / "store"))
    preprocess_text(storage, "shakespeare", text_preset("shakespeare"), use_ray=False)
    base = load(None, TINY)
    space = {"optim.lr": tune.choice([3e-4, 3e-3, 1e-2]), "reg.kind": tune.choice(["none", "weight_noise"]),
             "model.dropout": tune.uniform(0.0, 0.3)}
    # the progress `seqgen tune` shows in logs (seqgen.progress, one line per change here)
    progress = Progress("tune tiny", 3, "trials", stream=io.StringIO(), every=0, enabled=True)
    with progress:
        result = run_search(base, storage, "tiny", space=space, num_samples=3, max_concurrent=2, grace_period=1,
                            callbacks=[tune_callback(progress)])

    tune_dir = storage.tune_dir("tiny")
    with storage.fs.open(join(tune_dir, "results.csv"), "r") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and len(result.rows) == 3
    assert {"trial", "optim.lr", "reg.kind", "model.dropout", "best_score", "steps", "status"} <= set(rows[0])
    assert sorted(r["trial"] for r in rows) == ["tiny-trial-000", "tiny-trial-001", "tiny-trial-002"]
    assert all(r["status"] in ("completed", "early stopping", "stopped by the scheduler") for r in rows), rows
    assert all(int(r["steps"]) >= 2 for r in rows)
    for r in rows:  # each trial's TensorBoard events beside its metrics.csv (tensorboard --logdir <storage>)
        assert storage.exists(join(storage.run_dir(r["trial"]), "events.out.tfevents.seqgen"))
    with storage.fs.open(join(tune_dir, "results.md"), "r") as f:
        md = f.read()
    assert md.count("| tiny-trial-") == 3 and "optim.lr" in md and "best_score" in md

    scores = {r["trial"]: float(r["best_score"]) for r in rows}
    best = storage.read_json(join(tune_dir, "best.json"))
    assert best["trial"] == min(scores, key=scores.get) == result.best_run
    assert math.isclose(best["best_score"], min(scores.values()), rel_tol=1e-6)
    assert best["checkpoint"] == result.best_checkpoint == storage.url_of(join(tune_dir, "best"))  # a copy
    assert best["source_checkpoint"].startswith(storage.url_of(storage.run_dir(best["trial"])))
    with storage.fs.open(join(tune_dir, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert set(best["params"]) == {"optim.lr", "reg.kind", "model.dropout"}
    assert result.best_config.optim.lr == best["params"]["optim.lr"] == best["config"]["optim"]["lr"]

    model, loaded = load_model(best["checkpoint"])
    assert loaded.config.run_name == best["trial"]
    assert loaded.config.optim.lr == best["params"]["optim.lr"]
    assert loaded.config.model.hidden_size == 16
    assert math.isclose(loaded.progress["evals"][-1]["score"], best["best_score"], rel_tol=1e-6)
    assert sum(p.numel() for p in model.parameters()) > 0

    with pytest.raises(FileExistsError):  # a search name is used once
        run_search(base, storage, "tiny", space=space, num_samples=1)
    assert json.dumps(result.rows)  # plain values

    lines = progress.stream.getvalue().splitlines()
    assert any(re.match(r"\[tune tiny\] 0/3 trials \(0%\), .*[12] running", line) for line in lines), lines
    assert re.match(r"\[tune tiny\] done: 3/3 trials \(100%\), .*0 running", lines[-1]), lines
    shown = float(re.search(r"best score ([\d.e+-]+)", lines[-1]).group(1))
    assert shown == pytest.approx(best["best_score"], rel=1e-3)


def test_run_search_refuses_bad_requests(tmp_path):
    from ray import tune

    base = load(None, TINY)
    storage = Storage.from_url(str(tmp_path / "store"))
    with pytest.raises(ConfigError, match="train.num_workers"):
        run_search(base, storage, "s", space={"train.num_workers": tune.choice([0, 1])})
    with pytest.raises(ConfigError, match="optim.nope"):
        run_search(base, storage, "s", space={"optim.nope": tune.uniform(0, 1)})
    with pytest.raises(ConfigError, match="train.max_steps"):
        run_search(base, storage, "s", space={"train.max_steps": tune.uniform(1, 2)})
    with pytest.raises(ValueError, match="search name"):
        run_search(base, storage, "../up", space={})
    with pytest.raises(ValueError, match="one process"):
        run_search(base, Storage.from_url("memory://x"), "s", space={})
    with pytest.raises(ValueError, match="scheduler.*asha, pbt"):
        run_search(base, storage, "s", space={}, scheduler="hyperband")
    lr = {"optim.lr": tune.loguniform(1e-4, 1e-2)}
    with pytest.raises(ConfigError, match="pbt needs --max-concurrent 2"):  # one at a time: nothing to compare
        run_search(base, storage, "s", space=lr, scheduler="pbt", max_concurrent=1)
    with pytest.raises(ConfigError, match="pbt needs a search space with something to perturb"):
        run_search(base, storage, "s", space={}, scheduler="pbt", max_concurrent=2)


@pytest.mark.ray
def test_a_trial_whose_driver_dies_resumes_its_run(tmp_path, ray_session):
    """train.max_failures also restarts a Tune trial: SIGKILL the trial's driver after its first
    checkpoint; the trial starts again, resumes its run from that checkpoint and completes."""
    import os
    import signal
    import threading
    import time

    import psutil

    from seqgen import checkpoint as ckpt
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text

    storage = Storage.from_url(str(tmp_path / "store"))
    preprocess_text(storage, "shakespeare", text_preset("shakespeare"), use_ray=False)
    base = load(None, [*TINY, "train.max_steps=200", "train.eval_every=20", "train.max_failures=2"])
    run_url = storage.url_of(storage.run_dir("crash-trial-000"))
    killed = []

    def kill_driver_after_first_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline and not ckpt.list_checkpoints(run_url):
            time.sleep(0.05)
        for p in psutil.Process().children(recursive=True):
            try:
                if p.cmdline() and p.cmdline()[0].startswith("ray::ImplicitFunc"):
                    killed.append(ckpt.list_checkpoints(run_url)[-1])
                    os.kill(p.pid, signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass

    killer = threading.Thread(target=kill_driver_after_first_checkpoint)
    killer.start()
    from ray import tune

    result = run_search(base, storage, "crash", space={"optim.lr": tune.choice([3e-3])}, num_samples=1,
                        max_concurrent=1)  # one trial: ASHA has nothing to stop it for
    killer.join()
    assert killed, "no trial driver was found to kill"
    (row,) = result.rows
    assert row["status"] == "completed" and row["steps"] == 200, row
    starts = ckpt.load(ckpt.list_checkpoints(run_url)[-1]).progress["starts"]
    assert starts[0] == 0 and len(starts) >= 2 and starts[1] >= 20, starts


@pytest.mark.ray
def test_a_trial_with_ray_train_workers(tmp_path, ray_session):
    """The cluster form (train.num_workers >= 1): each trial's driver fits a TorchTrainer whose
    evaluations reach Tune through TuneReportCallback; the trial's run is an ordinary seqgen run."""
    from ray import tune

    from seqgen import checkpoint as ckpt
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text

    storage = Storage.from_url(str(tmp_path / "store"))
    preprocess_text(storage, "shakespeare", text_preset("shakespeare"), use_ray=False)
    base = load(None, [*TINY, "train.num_workers=1", "train.cpus_per_worker=1"])
    result = run_search(base, storage, "workers", space={"optim.lr": tune.choice([3e-3])}, num_samples=1)
    (row,) = result.rows
    assert row["status"] == "completed" and row["steps"] == 6, row
    assert [step for step, _ in row["curve"]] == [2, 4, 6]
    # and every evaluation reached Tune (its own per-trial log of results)
    (results,) = storage.fs.glob(join(storage.tune_dir("workers"), "*", "result.json"))
    with storage.fs.open(results, "r") as f:
        reported = [json.loads(line) for line in f if line.strip()]
    assert [r["step"] for r in reported] == [2, 4, 6] and all("valid_loss" in r for r in reported)
    loaded = ckpt.load(ckpt.list_checkpoints(storage.url_of(storage.run_dir("workers-trial-000")))[-1])
    assert loaded.workers == 1 and loaded.config.train.num_workers == 1
    assert result.best_checkpoint.startswith(storage.url_of(storage.tune_dir("workers")))

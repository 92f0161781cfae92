"""seqgen.tune.staged: the two-stage search from one command, through a real local Ray.

Stage 1 trains a 1 x 16 net without regularisation; stage 2 retrains three copies of its best
checkpoint (none-continued, dropout, adaptive weight noise) under ASHA; and a PBT search whose
worst trial continues from a copy of the best one's checkpoint.
"""

from __future__ import annotations

import csv
import io

import pytest

from seqgen.config import ConfigError, load
from seqgen.storage import Storage, join
from seqgen.tune import run_search, run_staged

pytestmark = pytest.mark.ray
TINY = ["model.hidden_size=16", "model.num_layers=2", "train.max_steps=6", "train.eval_every=2",
        "train.eval_tokens=2000", "train.batch_size=8", "train.seq_len=20", "train.progress=false",
        "train.num_workers=0", "train.cpus_per_worker=1"]


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text

    st = Storage.from_url(str(tmp_path_factory.mktemp("staged") / "store"))
    preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False)
    return st


def _rows(storage: Storage, name: str) -> list[dict]:
    with storage.fs.open(join(storage.tune_dir(name), "results.csv"), "r") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def test_staged_search_from_the_command_line(storage, ray_session):
    from typer.testing import CliRunner

    from seqgen.checkpoint import load as load_checkpoint
    from seqgen.cli import app
    from seqgen.catalog import load_model

    space = "setting=grid:none (continued),dropout 0.5,adaptive weight noise"
    out = CliRunner().invoke(app, ["tune", "st", "--staged", "--space", space, "--max-concurrent", "2",
                                   "--storage", storage.url, *TINY, "model.dropout=0.3", "reg.kind=weight_noise"])
    assert out.exit_code == 0, out.output
    tune_dir = storage.tune_dir("st")
    rows = _rows(storage, "st")
    assert list(rows[0])[:3] == ["stage", "trial", "setting"]
    assert {"best_score", "best_valid_bpc", "steps", "status", "checkpoint"} <= set(rows[0])
    assert [(r["stage"], r["trial"]) for r in rows] == [("1", "st-s1-trial-000"), ("2", "st-s2-trial-000"),
                                                       ("2", "st-s2-trial-001"), ("2", "st-s2-trial-002")]
    assert [r["setting"] for r in rows[1:]] == ["none (continued)", "dropout 0.5", "adaptive weight noise"]
    assert all(r["status"] in ("completed", "early stopping", "stopped by the scheduler") and r["best_score"] for r in rows), rows

    # stage 1 ran unregularised (the base config's dropout and noise are dropped), with patience
    s1 = load_checkpoint(rows[0]["checkpoint"]).config
    assert (s1.reg.kind, s1.model.dropout, s1.train.patience, s1.train.init_from) == ("none", 0.0, 3, "")
    # every stage-2 trial starts from stage 1's best checkpoint, with its own regulariser
    for row, (kind, dropout) in zip(rows[1:], [("none", 0.0), ("none", 0.5), ("adaptive_weight_noise", 0.0)]):
        cfg = load_checkpoint(row["checkpoint"]).config
        assert cfg.train.init_from == rows[0]["checkpoint"]
        assert (cfg.reg.kind, cfg.model.dropout) == (kind, dropout)

    with storage.fs.open(join(tune_dir, "results.md"), "r") as f:
        md = f.read()
    assert md.count("| 2 | st-s2-trial-") == 3 and md.count("| 1 | st-s1-trial-000") == 1
    header = md.split("\n| ", 1)[1].split("\n", 1)[0]
    assert header.split(" | ").count("setting") == 1, header  # the label column, not also the space key
    with storage.fs.open(join(tune_dir, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert storage.exists(join(tune_dir, "stage1")) and storage.exists(join(tune_dir, "stage2"))

    # the best checkpoint of either stage is copied under the search directory and loads
    best = storage.read_json(join(tune_dir, "best.json"))
    scores = {r["trial"]: float(r["best_score"]) for r in rows}
    assert best["trial"] == min(scores, key=scores.get)
    assert best["checkpoint"] == storage.url_of(join(tune_dir, "best")) and best["checkpoint"] in out.output
    model, loaded = load_model(best["checkpoint"])
    assert loaded.config.run_name == best["trial"] and loaded.config.model.hidden_size == 16
    assert sum(p.numel() for p in model.parameters()) > 0


def test_staged_refuses_keys_that_change_the_weights(storage):
    from ray import tune

    with pytest.raises(ConfigError, match="model.hidden_size"):
        run_staged(load(None, TINY), storage, "bad", space={"model.hidden_size": tune.choice([8, 16])})
    with pytest.raises(ConfigError, match="pbt.*num_workers"):
        run_staged(load(None, [*TINY, "train.num_workers=1"]), storage, "bad2", scheduler="pbt")


def test_pbt_trials_continue_from_each_others_checkpoints(storage, ray_session):
    """Two trials, one with a learning rate too small to learn. PBT is synchronous: at each
    evaluation it waits until both trials have reported (``tune.report`` returns only when Tune
    lets a trial go on, so neither trains past it), then pauses both; at the first one, the worse
    trial continues from a copy of the better one's checkpoint in a new segment run, and the better
    one goes on in its own run from its own checkpoint. How fast either trains changes nothing."""
    from ray import tune

    from seqgen import checkpoint as ckpt
    from seqgen.tune.naming import trial_runs
    from seqgen.tune.report import SEGMENT_FILE, trial_history
    from seqgen.tune.trial import PBT_INIT

    base = load(None, [*TINY, "model.num_layers=1", "model.hidden_size=64", "train.batch_size=16",
                       "train.seq_len=50", "train.max_steps=160", "train.eval_every=40"])
    result = run_search(base, storage, "pbt", space={"optim.lr": tune.grid_search([1e-6, 1e-2])}, num_samples=1,
                        max_concurrent=2, grace_period=1, scheduler="pbt")
    assert [row["trial"] for row in result.rows] == ["pbt-trial-000", "pbt-trial-001"]
    runs = {row["trial"]: trial_runs(storage, "pbt", f"x_{int(row['trial'].rsplit('-', 1)[-1]):05d}")
            for row in result.rows}
    # the first evaluation: trial 000 (lr 1e-6) continues from trial 001's step-40 checkpoint ...
    assert runs["pbt-trial-000"][:2] == ["pbt-trial-000", "pbt-trial-000-r1"], runs
    first = storage.run_dir("pbt-trial-000-r1")
    assert storage.read_json(join(first, SEGMENT_FILE)) == {"offset": 40}
    assert ckpt.read_config(storage.url_of(join(first, PBT_INIT))).run_name == "pbt-trial-001"
    # ... and trial 001, paused there, went on in its own run from its own checkpoint
    own = ckpt.load(ckpt.list_checkpoints(storage.url_of(storage.run_dir("pbt-trial-001")))[-1]).progress["starts"]
    assert own[:2] == [0, 40], own
    for row in result.rows:  # a trial's curve runs on through its segments, each from its offset
        evals = trial_history(storage, runs[row["trial"]])
        assert [(e["trial_step"], e[row["curve_key"]]) for e in evals] == row["curve"]
        for run in {e["run"] for e in evals}:
            steps = [e["trial_step"] for e in evals if e["run"] == run]
            assert steps == sorted(set(steps)), row["curve"]
        assert row["steps"] <= 160  # a segment restored past the end trains no further

"""Hyperparameter search (seqgen.tune): a real local Ray, 3 tiny trials under ASHA."""

from __future__ import annotations

import csv
import json
import math

import pytest

from seqgen.config import ConfigError, load
from seqgen.storage import Storage, join
from seqgen.tune import apply_params, parse_space, run_search, trial_run_name

TINY = [
    "model.hidden_size=16", "model.num_layers=1", "train.max_steps=6", "train.eval_every=2",
    "train.eval_tokens=2000", "train.batch_size=8", "train.seq_len=20", "train.progress=false",
    "train.num_workers=0", "train.cpus_per_worker=1",
]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from seqgen.runtime import apply_local_env

    apply_local_env()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield


@pytest.mark.parametrize("item, words", [
    ("optim.lr", ["optim.lr", "kind:args"]),
    ("optim.lr=gauss:0:1", ["optim.lr=gauss:0:1", "choice"]),
    ("optim.lrate=uniform:0:1", ["optim.lrate"]),
    ("optim=choice:a,b", ["optim=choice:a,b", "section"]),
    ("optim.lr=uniform:1", ["two bounds"]),
    ("optim.lr=uniform:x:1", ["numbers"]),
    ("optim.lr=uniform:2:1", ["low < high"]),
    ("optim.lr=loguniform:0:1", ["0 < low"]),
    ("optim.lr=choice:fast,slow", ["optim.lr", "float"]),
    ("reg.kind=uniform:0:1", ["reg.kind", "choice"]),
    ("reg.kind=choice:", ["reg.kind=choice:", "values"]),
    ("train.batch_size=uniform:1:9", ["randint"]),
    ("train.batch_size=randint:1.5:4", ["integers"]),
])
def test_parse_space_errors_name_the_item(item, words):
    with pytest.raises(ConfigError) as err:
        parse_space([item])
    for word in words:
        assert word in str(err.value)


def test_parse_space_and_apply():
    from ray.tune.search.sample import Float, Integer

    space = parse_space(["optim.lr=loguniform:1e-4:1e-2", "reg.kind=choice:none,weight_noise",
                         "model.dropout=uniform:0:0.5", "train.batch_size=randint:4:9",
                         "model.deriv_clip=grid:0,1,10", "reg.std=choice:1e-2,0.05"])
    assert isinstance(space["optim.lr"], Float) and isinstance(space["train.batch_size"], Integer)
    assert space["reg.kind"].categories == ["none", "weight_noise"]
    assert space["reg.std"].categories == [0.01, 0.05]
    assert space["model.deriv_clip"] == {"grid_search": [0, 1, 10]}
    with pytest.raises(ConfigError, match="twice"):
        parse_space(["optim.lr=uniform:0:1", "optim.lr=uniform:0:1"])
    cfg = apply_params(load(None, TINY), {"optim.lr": 1e-3, "model.deriv_clip": 10, "reg.kind": "weight_noise"})
    assert (cfg.optim.lr, cfg.model.deriv_clip, cfg.reg.kind) == (1e-3, 10.0, "weight_noise")
    with pytest.raises(ConfigError):
        apply_params(cfg, {"train.max_steps": 1.5})
    assert trial_run_name("s" * 128, "ab12c_00003") == "s" * 118 + "-trial-003"


@pytest.mark.ray
def test_search_three_trials(tmp_path, ray_session):
    from ray import tune

    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.models import load_model

    storage = Storage.from_url(str(tmp_path / "store"))
    preprocess_text(storage, "shakespeare", text_preset("shakespeare"), use_ray=False)
    base = load(None, TINY)
    space = {"optim.lr": tune.choice([3e-4, 3e-3, 1e-2]), "reg.kind": tune.choice(["none", "weight_noise"]),
             "model.dropout": tune.uniform(0.0, 0.3)}
    result = run_search(base, storage, "tiny", space=space, num_samples=3, max_concurrent=2, grace_period=1)

    tune_dir = storage.tune_dir("tiny")
    with storage.fs.open(join(tune_dir, "results.csv"), "r") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and len(result.rows) == 3
    assert {"trial", "optim.lr", "reg.kind", "model.dropout", "best_score", "steps", "status"} <= set(rows[0])
    assert sorted(r["trial"] for r in rows) == ["tiny-trial-000", "tiny-trial-001", "tiny-trial-002"]
    assert all(r["status"] in ("completed", "stopped early") for r in rows), rows
    assert all(int(r["steps"]) >= 2 for r in rows)
    with storage.fs.open(join(tune_dir, "results.md"), "r") as f:
        md = f.read()
    assert md.count("| tiny-trial-") == 3 and "optim.lr" in md and "best_score" in md

    scores = {r["trial"]: float(r["best_score"]) for r in rows}
    best = storage.read_json(join(tune_dir, "best.json"))
    assert best["trial"] == min(scores, key=scores.get) == result.best_run
    assert math.isclose(best["best_score"], min(scores.values()), rel_tol=1e-6)
    assert best["checkpoint"] == result.best_checkpoint
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

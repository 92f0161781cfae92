"""seqgen.tune.space: parsing specs into Tune domains, checking them against the config, settings."""

from __future__ import annotations

import pytest

from seqgen.config import ConfigError, load
from seqgen.tune.space import (
    REG_SETTINGS, SETTING, apply_params, check_space, describe, grid_size, mutations, parse_space, settings_space,
)

TINY = ["model.hidden_size=16", "model.num_layers=1"]


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
    ("setting=grid:dropout 0.2,dropout 0.9", ["dropout 0.9", "valid"]),
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
    assert space["model.deriv_clip"] == {"grid_search": [0.0, 1.0, 10.0]}  # typed as the key: float
    assert grid_size(space) == 3
    with pytest.raises(ConfigError, match="twice"):
        parse_space(["optim.lr=uniform:0:1", "optim.lr=uniform:0:1"])
    cfg = apply_params(load(None, TINY), {"optim.lr": 1e-3, "model.deriv_clip": 10, "reg.kind": "weight_noise"})
    assert (cfg.optim.lr, cfg.model.deriv_clip, cfg.reg.kind) == (1e-3, 10.0, "weight_noise")
    with pytest.raises(ConfigError):
        apply_params(cfg, {"train.max_steps": 1.5})


def test_settings_expand_to_their_values_and_other_keys_win():
    space = settings_space()
    assert space == {SETTING: {"grid_search": list(REG_SETTINGS)}} and grid_size(space) == len(REG_SETTINGS) == 6
    base = load(None, TINY)
    awn = apply_params(base, {SETTING: "adaptive weight noise"})
    assert (awn.reg.kind, awn.reg.std, awn.model.dropout) == ("adaptive_weight_noise", 0.075, 0.0)
    drop = apply_params(base, {SETTING: "dropout 0.5", "optim.lr": 0.01})
    assert (drop.reg.kind, drop.model.dropout, drop.optim.lr) == ("none", 0.5, 0.01)
    assert apply_params(base, {SETTING: "weight noise 0.025", "reg.std": 0.05}).reg.std == 0.05
    assert parse_space(["setting=choice:none (continued),dropout 0.2"])[SETTING].categories == \
        ["none (continued)", "dropout 0.2"]
    assert describe({SETTING: "dropout 0.2", "optim.lr": 0.00123456}) == "dropout 0.2, optim.lr=0.001235"
    assert describe({}) == "base config"


def test_check_space_refuses_resources_unknown_keys_and_bad_values():
    from ray import tune

    base = load(None, TINY)
    with pytest.raises(ConfigError, match="train.num_workers"):
        check_space(base, {"train.num_workers": tune.choice([0, 1])})
    with pytest.raises(ConfigError, match="optim.nope"):
        check_space(base, {"optim.nope": tune.uniform(0, 1)})
    with pytest.raises(ConfigError, match="train.max_steps"):
        check_space(base, {"train.max_steps": tune.uniform(1, 2)})
    with pytest.raises(ConfigError, match="setting.*nope"):
        check_space(base, {SETTING: tune.grid_search(["none (continued)", "nope"])})
    check_space(base, {**settings_space(), "optim.lr": tune.loguniform(1e-4, 1e-2)})


def test_pbt_mutations_are_lists_for_grids_and_choices():
    from ray import tune
    from ray.tune.search.sample import Float

    space = {**settings_space(["none (continued)", "dropout 0.2"]), "reg.std": tune.choice([0.025, 0.075]),
             "optim.lr": tune.loguniform(1e-4, 1e-2), "train.seed": 3}
    m = mutations(space)
    assert m[SETTING] == ["none (continued)", "dropout 0.2"] and m["reg.std"] == [0.025, 0.075]
    assert isinstance(m["optim.lr"], Float) and "train.seed" not in m  # a constant is not explored

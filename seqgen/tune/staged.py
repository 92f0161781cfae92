"""The staged search (Graves 2013 sec. 3.1-3.2) as one Tune workflow.

    stage 1   the base net without regularisation (reg.kind=none, no dropout), trained to early
              stopping on the validation loss (train.patience; 3 evaluations if the config has 0)
    stage 2   one trial per regulariser setting, each initialised (train.init_from) from stage 1's
              best checkpoint and trained with ``base.train.max_steps`` more steps under ASHA or
              PBT: the none-continued control, dropout, fixed weight noise, adaptive weight noise
              (``space.REG_SETTINGS``), or the settings of a ``--space``

Everything lands under ``<root>/tune/<search>/``: Tune's experiments ``stage1/`` and ``stage2/``,
``results.csv`` / ``results.md`` (a ``stage`` column, one row per trial of both stages),
``curves.png`` (every trial's validation curve; stage-2 curves start at the step of the stage-1
checkpoint they continue, marked by a dotted line), ``best.json`` and ``best/``, a copy of the
best checkpoint of either stage (stage 1's net wins if no regulariser beats it).
"""

from __future__ import annotations

from seqgen.config import ConfigError, ExperimentConfig, with_values
from seqgen.storage import Storage
from seqgen.tune.report import read_evals
from seqgen.tune.request import check_request, check_runs_free
from seqgen.tune.results import SearchResult, finish, trial_rows
from seqgen.tune.schedulers import check_scheduler
from seqgen.tune.search import fit_trials
from seqgen.tune.space import SETTING, check_space, grid_size, settings_space

#: model keys stage 2 may change: none of them changes the parameters' shapes, so stage 1's
#: weights still fit (other model keys would make init_from fail)
STAGE2_MODEL_KEYS = ("model.dropout", "model.deriv_clip", "model.output_clip")
DEFAULT_PATIENCE = 3


def run_staged(
    base: ExperimentConfig,
    storage: Storage,
    name: str,
    space: dict | None = None,
    num_samples: int = 1,
    max_concurrent: int = 1,
    grace_period: int = 1,
    metric: str = "score",
    scheduler: str = "asha",
    callbacks: list | None = None,
) -> SearchResult:
    """Stage 1, then stage 2 over ``space`` (default: a grid over ``REG_SETTINGS``; each grid point
    ``num_samples`` times) with ``scheduler`` (asha | pbt) on ``metric``; see the module docstring.
    ``callbacks``: Ray Tune callbacks for both stages (the CLI's progress)."""
    check_request(storage, name, num_samples, max_concurrent, grace_period, scheduler)
    space = settings_space() if space is None else dict(space)
    wrong = [k for k in space if k != SETTING and (k.startswith("model.") and k not in STAGE2_MODEL_KEYS
                                                   or k == "train.init_from")]
    if wrong:
        raise ConfigError(f"staged search space: {wrong[0]!r} cannot change in stage 2, which starts from stage "
                          f"1's weights (model keys allowed: {', '.join(STAGE2_MODEL_KEYS)})")
    stage1 = with_values(base, {"reg.kind": "none", "model.dropout": 0.0,
                                "train.patience": base.train.patience or DEFAULT_PATIENCE})
    stage2 = with_values(stage1, {"train.patience": base.train.patience})
    check_space(stage2, space)
    check_scheduler(scheduler, stage2, space, max_concurrent)  # before stage 1 trains
    check_runs_free(storage, f"{name}-s1", 1)
    check_runs_free(storage, f"{name}-s2", num_samples * grid_size(space))
    tune_dir, max_steps = storage.tune_dir(name), base.train.max_steps
    common = {"max_concurrent": max_concurrent, "grace_period": grace_period, "metric": metric, "callbacks": callbacks}

    grid = fit_trials(stage1, storage, f"{name}-s1", {}, tune_dir, "stage1", num_samples=1, scheduler="fifo", **common)
    rows, errors = trial_rows(storage, grid, f"{name}-s1", [], metric, max_steps, stage=1)
    if not rows or not rows[0]["checkpoint"]:
        raise RuntimeError(f"search {name!r}: stage 1 produced no checkpoint" + (f"; {errors[0]}" if errors else ""))
    rows[0]["setting"] = "stage 1: no regularisation, early stopping"
    start = rows[0]["checkpoint"]
    start_step = int((read_evals(start) or [{"step": 0}])[-1]["step"])

    stage2 = with_values(stage2, {"train.init_from": start})
    grid = fit_trials(stage2, storage, f"{name}-s2", space, tune_dir, "stage2", num_samples=num_samples,
                      scheduler=scheduler, **common)
    more, more_errors = trial_rows(storage, grid, f"{name}-s2", list(space), metric, max_steps, stage=2)
    for row in more:  # stage 2 continues stage 1's curve from the checkpoint it starts from
        row["curve"] = [(start_step + s, v) for s, v in row["curve"]]
    return finish(storage, name, rows + more, errors + more_errors, list(space), metric,
                  f"Staged search `{name}` (metric `{metric}`, lower is better; stage 2 starts from "
                  f"stage 1's step {start_step})", marker_step=start_step)

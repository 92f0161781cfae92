"""``run_search``: one Ray Tune search over seqgen training runs, and ``fit_trials``, which runs a
search's trials (``seqgen.tune.trial``) under a scheduler (``seqgen.tune.schedulers``) and hands
back Tune's ResultGrid for the tables (``seqgen.tune.results``)."""

from __future__ import annotations

import logging

from seqgen.config import ExperimentConfig, to_dict
from seqgen.storage import Storage
from seqgen.tune.request import check_request, check_runs_free
from seqgen.tune.results import SearchResult, finish, trial_rows
from seqgen.tune.schedulers import check_scheduler, make_scheduler
from seqgen.tune.space import check_space, default_space, grid_size
from seqgen.tune.trial import run_trial, trial_resources

log = logging.getLogger(__name__)


def run_search(
    base: ExperimentConfig,
    storage: Storage,
    name: str,
    space: dict | None = None,
    num_samples: int = 8,
    max_concurrent: int = 1,
    grace_period: int = 1,
    metric: str = "score",
    scheduler: str = "asha",
    callbacks: list | None = None,
) -> SearchResult:
    """Run ``num_samples`` trials of ``base`` with values from ``space`` (default: ``default_space()``)
    under ``scheduler`` on ``metric`` (lower is better); write results.csv / results.md /
    curves.png / best.json and a copy of the best checkpoint (``best/``) under
    ``storage.tune_dir(name)``, and return the table and the best trial. ``callbacks``: Ray Tune
    callbacks (the CLI's progress, ``seqgen.progress.tune_callback``)."""
    check_request(storage, name, num_samples, max_concurrent, grace_period, scheduler)
    space = default_space() if space is None else dict(space)
    check_space(base, space)
    check_scheduler(scheduler, base, space, max_concurrent)
    check_runs_free(storage, name, num_samples * grid_size(space))
    grid = fit_trials(base, storage, name, space, storage.tune_dir(), name, num_samples=num_samples,
                      max_concurrent=max_concurrent, grace_period=grace_period, metric=metric, scheduler=scheduler,
                      callbacks=callbacks)
    rows, errors = trial_rows(storage, grid, name, list(space), metric, base.train.max_steps)
    return finish(storage, name, rows, errors, list(space), metric,
                  f"Search `{name}` (metric `{metric}`, lower is better)")


def fit_trials(base: ExperimentConfig, storage: Storage, prefix: str, space: dict, path: str, experiment: str, *,
               num_samples: int, max_concurrent: int, grace_period: int, metric: str, scheduler: str,
               callbacks: list | None = None):
    """Run the trials as Tune experiment ``experiment`` under ``path`` (a path on ``storage``);
    trial runs are named ``<prefix>-trial-<NNN>``. Returns Tune's ResultGrid."""
    from ray import tune

    from seqgen.runtime import ensure_ray
    from seqgen.train.run import ray_storage, with_gpu_resolved

    ensure_ray()
    base = with_gpu_resolved(base)  # once, for every trial's resources and training
    if base.train.num_workers > 0:
        _warn_without_state_api()
    trainable = tune.with_parameters(run_trial, base=to_dict(base), storage_url=storage.url, prefix=prefix,
                                     pbt=scheduler == "pbt")
    storage_path, filesystem = ray_storage(storage, path)
    tuner = tune.Tuner(
        tune.with_resources(trainable, trial_resources(base)),
        param_space=space,
        tune_config=tune.TuneConfig(metric=metric, mode="min", scheduler=make_scheduler(scheduler, base, space,
                                                                                          grace_period),
                                    num_samples=num_samples, max_concurrent_trials=max_concurrent,
                                    # a trial that trains in its own process ends at a report, which
                                    # lets Tune reuse its process for the next trial or for the same
                                    # one after a PBT pause: no new process, no second torch import
                                    reuse_actors=base.train.num_workers == 0),
        run_config=tune.RunConfig(name=experiment, storage_path=storage_path, storage_filesystem=filesystem,
                                  # a trial whose process dies (its node lost) is started again and
                                  # resumes its run from the last checkpoint on storage
                                  failure_config=tune.FailureConfig(max_failures=base.train.max_failures),
                                  # PBT may hand any trial's latest checkpoint to another one: keep them all
                                  checkpoint_config=None,
                                  callbacks=list(callbacks or [])),  # a copy: Tune appends its own to it
    )
    return tuner.fit()


def _warn_without_state_api() -> None:
    """Trials with Ray Train workers need Ray Train's placement-group cleaner to free the workers'
    CPUs when ASHA stops a trial, and the cleaner needs the Ray state API (the dashboard, on by
    default with ``ray start``): without it later trials can wait forever."""
    try:
        from ray.util.state import list_actors

        list_actors(limit=1, timeout=10, raise_on_missing_output=False)
    except Exception as e:  # noqa: BLE001 - any failure means Ray Train's cleaner cannot work either
        log.warning(
            "the Ray state API is not reachable (%s): when ASHA stops a trial, Ray Train cannot free "
            "its workers' resources and later trials may wait forever. Run on a Ray started with the "
            "dashboard (`ray start --head`), or use train.num_workers=0 on one machine.",
            str(e).splitlines()[0][:200])

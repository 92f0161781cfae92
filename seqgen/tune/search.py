"""The trial driver and ``run_search``: Ray Tune trials over seqgen training runs.

One Tune trial = one seqgen run named ``<prefix>-trial-<NNN>`` on the same storage root, so every
trial has the usual checkpoints, ``metrics.csv`` and curves under ``<root>/runs/<run>/`` and its
best checkpoint loads like any other.

In Ray Train V2, Tune cannot take a TorchTrainer directly: each trial is a Tune *function
trainable* (the "driver") that applies the sampled values to the base config and runs it:

* ``train.num_workers > 0`` (clusters): the driver (0.01 CPU) fits ``make_trainer(cfg, storage,
  callbacks=[TuneReportCallback()])``; Ray Train workers do the work and every evaluation reaches
  Tune through the callback. When ASHA stops such a trial, Ray kills its Train controller and Ray
  Train's placement-group cleaner frees the workers' CPUs; the cleaner needs the Ray state API
  (the dashboard, on by default with ``ray start``). Without it, stopped trials keep their workers'
  resources and later trials can wait forever: ``fit_trials`` warns when it cannot reach the API.
* ``train.num_workers == 0`` (one CPU box, the default): Ray Train's local mode cannot run inside a
  Tune trial process (``ray.train.report`` / ``get_context`` raise there, and local mode ignores
  run callbacks), so the driver (no resources of its own) fits the same local-mode trainer in a
  child Ray task, in a bundle of ``train.cpus_per_worker`` CPUs (plus a GPU with ``use_gpu``) that
  the trial reserves, and relays each evaluation to Tune as seqgen's checkpoint for it lands on
  storage. The child belongs to the driver: when the scheduler stops the trial, Ray ends the child.

Schedulers (``time_attr="training_iteration"`` = evaluations so far):

* ``asha``: stops poor trials after ``grace_period`` evaluations.
* ``pbt`` (local-mode trials only): every ``grace_period`` evaluations the worst trials take a copy
  of a better trial's latest checkpoint and perturbed hyperparameters. The relay attaches a copy
  of seqgen's checkpoint to its last report as the Tune checkpoint; a trial restarted from one
  begins a new *segment* run ``<trial>-r<k>`` initialised (``train.init_from``) from that copy,
  with a fresh optimiser and the trial's remaining step budget, and records in ``segment.json``
  how many steps came before it, so the report lays the segments end to end. The child waits
  after each evaluation until Tune has seen it and let the trial go on (``continued.json``), so
  the scheduler acts at every evaluation however fast training is, not after a run that has
  already raced to its end; a trial restored from a checkpoint at its last step ends at once.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass, field

from seqgen.config import ConfigError, ExperimentConfig, from_dict, load_json, to_dict, with_values
from seqgen.storage import Storage, check_name, join
from seqgen.tune.report import (
    REPORTED_FILE, SEGMENT_FILE, copy_checkpoint, curves_png, read_evals, summarise, write_tables,
)
from seqgen.tune.space import SETTING, apply_params, check_space, default_space, describe, grid_size, mutations

log = logging.getLogger(__name__)

SCHEDULERS = ("asha", "pbt")
_POLL_SECONDS = 1.0
# in a PBT trial's run dir: {"step": the last evaluation after which Tune let the trial continue}
CONTINUED_FILE = "continued.json"


@dataclass
class SearchResult:
    rows: list[dict]  # one per trial, as in results.csv
    best_checkpoint: str  # URL of the copy of the best trial's best checkpoint, <search dir>/best
    best_config: ExperimentConfig  # the best trial's full config (as saved in that checkpoint)
    best_run: str = ""  # run name of the best trial
    best_params: dict = field(default_factory=dict)  # its searched parameters
    results_dir: str = ""  # URL of <root>/tune/<search>/


def trial_run_name(prefix: str, trial_id: str, segment: int = 0) -> str:
    """``<prefix>-trial-<NNN>`` from a Tune trial id (``<hash>_<index>``), ``-r<k>`` for a PBT
    segment; always a valid run name (the prefix is shortened if need be)."""
    suffix = trial_id.rsplit("_", 1)[-1]
    tag = f"trial-{int(suffix):03d}" if suffix.isdigit() else "trial-" + re.sub(r"[^A-Za-z0-9._-]", "-", trial_id)
    tag += f"-r{segment}" if segment else ""
    return check_name(f"{prefix[:127 - len(tag)]}-{tag}", "run name")


def trial_runs(storage: Storage, prefix: str, trial_id: str) -> list[str]:
    """The trial's run and its PBT segments that exist on storage, in order."""
    runs, k = [trial_run_name(prefix, trial_id)], 1
    while storage.exists(storage.run_dir(trial_run_name(prefix, trial_id, k))):
        runs.append(trial_run_name(prefix, trial_id, k))
        k += 1
    return runs


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
    check_runs_free(storage, name, num_samples * grid_size(space))
    grid = fit_trials(base, storage, name, space, storage.tune_dir(), name, num_samples=num_samples,
                      max_concurrent=max_concurrent, grace_period=grace_period, metric=metric, scheduler=scheduler,
                      callbacks=callbacks)
    rows, errors = trial_rows(storage, grid, name, list(space), metric, base.train.max_steps)
    return finish(storage, name, rows, errors, list(space), metric,
                  f"Search `{name}` (metric `{metric}`, lower is better)")


def check_request(storage: Storage, name: str, num_samples: int, max_concurrent: int, grace_period: int,
                  scheduler: str) -> None:
    """Errors a search can find before starting anything."""
    check_name(name, "search name")
    if not storage.shared_across_processes:
        raise ValueError(f"storage {storage.url} lives in one process; Tune trials run in other processes")
    if num_samples < 1 or max_concurrent < 1 or grace_period < 1:
        raise ValueError("num_samples, max_concurrent and grace_period must be >= 1")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r} (valid: {', '.join(SCHEDULERS)})")
    tune_dir = storage.tune_dir(name)
    if storage.exists(tune_dir) and storage.fs.ls(tune_dir, detail=False):
        raise FileExistsError(f"search {name!r} already exists at {storage.url_of(tune_dir)}: choose another name")


def check_runs_free(storage: Storage, prefix: str, trials: int) -> None:
    for i in range(trials):
        run = trial_run_name(prefix, f"x_{i:05d}")
        if storage.exists(storage.run_dir(run)):
            raise FileExistsError(f"run {run!r} already exists on {storage.url}: choose another search name")


def fit_trials(base: ExperimentConfig, storage: Storage, prefix: str, space: dict, path: str, experiment: str, *,
               num_samples: int, max_concurrent: int, grace_period: int, metric: str, scheduler: str,
               callbacks: list | None = None):
    """Run the trials as Tune experiment ``experiment`` under ``path`` (a path on ``storage``);
    trial runs are named ``<prefix>-trial-<NNN>``. Returns Tune's ResultGrid."""
    from ray import tune

    from seqgen.runtime import ensure_ray
    from seqgen.train.run import ray_storage

    t = base.train
    pbt = scheduler == "pbt"
    if pbt and t.num_workers > 0:
        raise ConfigError("--scheduler pbt runs local-mode trials (train.num_workers=0): its trials restart "
                          "from copies of each other's checkpoints; use asha with Ray Train workers")
    ensure_ray()
    sched = _scheduler(scheduler, base, space, grace_period)
    if t.num_workers > 0:  # the TorchTrainer schedules its own controller and workers
        resources, child = {"cpu": 0.01}, {}
        _warn_without_state_api()
    else:  # the trial reserves a bundle for the local-mode child task (the driver itself needs none)
        child = {"CPU": _local_cpus(t.cpus_per_worker), **({"GPU": 1} if _wants_gpu(t.use_gpu) else {})}
        resources = tune.PlacementGroupFactory([{}, child])
    driver = tune.with_parameters(_driver, base=to_dict(base), storage_url=storage.url, prefix=prefix,
                                  child=child, pbt=pbt)
    storage_path, filesystem = ray_storage(storage, path)
    tuner = tune.Tuner(
        tune.with_resources(driver, resources),
        param_space=space,
        tune_config=tune.TuneConfig(metric=metric, mode="min", scheduler=sched, num_samples=num_samples,
                                    max_concurrent_trials=max_concurrent, reuse_actors=False),
        run_config=tune.RunConfig(name=experiment, storage_path=storage_path, storage_filesystem=filesystem,
                                  # a trial whose driver dies (its node lost) is started again and
                                  # resumes its run from the last checkpoint on storage
                                  failure_config=tune.FailureConfig(max_failures=base.train.max_failures),
                                  # PBT may hand any trial's latest checkpoint to another one: keep them all
                                  # a copy: Tune appends its own callbacks to the list it is given
                                  checkpoint_config=None, callbacks=list(callbacks or [])),
    )
    return tuner.fit()


def _scheduler(kind: str, base: ExperimentConfig, space: dict, grace_period: int):
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    evals = max(1, math.ceil(base.train.max_steps / max(base.train.eval_every, 1)))
    if kind == "fifo":  # every trial to its end (the staged search's stage 1)
        return None
    if kind == "asha":
        # max_t one past the last evaluation: a trial that runs to the end finishes by itself rather
        # than being stopped (killed) by ASHA at max_t, so Ray Train shuts its workers down cleanly.
        return ASHAScheduler(time_attr="training_iteration", max_t=evals + 1, grace_period=min(grace_period, evals))
    explore = mutations(space)
    if not explore:
        raise ConfigError("--scheduler pbt needs a search space with something to perturb")
    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=min(grace_period, evals),
                                   hyperparam_mutations=explore)


def trial_rows(storage: Storage, grid, prefix: str, keys: list[str], metric: str, max_steps: int,
               **extra) -> tuple[list[dict], list[str]]:
    """One row per trial of a ResultGrid (its parameters, then ``report.summarise``), and the
    trials' errors as lines."""
    rows, errors = [], []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or _trial_id_from_path(result.path)
        run = trial_run_name(prefix, trial_id)
        params = {k: _plain(result.config.get(k)) for k in keys}
        row = {**extra, "trial": run, **params, "setting": describe(params),  # the label wins over a `setting` key
               **summarise(storage, trial_runs(storage, prefix, trial_id), metric, max_steps)}
        if result.error is not None:
            row["status"] = "error"
            lines = str(result.error).strip().splitlines() or [repr(result.error)]
            errors.append(f"{run}: {lines[-1]}")
        rows.append(row)
    rows.sort(key=lambda r: r["trial"])
    return rows, errors


def finish(storage: Storage, name: str, rows: list[dict], errors: list[str], keys: list[str], metric: str,
           title: str, marker_step: int | None = None) -> SearchResult:
    """Write the tables, the curves and best.json, copy the best checkpoint to ``best/``."""
    tune_dir = storage.tune_dir(name)
    params = [k for k in keys if k != SETTING]  # a `setting` key is the label column itself
    columns = [*(["stage"] if any("stage" in r for r in rows) else []), "trial", "setting", *params, f"best_{metric}",
               *[c for c in ("best_valid_loss", "best_valid_bpc") if c != f"best_{metric}"],
               "steps", "status", "checkpoint"]
    write_tables(storage, tune_dir, title, rows, columns)
    key = next((r["curve_key"] for r in rows if r.get("curve_key")), "score")
    curves = [(f"{r['trial']} ({r['setting']})", r["curve"]) for r in rows]
    storage.write_bytes_atomic(join(tune_dir, "curves.png"),
                               curves_png(f"{name}: {key.replace('_', ' ')} of every trial", curves,
                                          key.replace("_", " "), marker_step))

    ranked = [r for r in rows if r["checkpoint"] and isinstance(r[f"best_{metric}"], float)
              and not math.isnan(r[f"best_{metric}"])]
    if not ranked:
        raise RuntimeError(f"search {name!r}: no trial produced a checkpoint"
                           + (f"; errors: {'; '.join(errors)}" if errors else ""))
    best = min(ranked, key=lambda r: r[f"best_{metric}"])
    best_params = {k: best[k] for k in keys if k in best}
    copy_url = storage.url_of(join(tune_dir, "best"))
    copy_checkpoint(best["checkpoint"], copy_url)
    best_config = load_json(storage.read_json(join(tune_dir, "best", "config.json")))
    storage.write_json_atomic(join(tune_dir, "best.json"), {
        "search": name, "metric": metric, "mode": "min", "trial": best["trial"],
        **({"stage": best["stage"]} if "stage" in best else {}), "setting": best["setting"],
        "run": storage.url_of(storage.run_dir(best["trial"])), "checkpoint": copy_url,
        "source_checkpoint": best["checkpoint"], f"best_{metric}": best[f"best_{metric}"],
        "params": best_params, "config": to_dict(best_config),
    })
    return SearchResult(rows, copy_url, best_config, best["trial"], best_params, storage.url_of(tune_dir))


def _trial_id_from_path(path: str | None) -> str:
    match = re.search(r"_([0-9a-f]{5}_\d{5})", path or "")
    return match.group(1) if match else "unknown"


def _plain(value):
    """numpy scalars (Tune samples some) -> Python scalars, for the tables and JSON."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def _wants_gpu(use_gpu) -> bool:
    """train.use_gpu: a bool, or "true" / "false" / "auto" (= when the cluster has GPUs)."""
    if isinstance(use_gpu, bool):
        return use_gpu
    if use_gpu == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return use_gpu == "true"


def _warn_without_state_api() -> None:
    try:
        from ray.util.state import list_actors

        list_actors(limit=1, timeout=10, raise_on_missing_output=False)
    except Exception as e:  # noqa: BLE001 - any failure means Ray Train's cleaner cannot work either
        log.warning(
            "the Ray state API is not reachable (%s): when ASHA stops a trial, Ray Train cannot free "
            "its workers' resources and later trials may wait forever. Run on a Ray started with the "
            "dashboard (`ray start --head`), or use train.num_workers=0 on one machine.",
            str(e).splitlines()[0][:200])


def _local_cpus(wanted: int) -> int:
    """``wanted`` CPUs, at most what the biggest node has (a bigger request would never start)."""
    import ray

    per_node = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return int(max(1, min(wanted, max(per_node, default=1))))


# --------------------------------------------------------------------------------------------
# per-trial driver (runs inside a Tune trial actor)


def _driver(params: dict, base: dict, storage_url: str, prefix: str, child: dict, pbt: bool) -> None:
    from ray import tune

    storage = Storage(storage_url)
    trial_id = tune.get_context().get_trial_id()
    cfg = apply_params(from_dict(ExperimentConfig, base), params)
    run, offset = trial_run_name(prefix, trial_id), 0
    restored = tune.get_checkpoint()
    if restored is not None:  # PBT: continue from (a copy of) another trial's weights, in a new segment
        with restored.as_directory() as d:
            with open(join(d, SEGMENT_FILE)) as f:
                offset = json.load(f)["offset"]
            if offset >= cfg.train.max_steps:
                return  # a copy of a finished trial's last checkpoint: nothing is left to train
            segment = len(trial_runs(storage, prefix, trial_id))
            run = trial_run_name(prefix, trial_id, segment)
            init = storage.url_of(join(storage.run_dir(run), "pbt-init"))
            copy_checkpoint(d, init)
        cfg = with_values(cfg, {"train.init_from": init, "train.max_steps": cfg.train.max_steps - offset})
        storage.write_json_atomic(join(storage.run_dir(run), SEGMENT_FILE), {"offset": offset})
    cfg.run_name = run
    storage.write_json_atomic(join(storage.run_dir(cfg.run_name), "config.json"), to_dict(cfg))
    if cfg.train.num_workers > 0:
        from ray.tune.integration.ray_train import TuneReportCallback

        from seqgen.train.run import make_trainer

        make_trainer(cfg, storage, callbacks=[TuneReportCallback()]).fit()
    else:
        _fit_local_and_relay(cfg, storage, child, offset, pbt)


def _fit_local_and_relay(cfg: ExperimentConfig, storage: Storage, child: dict, offset: int, pbt: bool) -> None:
    """Local mode: fit in a child task (in the trial's second bundle); report each new evaluation
    to Tune as its checkpoint lands on storage (with a copy of that checkpoint under PBT)."""
    import ray
    from ray import tune

    from seqgen import checkpoint as ckpt

    ref = ray.remote(_fit_local).options(num_cpus=child["CPU"], num_gpus=child.get("GPU", 0),
                                         # a dead child (its node lost) is rerun and resumes from storage
                                         max_retries=cfg.train.max_failures).remote(to_dict(cfg), storage.url, pbt)
    run_dir = storage.run_dir(cfg.run_name)
    run_url = storage.url_of(run_dir)
    reported, seen, settle = 0, None, 0
    while True:
        done, _ = ray.wait([ref], timeout=_POLL_SECONDS)
        found = ckpt.list_checkpoints(run_url)  # imports no torch: the driver only relays metrics
        latest = found[-1] if found else None
        if latest and latest != seen:
            evals = read_evals(latest)
            if evals is not None:
                seen = latest
                for i in range(reported, len(evals)):
                    step = int(evals[i]["step"])
                    metrics = {**evals[i], "trial_step": offset + step}
                    if pbt:  # where this segment ends if PBT restarts the trial now (report.trial_history)
                        storage.write_json_atomic(join(run_dir, REPORTED_FILE), {"step": step})
                    if pbt and i == len(evals) - 1:
                        _report_with_copy(metrics, latest)
                    else:
                        tune.report(metrics)
                    if pbt:  # Tune let the trial go on: so may its training child (_fit_local)
                        storage.write_json_atomic(join(run_dir, CONTINUED_FILE), {"step": step})
                reported = max(reported, len(evals))
        if done and (seen == latest or settle >= 50):
            ray.get(ref)  # raises the training error, if any
            return
        if done:
            settle += 1
            time.sleep(0.1)


def _report_with_copy(metrics: dict, checkpoint_url: str) -> None:
    """Report with a copy of seqgen's checkpoint as the Tune checkpoint (PBT hands it to other
    trials); without one if the run has pruned it meanwhile (the next report carries one)."""
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="seqgen-pbt-") as d:
        try:
            copy_checkpoint(checkpoint_url, d)
        except FileNotFoundError:
            tune.report(metrics)
            return
        with open(join(d, SEGMENT_FILE), "w") as f:
            json.dump({"offset": metrics["trial_step"]}, f)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _fit_local(cfg_dict: dict, storage_url: str, paced: bool) -> None:
    """Under PBT training waits at each evaluation until Tune has seen it and let the trial go on
    (CONTINUED_FILE), so the scheduler can exploit or perturb before the trial trains further."""
    from seqgen.train.run import make_trainer

    cfg = from_dict(ExperimentConfig, cfg_dict)
    assert cfg.train.num_workers == 0
    storage = Storage(storage_url)
    pace = join(storage.run_dir(cfg.run_name), CONTINUED_FILE) if paced else None
    make_trainer(cfg, storage, paced_by=pace).fit()

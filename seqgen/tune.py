"""Hyperparameter search with Ray Tune + ASHA over seqgen training runs (Graves 2013 regularisation).

One Tune trial = one seqgen run named ``<search>-trial-<NNN>`` on the same storage root, so every
trial has the usual checkpoints, ``metrics.csv`` and curves under ``<root>/runs/<run>/`` and its
best checkpoint loads like any other. Tune's own experiment directory and the summary files live
under ``<root>/tune/<search>/``::

    results.csv   one row per trial: searched parameters, best score / valid loss / bpc, steps, status
    results.md    the same as a Markdown table
    best.json     the best trial: run, params, full config, best checkpoint URL

In Ray Train V2, Tune cannot take a TorchTrainer directly: each trial is a Tune *function
trainable* (the "driver") that applies the sampled values to the base config and runs it:

* ``train.num_workers > 0`` (clusters): the driver (0.01 CPU) fits ``make_trainer(cfg, storage,
  callbacks=[TuneReportCallback()])``; Ray Train workers do the work and every evaluation reaches
  Tune through the callback. When ASHA stops such a trial, Ray kills its Train controller and Ray
  Train's placement-group cleaner frees the workers' CPUs; the cleaner needs the Ray state API
  (the dashboard, on by default with ``ray start``). Without it, stopped trials keep their workers'
  resources and later trials can wait forever: ``run_search`` warns when it cannot reach the API.
* ``train.num_workers == 0`` (one CPU box, the default): Ray Train's local mode cannot run inside a
  Tune trial process (``ray.train.report`` / ``get_context`` raise there, and local mode ignores
  run callbacks), so the driver (no resources of its own) fits the same local-mode trainer in a
  child Ray task, in a bundle of ``train.cpus_per_worker`` CPUs (plus a GPU with ``use_gpu``) that
  the trial reserves, and relays each evaluation to Tune as seqgen's checkpoint for it lands on
  storage. The child belongs to the driver: when ASHA stops the trial, Ray ends the child with it.

ASHA (``time_attr="training_iteration"`` = evaluations so far) stops poor trials after
``grace_period`` evaluations. Searching resource keys (``train.num_workers``, ...) is refused.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field

from seqgen import config as config_mod
from seqgen.config import ConfigError, ExperimentConfig, from_dict, to_dict
from seqgen.storage import Storage, check_name, join

log = logging.getLogger(__name__)

#: Ray Tune distributions a space spec may name: ``key=kind:args``.
SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
_POLL_SECONDS = 1.0


# --------------------------------------------------------------------------------------------
# search spaces


def default_space() -> dict:
    """Graves-style regularisation and optimisation knobs (dotted config key -> Tune domain)."""
    from ray import tune

    return {
        "reg.kind": tune.choice(["none", "weight_noise", "adaptive_weight_noise"]),
        "reg.std": tune.loguniform(0.01, 0.1),
        "model.dropout": tune.uniform(0.0, 0.5),
        "model.deriv_clip": tune.choice([0, 1, 10]),
        "optim.grad_norm_clip": tune.choice([0, 1, 5]),
        "optim.lr": tune.loguniform(3e-4, 3e-3),
    }


def parse_space(items: list[str] | tuple[str, ...]) -> dict:
    """Parse CLI/YAML-friendly specs into a search space (dotted config key -> Tune domain).

    ``key=choice:a,b,c``   one of the values (parsed with the key's type; strings stay strings)
    ``key=grid:a,b,c``     every value (grid search; each grid point is repeated num_samples times)
    ``key=uniform:lo:hi``  a float in [lo, hi]
    ``key=loguniform:lo:hi``  a float in [lo, hi], uniform in log space (0 < lo)
    ``key=randint:lo:hi``  an int in [lo, hi) (Tune's convention: upper bound excluded)

    Any error names the offending item.
    """
    from ray import tune

    space: dict = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"search space item {item!r} must look like section.key=kind:args "
                              f"(kinds: {', '.join(SPACE_KINDS)})")
        key, spec = (s.strip() for s in item.split("=", 1))
        try:
            typ = _leaf_type(key)
        except ConfigError as e:
            raise ConfigError(f"search space item {item!r}: {e}") from None
        if key in space:
            raise ConfigError(f"search space item {item!r}: {key!r} is given twice")
        kind, sep, args = spec.partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in SPACE_KINDS:
            raise ConfigError(f"search space item {item!r}: expected kind:args with kind one of "
                              f"{', '.join(SPACE_KINDS)} (e.g. {key}=choice:a,b or {key}=uniform:0:1)")

        def bad(why: str) -> ConfigError:
            return ConfigError(f"search space item {item!r}: {why}")

        if kind in ("choice", "grid"):
            raw = [v.strip() for v in args.split(",")]
            if not args.strip() or any(v == "" for v in raw):
                raise bad(f"{kind} needs a comma-separated list of values with no empty entries")
            values = []
            for v in raw:
                value = config_mod._parse_scalar(v, typ)
                if typ is float and isinstance(value, str):  # YAML 1.1 reads '1e-4' as a string
                    try:
                        value = float(v)
                    except ValueError:
                        pass
                try:
                    config_mod._coerce(typ, value, key)
                except ConfigError as e:
                    raise bad(str(e)) from None
                values.append(value)
            space[key] = tune.choice(values) if kind == "choice" else tune.grid_search(values)
            continue

        parts = args.split(":")
        if len(parts) != 2:
            raise bad(f"{kind} needs two bounds, {kind}:low:high")
        numeric = int if kind == "randint" else float
        if typ is bool or (typ is not float and not (typ is int and numeric is int)):
            allowed = "randint" if typ is int else "choice or grid"
            raise bad(f"{key} is {typ.__name__}: use {allowed}")
        try:
            lo, hi = (_number(p, numeric) for p in parts)
        except ValueError:
            raise bad(f"bounds must be {'integers' if numeric is int else 'finite numbers'}, got {parts}") from None
        if not lo < hi:
            raise bad(f"need low < high, got {lo} and {hi}")
        if kind == "loguniform" and lo <= 0:
            raise bad(f"loguniform needs 0 < low, got {lo}")
        space[key] = {"uniform": tune.uniform, "loguniform": tune.loguniform,
                      "randint": tune.randint}[kind](lo, hi)
    return space


def _number(text: str, numeric):
    value = float(text.strip())  # ValueError for non-numbers ('1e-4' is fine, unlike YAML 1.1)
    if not math.isfinite(value) or (numeric is int and not value.is_integer()):
        raise ValueError(text)
    return numeric(value)


def _leaf_type(key: str):
    """The type of dotted config key ``key``; an error unless it names a leaf field."""
    import dataclasses

    typ = config_mod._field_type(key.split("."))
    if dataclasses.is_dataclass(typ):
        raise ConfigError(f"config key {key!r} is a section, not a value")
    return typ


def check_space(base: ExperimentConfig, space: dict) -> None:
    """Reject unknown keys, and values that do not fit the config, before any trial starts."""
    from ray.tune.search.sample import Categorical, Domain

    for key, domain in space.items():
        try:
            _leaf_type(key)
        except ConfigError as e:
            raise ConfigError(f"search space: {e}") from None
        if isinstance(domain, dict) and set(domain) == {"grid_search"}:
            candidates = list(domain["grid_search"])
        elif isinstance(domain, Categorical):
            candidates = list(domain.categories)
        elif isinstance(domain, Domain):
            candidates = [domain.sample()]
        else:
            candidates = [domain]
        for value in candidates:
            try:
                apply_params(base, {key: value})
            except ConfigError as e:
                raise ConfigError(f"search space {key!r}: {e}") from None


def apply_params(base: ExperimentConfig, params: dict) -> ExperimentConfig:
    """``base`` with dotted-key ``params`` set, validated strictly by the config module."""
    data = to_dict(base)
    for key, value in params.items():
        keys = key.split(".")
        _leaf_type(key)
        node = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = _plain(value)
    return from_dict(ExperimentConfig, data)


def _plain(value):
    """numpy scalars (Tune samples some) -> Python scalars, for the config and JSON."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


# --------------------------------------------------------------------------------------------
# results


@dataclass
class SearchResult:
    rows: list[dict]  # one per trial, as in results.csv
    best_checkpoint: str  # URL of the best trial's best checkpoint
    best_config: ExperimentConfig  # the best trial's full config
    best_run: str = ""  # run name of the best trial
    best_params: dict = field(default_factory=dict)  # its searched parameters
    results_dir: str = ""  # URL of <root>/tune/<search>/


def trial_run_name(search: str, trial_id: str) -> str:
    """``<search>-trial-<NNN>`` from a Tune trial id (``<hash>_<index>``); always a valid name."""
    suffix = trial_id.rsplit("_", 1)[-1]
    tag = f"trial-{int(suffix):03d}" if suffix.isdigit() else "trial-" + re.sub(r"[^A-Za-z0-9._-]", "-", trial_id)
    return check_name(f"{search[:127 - len(tag)]}-{tag}", "run name")


def run_search(
    base: ExperimentConfig,
    storage: Storage,
    name: str,
    space: dict | None = None,
    num_samples: int = 8,
    max_concurrent: int = 1,
    grace_period: int = 1,
    metric: str = "score",
) -> SearchResult:
    """Run ``num_samples`` trials of ``base`` with values from ``space`` (default: ``default_space()``),
    ASHA stopping poor ones on ``metric`` (lower is better); write results.csv / results.md /
    best.json under ``storage.tune_dir(name)`` and return the table and the best trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from seqgen.runtime import ensure_ray

    check_name(name, "search name")
    if not storage.shared_across_processes:
        raise ValueError(f"storage {storage.url} lives in one process; Tune trials run in other processes")
    if num_samples < 1 or max_concurrent < 1 or grace_period < 1:
        raise ValueError("num_samples, max_concurrent and grace_period must be >= 1")
    space = default_space() if space is None else dict(space)
    fixed = sorted(set(space) & {"train.num_workers", "train.cpus_per_worker", "train.use_gpu", "run_name"})
    if fixed:
        raise ConfigError(f"search space: {fixed[0]!r} decides a trial's resources, set it in the base config")
    check_space(base, space)
    tune_dir = storage.tune_dir(name)
    if storage.exists(tune_dir) and storage.fs.ls(tune_dir, detail=False):
        raise FileExistsError(f"search {name!r} already exists at {storage.url_of(tune_dir)}: choose another name")
    grid = math.prod(len(d["grid_search"]) for d in space.values() if isinstance(d, dict) and "grid_search" in d)
    for i in range(num_samples * grid):
        run = trial_run_name(name, f"x_{i:05d}")
        if storage.exists(storage.run_dir(run)):
            raise FileExistsError(f"run {run!r} already exists on {storage.url}: choose another search name")

    ensure_ray()
    t = base.train
    evals = max(1, math.ceil(t.max_steps / max(t.eval_every, 1)))
    # max_t one past the last evaluation: a trial that runs to the end finishes by itself rather
    # than being stopped (killed) by ASHA at max_t, so Ray Train shuts its workers down cleanly.
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=evals + 1,
                              grace_period=min(grace_period, evals))
    if t.num_workers > 0:  # the TorchTrainer schedules its own controller and workers
        resources, child = {"cpu": 0.01}, {}
        _warn_without_state_api()
    else:  # the trial reserves a bundle for the local-mode child task (the driver itself needs none)
        child = {"CPU": _local_cpus(t.cpus_per_worker), **({"GPU": 1} if t.use_gpu else {})}
        resources = tune.PlacementGroupFactory([{}, child])
    driver = tune.with_parameters(_driver, base=to_dict(base), storage_url=storage.url, search=name, child=child)
    from seqgen.train.run import ray_storage

    path, filesystem = ray_storage(storage, storage.tune_dir())
    tuner = tune.Tuner(
        tune.with_resources(driver, resources),
        param_space=space,
        tune_config=tune.TuneConfig(metric=metric, mode="min", scheduler=scheduler,
                                    num_samples=num_samples, max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(name=name, storage_path=path, storage_filesystem=filesystem,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    grid_results = tuner.fit()
    return _summarise(base, storage, name, list(space), metric, grid_results)


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


def _summarise(base, storage: Storage, name: str, keys: list[str], metric: str, grid_results) -> SearchResult:
    rows, errors = [], []
    for result in grid_results:
        trial_id = (result.metrics or {}).get("trial_id") or _trial_id_from_path(result.path)
        run = trial_run_name(name, trial_id)
        params = {k: _plain(result.config.get(k)) for k in keys}
        row = {"trial": run, **params, **_run_summary(storage, run, metric, base.train.max_steps)}
        if result.error is not None:
            row["status"] = "error"
            lines = str(result.error).strip().splitlines() or [repr(result.error)]
            errors.append(f"{run}: {lines[-1]}")
        rows.append(row)
    rows.sort(key=lambda r: r["trial"])

    tune_dir = storage.tune_dir(name)
    columns = ["trial", *keys, f"best_{metric}", *[c for c in ("best_valid_loss", "best_valid_bpc")
                                                     if c != f"best_{metric}"], "steps", "status", "checkpoint"]
    storage.write_bytes_atomic(join(tune_dir, "results.csv"), _csv(rows, columns).encode())
    storage.write_bytes_atomic(join(tune_dir, "results.md"), _markdown(name, metric, rows, columns).encode())

    ranked = [r for r in rows if r["checkpoint"] and isinstance(r[f"best_{metric}"], float)
              and not math.isnan(r[f"best_{metric}"])]
    if not ranked:
        raise RuntimeError(f"search {name!r}: no trial produced a checkpoint"
                           + (f"; errors: {'; '.join(errors)}" if errors else ""))
    best = min(ranked, key=lambda r: r[f"best_{metric}"])
    best_params = {k: best[k] for k in keys}
    best_config = apply_params(base, best_params)
    best_config.run_name = best["trial"]
    storage.write_json_atomic(join(tune_dir, "best.json"), {
        "search": name, "metric": metric, "mode": "min", "trial": best["trial"],
        "run": storage.url_of(storage.run_dir(best["trial"])), "checkpoint": best["checkpoint"],
        f"best_{metric}": best[f"best_{metric}"], "params": best_params, "config": to_dict(best_config),
    })
    return SearchResult(rows, best["checkpoint"], best_config, best["trial"], best_params, storage.url_of(tune_dir))


def _trial_id_from_path(path: str | None) -> str:
    match = re.search(r"_([0-9a-f]{5}_\d{5})", path or "")
    return match.group(1) if match else "unknown"


def _run_summary(storage: Storage, run: str, metric: str, max_steps: int) -> dict:
    """Best metric over the run's whole evaluation history (seqgen's own record on storage)."""
    out = {f"best_{metric}": math.nan, "best_valid_loss": math.nan, "best_valid_bpc": math.nan,
           "steps": 0, "status": "no result", "checkpoint": ""}
    from seqgen import checkpoint as ckpt

    run_url = storage.url_of(storage.run_dir(run))
    found = ckpt.list_checkpoints(run_url)
    evals = _read_evals(found[-1]) if found else None
    if not evals:
        return out
    for key in {metric, "valid_loss", "valid_bpc"}:
        values = [e[key] for e in evals if isinstance(e.get(key), (int, float))]
        if values:
            out[f"best_{key}"] = float(min(values))
    out["steps"] = int(evals[-1].get("step", 0))
    out["status"] = "completed" if out["steps"] >= max_steps else "stopped early"
    out["checkpoint"] = ckpt.best_checkpoint(run_url, metric)
    return out


def _read_evals(checkpoint_url: str) -> list[dict] | None:
    """The evaluation history saved in a checkpoint (None if it cannot be read right now)."""
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(checkpoint_url)
        with fs.open(join(path, "progress.json"), "rb") as f:
            return json.loads(f.read()).get("evals", [])
    except (FileNotFoundError, json.JSONDecodeError):  # pruned or being replaced: read it next time
        return None


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if isinstance(row.get(c), float) and math.isnan(row[c]) else row.get(c))
                         for c in columns})
    return buf.getvalue()


def _markdown(name: str, metric: str, rows: list[dict], columns: list[str]) -> str:
    shown = [c for c in columns if c != "checkpoint"]
    lines = [f"# Search `{name}` (metric `{metric}`, lower is better)", "",
             "| " + " | ".join(shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)).replace("|", "\\|") for c in shown) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# per-trial driver (runs inside a Tune trial actor)


def _local_cpus(wanted: int) -> int:
    """``wanted`` CPUs, at most what the biggest node has (a bigger request would never start)."""
    import ray

    per_node = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return int(max(1, min(wanted, max(per_node, default=1))))


def _driver(params: dict, base: dict, storage_url: str, search: str, child: dict) -> None:
    from ray import tune

    storage = Storage(storage_url)
    cfg = apply_params(from_dict(ExperimentConfig, base), params)
    cfg.run_name = trial_run_name(search, tune.get_context().get_trial_id())
    storage.write_json_atomic(join(storage.run_dir(cfg.run_name), "config.json"), to_dict(cfg))
    if cfg.train.num_workers > 0:
        from ray.tune.integration.ray_train import TuneReportCallback

        from seqgen.train.run import make_trainer

        make_trainer(cfg, storage, callbacks=[TuneReportCallback()]).fit()
    else:
        _fit_local_and_relay(cfg, storage, child)


def _fit_local_and_relay(cfg: ExperimentConfig, storage: Storage, child: dict) -> None:
    """Local mode: fit in a child task (in the trial's second bundle); report each new evaluation
    to Tune as its checkpoint lands on storage."""
    import ray
    from ray import tune

    from seqgen import checkpoint as ckpt

    ref = ray.remote(_fit_local).options(num_cpus=child["CPU"], num_gpus=child.get("GPU", 0),
                                         max_retries=0).remote(to_dict(cfg), storage.url)
    run_url = storage.url_of(storage.run_dir(cfg.run_name))
    reported, seen, settle = 0, None, 0
    while True:
        done, _ = ray.wait([ref], timeout=_POLL_SECONDS)
        found = ckpt.list_checkpoints(run_url)  # imports no torch: the driver only relays metrics
        latest = found[-1] if found else None
        if latest and latest != seen:
            evals = _read_evals(latest)
            if evals is not None:
                seen = latest
                for metrics in evals[reported:]:
                    tune.report(metrics)
                reported = max(reported, len(evals))
        if done and (seen == latest or settle >= 50):
            ray.get(ref)  # raises the training error, if any
            return
        if done:
            settle += 1
            time.sleep(0.1)


def _fit_local(cfg_dict: dict, storage_url: str) -> None:
    from seqgen.train.run import make_trainer

    cfg = from_dict(ExperimentConfig, cfg_dict)
    assert cfg.train.num_workers == 0
    make_trainer(cfg, Storage(storage_url)).fit()


__all__ = ["SearchResult", "apply_params", "check_space", "default_space", "parse_space", "run_search",
           "trial_run_name", "SPACE_KINDS"]
